//! What machine a benchmark ran on, for its report.

use std::process::Command;

pub struct HostInfo {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_gib: f64,
    /// First lines of the `versions` commands asked for (programs measured).
    pub versions: Vec<String>,
}

/// The first line a command prints (stdout, else stderr), or "" if it fails.
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

pub fn host_info(versions: &[(&str, &[&str])]) -> HostInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    HostInfo {
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        mem_gib: mem_kib / 1024.0 / 1024.0,
        versions: versions
            .iter()
            .map(|(cmd, args)| first_line(cmd, args))
            .collect(),
    }
}
