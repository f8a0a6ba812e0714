//! The health checker against real servers (need root):
//! `cargo test -p balancer-tests --test health`.
//!
//! Each test runs in a network namespace of its own where all of 203.0.113.0/24
//! is local (`local` route on `lo`), so servers can listen on any "backend"
//! address; the checker and the servers share one current-thread runtime on a
//! thread inside that namespace, as the daemon runs it.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
    time::Duration,
};

use balancer_tests::{Netns, TempDir, require_root, unique_prefix};
use balancer_user::{
    config::{Health, HealthKind},
    health::{AgentReport, AgentState, Event, HealthChecker, Initial, Target},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::mpsc::{UnboundedReceiver, unbounded_channel},
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

const MS: Duration = Duration::from_millis(1);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Runs `test` on a current-thread runtime inside a fresh namespace named
/// after `hint`; the namespace goes when the test ends, passed or not.
fn in_namespace<F, Fut>(hint: &str, setup: &[&str], test: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    if !require_root() {
        return;
    }
    let ns = Netns::new(&format!("{}-hc", unique_prefix(hint))).unwrap();
    let mut lines = vec!["route add local 203.0.113.0/24 dev lo"];
    lines.extend_from_slice(setup);
    ns.ip_batch(&lines).unwrap();
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Bounds every test, whatever it waits for.
        runtime
            .block_on(async { timeout(Duration::from_secs(60), test()).await })
            .expect("the test ran over 60 s");
    });
}

fn health(kind: HealthKind, interval_ms: u32, timeout_ms: u32, rise: u32, fall: u32) -> Health {
    Health {
        kind,
        interval_ms,
        timeout_ms,
        rise,
        fall,
        ..Health::default()
    }
}

fn target(service: &str, backend: &str, health: Health) -> Target {
    Target {
        service: service.to_owned(),
        backend: sa(backend),
        health,
    }
}

fn fresh(targets: Vec<Target>) -> Vec<(Target, Initial)> {
    targets.into_iter().map(|t| (t, None)).collect()
}

/// A verdict as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    service: String,
    backend: SocketAddr,
    healthy: bool,
    reason: String,
}

fn verdict(event: &Event) -> Option<Verdict> {
    match event {
        Event::Transition {
            service,
            backend,
            healthy,
            reason,
        } => Some(Verdict {
            service: service.clone(),
            backend: *backend,
            healthy: *healthy,
            reason: reason.clone(),
        }),
        _ => None,
    }
}

fn is_about(event: &Event, which: SocketAddr) -> bool {
    match event {
        Event::Transition { backend, .. }
        | Event::Checked { backend, .. }
        | Event::Agent { backend, .. } => *backend == which,
    }
}

struct Events(UnboundedReceiver<Event>);

impl Events {
    /// The first event that `pick` takes within `within`; events before it are dropped.
    async fn first<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + within;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.0.recv()).await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
        }
        None
    }

    /// The next transition of `backend`, or a panic after `within`.
    async fn transition(&mut self, backend: SocketAddr, within: Duration) -> Verdict {
        self.first(within, |e| verdict(e).filter(|v| v.backend == backend))
            .await
            .unwrap_or_else(|| panic!("no transition of {backend} within {within:?}"))
    }

    /// Every event of the next `window`.
    async fn during(&mut self, window: Duration) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + window;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.0.recv()).await {
            seen.push(event);
        }
        seen
    }

    /// Whatever is already queued.
    fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.0.try_recv().ok()).collect()
    }
}

fn checker() -> (HealthChecker, Events) {
    let (tx, rx) = unbounded_channel();
    (HealthChecker::new(tx), Events(rx))
}

/// Accepts and drops connections until aborted (which closes the port).
async fn tcp_listener(addr: &str) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            if listener.accept().await.is_err() {
                sleep(MS).await;
            }
        }
    })
}

/// Stops a server and lets the runtime drop its socket before going on.
async fn stop(server: JoinHandle<()>) {
    server.abort();
    // The result is the cancellation itself.
    assert!(server.await.unwrap_err().is_cancelled());
}

