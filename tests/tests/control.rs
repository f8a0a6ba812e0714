//! The control plane end to end: the real daemon in namespaces, health checks
//! against real servers, run-time changes through the CLI and SIGHUP, the
//! admin API, a kill -9 and restart on pinned state, and the event log.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{
    Balancer, Signal, TcpClient, Topology, addrs, agent_endpoint,
    config::{Config, Flows, Forwarding, Health, OnBackendDown, Service},
    poll_until, require_root, role_endpoint, tcp_connect, tcp_request, tcp_server, wait_until,
};
use serde_json::Value;

const VIP: &str = "198.51.100.10";
const T: Duration = Duration::from_secs(5);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

fn backend(i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addrs::backend(i)), port)
}

/// A TCP service on port 80 to `backends` (1-based) at port 8080.
fn config(backends: &[usize], health: Health) -> Config {
    Config::new("control-test")
        .snat(["203.0.113.9"])
        .metrics_off()
        .service(
            Service::tcp("web", VIP, 80)
                .health(health)
                .backends(backends.iter().map(|&i| backend(i, 8080))),
        )
}

/// Requests of a load loop between two steps of a test (at about 2 ms each).
const LOAD_STEP: usize = 50;

/// Waits until a load loop that counts its requests in `done` has made `n`
/// more (each request a new connection), so that a step runs under load.
fn wait_requests(done: &AtomicUsize, failures: &AtomicUsize, n: usize) {
    let from = done.load(Ordering::SeqCst);
    let ok = wait_until(Duration::from_secs(10), || {
        done.load(Ordering::SeqCst) >= from + n
    });
    assert!(
        ok,
        "the load loop made {} of {n} requests in 10 s ({} failed so far)",
        done.load(Ordering::SeqCst) - from,
        failures.load(Ordering::SeqCst)
    );
}

/// Which backend answered a request on a fresh connection.
fn who(topo: &Topology, line: &str) -> anyhow::Result<String> {
    let reply = tcp_request(topo.client(), vip(80), line, T)?;
    let (name, echoed) = reply
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("reply {reply:?}"))?;
    anyhow::ensure!(echoed == line, "payload came back as {echoed:?}");
    Ok(name.to_string())
}

fn tally(topo: &Topology, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        *seen
            .entry(who(topo, &format!("req {i}")).unwrap())
            .or_default() += 1;
    }
    seen
}

