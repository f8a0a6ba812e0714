//! What one run measures: CPU time (whole machine from `/proc/stat`, processes from
//! `/proc/PID/stat`, reaped children from `getrusage`), and the figures that wrk and
//! iperf3 print.

use anyhow::{Context, Result, bail};

/// Seconds per tick of `/proc/stat` and `/proc/PID/stat` (USER_HZ).
fn tick_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { 1.0 / hz as f64 } else { 0.01 }
}

/// Busy CPU time of the whole machine, all CPUs summed, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq.
    pub busy: f64,
    /// softirq alone (where XDP, netfilter and the veth receive path mostly run).
    pub softirq: f64,
}

impl MachineCpu {
    pub fn now() -> Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no `cpu ` line in /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if v.len() < 7 {
            bail!("short `cpu` line in /proc/stat: {line}");
        }
        // user nice system idle iowait irq softirq ...
        let t = tick_s();
        Ok(MachineCpu {
            busy: (v[0] + v[1] + v[2] + v[5] + v[6]) as f64 * t,
            softirq: v[6] as f64 * t,
        })
    }

    pub fn since(self, before: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy - before.busy,
            softirq: self.softirq - before.softirq,
        }
    }
}

/// utime + stime of the given processes (all their threads), in seconds; processes that
/// are gone count as 0.
pub fn processes_cpu(pids: &[i32]) -> f64 {
    pids.iter()
        .filter_map(|pid| balancer_tests::cpu_time(*pid as u32).ok())
        .map(|t| t.as_secs_f64())
        .sum()
}

/// CPU time (utime + stime + reaped children's) of every process that is not part of
/// the benchmark, in seconds: not this process, not a kernel thread, not in one of the
/// network namespaces whose inodes are `ours`. The difference of two readings is what
/// other work on the machine (builds, tests) used in between: a process that exits in
/// between reappears in its parent's children's time.
pub fn others_cpu(ours: &[u64]) -> f64 {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let t = tick_s();
    let mut sum = 0u64;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .skip(1)
            .take(14)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // After the state: ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime.
        if f.len() < 14 || f[5] & PF_KTHREAD != 0 {
            continue;
        }
        if netns_inode(&format!("/proc/{pid}/ns/net")).is_some_and(|ino| ours.contains(&ino)) {
            continue;
        }
        sum += f[10] + f[11] + f[12] + f[13];
    }
    sum as f64 * t
}

/// The inode that identifies the network namespace of `/proc/PID/ns/net` or of a
/// `/run/netns/NAME` handle.
pub fn netns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// user + system time of this process's reaped children so far, in seconds.
pub fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What `wrk --latency` printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkOutput {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// connect + read + write + timeout socket errors.
    pub socket_errors: u64,
    pub non_2xx: u64,
}

pub fn parse_wrk(out: &str) -> Result<WrkOutput> {
    let mut w = WrkOutput::default();
    let mut seen = (false, false);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 3 && words[1] == "requests" && words[2] == "in" {
            w.requests = words[0].parse().context("wrk request count")?;
            seen.0 = true;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.requests_per_s = v.trim().parse().context("wrk Requests/sec")?;
            seen.1 = true;
        } else if let Some(v) = line.strip_prefix("50%") {
            w.p50_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            w.p99_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            w.socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    if !(seen.0 && seen.1) {
        bail!("cannot read wrk's output:\n{out}");
    }
    Ok(w)
}

/// `812.00us`, `1.23ms`, `2.00s`, `1.50m` in milliseconds.
fn duration_ms(s: &str) -> Result<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .with_context(|| format!("no unit in wrk duration {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("wrk duration {s:?}"))?;
    let factor = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        other => bail!("unknown unit {other:?} in wrk duration {s:?}"),
    };
    Ok(n * factor)
}

/// What `iperf3 -J` reported (receiver side).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IperfOutput {
    pub bits_per_s: f64,
    pub bytes: f64,
    pub retransmits: u64,
}

pub fn parse_iperf(out: &str) -> Result<IperfOutput> {
    let v: serde_json::Value = serde_json::from_str(out)
        .with_context(|| format!("iperf3 -J output is not JSON:\n{out}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let end = &v["end"];
    let recv = &end["sum_received"];
    let bits_per_s = recv["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    Ok(IperfOutput {
        bits_per_s,
        bytes: recv["bytes"].as_f64().unwrap_or(0.0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 8s test @ http://198.51.100.10/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  310.00us   8.00ms   90.00%
    Req/Sec    26.00k     1.00k   28.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.27ms
     90%    1.60ms
     99%    3.06ms
  208000 requests in 8.00s, 33.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  26000.50
Transfer/sec:      4.12MB
";

    #[test]
    fn reads_wrk() {
        let w = parse_wrk(WRK).unwrap();
        assert_eq!(w.requests, 208_000);
        assert_eq!(w.requests_per_s, 26000.5);
        assert!((w.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(w.p99_ms, 3.06);
        assert_eq!(w.socket_errors, 5);
        assert_eq!(w.non_2xx, 5);
        assert!(parse_wrk("unable to connect").is_err());
    }

    #[test]
    fn reads_iperf() {
        let json = r#"{"start":{},"end":{"sum_sent":{"bytes":100,"retransmits":7},
            "sum_received":{"bytes":6250000000,"bits_per_second":1e10}}}"#;
        let i = parse_iperf(json).unwrap();
        assert_eq!(i.bits_per_s, 1e10);
        assert_eq!(i.bytes, 6.25e9);
        assert_eq!(i.retransmits, 7);
        assert!(parse_iperf(r#"{"error":"unable to connect"}"#).is_err());
    }
}
