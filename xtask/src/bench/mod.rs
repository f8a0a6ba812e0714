//! `cargo xtask bench [packet|e2e|memory|failover|sync|active-active|flood|metrics|all]`.

mod active_active;
mod e2e;
mod failover;
mod flood;
mod host;
mod memory;
mod metrics;
mod packet;
mod sync;

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace_root};

pub fn run(which: &str) -> Result<()> {
    match which {
        "packet" => packet::run(),
        "e2e" => e2e::run(),
        "memory" => memory::run(),
        "failover" => failover::run(),
        "sync" => sync::run(),
        "active-active" => active_active::run(),
        "flood" => flood::run(),
        "metrics" => metrics::run(),
        "all" => {
            packet::run()?;
            e2e::run()?;
            memory::run()?;
            failover::run()?;
            sync::run()?;
            active_active::run()?;
            flood::run()?;
            metrics::run()
        }
        other => {
            bail!(
                "unknown benchmark {other:?}: packet, e2e, memory, failover, sync, active-active, flood, metrics or all"
            )
        }
    }
}

/// The section `heading` of BENCHMARKS.md as measured by `cargo xtask bench
/// NAME`, which runs the bench target `name` with `_` for `-` (see
/// [`bench_target`]): the command, the machine (with the first lines of
/// `versions`, programs measured), the binary and the load average above
/// what the target printed.
fn section_of_target(heading: &str, name: &str, versions: &[(&str, &[&str])]) -> Result<String> {
    // BALANCER_BIN names a binary to measure; else the release build of the tree.
    let binary = e2e::binary::prepare()?;
    let host = host::host_info(versions);
    let load_before = load_average();
    let started = Instant::now();
    let target = name.replace('-', "_");
    let body = bench_target(&target)?;
    // A target of one file, or of a directory (`NAME/main.rs` and its modules).
    let source = if workspace_root()
        .join(format!("tests/benches/{target}.rs"))
        .exists()
    {
        format!("tests/benches/{target}.rs")
    } else {
        format!("tests/benches/{target}/")
    };
    let versions = if host.versions.is_empty() {
        String::new()
    } else {
        format!(", {}", host.versions.join(", "))
    };
    Ok(format!(
        "{heading}\n\nCommand: `cargo xtask bench {name}` (as root; {} s; runs `{source}`). Run on {}: {} CPUs ({}), {:.0} GiB, kernel {}{versions}. Binary: {binary}. Load average (1 min) {load_before} at the start, {} at the end.\n\n{body}",
        started.elapsed().as_secs(),
        host.date,
        host.cpus,
        host.cpu_model,
        host.mem_gib,
        host.kernel,
        load_average(),
    ))
}

/// Runs the bench target `name` of the tests crate (`tests/benches/NAME.rs`,
/// which may use balancer-user: xtask cannot) and returns what it printed on
/// stdout; its progress goes to stderr as it runs.
fn bench_target(name: &str) -> Result<String> {
    let mut cmd: Command = cargo();
    cmd.args(["bench", "-p", "balancer-tests", "--bench", name])
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown = format!("{cmd:?}");
    eprintln!("+ {shown}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{shown} failed: {}\n{stdout}", out.status);
    }
    Ok(stdout)
}

/// The load average over the last minute (`/proc/loadavg`), for a report.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