fn status(lb: &Balancer) -> Value {
    let out = lb.cli(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["status"].clone()
}

/// `state` of each backend of the first service, by address.
fn states(lb: &Balancer) -> BTreeMap<String, String> {
    let status = status(lb);
    status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_states(lb: &Balancer, want: &[(SocketAddr, &str)]) {
    let ok = wait_until(Duration::from_secs(10), || {
        let s = states(lb);
        want.iter()
            .all(|(a, st)| s.get(&a.to_string()).map(String::as_str) == Some(*st))
    });
    assert!(ok, "states {:?}, wanted {want:?}", states(lb));
}

fn held(topo: &Topology, n: usize) -> Vec<(String, TcpClient)> {
    (0..n)
        .map(|i| {
            let mut c = tcp_connect(topo.client(), vip(80), T).unwrap();
            let line = format!("held {i}");
            let reply = c.request(&line).unwrap();
            (reply.split_once(' ').unwrap().0.to_string(), c)
        })
        .collect()
}

#[test]
fn a_stopped_backend_leaves_rotation_within_interval_times_fall_and_comes_back() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("hc", 3).unwrap();
    let mut servers: Vec<_> = (1..=3)
        .map(|i| Some(tcp_server(topo.backend(i), backend(i, 8080)).unwrap()))
        .collect();
    let (interval, fall) = (200u64, 2u64);
    let health = Health::tcp().timing(interval as u32, 100, 2, fall as u32);
    let lb = Balancer::start(topo.lb(), &config(&[1, 2, 3], health)).unwrap();
    wait_states(
        &lb,
        &[
            (backend(1, 8080), "up"),
            (backend(2, 8080), "up"),
            (backend(3, 8080), "up"),
        ],
    );
    assert_eq!(tally(&topo, 30).len(), 3, "all three take connections");

    let mark = lb.log_mark();
    let stopped = Instant::now();
    servers[1] = None;
    lb.wait_for_log_since(mark, &["backend down", "203.0.113.12:8080"], T)
        .unwrap();
    let took = stopped.elapsed();
    let bound = Duration::from_millis(interval * fall + interval);
    assert!(
        took <= bound,
        "down after {took:?}, more than interval x fall + one interval = {bound:?}"
    );
    eprintln!("backend marked down {took:?} after its server stopped (bound {bound:?})");
    let seen = tally(&topo, 30);
    assert!(
        !seen.contains_key("be2"),
        "be2 is out of rotation: {seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), 30, "no request failed");

    let mark = lb.log_mark();
    let restarted = Instant::now();
    servers[1] = Some(tcp_server(topo.backend(2), backend(2, 8080)).unwrap());
    lb.wait_for_log_since(mark, &["backend up", "203.0.113.12:8080"], T)
        .unwrap();
    eprintln!(
        "backend back up {:?} after its server restarted",
        restarted.elapsed()
    );
    assert!(tally(&topo, 30).contains_key("be2"), "be2 is back");
    let out = lb.stop().unwrap();
    assert!(
        out.contains("connect to 203.0.113.12:8080"),
        "the reason names the check:\n{out}"
    );
}

#[test]
fn patroni_style_role_checks_send_writes_to_the_primary_only() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("role", 3).unwrap();
    let _servers: Vec<_> = (1..=3)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let roles: Vec<_> = (1..=3)
        .map(|i| role_endpoint(topo.backend(i), backend(i, 8008), i == 1).unwrap())
        .collect();
    let interval = 200u64;
    let health = Health::http("/primary")
        .port(8008)
        .expect_status(200)
        .timing(interval as u32, 150, 1, 2);
    let lb = Balancer::start(topo.lb(), &config(&[1, 2, 3], health)).unwrap();
    wait_states(
        &lb,
        &[
            (backend(1, 8080), "up"),
            (backend(2, 8080), "down"),
            (backend(3, 8080), "down"),
        ],
    );
    let seen = tally(&topo, 20);
    assert_eq!(
        seen,
        BTreeMap::from([("be1".to_string(), 20)]),
        "only the primary"
    );

    // Failover: be3 is promoted, be1 demoted.
    let switched = Instant::now();
    roles[0].set_primary(false);
    roles[2].set_primary(true);
    let stated = Duration::from_millis(interval * 2 + interval);
    poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        who(&topo, "probe").unwrap() == "be3"
            && states(&lb)[&backend(1, 8080).to_string()] == "down"
    })
    .expect("new connections moved to be3");
    let moved = switched.elapsed();
    eprintln!("writes moved to the new primary after {moved:?} (stated {stated:?})");
    assert!(
        moved <= stated + Duration::from_millis(100),
        "took {moved:?}"
    );
    let seen = tally(&topo, 20);
    assert_eq!(
        seen,
        BTreeMap::from([("be3".to_string(), 20)]),
        "only the new primary"
    );
    let out = lb.stop().unwrap();
    assert!(
        out.contains("HTTP 503"),
        "the reason says what the check saw:\n{out}"
    );
}

#[test]
fn drain_keeps_established_connections_and_sends_new_ones_elsewhere() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("drain", 2).unwrap();
    let _servers: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let lb = Balancer::start(topo.lb(), &config(&[1, 2], Health::none())).unwrap();
    let mut conns = held(&topo, 10);
    assert!(conns.iter().any(|(n, _)| n == "be1"));

    let out = lb
        .cli(&["backend", "drain", "web", &backend(1, 8080).to_string()])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    wait_states(&lb, &[(backend(1, 8080), "draining")]);

    let seen = tally(&topo, 20);
    assert_eq!(
        seen,
        BTreeMap::from([("be2".to_string(), 20)]),
        "new ones elsewhere"
    );
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = format!("still there {i}");
        assert_eq!(c.request(&line).unwrap(), format!("{name} {line}"));
    }
    let status = status(&lb);
    let be1 = &status["services"][0]["backends"][0];
    let on_be1 = conns.iter().filter(|(n, _)| n == "be1").count() as u64;
    assert_eq!(be1["active"].as_u64(), Some(on_be1), "{be1}");
    assert_eq!(be1["draining"].as_bool(), Some(true));

    let out = lb
        .cli(&["backend", "enable", "web", &backend(1, 8080).to_string()])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // be1 has fewer connections now: least-conn sends the next ones there.
    assert!(tally(&topo, 10).contains_key("be1"));
    drop(conns);
    let out = lb.stop().unwrap();
    assert!(
        out.contains("backend draining") && out.contains("backend enabled"),
        "{out}"
    );
}