type Responder = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// Answers each request with what `respond(path)` says; keeps the last request.
async fn http_server(addr: &str, respond: Arc<Responder>) -> (JoinHandle<()>, Arc<Mutex<String>>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let last = Arc::new(Mutex::new(String::new()));
    let seen = Arc::clone(&last);
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                sleep(MS).await;
                continue;
            };
            let respond = Arc::clone(&respond);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                let read_head = async {
                    while request.len() < 8192 && !request.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                };
                if !matches!(timeout(Duration::from_secs(1), read_head).await, Ok(true)) {
                    return;
                }
                let text = String::from_utf8_lossy(&request).into_owned();
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                *seen.lock().unwrap() = text;
                let (status, body) = respond(&path);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                // A checker that has its verdict may close before reading it all.
                if conn.write_all(reply.as_bytes()).await.is_ok() {
                    conn.shutdown().await.ok();
                }
            });
        }
    });
    (server, last)
}

/// Sends every datagram back; keeps the last one.
async fn udp_echo(addr: &str) -> (JoinHandle<()>, Arc<Mutex<Vec<u8>>>) {
    let socket = UdpSocket::bind(addr).await.unwrap();
    let last = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&last);
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                *seen.lock().unwrap() = buf[..n].to_vec();
                socket.send_to(&buf[..n], peer).await.ok();
            }
        }
    });
    (server, last)
}

/// An agent that writes the current `line` to whoever connects.
async fn agent_server(addr: &str, line: Arc<Mutex<String>>) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                sleep(MS).await;
                continue;
            };
            let text = line.lock().unwrap().clone();
            tokio::spawn(async move {
                if conn.write_all(text.as_bytes()).await.is_ok() {
                    conn.shutdown().await.ok();
                }
            });
        }
    })
}

#[test]
fn tcp_goes_up_then_down_when_the_listener_closes() {
    in_namespace("hctcp", &[], || async {
        let up = sa("203.0.113.11:8080");
        let known = sa("203.0.113.11:8081");
        let (interval, fall) = (200, 3);
        let listener = tcp_listener("203.0.113.11:8080").await;
        let (mut checker, mut events) = checker();
        let check = health(HealthKind::Tcp, interval, 100, 2, fall);
        checker.set_targets(vec![
            (target("app", "203.0.113.11:8080", check.clone()), None),
            // Closed, but known to have been up: it takes `fall` failures.
            (
                target("app", "203.0.113.11:8081", check.clone()),
                Some(true),
            ),
        ]);
        let started = Instant::now();
        assert_eq!(
            events.transition(up, 500 * MS).await,
            Verdict {
                service: "app".to_owned(),
                backend: up,
                healthy: true,
                reason: "1 check passed".to_owned(),
            }
        );
        let down = events.transition(known, 2000 * MS).await;
        let took = started.elapsed();
        assert!(!down.healthy);
        assert_eq!(
            down.reason,
            "connect to 203.0.113.11:8081: connection refused"
        );
        // The first probe and two more periods of at least 0.9 intervals.
        assert!(took >= 2 * interval * MS * 9 / 10, "down after {took:?}");
        assert!(
            checker
                .states()
                .contains(&("app".to_owned(), up, Some(true)))
        );

        stop(listener).await;
        let closed = Instant::now();
        let down = events.transition(up, 2000 * MS).await;
        let took = closed.elapsed();
        assert!(!down.healthy);
        assert_eq!(
            down.reason,
            "connect to 203.0.113.11:8080: connection refused"
        );
        let bound = interval * fall + interval;
        assert!(took <= bound * MS, "down after {took:?}, bound {bound} ms");
        eprintln!("down {took:?} after the listener closed (bound {bound} ms)");
        assert!(
            checker
                .states()
                .contains(&("app".to_owned(), up, Some(false)))
        );

        let _listener = tcp_listener("203.0.113.11:8080").await;
        let back = events.transition(up, 2000 * MS).await;
        assert!(back.healthy);
        assert_eq!(back.reason, "2 checks passed");
        let checked = events
            .first(1000 * MS, |e| match e {
                Event::Checked {
                    backend,
                    ok,
                    duration,
                    ..
                } if *backend == up => Some((*ok, *duration)),
                _ => None,
            })
            .await;
        let (ok, duration) = checked.expect("no Checked event");
        assert!(ok);
        assert!(duration < 100 * MS, "{duration:?}");
    });
}

