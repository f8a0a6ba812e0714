//! Network namespaces (`ip netns`), commands and background processes inside them.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::util::{NETNS_RUN_DIR, tail, temp_file_path, wait_until};

/// Default time limit of [`Netns::exec`] and the link helpers.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// `ip netns add` creates and bind-mounts `/run/netns` on first use; concurrent first uses
/// from one process race on that, so creation is serialized within the process.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace created with `ip netns add` and removed on drop.
///
/// Drop kills (SIGKILL) every process that lives in the namespace (`ip netns pids`) and then
/// deletes it with `ip netns del`; interfaces inside it (and the peers of its veths) go with
/// it. This also happens when a test panics, as long as the value is dropped by unwinding.
#[derive(Debug)]
pub struct Netns {
    name: String,
    label: String,
}

impl Netns {
    /// Creates namespace `name` with `lo` up. Fails if it already exists.
    pub fn new(name: &str) -> Result<Netns> {
        Netns::with_label(name, name)
    }

    /// Like [`Netns::new`], with a short `label` (e.g. `"be1"`) that servers started in
    /// this namespace use as their default name.
    pub fn with_label(name: &str, label: &str) -> Result<Netns> {
        if name.is_empty() || name.contains('/') || name.len() > 64 {
            bail!("bad namespace name {name:?}");
        }
        {
            let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let out = run_command(
                Command::new("ip").args(["netns", "add", name]),
                EXEC_TIMEOUT,
            )
            .with_context(|| format!("ip netns add {name}"))?;
            check_output(&format!("ip netns add {name}"), &out)?;
        }
        // From here on, Drop removes the namespace even if the rest fails.
        let ns = Netns {
            name: name.to_string(),
            label: label.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The short label given at creation (the name if none was given).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Path of the namespace handle (`/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// A `Command` for `ip netns exec NAME cmd`; add arguments, environment etc. and start
    /// it with [`Process::start`] or run it yourself.
    pub fn command(&self, cmd: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec"]).arg(&self.name).arg(cmd);
        c
    }

    /// Runs `cmd args...` in the namespace, waits (at most [`EXEC_TIMEOUT`]) and fails with
    /// a message that includes the exit status, stderr and stdout unless it exits with 0.
    ///
    /// Output is collected until stdout and stderr are closed: a command that leaves a
    /// background child behind must redirect that child's output (`>/dev/null 2>&1 &`),
    /// or use [`Netns::spawn`].
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<Output> {
        self.exec_timeout(cmd, args, EXEC_TIMEOUT)
    }

    /// [`Netns::exec`] with an explicit time limit (the process group is killed when over).
    pub fn exec_timeout(&self, cmd: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        let out = self.exec_unchecked(cmd, args, timeout)?;
        check_output(&self.describe(cmd, args), &out)?;
        Ok(out)
    }

    /// Runs `cmd args...` in the namespace and returns its output whatever the exit status;
    /// fails only if it cannot be started or runs over `timeout`.
    pub fn exec_unchecked(&self, cmd: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut c = self.command(cmd);
        c.args(args);
        run_command(&mut c, timeout).with_context(|| self.describe(cmd, args))
    }

    /// The packets nftables counted in the named counter `name` of table
    /// `family table` (`nft list counter ...`).
    pub fn nft_counter_packets(&self, family: &str, table: &str, name: &str) -> Result<u64> {
        let out = self.exec("nft", &["list", "counter", family, table, name])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet count in {text}"))
    }

    /// `ip -n NAME args...`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(args);
        let what = format!("ip -n {} {}", self.name, args.join(" "));
        let out = run_command(&mut c, EXEC_TIMEOUT).with_context(|| what.clone())?;
        check_output(&what, &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs several `ip` commands (one per element, without the leading `ip`) in one
    /// `ip -n NAME -batch -` invocation; fails on the first failing line.
    pub fn ip_batch<S: AsRef<str>>(&self, lines: &[S]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        for l in lines {
            script.push_str(l.as_ref());
            script.push('\n');
        }
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(["-batch", "-"]);
        let what = format!("ip -n {} -batch - <<EOF\n{script}EOF", self.name);
        let out = run_command_input(&mut c, Some(script.into_bytes()), EXEC_TIMEOUT)
            .with_context(|| what.clone())?;
        check_output(&what, &out)
    }

    /// Starts `cmd args...` in the namespace in the background (see [`Process`]).
    pub fn spawn(&self, cmd: &str, args: &[&str]) -> Result<Process> {
        let mut c = self.command(cmd);
        c.args(args);
        Process::start_named(c, self.describe(cmd, args))
    }

    /// Runs `f` on a fresh thread that has joined this namespace (`setns`) and returns its
    /// result. Sockets created by `f` belong to the namespace for their whole life, whatever
    /// thread uses them later; threads spawned by `f` start in the namespace too. Panics in
    /// `f` are propagated; a failing `setns` panics (see [`Netns::try_run`]).
    pub fn run<T, F>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        match self.try_run(f) {
            Ok(v) => v,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Like [`Netns::run`], but a failure to enter the namespace is returned as an error.
    pub fn try_run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let path = self.path();
        let file =
            File::open(&path).with_context(|| format!("opening namespace {}", path.display()))?;
        let joined = std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", path.display()))?;
                drop(file);
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Sets a sysctl of this namespace (`net.ipv4.ip_forward`, or a path relative to
    /// `/proc/sys` containing `/`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.try_run(|| std::fs::write(&path, value))?
            .with_context(|| format!("sysctl -w {key}={value} in {}", self.name))
    }

    /// Reads a sysctl of this namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let v = self
            .try_run(|| std::fs::read_to_string(&path))?
            .with_context(|| format!("sysctl {key} in {}", self.name))?;
        Ok(v.trim().to_string())
    }

    /// `ip link set DEV up`.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "up"]).map(drop)
    }

    /// Adds an address (`"198.51.100.5/24"`, `"2001:db8:1::5/64"`) to `dev`. IPv6 addresses
    /// are added with `nodad`, so they are usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip_batch(&[addr_add_line(dev, cidr)])
    }

    /// `ip route add ROUTE` (e.g. `"default via 198.51.100.1"`).
    pub fn add_route(&self, route: &str) -> Result<()> {
        let mut args = vec!["route", "add"];
        args.extend(route.split_whitespace());
        self.ip(&args).map(drop)
    }

    /// Creates a veth pair: `name` in this namespace and `peer_name` in `peer`; both up.
    pub fn add_veth(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<()> {
        check_ifname(name)?;
        check_ifname(peer_name)?;
        self.ip_batch(&[
            veth_line(name, peer, peer_name),
            format!("link set {name} up"),
        ])?;
        peer.link_up(peer_name)
    }

    /// Creates a bridge `name` (STP off, no forward delay, no multicast snooping), up.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.ip_batch(&[bridge_line(name), format!("link set {name} up")])
    }

    /// Attaches `dev` to `bridge` and sets it up.
    pub fn set_master(&self, dev: &str, bridge: &str) -> Result<()> {
        self.ip_batch(&[format!("link set {dev} master {bridge} up")])
    }

    /// `ethtool -K DEV feature on|off ...`, e.g. `&[("tx", false), ("gro", true)]`.
    pub fn ethtool_k(&self, dev: &str, features: &[(&str, bool)]) -> Result<()> {
        let mut args = vec!["-K", dev];
        for (f, on) in features {
            args.push(f);
            args.push(if *on { "on" } else { "off" });
        }
        self.exec("ethtool", &args).map(drop)
    }

    /// Attaches an XDP program that passes every frame to `dev`, for as long
    /// as the returned link is open (see `xdp_pass`).
    pub fn xdp_pass(&self, dev: &str) -> Result<std::os::fd::OwnedFd> {
        let ifindex = self.ifindex(dev)?;
        self.try_run(move || crate::xdp_pass::attach(ifindex))?
            .with_context(|| format!("XDP_PASS on {dev} in namespace {}", self.name))
    }

    /// The interface index of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let d = dev.to_string();
        self.try_run(move || nix::net::if_::if_nametoindex(d.as_str()))?
            .with_context(|| format!("no interface {dev} in namespace {}", self.name))
    }

    /// Sends one ICMP echo request to `target` from inside the namespace (raw socket, no
    /// external program) and waits at most `timeout` for the reply; returns the round-trip
    /// time. Fails at once if there is no route.
    pub fn ping(&self, target: IpAddr, timeout: Duration) -> Result<Duration> {
        self.try_run(move || crate::ping::ping(target, timeout))?
            .with_context(|| format!("ping {target} from namespace {}", self.name))
    }

    /// Pids of the processes in this namespace (`ip netns pids NAME`).
    pub fn pids(&self) -> Vec<i32> {
        let mut c = Command::new("ip");
        c.args(["netns", "pids", &self.name]);
        match run_command(&mut c, EXEC_TIMEOUT) {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn describe(&self, cmd: &str, args: &[&str]) -> String {
        let mut s = format!("[netns {}] {cmd}", self.name);
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        for pid in self.pids() {
            if pid != me {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // `ip netns del` can fail while the killed processes still hold the
        // namespace: retried until they are gone, for a bounded time.
        let mut last_err = None;
        let deleted = wait_until(Duration::from_secs(1), || {
            let mut c = Command::new("ip");
            c.args(["netns", "del", &self.name]);
            match run_command(&mut c, EXEC_TIMEOUT) {
                Ok(out) if out.status.success() => return true,
                Ok(out) => last_err = Some(String::from_utf8_lossy(&out.stderr).into_owned()),
                Err(e) => last_err = Some(format!("{e:#}")),
            }
            !self.path().exists()
        });
        if deleted {
            return;
        }
        eprintln!(
            "balancer-tests: could not delete namespace {}: {}",
            self.name,
            last_err.unwrap_or_default()
        );
    }
}

/// A background process (usually started with [`Netns::spawn`]).
///
/// It runs in its own process group; stdout and stderr go to one temporary log file that
/// [`Process::output_so_far`] reads. Drop kills the whole group with SIGKILL, reaps the
/// process, prints the tail of the log to stderr if the thread is panicking (so a failing
/// test shows what its programs said) and removes the log.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` (e.g. from [`Netns::command`]) as a background process.
    pub fn start(cmd: Command) -> Result<Process> {
        let what = format!("{cmd:?}");
        Process::start_named(cmd, what)
    }

    fn start_named(mut cmd: Command, what: String) -> Result<Process> {
        let log = temp_file_path(what.split_whitespace().nth(2).unwrap_or("proc"));
        let out = File::create(&log).with_context(|| format!("creating log {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&log);
                return Err(e).with_context(|| format!("starting {what}"));
            }
        };
        Ok(Process {
            child,
            what,
            log,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What was started (for messages).
    pub fn description(&self) -> &str {
        &self.what
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output_so_far(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the log file holding stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited (without waiting).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let mut res = Ok(());
        wait_until(timeout, || match self.try_status() {
            Ok(s) => s.is_some(),
            Err(e) => {
                res = Err(e);
                true
            }
        });
        res?;
        Ok(self.status)
    }

    /// Sends `sig` to the process (not its group), e.g. SIGHUP or SIGTERM.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.status.is_some() {
            bail!("{} has already exited", self.what);
        }
        kill(Pid::from_raw(self.child.id() as i32), sig)
            .with_context(|| format!("kill -{sig} {}", self.child.id()))
    }

    /// Kills the process group (SIGKILL) and reaps the process.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Kill the group even if the leader has exited: children may remain.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- output of {} (exit: {:?}) ----\n{}\n---- end ----",
                self.what,
                self.status,
                tail(&self.output_so_far(), 8192)
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub(crate) fn sysctl_path(key: &str) -> PathBuf {
    if key.contains('/') {
        Path::new("/proc/sys").join(key.trim_start_matches('/'))
    } else {
        Path::new("/proc/sys").join(key.replace('.', "/"))
    }
}

pub(crate) fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
        bail!("bad interface name {name:?} (1..=15 characters, no '/', ':' or spaces)");
    }
    Ok(())
}

pub(crate) fn addr_add_line(dev: &str, cidr: &str) -> String {
    if cidr.contains(':') {
        format!("addr add {cidr} dev {dev} nodad")
    } else {
        format!("addr add {cidr} dev {dev}")
    }
}

pub(crate) fn veth_line(name: &str, peer: &Netns, peer_name: &str) -> String {
    format!(
        "link add {name} type veth peer name {peer_name} netns {}",
        peer.name()
    )
}

pub(crate) fn bridge_line(name: &str) -> String {
    format!("link add {name} type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
}

fn check_output(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let status = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{}", out.status),
    };
    Err(anyhow!(
        "`{what}` failed ({status})\nstderr: {}\nstdout: {}",
        tail(String::from_utf8_lossy(&out.stderr).trim_end(), 4096),
        tail(String::from_utf8_lossy(&out.stdout).trim_end(), 4096)
    ))
}

/// Runs `cmd` to completion (stdin null), killing its process group after `timeout`.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run_command_input(cmd, None, timeout)
}

fn run_command_input(
    cmd: &mut Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as i32;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Small scripts fit the pipe buffer; a failing write shows in the output anyway.
        let _ = stdin.write_all(&input);
    }
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(res) => {
            let _ = waiter.join();
            Ok(res?)
        }
        Err(_) => {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waiter.join();
            bail!("timed out after {timeout:?}")
        }
    }
}