#[test]
fn reload_adds_and_removes_backends_while_requests_keep_succeeding() {
    if !require_root() {
        return;
    }
    let topo = Arc::new(Topology::balanced("reload", 3).unwrap());
    let _servers: Vec<_> = (1..=3)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let lb = Balancer::start(topo.lb(), &config(&[1, 2], Health::none())).unwrap();
    let mut on_be1: Vec<_> = held(&topo, 6)
        .into_iter()
        .filter(|(n, _)| n == "be1")
        .collect();
    assert!(!on_be1.is_empty());

    // A bounded load loop of new connections while the configuration changes.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = {
        let (topo, stop, done, failures) =
            (topo.clone(), stop.clone(), done.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            for i in 0..20_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                match who(&topo, &format!("load {i}")) {
                    Ok(name) => *seen.entry(name).or_default() += 1,
                    Err(e) => {
                        eprintln!("request {i} failed: {e:#}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            seen
        })
    };
    wait_requests(&done, &failures, LOAD_STEP);
    lb.home()
        .write_config(&config(&[2, 3], Health::none()))
        .unwrap();
    let out = lb.cli(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 backends added, 1 backends removed"),
        "{text}"
    );
    wait_requests(&done, &failures, LOAD_STEP);
    // The same change back, by SIGHUP.
    lb.home()
        .write_config(&config(&[1, 2, 3], Health::none()))
        .unwrap();
    lb.signal(Signal::SIGHUP).unwrap();
    lb.wait_for_log(&["configuration reloaded", "SIGHUP"], T)
        .unwrap();
    wait_requests(&done, &failures, LOAD_STEP);
    stop.store(true, Ordering::SeqCst);
    let seen = load.join().unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request failed: {seen:?}"
    );
    assert!(
        seen.contains_key("be3"),
        "the added backend took requests: {seen:?}"
    );
    // The removed backend's established connections were untouched.
    for (i, (_, c)) in on_be1.iter_mut().enumerate() {
        let line = format!("after reload {i}");
        assert_eq!(c.request(&line).unwrap(), format!("be1 {line}"));
    }
    let out = lb.stop().unwrap();
    assert!(
        out.contains("backend removed") && out.contains("backend added"),
        "{out}"
    );
}

#[test]
fn a_refused_reload_changes_nothing_and_the_cli_shows_why() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("refuse", 2).unwrap();
    let _servers: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let good = config(&[1, 2], Health::none());
    let lb = Balancer::start_with(topo.lb(), &good, &["--log-format", "json"]).unwrap();
    let before = status(&lb);

    // A backend without a port, and a key the daemon does not know.
    let mut broken = good.clone();
    broken
        .service_mut("web")
        .backend_mut(backend(2, 8080))
        .address
        .set_port(0);
    let mut broken = broken.to_document();
    broken["service"][0]["weight_of_the_world"] = toml_edit::value(1);
    lb.home().write_config(&broken).unwrap();
    let out = lb.cli(&["reload"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains("service[0].backends[1].address"), "{err}");
    assert!(err.contains("weight_of_the_world"), "{err}");

    // Nothing changed: both backends still serve, same generation.
    assert_eq!(tally(&topo, 10).len(), 2);
    let after = status(&lb);
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["services"], before["services"]);
    assert_eq!(after["last_reload"]["ok"], Value::Bool(false));

    // Restart-only settings are refused the same way.
    lb.home()
        .write_config(&good.clone().forwarding(Forwarding::Dnat))
        .unwrap();
    let out = lb.cli(&["reload"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.forwarding changed"));

    let log = lb.stop().unwrap();
    let refused: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "reload_refused")
        .collect();
    assert_eq!(refused.len(), 2, "one JSON event per refusal:\n{log}");
    assert!(refused[0]["problems"].as_str().unwrap().contains("address"));
}