#[test]
fn http_status_and_body_decide() {
    in_namespace("hchttp", &[], || async {
        let status = Arc::new(AtomicU16::new(200));
        let answer = Arc::clone(&status);
        let respond: Arc<Responder> = Arc::new(move |_path: &str| {
            (answer.load(Ordering::Relaxed), "role: primary\n".to_owned())
        });
        let (_server, last_request) = http_server("203.0.113.12:8008", respond).await;

        let checks = [
            ("plain", "203.0.113.12:5432", None, None),
            ("wants-503", "203.0.113.12:5433", Some(503), None),
            ("body", "203.0.113.12:5434", None, Some("primary")),
            ("other-body", "203.0.113.12:5435", None, Some("replica")),
        ];
        let targets = checks
            .iter()
            .map(|(service, backend, expect_status, expect_body)| {
                let mut check = health(HealthKind::Http, 200, 150, 1, 1);
                check.port = Some(8008);
                check.path = Some("/health".to_owned());
                check.expect_status = *expect_status;
                check.expect_body = expect_body.map(str::to_owned);
                target(service, backend, check)
            })
            .collect();
        let (mut checker, mut events) = checker();
        checker.set_targets(fresh(targets));

        let mut first = BTreeMap::new();
        while first.len() < checks.len() {
            let v = events
                .first(1000 * MS, verdict)
                .await
                .expect("not every target got a verdict");
            first.insert(v.service.clone(), (v.healthy, v.reason));
        }
        assert_eq!(first["plain"], (true, "1 check passed".to_owned()));
        assert_eq!(
            first["wants-503"],
            (false, "HTTP 200 from /health (expected 503)".to_owned())
        );
        assert_eq!(first["body"], (true, "1 check passed".to_owned()));
        assert_eq!(
            first["other-body"],
            (
                false,
                "HTTP 200 from /health: body does not contain \"replica\"".to_owned()
            )
        );
        let request = last_request.lock().unwrap().clone();
        assert!(
            request.starts_with("GET /health HTTP/1.1\r\n"),
            "{request:?}"
        );
        assert!(
            request.contains("\r\nHost: 203.0.113.12:8008\r\n"),
            "{request:?}"
        );
        assert!(request.contains("\r\nUser-Agent: balancer-health\r\n"));
        assert!(request.contains("\r\nConnection: close\r\n"));

        status.store(503, Ordering::Relaxed);
        let mut flipped = BTreeMap::new();
        while flipped.len() < 3 {
            let v = events
                .first(1000 * MS, verdict)
                .await
                .expect("the switch to 503 was not seen");
            flipped.insert(v.service.clone(), (v.healthy, v.reason));
        }
        let down = (false, "HTTP 503 from /health (expected 200)".to_owned());
        assert_eq!(flipped["plain"], down);
        assert_eq!(flipped["body"], down);
        assert_eq!(flipped["wants-503"], (true, "1 check passed".to_owned()));
        // It was down for its body and is still down for its status.
        assert!(!flipped.contains_key("other-body"));
    });
}

