//! The daemon as packaging/balancer.service runs it, without systemd: the test
//! owns the `NOTIFY_SOCKET` (a datagram socket, as systemd's is), sets
//! `WATCHDOG_USEC`, makes standard error a journal stream (`JOURNAL_STREAM`
//! naming it), and runs the daemon under `setpriv` with exactly the unit's
//! capability bounding set. It checks what a Type=notify service owes its
//! manager: READY=1 only once the program is attached and forwarding,
//! WATCHDOG=1 at the interval, RELOADING=1/READY=1 around a reload, a refused
//! SIGHUP that leaves the daemon running on its configuration, STOPPING=1;
//! and the restart signal (RestartKillSignal=SIGUSR2) that keeps connections.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{
    BALANCER_START_TIMEOUT, Balancer, Launch, Signal, TempDir, Topology, addrs, require_program,
    require_root, tcp_connect, tcp_request, tcp_server, wait_until,
};
use serde_json::Value;

const VIP: &str = "198.51.100.10";
const T: Duration = Duration::from_secs(5);
/// The watchdog interval the test hands the daemon (systemd's WATCHDOG_USEC).
const WATCHDOG: Duration = Duration::from_secs(1);

fn vip() -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), 80)
}

fn backend(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addrs::backend(i)), 8080)
}

/// A TCP service on port 80 to `backends` (1-based) at port 8080, with
/// interfaces `interfaces`.
fn config(backends: &[usize], interfaces: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|&i| format!("{{ address = \"{}\" }}", backend(i)))
        .collect();
    format!(
        r#"
[node]
name = "systemd-test"
interfaces = {interfaces}
snat_addresses = ["203.0.113.9"]

[control]
metrics = "off"

[[service]]
name = "web"
vip = "{VIP}"
port = 80
protocol = "tcp"
health = {{ kind = "none" }}
backends = [{}]
"#,
        list.join(", ")
    )
}

const INTERFACES: &str = r#"["front", "back"]"#;

/// The unit's `CapabilityBoundingSet=` as setpriv's `--bounding-set` wants it.
fn unit_bounding_set() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/balancer.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let caps: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("--bounding-set=-all,{}", caps.join(","))
}

/// Runs the daemon as the unit does: standard error a journal stream and
/// only the unit's capabilities (root, so the bounding set is what it has).
fn as_the_unit_runs_it(bounding_set: &str) -> [&str; 9] {
    [
        "sh",
        "-c",
        "export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec \"$@\"",
        "sh",
        "setpriv",
        bounding_set,
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--",
    ]
}

/// The test's end of `NOTIFY_SOCKET`: every line of every datagram, with the
/// time it arrived (read on a thread of its own, so that what the test does
/// meanwhile does not bunch the arrival times).
struct Notifications {
    path: PathBuf,
    arrived: Arc<Mutex<Vec<(Instant, String)>>>,
    seen: Vec<(Instant, String)>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl Notifications {
    fn new() -> Self {
        let dir = TempDir::new("notify").unwrap();
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (arrived, stop) = (arrived.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match socket.recv(&mut buf) {
                        Ok(n) => {
                            let now = Instant::now();
                            let mut arrived = arrived.lock().unwrap();
                            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                                arrived.push((now, line.to_string()));
                            }
                        }
                        // Told to stop and nothing more queued.
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            })
        };
        Notifications {
            path,
            arrived,
            seen: Vec::new(),
            stop,
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Takes in what has arrived.
    fn drain(&mut self) {
        self.seen.append(&mut self.arrived.lock().unwrap());
    }

    /// Waits until `count` lines equal to `line` have arrived after the
    /// first `from` lines; returns the index of the last of them.
    fn wait_for(&mut self, from: usize, line: &str, count: usize, timeout: Duration) -> usize {
        let mut found = Vec::new();
        let seen = wait_until(timeout, || {
            self.drain();
            found = (from..self.seen.len())
                .filter(|&i| self.seen[i].1 == line)
                .collect();
            found.len() >= count
        });
        assert!(
            seen,
            "{count} x {line:?} not notified within {timeout:?}; got {:?}",
            self.lines()
        );
        found[count - 1]
    }

    fn lines(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, l)| l.as_str()).collect()
    }

    /// The STATUS= line sent with the notification at `i`.
    fn status_at(&self, i: usize) -> &str {
        let at = self.seen[i].0;
        self.seen
            .iter()
            .filter(|(t, _)| *t == at)
            .find_map(|(_, l)| l.strip_prefix("STATUS="))
            .unwrap_or_default()
    }

    /// Times of the WATCHDOG=1 pings after the first `from` lines.
    fn pings(&self, from: usize) -> Vec<Instant> {
        self.seen[from..]
            .iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Notifications {
    /// Stops reading once everything sent so far has been read, and takes it in.
    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the notification reader");
        }
        self.drain();
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn xdp_attached(topo: &Topology, interface: &str) -> bool {
    let out = topo
        .lb()
        .ip(&["-j", "-d", "link", "show", "dev", interface])
        .unwrap();
    let links: Vec<Value> = serde_json::from_str(&out).unwrap();
    links.iter().any(|l| l.get("xdp").is_some())
}

fn assert_pings_at_interval(notify: &Notifications, from: usize) {
    let pings = notify.pings(from);
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|&g| g < WATCHDOG),
        "WATCHDOG=1 must come within WATCHDOG_USEC ({WATCHDOG:?}) of the last: gaps {gaps:?}"
    );
}