#[test]
fn kill_9_and_restart_break_no_connection() {
    if !require_root() {
        return;
    }
    let topo = Arc::new(Topology::balanced("kill9", 3).unwrap());
    let _servers: Vec<_> = (1..=3)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let health = Health::tcp().timing(200, 100, 1, 2);
    let mut lb = Balancer::start(topo.lb(), &config(&[1, 2, 3], health)).unwrap();
    wait_states(
        &lb,
        &[
            (backend(1, 8080), "up"),
            (backend(2, 8080), "up"),
            (backend(3, 8080), "up"),
        ],
    );
    let mut conns = held(&topo, 30);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = {
        let (topo, stop, done, failures) =
            (topo.clone(), stop.clone(), done.clone(), failures.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            for i in 0..20_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                if let Err(e) = who(&topo, &format!("load {i}")) {
                    eprintln!("request {i} failed: {e:#}");
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_requests(&done, &failures, LOAD_STEP);
    lb.kill().unwrap();
    // No daemon: the pinned program keeps forwarding, held and new connections.
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = format!("while dead {i}");
        assert_eq!(c.request(&line).unwrap(), format!("{name} {line}"));
    }
    wait_requests(&done, &failures, LOAD_STEP);
    lb.restart(topo.lb(), &[]).unwrap();
    lb.wait_for_log(&["took over the pinned state"], T).unwrap();
    wait_requests(&done, &failures, LOAD_STEP);
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let done = done.load(Ordering::SeqCst);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {done} requests");
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = format!("after restart {i}");
        assert_eq!(c.request(&line).unwrap(), format!("{name} {line}"));
    }
    // Counts carried over: the 30 held connections, and nothing else left.
    let ok = wait_until(Duration::from_secs(5), || {
        let s = status(&lb);
        let active: u64 = s["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["active"].as_u64().unwrap())
            .sum();
        active == 30
    });
    assert!(ok, "active counts after the restart: {}", status(&lb));
    assert_eq!(status(&lb)["recovered"], Value::Bool(true));
    drop(conns);
    lb.stop().unwrap();
}

#[test]
fn pinned_state_of_another_shape_is_refused_until_started_fresh() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("pins", 1).unwrap();
    let _server = tcp_server(topo.backend(1), backend(1, 8080)).unwrap();
    let cfg = config(&[1], Health::none());
    let mut lb = Balancer::start(topo.lb(), &cfg).unwrap();
    let mut c = tcp_connect(topo.client(), vip(80), T).unwrap();
    assert_eq!(c.request("x").unwrap(), "be1 x");

    // An upgrade: the daemon stops, leaving the program attached.
    let out = lb.cli(&["stop", "--keep-dataplane"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(lb.process().wait_timeout(T).unwrap().is_some());
    assert_eq!(
        c.request("y").unwrap(),
        "be1 y",
        "forwarding without a daemon"
    );

    lb.home()
        .write_config(&cfg.clone().flows(Flows::default().capacity(4096)))
        .unwrap();
    let err = lb.restart(topo.lb(), &[]).unwrap_err().to_string();
    assert!(
        err.contains("incompatible") && err.contains("--fresh"),
        "{err}"
    );
    assert!(err.contains("flows.capacity"), "{err}");

    lb.restart(topo.lb(), &["--fresh"]).unwrap();
    assert_eq!(who(&topo, "fresh").unwrap(), "be1");
    lb.stop().unwrap();
}

#[test]
fn a_failed_backend_of_a_reset_service_loses_its_flows_and_clients_see_a_reset() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("reset", 2).unwrap();
    let _servers: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    // The check looks at a port of its own, so that the data connections stay
    // up on the backend while it is declared down.
    let mut checked: Vec<_> = (1..=2)
        .map(|i| Some(tcp_server(topo.backend(i), backend(i, 9000)).unwrap()))
        .collect();
    let health = Health::tcp().port(9000).timing(200, 100, 1, 2);
    let config =
        config(&[1, 2], health).edit_service("web", |s| s.on_backend_down(OnBackendDown::Reset));
    let lb = Balancer::start(topo.lb(), &config).unwrap();
    wait_states(&lb, &[(backend(1, 8080), "up"), (backend(2, 8080), "up")]);
    let mut conns = held(&topo, 6);
    assert!(conns.iter().any(|(n, _)| n == "be1") && conns.iter().any(|(n, _)| n == "be2"));

    let mark = lb.log_mark();
    checked[0] = None;
    lb.wait_for_log_since(mark, &["ended the backend's flows", "203.0.113.11:8080"], T)
        .unwrap();
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = format!("after {i}");
        let answer = c.request(&line);
        if name == "be1" {
            let err = format!("{:#}", answer.expect_err("be1's flows were ended"));
            assert!(
                err.contains("reset") || err.contains("os error 104"),
                "the client sees a reset, not a timeout: {err}"
            );
        } else {
            assert_eq!(
                answer.unwrap(),
                format!("be2 {line}"),
                "be2's flows are kept"
            );
        }
    }
    let status = status(&lb);
    let be1 = &status["services"][0]["backends"][0];
    assert_eq!(be1["active"].as_u64(), Some(0), "{be1}");
    assert_eq!(be1["state"].as_str(), Some("down"));
    drop(conns);
    lb.stop().unwrap();
}

#[test]
fn agent_reports_weigh_least_connections_and_can_drain() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("agent", 2).unwrap();
    let _servers: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let agents: Vec<_> = [(1, "90%"), (2, "10%")]
        .into_iter()
        .map(|(i, r)| agent_endpoint(topo.backend(i), backend(i, 9100), r).unwrap())
        .collect();
    let health = Health::tcp().agent_port(9100).timing(200, 100, 1, 2);
    let lb = Balancer::start(topo.lb(), &config(&[1, 2], health)).unwrap();
    let ok = wait_until(T, || {
        let s = status(&lb);
        let loads: Vec<u64> = s["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["load_pct"].as_u64().unwrap())
            .collect();
        loads == [90, 10]
    });
    assert!(ok, "{}", status(&lb));
    wait_states(&lb, &[(backend(1, 8080), "up"), (backend(2, 8080), "up")]);
    // Free capacity 10 : 90 of equal weights: 2 of 20 held connections on be1.
    let conns = held(&topo, 20);
    let on_be1 = conns.iter().filter(|(n, _)| n == "be1").count();
    assert_eq!(
        on_be1,
        2,
        "{:?}",
        conns.iter().map(|c| &c.0).collect::<Vec<_>>()
    );

    agents[1].report("drain");
    wait_states(&lb, &[(backend(2, 8080), "draining")]);
    let seen = tally(&topo, 10);
    assert_eq!(
        seen,
        BTreeMap::from([("be1".to_string(), 10)]),
        "be2 drains"
    );
    drop(conns);
    let out = lb.stop().unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains("backend draining") && l.contains("agent")),
        "the event log says who drained it:\n{out}"
    );
}