#[test]
fn patroni_style_role_switch_flips_transitions() {
    in_namespace("hcpat", &[], || async {
        let nodes = ["203.0.113.41", "203.0.113.42", "203.0.113.43"];
        let primary = Arc::new(AtomicUsize::new(0));
        let mut servers = Vec::new();
        for (i, ip) in nodes.iter().enumerate() {
            let primary = Arc::clone(&primary);
            let respond: Arc<Responder> = Arc::new(move |path: &str| {
                let is_primary = primary.load(Ordering::Relaxed) == i;
                let serves = match path {
                    "/primary" => is_primary,
                    "/replica" => !is_primary,
                    _ => false,
                };
                let role = if is_primary { "master" } else { "replica" };
                let status = if serves { 200 } else { 503 };
                (status, format!("{{\"role\": \"{role}\"}}"))
            });
            servers.push(http_server(&format!("{ip}:8008"), respond).await);
        }
        let role_check = |path: &str| {
            let mut check = health(HealthKind::Http, 200, 150, 1, 2);
            check.port = Some(8008);
            check.path = Some(path.to_owned());
            check.expect_status = Some(200);
            check
        };
        let mut targets = Vec::new();
        for ip in nodes {
            targets.push(target(
                "db-rw",
                &format!("{ip}:5432"),
                role_check("/primary"),
            ));
            targets.push(target(
                "db-ro",
                &format!("{ip}:5432"),
                role_check("/replica"),
            ));
        }
        let (mut checker, mut events) = checker();
        checker.set_targets(fresh(targets));

        // (service, node index) -> healthy
        let mut first = BTreeMap::new();
        while first.len() < 6 {
            let v = events
                .first(1000 * MS, verdict)
                .await
                .expect("not every node got a verdict");
            let node = nodes
                .iter()
                .position(|ip| v.backend.ip().to_string() == *ip)
                .unwrap();
            if !v.healthy {
                let path = if v.service == "db-rw" {
                    "/primary"
                } else {
                    "/replica"
                };
                assert_eq!(v.reason, format!("HTTP 503 from {path} (expected 200)"));
            }
            first.insert((v.service, node), v.healthy);
        }
        for node in 0..3 {
            assert_eq!(first[&("db-rw".to_owned(), node)], node == 0);
            assert_eq!(first[&("db-ro".to_owned(), node)], node != 0);
        }

        // Failover: node 1 becomes the primary.
        primary.store(1, Ordering::Relaxed);
        let switched = Instant::now();
        let mut flips = BTreeMap::new();
        while flips.len() < 4 {
            let v = events
                .first(2000 * MS, verdict)
                .await
                .expect("the failover was not followed");
            let node = nodes
                .iter()
                .position(|ip| v.backend.ip().to_string() == *ip)
                .unwrap();
            assert!(
                flips.insert((v.service, node), v.healthy).is_none(),
                "a node flipped twice"
            );
        }
        let took = switched.elapsed();
        let expected: BTreeMap<(String, usize), bool> = [
            (("db-ro".to_owned(), 0), true),
            (("db-ro".to_owned(), 1), false),
            (("db-rw".to_owned(), 0), false),
            (("db-rw".to_owned(), 1), true),
        ]
        .into();
        assert_eq!(flips, expected);
        // fall = 2 at 200 ms: two probes, well within a second.
        assert!(took < 1000 * MS, "failover followed after {took:?}");
        let later: Vec<Verdict> = events
            .during(500 * MS)
            .await
            .iter()
            .filter_map(verdict)
            .collect();
        assert!(later.is_empty(), "unexpected transitions: {later:?}");
    });
}

#[test]
fn udp_echo_is_up_and_a_closed_port_is_down_at_once() {
    in_namespace("hcudp", &[], || async {
        let (_echo, last_payload) = udp_echo("203.0.113.13:5353").await;
        let echo = sa("203.0.113.13:5353");
        let closed = sa("203.0.113.13:5354");
        let custom = sa("203.0.113.13:5355");
        let (_echo2, custom_payload) = udp_echo("203.0.113.13:5355").await;
        let check = health(HealthKind::Udp, 1000, 800, 1, 1);
        let mut with_payload = check.clone();
        with_payload.payload = Some("ping".to_owned());
        let (mut checker, mut events) = checker();
        checker.set_targets(fresh(vec![
            target("dns", "203.0.113.13:5353", check.clone()),
            target("dns", "203.0.113.13:5354", check),
            target("dns", "203.0.113.13:5355", with_payload),
        ]));
        let started = Instant::now();
        let mut seen = HashMap::new();
        while seen.len() < 3 {
            let v = events
                .first(1000 * MS, verdict)
                .await
                .expect("not every UDP target got a verdict");
            seen.insert(v.backend, (v.healthy, v.reason, started.elapsed()));
        }
        assert!(seen[&echo].0);
        assert!(seen[&custom].0);
        let (healthy, reason, took) = &seen[&closed];
        assert!(!healthy);
        assert_eq!(reason, "UDP 203.0.113.13:5354: port unreachable");
        // The ICMP error decides, not the 800 ms timeout.
        assert!(*took < 400 * MS, "port unreachable seen after {took:?}");
        assert_eq!(*last_payload.lock().unwrap(), b"balancer-health\n");
        assert_eq!(*custom_payload.lock().unwrap(), b"ping");
    });
}

