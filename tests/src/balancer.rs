//! The real `balancer` binary, run inside a namespace with a given configuration.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{Netns, Process, TempDir, config::ConfigSource, wait_until};

/// How long the daemon may take to load, attach and configure.
pub const BALANCER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test: `BALANCER_BIN` (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn balancer_bin() -> PathBuf {
    std::env::var_os("BALANCER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/balancer"))
}

/// Where a daemon keeps its state: its configuration file, admin socket and
/// a BPF file system of its own for its pinned maps and links, so that a
/// restarted daemon finds what the killed one left, and nothing outlives the
/// test (the mount goes on drop, and with it the pinned state).
pub struct Home {
    bpffs: PathBuf,
    dir: TempDir,
}

impl Home {
    fn new() -> Result<Home> {
        let dir = TempDir::new("balancer")?;
        let bpffs = dir.join("bpf");
        std::fs::create_dir(&bpffs)?;
        nix::mount::mount(
            Some("bpf"),
            &bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .with_context(|| format!("mounting a BPF file system at {}", bpffs.display()))?;
        Ok(Home { bpffs, dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("balancer.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("balancer.sock")
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("balancer")
    }

    /// Writes `config` with this home's socket and pin directory in `[control]`
    /// (whatever `config` says there).
    pub fn write_config<C: ConfigSource + ?Sized>(&self, config: &C) -> Result<()> {
        let mut doc = config.document()?;
        let control = doc
            .entry("control")
            .or_insert(toml_edit::table())
            .as_table_like_mut()
            .context("`control` in the configuration is not a table")?;
        control.insert("socket", toml_edit::value(path_text(&self.socket())?));
        control.insert("pin_dir", toml_edit::value(path_text(&self.pin_dir())?));
        std::fs::write(self.config_path(), doc.to_string()).context("writing the configuration")
    }
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.bpffs, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// How [`Balancer::launch`] starts the daemon, beyond its configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct Launch<'a> {
    /// More arguments to `balancer run`.
    pub args: &'a [&'a str],
    /// Environment for the daemon (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, ...).
    pub env: &'a [(&'a str, &'a str)],
    /// A command the daemon runs under (`setpriv ...`): these words, then
    /// the binary and its arguments.
    pub wrapper: &'a [&'a str],
}

/// A running `balancer run`; killed on drop if still running.
pub struct Balancer {
    process: Process,
    home: Home,
}

impl Balancer {
    /// Writes `config` to a file (see [`Home::write_config`]) and starts
    /// `balancer run` on it in `ns`, returning once the daemon says it is running.
    pub fn start<C: ConfigSource + ?Sized>(ns: &Netns, config: &C) -> Result<Balancer> {
        Self::start_with(ns, config, &[])
    }

    /// [`Balancer::start`] with more arguments to `balancer run`.
    pub fn start_with<C: ConfigSource + ?Sized>(
        ns: &Netns,
        config: &C,
        args: &[&str],
    ) -> Result<Balancer> {
        let home = Home::new()?;
        home.write_config(config)?;
        let process = spawn(ns, &home, args)?;
        Ok(Balancer { process, home })
    }

    /// Starts `balancer run` as `launch` says and returns at once, without
    /// waiting for the daemon to say it is running: the caller waits for what
    /// it needs ([`Balancer::wait_for_log`], a notification, ...).
    pub fn launch(ns: &Netns, config: &str, launch: Launch) -> Result<Balancer> {
        let home = Home::new()?;
        home.write_config(config)?;
        let process = Process::start(command(ns, &home, launch)?)?;
        Ok(Balancer { process, home })
    }

    /// Waits until the daemon's log has a line containing every one of
    /// `needles`; returns how long that took.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> Result<Duration> {
        self.wait_for_log_since(0, needles, timeout)
    }

    /// Where the log is now, for [`Balancer::wait_for_log_since`].
    pub fn log_mark(&self) -> usize {
        self.output_so_far().len()
    }

    /// [`Balancer::wait_for_log`], looking only at what was logged after `mark`.
    pub fn wait_for_log_since(
        &self,
        mark: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<Duration> {
        let start = std::time::Instant::now();
        let found = wait_until(timeout, || {
            let out = self.output_so_far();
            out.get(mark..)
                .unwrap_or_default()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        });
        if !found {
            bail!(
                "no log line with {needles:?} within {timeout:?}:\n{}",
                self.output_so_far()
            );
        }
        Ok(start.elapsed())
    }

    /// Starts a new daemon on the same files and pinned state (after
    /// [`Balancer::kill`] or a stop that kept the data plane).
    pub fn restart(&mut self, ns: &Netns, args: &[&str]) -> Result<()> {
        if self.process.is_running() {
            bail!("the daemon is still running");
        }
        self.process = spawn(ns, &self.home, args)?;
        Ok(())
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.process.signal(signal)
    }

    /// SIGKILL: no clean-up at all, as in a crash.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()?;
        Ok(())
    }

    /// The daemon's process id (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Runs `balancer ARGS --socket SOCKET` (the CLI, outside any namespace:
    /// the socket is a file) and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(balancer_bin());
        cmd.args(args).arg("--socket").arg(self.home.socket());
        crate::netns::run_command(&mut cmd, Duration::from_secs(60))
    }

    pub fn output_so_far(&self) -> String {
        self.process.output_so_far()
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.config_path()
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

fn command(ns: &Netns, home: &Home, launch: Launch) -> Result<std::process::Command> {
    let bin = balancer_bin();
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build -p balancer-user` (cargo xtask test does)",
            bin.display()
        );
    }
    let mut cmd = match launch.wrapper.split_first() {
        Some((program, words)) => {
            let mut cmd = ns.command(program);
            cmd.args(words).arg(&bin);
            cmd
        }
        None => ns.command(&bin),
    };
    cmd.arg("run")
        .arg("--config")
        .arg(home.config_path())
        .args(launch.args)
        .envs(launch.env.iter().copied());
    Ok(cmd)
}

fn spawn(ns: &Netns, home: &Home, args: &[&str]) -> Result<Process> {
    let launch = Launch {
        args,
        ..Launch::default()
    };
    let mut process = Process::start(command(ns, home, launch)?)?;
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
    Ok(process)
}