#[test]
fn backends_added_and_removed_through_the_cli_take_effect_at_once() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("cliadd", 2).unwrap();
    let _servers: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let lb = Balancer::start(topo.lb(), &config(&[1], Health::none())).unwrap();
    assert_eq!(tally(&topo, 5), BTreeMap::from([("be1".to_string(), 5)]));

    let be2 = backend(2, 8080).to_string();
    let out = lb
        .cli(&["backend", "add", "web", &be2, "--weight", "300"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let conns = held(&topo, 8);
    let on_be2 = conns.iter().filter(|(n, _)| n == "be2").count();
    assert_eq!(on_be2, 6, "weight 300 against 100");

    let out = lb.cli(&["backend", "remove", "web", &be2]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(tally(&topo, 5), BTreeMap::from([("be1".to_string(), 5)]));
    // Its flows continue; it is listed as retired until they end.
    let retired = status(&lb)["retired"].clone();
    assert_eq!(retired[0]["active"].as_u64(), Some(6), "{retired}");
    drop(conns);

    let bad = lb.cli(&["backend", "add", "nosuch", &be2]).unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no service named"));
    let bad = lb
        .cli(&["backend", "add", "web", "[2001:db8::5]:80"])
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("family"));
    // Once its connections closed, the removed backend is freed.
    let ok = wait_until(Duration::from_secs(10), || {
        status(&lb)["retired"].as_array().is_some_and(Vec::is_empty)
    });
    assert!(ok, "{}", status(&lb));
    lb.stop().unwrap();
}