#[test]
fn exec_exit_status_environment_and_timeout() {
    let dir = TempDir::new("hcexec").unwrap();
    let pid_file = dir.path().join("pid");
    let pid_path = pid_file.to_str().unwrap().to_owned();
    in_namespace("hcexec", &[], move || async move {
        let exec = |command: &[&str], timeout_ms| {
            let mut check = health(HealthKind::Exec, 1000, timeout_ms, 1, 1);
            check.command = Some(command.iter().map(|s| s.to_string()).collect());
            check
        };
        let env_test = "test \"$BALANCER_SERVICE\" = pg \
            -a \"$BALANCER_BACKEND\" = 203.0.113.14:5434 \
            -a \"$BALANCER_BACKEND_IP\" = 203.0.113.14 \
            -a \"$BALANCER_BACKEND_PORT\" = 5434";
        let sleeper = format!("echo $$ > {pid_path}; exec sleep 5");
        let (mut checker, mut events) = checker();
        checker.set_targets(fresh(vec![
            target(
                "pg",
                "203.0.113.14:5432",
                exec(&["sh", "-c", "exit 0"], 500),
            ),
            target(
                "pg",
                "203.0.113.14:5433",
                exec(&["sh", "-c", "echo 'not the primary' >&2; exit 1"], 500),
            ),
            target(
                "pg",
                "203.0.113.14:5434",
                exec(&["sh", "-c", env_test], 500),
            ),
            target(
                "pg",
                "203.0.113.14:5435",
                exec(&["sh", "-c", &sleeper], 300),
            ),
            target(
                "pg",
                "203.0.113.14:5436",
                exec(&["/nonexistent/check"], 500),
            ),
        ]));
        let started = Instant::now();
        let mut seen = HashMap::new();
        while seen.len() < 5 {
            let v = events
                .first(2000 * MS, verdict)
                .await
                .expect("not every exec target got a verdict");
            seen.insert(v.backend.port(), (v.healthy, v.reason, started.elapsed()));
        }
        assert!(seen[&5432].0, "{:?}", seen[&5432]);
        assert_eq!(
            (seen[&5433].0, seen[&5433].1.as_str()),
            (false, "sh exited with status 1: not the primary")
        );
        assert!(seen[&5434].0, "environment: {:?}", seen[&5434]);
        let (healthy, reason, took) = &seen[&5435];
        assert!(!healthy);
        assert_eq!(reason, "timed out after 300 ms");
        assert!(*took < 1000 * MS, "timed out after {took:?}");
        assert_eq!(
            (seen[&5436].0, seen[&5436].1.as_str()),
            (
                false,
                "cannot run /nonexistent/check: no such file or directory"
            )
        );

        // The timed-out command was killed, not left to sleep.
        let pid: i32 = std::fs::read_to_string(&pid_path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + 2000 * MS;
        while !dead(pid) && Instant::now() < deadline {
            sleep(10 * MS).await;
        }
        assert!(
            dead(pid),
            "check command {pid} still runs after its timeout"
        );
    });
}

/// Whether `pid` is gone or a zombie.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn agent_reports_load_drain_and_up_once_each() {
    in_namespace("hcagt", &[], || async {
        let line = Arc::new(Mutex::new("75%\n".to_owned()));
        let _main = tcp_listener("203.0.113.15:8080").await;
        let _agent = agent_server("203.0.113.15:9777", Arc::clone(&line)).await;
        let _no_agent_main = tcp_listener("203.0.113.16:8080").await;
        let with_agent = sa("203.0.113.15:8080");
        let agentless = sa("203.0.113.16:8080");

        let mut check = health(HealthKind::Tcp, 100, 80, 1, 1);
        check.agent_port = Some(9777);
        let (mut checker, mut events) = checker();
        checker.set_targets(fresh(vec![
            target("api", "203.0.113.15:8080", check.clone()),
            // Nothing listens on its agent port.
            target("api", "203.0.113.16:8080", check),
        ]));

        let agent_report = |e: &Event| match e {
            Event::Agent {
                backend, report, ..
            } if *backend == with_agent => Some(report.clone()),
            _ => None,
        };
        let steps = [
            (
                None,
                AgentReport {
                    load_pct: Some(75),
                    state: None,
                },
            ),
            (
                Some("drain\n"),
                AgentReport {
                    load_pct: None,
                    state: Some(AgentState::Drain),
                },
            ),
            (
                Some("UP ready 10%\r\n"),
                AgentReport {
                    load_pct: Some(10),
                    state: Some(AgentState::Up),
                },
            ),
        ];
        let mut everything = Vec::new();
        for (next_line, want) in steps {
            if let Some(text) = next_line {
                *line.lock().unwrap() = text.to_owned();
            }
            let got = events
                .first(1000 * MS, |e| {
                    everything.push(e.clone());
                    agent_report(e)
                })
                .await;
            assert_eq!(got, Some(want));
            // At ~10 probes a second, a repeated report would show here.
            let repeats: Vec<Event> = events.during(400 * MS).await;
            let again: Vec<AgentReport> = repeats.iter().filter_map(agent_report).collect();
            assert!(again.is_empty(), "sent again without a change: {again:?}");
            everything.extend(repeats);
        }
        assert!(
            everything.iter().all(|e| !matches!(
                e,
                Event::Agent { backend, .. } if *backend == agentless
            )),
            "an unreachable agent reported"
        );
        let transitions: Vec<Verdict> = everything.iter().filter_map(verdict).collect();
        assert!(
            transitions.iter().all(|v| v.healthy),
            "the agent changed health: {transitions:?}"
        );
        assert_eq!(
            checker.states(),
            [
                ("api".to_owned(), with_agent, Some(true)),
                ("api".to_owned(), agentless, Some(true)),
            ]
        );
    });
}