#[test]
fn notifications_follow_the_daemon_as_systemd_runs_it() {
    if !require_root() || !require_program("setpriv") {
        return;
    }
    let topo = Topology::balanced("sdnotify", 2).unwrap();
    let _servers: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i)).unwrap())
        .collect();
    let mut notify = Notifications::new();
    let watchdog_usec = WATCHDOG.as_micros().to_string();
    let bounding_set = unit_bounding_set();
    let mut lb = Balancer::launch(
        topo.lb(),
        &config(&[1], INTERFACES),
        Launch {
            env: &[
                ("NOTIFY_SOCKET", notify.path()),
                ("WATCHDOG_USEC", &watchdog_usec),
            ],
            wrapper: &as_the_unit_runs_it(&bounding_set),
            ..Launch::default()
        },
    )
    .unwrap();

    // READY=1 means ready: at that moment the program is attached to every
    // interface and a connection to the VIP is forwarded at the first try.
    let ready = notify.wait_for(0, "READY=1", 1, BALANCER_START_TIMEOUT);
    assert!(xdp_attached(&topo, "front") && xdp_attached(&topo, "back"));
    assert_eq!(
        tcp_request(topo.client(), vip(), "ready", T).unwrap(),
        "be1 ready"
    );
    assert_eq!(
        notify.status_at(ready),
        "running: 1 services, 1 backends",
        "{:?}",
        notify.lines()
    );
    assert!(
        !notify.lines()[..ready].contains(&"WATCHDOG=1"),
        "pings start with the loop, after READY=1: {:?}",
        notify.lines()
    );

    // The watchdog: pinged from the daemon loop at half the interval.
    notify.wait_for(ready, "WATCHDOG=1", 5, 10 * WATCHDOG);
    assert_pings_at_interval(&notify, ready);

    // A broken file on SIGHUP: refused, the daemon keeps running on the
    // configuration it has, and tells systemd it is ready again.
    std::fs::write(lb.config_path(), "[node\nname = ").unwrap();
    let mark = notify.seen.len();
    lb.signal(Signal::SIGHUP).unwrap();
    let reloading = notify.wait_for(mark, "RELOADING=1", 1, T);
    let ready_again = notify.wait_for(reloading, "READY=1", 1, T);
    assert!(
        notify.status_at(ready_again).contains("reload refused"),
        "{:?}",
        notify.lines()
    );
    assert!(lb.process().is_running(), "{}", lb.output_so_far());
    assert_eq!(
        tcp_request(topo.client(), vip(), "kept", T).unwrap(),
        "be1 kept"
    );
    // What ExecReload= runs: exit status 2, so `systemctl reload` fails.
    let out = lb.cli(&["reload"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    notify.wait_for(ready_again, "WATCHDOG=1", 2, 5 * WATCHDOG);
    assert_pings_at_interval(&notify, ready);

    // A good file: accepted, and new connections go to the new backend.
    lb.home().write_config(&config(&[2], INTERFACES)).unwrap();
    let mark = notify.seen.len();
    lb.signal(Signal::SIGHUP).unwrap();
    let reloading = notify.wait_for(mark, "RELOADING=1", 1, T);
    let ready_again = notify.wait_for(reloading, "READY=1", 1, T);
    assert!(
        notify
            .status_at(ready_again)
            .starts_with("configuration generation 2"),
        "{:?}",
        notify.lines()
    );
    assert_eq!(
        tcp_request(topo.client(), vip(), "new", T).unwrap(),
        "be2 new"
    );

    // SIGTERM (systemctl stop): STOPPING=1, a clean exit, the program gone.
    let mark = notify.seen.len();
    let log = lb.stop().unwrap();
    notify.wait_for(mark, "STOPPING=1", 1, T);
    assert!(!xdp_attached(&topo, "front") && !xdp_attached(&topo, "back"));

    // Standard error was a journal stream: every record is one line, a
    // syslog priority and then the event as JSON with its fields.
    let records: Vec<(u8, Value)> = log
        .lines()
        .map(|line| {
            let (priority, json) = line
                .strip_prefix('<')
                .and_then(|l| l.split_once('>'))
                .unwrap_or_else(|| panic!("no <priority> prefix: {line:?}"));
            let json: Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            (priority.parse().unwrap(), json)
        })
        .collect();
    let running = records
        .iter()
        .find(|(_, r)| r["message"] == "balancer running")
        .expect("the running record");
    assert_eq!(running.0, 6);
    assert_eq!(running.1["node"], "systemd-test");
    assert_eq!(running.1["services"], 1);
    let refused = records
        .iter()
        .find(|(_, r)| r["event"] == "reload_refused")
        .expect("the refused reload's event");
    assert_eq!(refused.0, 4, "a warning");
    assert_eq!(refused.1["by"], "SIGHUP");
    assert!(refused.1["problems"].as_str().unwrap().contains("line"));
}

#[test]
fn the_restart_signal_leaves_the_program_and_the_next_daemon_keeps_connections() {
    if !require_root() || !require_program("setpriv") {
        return;
    }
    let topo = Topology::balanced("sdrestart", 1).unwrap();
    let _server = tcp_server(topo.backend(1), backend(1)).unwrap();
    let bounding_set = unit_bounding_set();
    let mut lb = Balancer::launch(
        topo.lb(),
        &config(&[1], INTERFACES),
        Launch {
            wrapper: &as_the_unit_runs_it(&bounding_set),
            ..Launch::default()
        },
    )
    .unwrap();
    lb.wait_for_log(&["balancer running"], BALANCER_START_TIMEOUT)
        .unwrap();
    let mut held = tcp_connect(topo.client(), vip(), T).unwrap();
    assert_eq!(held.request("before").unwrap(), "be1 before");

    // What `systemctl restart` sends (RestartKillSignal=SIGUSR2).
    lb.signal(Signal::SIGUSR2).unwrap();
    let status = lb.process().wait_timeout(T).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        lb.output_so_far()
    );
    assert!(lb.output_so_far().contains("SIGUSR2"));
    assert!(xdp_attached(&topo, "front") && xdp_attached(&topo, "back"));
    assert_eq!(held.request("between").unwrap(), "be1 between");

    lb.restart(topo.lb(), &[]).unwrap();
    lb.wait_for_log(&["took over the pinned state"], T).unwrap();
    assert_eq!(held.request("after").unwrap(), "be1 after");
    assert_eq!(
        tcp_request(topo.client(), vip(), "new", T).unwrap(),
        "be1 new"
    );
    lb.stop().unwrap();
}

#[test]
fn a_daemon_that_cannot_attach_never_says_ready() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("sdfail", 1).unwrap();
    let mut notify = Notifications::new();
    let mut lb = Balancer::launch(
        topo.lb(),
        &config(&[1], r#"["front", "absent0"]"#),
        Launch {
            env: &[("NOTIFY_SOCKET", notify.path())],
            ..Launch::default()
        },
    )
    .unwrap();
    let status = lb.process().wait_timeout(BALANCER_START_TIMEOUT).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}\n{}",
        lb.output_so_far()
    );
    notify.finish();
    assert!(
        !notify.lines().contains(&"READY=1"),
        "{:?}\n{}",
        notify.lines(),
        lb.output_so_far()
    );
    assert!(!xdp_attached(&topo, "front"));
}
