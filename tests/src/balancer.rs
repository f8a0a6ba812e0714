//! The real `balancer` binary, run inside a namespace with a given configuration.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{Netns, Process, TempDir, wait_until};

/// How long the daemon may take to load, attach and configure.
pub const BALANCER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test: `BALANCER_BIN` (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn balancer_bin() -> PathBuf {
    std::env::var_os("BALANCER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/balancer"))
}

/// A running `balancer run`; killed on drop if still running.
pub struct Balancer {
    process: Process,
    dir: TempDir,
}

impl Balancer {
    /// Writes `config` to a file and starts `balancer run` on it in `ns`,
    /// returning once the daemon says it is running.
    pub fn start(ns: &Netns, config: &str) -> Result<Balancer> {
        let bin = balancer_bin();
        if !bin.exists() {
            bail!(
                "{} does not exist: build it with `cargo build -p balancer-user` (cargo xtask test does)",
                bin.display()
            );
        }
        let dir = TempDir::new("balancer")?;
        let path = dir.join("balancer.toml");
        std::fs::write(&path, config).context("writing the configuration")?;
        let mut cmd = ns.command(&bin);
        cmd.arg("run").arg("--config").arg(&path);
        let mut process = Process::start(cmd)?;
        let ready = wait_until(BALANCER_START_TIMEOUT, || {
            !process.is_running() || process.output_so_far().contains("balancer running")
        });
        if !ready || !process.is_running() {
            bail!(
                "balancer did not start (running: {}):\n{}",
                process.is_running(),
                process.output_so_far()
            );
        }
        Ok(Balancer { process, dir })
    }

    pub fn output_so_far(&self) -> String {
        self.process.output_so_far()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("balancer.toml")
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// SIGTERM, then waits for a clean exit; returns the daemon's output.
    pub fn stop(mut self) -> Result<String> {
        self.process.signal(Signal::SIGTERM)?;
        let status = self
            .process
            .wait_timeout(Duration::from_secs(10))?
            .with_context(|| {
                format!(
                    "balancer still running 10 s after SIGTERM:\n{}",
                    self.output_so_far()
                )
            })?;
        let out = self.output_so_far();
        if !status.success() {
            bail!("balancer exited with {status}:\n{out}");
        }
        Ok(out)
    }
}