#[test]
fn set_targets_reconciles_without_disturbing_unchanged_checks() {
    in_namespace("hcrec", &[], || async {
        let _steady_server = tcp_listener("203.0.113.17:8080").await;
        let _changed_server = tcp_listener("203.0.113.17:8082").await;
        let steady = sa("203.0.113.17:8080");
        let removed = sa("203.0.113.17:8081");
        let changed = sa("203.0.113.17:8082");
        let steady_check = health(HealthKind::Tcp, 1000, 200, 1, 1);
        let fast = health(HealthKind::Tcp, 100, 80, 1, 1);
        let (mut checker, mut events) = checker();
        let mut targets = vec![
            target("app", "203.0.113.17:8080", steady_check),
            target("app", "203.0.113.17:8081", fast.clone()),
            target("app", "203.0.113.17:8082", fast.clone()),
        ];
        checker.set_targets(fresh(targets.clone()));
        let mut first = HashMap::new();
        while first.len() < 3 {
            let v = events
                .first(1000 * MS, verdict)
                .await
                .expect("not every target got a verdict");
            first.insert(v.backend, v.healthy);
        }
        assert!(first[&steady]);
        assert!(!first[&removed]);
        assert!(first[&changed]);

        // Right after a probe of the steady target, reconcile: remove one,
        // change another's check, keep the steady one as it is.
        events
            .first(1500 * MS, |e| {
                matches!(e, Event::Checked { backend, .. } if *backend == steady).then_some(())
            })
            .await
            .expect("the steady target is not probed");
        let probed = Instant::now();
        targets.remove(1);
        let mut slower = fast.clone();
        slower.interval_ms = 150;
        targets[1].health = slower;
        events.drain();
        checker.set_targets(fresh(targets));
        assert_eq!(
            checker.states(),
            [
                ("app".to_owned(), steady, Some(true)),
                ("app".to_owned(), changed, Some(true)),
            ]
        );

        let after = events.during(700 * MS).await;
        assert!(
            after.iter().all(|e| !is_about(e, removed)),
            "the removed target still reports: {after:?}"
        );
        let changed_checks = after
            .iter()
            .filter(|e| matches!(e, Event::Checked { backend, .. } if *backend == changed))
            .count();
        assert!(changed_checks >= 3, "the changed target is not checked");
        let transitions: Vec<Verdict> = after.iter().filter_map(verdict).collect();
        assert!(
            transitions.is_empty(),
            "a kept state was announced again: {transitions:?}"
        );
        // A restarted check would have probed within its first 100 ms; the
        // untouched one keeps its period, 0.9 s at the least.
        assert!(
            after
                .iter()
                .all(|e| !matches!(e, Event::Checked { backend, .. } if *backend == steady)),
            "the unchanged target was restarted"
        );
        events
            .first(1000 * MS, |e| {
                matches!(e, Event::Checked { backend, .. } if *backend == steady).then_some(())
            })
            .await
            .expect("the unchanged target stopped");
        let gap = probed.elapsed();
        assert!(gap >= 880 * MS, "next probe after {gap:?}");

        // Dropping the checker stops every task: the channel closes once the
        // tasks and their senders are gone.
        drop(checker);
        let closed = timeout(1000 * MS, async {
            while events.0.recv().await.is_some() {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "checks still run after the checker was dropped"
        );
    });
}

#[test]
fn a_thousand_targets_reach_a_verdict_within_two_intervals() {
    // 192.0.2.200 is "on" a veth whose peer has no such address: with a static
    // neighbour, SYNs leave and nothing ever answers, so those probes time out.
    let black_hole = [
        "link add hcb0 type veth peer name hcb1",
        "link set hcb0 up",
        "link set hcb1 up",
        "addr add 192.0.2.1/24 dev hcb0",
        "neigh add 192.0.2.200 lladdr 02:00:00:00:00:c8 dev hcb0 nud permanent",
    ];
    in_namespace("hcthou", &black_hole, || async {
        const FAST: usize = 900;
        const SLOW: usize = 100;
        let (interval, timeout_ms) = (1000u32, 500u32);
        let mut listeners = Vec::new();
        for port in 8080..8084 {
            listeners.push(tcp_listener(&format!("0.0.0.0:{port}")).await);
        }
        let check = health(HealthKind::Tcp, interval, timeout_ms, 2, 2);
        let mut targets = Vec::new();
        for i in 0..FAST {
            let backend = format!("203.0.113.{}:{}", 1 + i / 4, 8080 + i % 4);
            targets.push(target(&format!("fast{}", i % 10), &backend, check.clone()));
        }
        for i in 0..SLOW {
            let backend = format!("192.0.2.200:{}", 9000 + i);
            targets.push(target("slow", &backend, check.clone()));
        }
        let (mut checker, mut events) = checker();
        let started = Instant::now();
        checker.set_targets(fresh(targets));

        let mut verdicts: HashMap<(String, SocketAddr), (bool, String, Duration)> = HashMap::new();
        let deadline = 2 * interval * MS;
        while verdicts.len() < FAST + SLOW {
            let left = deadline.saturating_sub(started.elapsed());
            let Some(v) = events.first(left, verdict).await else {
                break;
            };
            verdicts.insert(
                (v.service, v.backend),
                (v.healthy, v.reason, started.elapsed()),
            );
        }
        assert_eq!(
            verdicts.len(),
            FAST + SLOW,
            "only {} of {} targets got a verdict within {deadline:?}",
            verdicts.len(),
            FAST + SLOW
        );
        let (fast, slow): (Vec<_>, Vec<_>) = verdicts
            .iter()
            .partition(|((service, _), _)| service != "slow");
        assert!(fast.iter().all(|(_, (healthy, _, _))| *healthy));
        assert!(
            slow.iter().all(|(_, (healthy, reason, _))| {
                !healthy && reason == "timed out after 500 ms"
            })
        );
        let last_fast = fast.iter().map(|(_, (_, _, at))| *at).max().unwrap();
        let first_slow = slow.iter().map(|(_, (_, _, at))| *at).min().unwrap();
        let last_slow = slow.iter().map(|(_, (_, _, at))| *at).max().unwrap();
        eprintln!(
            "{FAST} up by {last_fast:?}; {SLOW} timed out between {first_slow:?} and {last_slow:?}"
        );
        // The fast verdicts all came before any probe could time out.
        assert!(
            last_fast < timeout_ms * MS,
            "last fast verdict at {last_fast:?}"
        );
        assert!(first_slow >= timeout_ms * MS);
        let unknown = checker
            .states()
            .iter()
            .filter(|(_, _, state)| state.is_none())
            .count();
        assert_eq!(unknown, 0);
    });
}
