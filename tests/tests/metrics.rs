//! Metrics against reality: the real daemon in namespaces, real traffic, and
//! the figures it exports (`[control].metrics`, scraped from inside the lb
//! namespace), `balancer stats` and `balancer flows` compared with what the
//! test sent. `promtool check metrics` judges a real scrape.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{
    Balancer, Pace, Topology, addrs, balancer_bin,
    config::{Config, Firewall, Flows, Health, Service},
    require_program, require_root, tcp_connect, tcp_request, tcp_server, udp_connect, udp_server,
    wait_until,
};
use serde_json::Value;

const VIP: &str = "198.51.100.10";
/// Where the daemon serves metrics: the lb's own back address, in its namespace.
const METRICS: &str = "203.0.113.1:9108";
const T: Duration = Duration::from_secs(5);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

fn backend(i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addrs::backend(i)), port)
}

/// A scrape of the endpoint from inside `topo`'s lb namespace: the body, and
/// the response's header.
fn scrape_with(topo: &Topology, accept: Option<&str>) -> (String, String) {
    let accept = accept.map(str::to_string);
    topo.lb().run(move || {
        let mut s = TcpStream::connect(METRICS).expect("connecting to the metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("GET /metrics HTTP/1.1\r\nHost: {METRICS}\r\n");
        if let Some(a) = accept {
            req.push_str(&format!("Accept: {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}\n{body}");
        (body.to_string(), head.to_string())
    })
}

fn scrape(topo: &Topology) -> String {
    scrape_with(topo, None).0
}

/// Samples by name and labels as written (`name{k="v",...}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// `name{labels}` with the labels in the order the daemon writes them.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.into();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

fn get(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let k = key(name, labels);
    *s.get(&k)
        .unwrap_or_else(|| panic!("no sample {k}; have:\n{:#?}", s.keys().collect::<Vec<_>>()))
}

/// Sum of a family's samples whose labels include all of `labels`.
fn sum(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            k.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

fn status(lb: &Balancer) -> Value {
    let out = lb.cli(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"].clone()
}

fn wait_health(lb: &Balancer, service: &str, want: &[(SocketAddr, &str)]) {
    let ok = wait_until(Duration::from_secs(15), || {
        let s = status(lb);
        let Some(svc) = s["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == service)
        else {
            return false;
        };
        want.iter().all(|(addr, h)| {
            svc["backends"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["address"] == addr.to_string() && b["health"] == *h)
        })
    });
    assert!(ok, "{service}: wanted {want:?}; status {:#}", status(lb));
}

/// Waits until the daemon has swept the flow table `n` more times.
fn wait_sweeps(topo: &Topology, n: usize) {
    let at = |s: &BTreeMap<String, f64>| {
        s.get("balancer_flow_sweep_timestamp_seconds")
            .copied()
            .unwrap_or(0.0)
    };
    let mut last = at(&samples(&scrape(topo)));
    for _ in 0..n {
        let ok = wait_until(Duration::from_secs(10), || {
            let now = at(&samples(&scrape(topo)));
            if now > last {
                last = now;
                true
            } else {
                false
            }
        });
        assert!(ok, "no flow sweep within 10 s");
    }
}

/// `web` (TCP 80, checked every 200 ms) and `dns` (UDP 53, unchecked) on the
/// two backends, metrics on [`METRICS`].
fn config() -> Config {
    Config::new("metrics-test")
        .snat(["203.0.113.9"])
        .metrics(METRICS)
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::tcp().timing(200, 500, 1, 1))
                .backends([backend(1, 8080), backend(2, 8080)]),
        )
        .service(
            Service::udp("dns", VIP, 53)
                .health(Health::none())
                .backends([backend(1, 5353), backend(2, 5353)]),
        )
}

/// [`config`] without `web`'s health checks.
fn config_unchecked() -> Config {
    config().edit_service("web", |s| s.health(Health::none()))
}

/// `config` with services whose packets the test sends to be dropped, one per reason.
fn with_dropping(config: Config) -> Config {
    config
        .service(
            Service::udp("closed", VIP, 54)
                .allow(["192.0.2.0/24"])
                .health(Health::none())
                .backend(backend(1, 5353)),
        )
        .service(
            Service::udp("nobody", VIP, 55)
                .health(Health::tcp().port(5999).timing(200, 500, 1, 1))
                .backend(backend(1, 5353)),
        )
        .service(
            Service::udp("limited", VIP, 56)
                .health(Health::none())
                .backend(backend(2, 5353)),
        )
}

/// Sends `n` datagrams from one socket of `ns` at `src` (any port) to `to`.
fn send_datagrams(ns: &balancer_tests::Netns, src: IpAddr, to: SocketAddr, n: usize) {
    ns.run(move || {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
        for i in 0..n {
            s.send_to(format!("drop {i}").as_bytes(), to).unwrap();
        }
    });
}

/// One datagram from each of `n` fresh sockets (`n` new flows) from `src`.
fn new_udp_flows(ns: &balancer_tests::Netns, src: IpAddr, to: SocketAddr, n: usize) {
    ns.run(move || {
        let socks: Vec<UdpSocket> = (0..n)
            .map(|_| UdpSocket::bind(SocketAddr::new(src, 0)).unwrap())
            .collect();
        for (i, s) in socks.iter().enumerate() {
            s.send_to(format!("flow {i}").as_bytes(), to).unwrap();
        }
    });
}

#[test]
fn counters_match_the_traffic_sent_and_promtool_accepts_a_scrape() {
    if !require_root() || !require_program("promtool") {
        return;
    }
    let topo = Topology::balanced("met", 2).unwrap();
    let _tcp: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let _udp: Vec<_> = (1..=2)
        .map(|i| udp_server(topo.backend(i), backend(i, 5353)).unwrap())
        .collect();
    // A second client address, for the rate limit's drops.
    let other: IpAddr = "198.51.100.3".parse().unwrap();
    topo.add_client_addr("198.51.100.3/24").unwrap();
    const BURST: usize = 80;
    let lb = Balancer::start(
        topo.lb(),
        &with_dropping(config())
            .flows(Flows::default().tcp_transitory_timeout_s(2))
            .firewall(Firewall::default().rate(1, BURST as u32)),
    )
    .unwrap();
    wait_health(
        &lb,
        "web",
        &[(backend(1, 8080), "up"), (backend(2, 8080), "up")],
    );
    wait_health(&lb, "nobody", &[(backend(1, 5353), "down")]);
    let before = samples(&scrape(&topo));

    // N TCP requests, M UDP ones, each on a connection (flow) of its own.
    const N: usize = 30;
    const M: usize = 20;
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..N {
        let reply = tcp_request(topo.client(), vip(80), &format!("req {i}"), T).unwrap();
        *answered
            .entry(reply.split(' ').next().unwrap().to_string())
            .or_default() += 1;
    }
    let mut udp_bytes_to_client = 0;
    // Each on a socket of its own, all open at once: M distinct source ports.
    let mut udp_clients = Vec::new();
    for i in 0..M {
        let payload = format!("q{i:02}");
        let c = udp_connect(topo.client(), None, vip(53), T).unwrap();
        let reply = c.request(&payload).unwrap();
        // IPv4 and UDP headers, and the payload.
        udp_bytes_to_client += 28 + reply.len();
        udp_clients.push(c);
    }
    // Packets to be dropped, one reason each.
    const FIREWALL: usize = 7;
    const NO_BACKEND: usize = 5;
    const OVER_RATE: usize = 6;
    let client: IpAddr = addrs::CLIENT.into();
    send_datagrams(topo.client(), client, vip(54), FIREWALL);
    send_datagrams(topo.client(), client, vip(55), NO_BACKEND);
    new_udp_flows(topo.client(), other, vip(56), BURST + OVER_RATE);
    // The last datagrams may still be on their way when the sockets close:
    // wait until every count they add to has reached what was sent (the
    // exact figures are asserted below, on a scrape after this one).
    let since = |s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]| {
        let k = key(name, labels);
        s.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
    };
    let limited = backend(2, 5353).to_string();
    let arrived = wait_until(T, || {
        let s = samples(&scrape(&topo));
        [
            ("firewall", FIREWALL),
            ("no_healthy_backend", NO_BACKEND),
            ("rate_limit", OVER_RATE),
        ]
        .iter()
        .all(|(reason, n)| {
            since(&s, "balancer_dropped_packets_total", &[("reason", reason)]) as usize >= *n
        }) && since(
            &s,
            "balancer_backend_connections_total",
            &[("service", "limited"), ("backend", limited.as_str())],
        ) as usize
            >= BURST
            && since(&s, "balancer_connections_total", &[]) as usize >= N + M + BURST
    });
    assert!(
        arrived,
        "the datagrams sent are not all counted within {T:?}:\n{}",
        scrape(&topo)
    );

    let (text, head) = scrape_with(&topo, None);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let after = samples(&text);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        get(&after, name, labels) - before.get(&key(name, labels)).copied().unwrap_or(0.0)
    };

    // TCP: N connections, split as the servers saw them.
    let mut conns = 0.0;
    for i in 1..=2 {
        let b = backend(i, 8080).to_string();
        let l = [("service", "web"), ("backend", b.as_str())];
        let c = delta("balancer_backend_connections_total", &l);
        assert_eq!(
            c as usize,
            answered.get(&format!("be{i}")).copied().unwrap_or(0),
            "{b}: answered {answered:?}"
        );
        conns += c;
        // At least SYN, ACK, request, FIN, ACK to the backend and SYN-ACK,
        // reply, FIN to the client; a few more at most.
        let to_be = delta(
            "balancer_backend_packets_total",
            &[l[0], l[1], ("direction", "to_backend")],
        );
        let to_cl = delta(
            "balancer_backend_packets_total",
            &[l[0], l[1], ("direction", "to_client")],
        );
        assert!(
            to_be >= 4.0 * c && to_be <= 8.0 * c,
            "{b}: {to_be} packets for {c}"
        );
        assert!(
            to_cl >= 3.0 * c && to_cl <= 8.0 * c,
            "{b}: {to_cl} packets for {c}"
        );
        let bytes = delta(
            "balancer_backend_bytes_total",
            &[l[0], l[1], ("direction", "to_backend")],
        );
        assert!(
            bytes >= 40.0 * to_be,
            "{b}: {bytes} bytes in {to_be} packets"
        );
        assert!(get(&after, "balancer_health_check_duration_seconds_count", &l) > 0.0);
        assert_eq!(
            get(
                &after,
                "balancer_backend_health_state",
                &[l[0], l[1], ("state", "up")]
            ),
            1.0
        );
    }
    assert_eq!(conns as usize, N);

    // UDP: one datagram each way per flow, bytes to the byte.
    let dns = |field: &str, dir: Option<&str>| -> f64 {
        (1..=2)
            .map(|i| {
                let b = backend(i, 5353).to_string();
                let mut l = vec![("service", "dns"), ("backend", b.as_str())];
                if let Some(d) = dir {
                    l.push(("direction", d));
                }
                delta(field, &l)
            })
            .sum()
    };
    assert_eq!(dns("balancer_backend_connections_total", None) as usize, M);
    assert_eq!(
        dns("balancer_backend_packets_total", Some("to_backend")) as usize,
        M
    );
    assert_eq!(
        dns("balancer_backend_packets_total", Some("to_client")) as usize,
        M
    );
    assert_eq!(
        dns("balancer_backend_bytes_total", Some("to_backend")) as usize,
        M * (28 + 3)
    );
    assert_eq!(
        dns("balancer_backend_bytes_total", Some("to_client")) as usize,
        udp_bytes_to_client
    );

    // Drops, by reason, globally and per service.
    for (service, reason, n) in [
        ("closed", "firewall", FIREWALL),
        ("nobody", "no_healthy_backend", NO_BACKEND),
        ("limited", "rate_limit", OVER_RATE),
    ] {
        assert_eq!(
            delta("balancer_dropped_packets_total", &[("reason", reason)]) as usize,
            n,
            "{reason}"
        );
        assert_eq!(
            delta(
                "balancer_service_dropped_packets_total",
                &[("service", service), ("reason", reason)]
            ) as usize,
            n,
            "{service} {reason}"
        );
    }
    for reason in ["malformed", "snat_exhausted", "flow_table_full"] {
        assert_eq!(
            delta("balancer_dropped_packets_total", &[("reason", reason)]),
            0.0
        );
    }
    // The rate limit let the burst through.
    let b = backend(2, 5353).to_string();
    assert_eq!(
        delta(
            "balancer_backend_connections_total",
            &[("service", "limited"), ("backend", b.as_str())]
        ) as usize,
        BURST
    );
    assert_eq!(
        delta("balancer_connections_total", &[]) as usize,
        N + M + BURST
    );

    // The rest of the families.
    assert_eq!(
        get(&after, "balancer_ha_role", &[("role", "standalone")]),
        1.0
    );
    assert_eq!(get(&after, "balancer_config_generation", &[]), 1.0);
    assert_eq!(get(&after, "balancer_config_last_reload_success", &[]), 1.0);
    assert_eq!(
        get(
            &after,
            "balancer_backend_weight",
            &[
                ("service", "web"),
                ("backend", &backend(1, 8080).to_string())
            ]
        ),
        100.0
    );
    let nobody = backend(1, 5353).to_string();
    let l = [("service", "nobody"), ("backend", nobody.as_str())];
    assert!(get(&after, "balancer_health_check_failures_total", &l) > 0.0);
    assert_eq!(
        get(
            &after,
            "balancer_backend_health_state",
            &[l[0], l[1], ("state", "down")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "balancer_snat_ports_per_backend",
            &[("family", "ipv4")]
        ),
        20_000.0
    );
    assert!(text.contains("balancer_build_info{version=\""), "{text}");

    // promtool on the real scrape.
    if let Err(e) = balancer_tests::promtool_check_metrics(&text) {
        panic!("{e:#}\n{text}");
    }

    // OpenMetrics for who asks for it.
    let (om, head) = scrape_with(&topo, Some("application/openmetrics-text; version=1.0.0"));
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE balancer_connections counter\n"));

    // balancer stats says the same.
    let out = lb.cli(&["stats", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    let web = stats["stats"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap()
        .clone();
    let total: u64 = web["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["connections"].as_u64().unwrap())
        .sum();
    let scraped = sum(
        &after,
        "balancer_backend_connections_total",
        &[("service", "web")],
    );
    assert_eq!(total as f64, scraped);
    assert_eq!(web["drops"]["firewall"], 0);
    let table = lb.cli(&["stats"]).unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("service closed  198.51.100.10:54/udp  dropped: firewall 7"),
        "{table}"
    );

    lb.stop().unwrap();
}

#[test]
fn scrapes_during_traffic_lose_no_counts() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("mld", 2).unwrap();
    let _tcp: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let lb = Balancer::start(
        topo.lb(),
        &config_unchecked().flows(Flows::default().tcp_transitory_timeout_s(2)),
    )
    .unwrap();
    let connections = |s: &BTreeMap<String, f64>| {
        sum(
            s,
            "balancer_backend_connections_total",
            &[("service", "web")],
        ) as u64
    };
    const N: usize = 300;
    let done = Arc::new(AtomicBool::new(false));
    let (seen, times) = std::thread::scope(|s| {
        let scraper = s.spawn(|| {
            let mut seen = Vec::new();
            let mut times = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let t = Instant::now();
                let text = scrape(&topo);
                times.push(t.elapsed());
                seen.push(connections(&samples(&text)));
            }
            (seen, times)
        });
        for i in 0..N {
            tcp_request(topo.client(), vip(80), &format!("r{i}"), T).unwrap();
        }
        done.store(true, Ordering::SeqCst);
        scraper.join().unwrap()
    });
    assert!(seen.len() >= 3, "only {} scrapes", seen.len());
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "counts went down between scrapes: {seen:?}"
    );
    assert_eq!(connections(&samples(&scrape(&topo))), N as u64);
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "{} scrapes during {N} requests: median {:.2} ms, max {:.2} ms (2 backends, {})",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        balancer_bin().display()
    );
    lb.stop().unwrap();
}

#[test]
fn flow_table_fill_and_evictions_come_from_the_sweeps() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("mev", 2).unwrap();
    let _udp: Vec<_> = (1..=2)
        .map(|i| udp_server(topo.backend(i), backend(i, 5353)).unwrap())
        .collect();
    // 64 entries: room for 32 flows. Short transitory timeout: a sweep every
    // second; UDP flows live 60 s, so the sweeps remove none.
    const CAPACITY: usize = 64;
    let lb = Balancer::start(
        topo.lb(),
        &config_unchecked().flows(
            Flows::default()
                .capacity(CAPACITY as u32)
                .tcp_transitory_timeout_s(2),
        ),
    )
    .unwrap();
    wait_sweeps(&topo, 1);
    const FLOWS: usize = 60;
    new_udp_flows(topo.client(), addrs::CLIENT.into(), vip(53), FLOWS);
    // Every flow made (the program counts it as it creates it)...
    let made = || {
        sum(
            &samples(&scrape(&topo)),
            "balancer_backend_connections_total",
            &[("service", "dns")],
        ) as usize
    };
    assert!(
        wait_until(T, || made() >= FLOWS),
        "{} of {FLOWS} flows",
        made()
    );
    // ...then a sweep that started after the last flow.
    wait_sweeps(&topo, 2);
    let s = samples(&scrape(&topo));
    let entries = get(&s, "balancer_flow_table_entries", &[]) as usize;
    let evicted = get(&s, "balancer_flow_table_evictions_total", &[]) as usize;
    eprintln!("{FLOWS} flows in a table of {CAPACITY} entries: {entries} left, {evicted} evicted");
    assert_eq!(
        get(&s, "balancer_flow_table_max_entries", &[]) as usize,
        CAPACITY
    );
    assert!(
        entries <= CAPACITY,
        "{entries} entries in a table of {CAPACITY}"
    );
    // Every flow made two entries; the sweeps removed none: what is not there
    // was evicted, no more and no less.
    assert_eq!(evicted, 2 * FLOWS - entries, "{entries} entries left");
    assert!(evicted >= 2 * FLOWS - CAPACITY);
    assert_eq!(get(&s, "balancer_flows_expired_total", &[]), 0.0);
    // SNAT ports in use: the reply entries left, per backend.
    let ports = sum(&s, "balancer_backend_snat_ports", &[("service", "dns")]) as usize;
    assert!(
        ports > 0 && ports <= entries,
        "{ports} ports, {entries} entries"
    );
    lb.stop().unwrap();
}

#[test]
fn flows_lists_connections_with_filters_and_the_stats_watch_shows_rates() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("mfl", 2).unwrap();
    let _tcp: Vec<_> = (1..=2)
        .map(|i| tcp_server(topo.backend(i), backend(i, 8080)).unwrap())
        .collect();
    let lb = Balancer::start(topo.lb(), &config_unchecked()).unwrap();
    let mut held = Vec::new();
    for i in 0..6 {
        let mut c = tcp_connect(topo.client(), vip(80), T).unwrap();
        let reply = c.request(&format!("held {i}")).unwrap();
        let be = reply.split(' ').next().unwrap().to_string();
        held.push((c.local_addr().unwrap(), be, c));
    }
    let flows = |args: &[&str]| -> Vec<Value> {
        let out = Command::new(balancer_bin())
            .arg("flows")
            .arg("--config")
            .arg(lb.config_path())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = flows(&[]);
    assert_eq!(all.len(), held.len(), "{all:#?}");
    for (local, be, _) in &held {
        let f = all
            .iter()
            .find(|f| f["client"] == local.to_string())
            .unwrap_or_else(|| panic!("no flow from {local}: {all:#?}"));
        assert_eq!(f["service"], "web");
        assert_eq!(f["protocol"], "tcp");
        assert_eq!(f["vip"], vip(80).to_string());
        assert_eq!(f["state"], "established");
        let i: usize = be.trim_start_matches("be").parse().unwrap();
        assert_eq!(f["backend"], backend(i, 8080).to_string());
        assert!(
            f["source"].as_str().unwrap().starts_with("203.0.113.9:"),
            "{f}"
        );
    }
    let on_be1 = held.iter().filter(|(_, be, _)| be == "be1").count();
    assert_eq!(
        flows(&["--backend", &backend(1, 8080).to_string()]).len(),
        on_be1
    );
    assert_eq!(
        flows(&["--backend", "203.0.113.12"]).len(),
        held.len() - on_be1
    );
    assert_eq!(flows(&["--service", "dns"]).len(), 0);
    assert_eq!(flows(&["--service", "web"]).len(), held.len());
    assert_eq!(flows(&["--client", "198.51.100.0/24"]).len(), held.len());
    assert_eq!(flows(&["--client", "192.0.2.1"]).len(), 0);
    assert_eq!(
        flows(&["--client", &held[0].0.ip().to_string(), "--limit", "2"]).len(),
        2
    );
    let table = Command::new(balancer_bin())
        .args(["flows", "--config"])
        .arg(lb.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("SERVICE"), "{text}");
    assert_eq!(text.lines().count(), 1 + held.len(), "{text}");

    // --watch: rates over a second with traffic in it.
    let mut watch = Command::new(balancer_bin())
        .args(["stats", "--watch", "--count", "2", "--json", "--socket"])
        .arg(lb.home().socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let frames: Vec<Value> = std::thread::scope(|s| {
        s.spawn(|| {
            // Bounded in time: the watch takes about 3 s. A request every 10 ms.
            let until = Instant::now() + Duration::from_secs(15);
            let mut pace = Pace::new(Duration::from_millis(10));
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                let _ = tcp_request(topo.client(), vip(80), "rate", T);
                pace.wait();
            }
        });
        let lines: Vec<Value> = BufReader::new(watch.stdout.take().unwrap())
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        stop.store(true, Ordering::SeqCst);
        lines
    });
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status:?} {:?}", status.signal());
    assert_eq!(frames.len(), 2);
    for f in &frames {
        let r = &f["rates"];
        assert!(r["interval_s"].as_f64().unwrap() > 0.5, "{r}");
        let web = r["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "web")
            .unwrap();
        let c: f64 = web["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["connections"].as_f64().unwrap())
            .sum();
        assert!(c > 0.0, "no connections per second while requests ran: {r}");
    }
    drop(held);
    lb.stop().unwrap();
}

/// `balancer flows` on a table of 1,000,000 flows (2,000,000 entries): it
/// streams, so its memory stays far below the table's size.
#[test]
fn flows_streams_a_million_flows() {
    use aya::maps::{Array, HashMap, MapData};
    use balancer_common::{
        FAMILY_V4, PROTO_TCP,
        flow::{DIR_FORWARD, DIR_REPLY, FlowKey, FlowValue, STATE_ESTABLISHED},
        maps::{Backends, Flows as FlowTable},
        service::{Backend, BackendIndex},
    };
    use balancer_user::dataplane::PinnedMaps;

    if !require_root() {
        return;
    }
    const FLOWS: u32 = 1_000_000;
    const PER_CLIENT: u32 = 10_000;
    let topo = Topology::builder()
        .hint("mmf")
        .backends(1)
        .ipv6(false)
        .build()
        .unwrap();
    let lb = Balancer::start(
        topo.lb(),
        &config_unchecked().flows(Flows::default().capacity(2_200_000)),
    )
    .unwrap();
    let pinned = PinnedMaps::new(&lb.home().pin_dir());
    // The index of web's first backend, as the daemon placed it.
    let backends: Array<MapData, Backend> = pinned.open::<Backends, _>().unwrap();
    let be = backend(1, 8080);
    let raw = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(_) => unreachable!(),
    };
    let index = (0..16384u32)
        .find(|i| {
            backends
                .get(i, 0)
                .is_ok_and(|b| b.addr == raw(be.ip()) && u16::from_be(b.port_be) == be.port())
        })
        .expect("web's first backend in BACKENDS");
    let mut flows: HashMap<MapData, FlowKey, FlowValue> = pinned.open::<FlowTable, _>().unwrap();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let snat = raw("203.0.113.9".parse().unwrap());
    let started = Instant::now();
    for i in 0..FLOWS {
        let client = raw(IpAddr::from([198, 51, 100, 100 + (i / PER_CLIENT) as u8]));
        let cport = (1024 + i % PER_CLIENT) as u16;
        let sport = (10_000 + i % 50_000) as u16;
        let forward_key = FlowKey {
            src: client,
            dst: raw(VIP.parse().unwrap()),
            sport_be: cport.to_be(),
            dport_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        // Reply entries keyed by a fake backend port per 50,000 flows, so
        // that every reply key is unique.
        let be_port = be.port() + (i / 50_000) as u16;
        let forward = FlowValue {
            new_src: snat,
            new_dst: raw(be.ip()),
            new_sport_be: sport.to_be(),
            new_dport_be: be_port.to_be(),
            backend: BackendIndex(index),
            created_ns: now,
            last_seen_ns: now,
            state: STATE_ESTABLISHED,
            direction: DIR_FORWARD,
            ..FlowValue::default()
        };
        let reply = FlowValue {
            new_src: forward_key.dst,
            new_dst: forward_key.src,
            new_sport_be: forward_key.dport_be,
            new_dport_be: forward_key.sport_be,
            backend: BackendIndex(index),
            created_ns: now,
            last_seen_ns: now,
            state: STATE_ESTABLISHED,
            direction: DIR_REPLY,
            ..FlowValue::default()
        };
        flows.insert(forward_key, forward, 0).unwrap();
        flows
            .insert(forward.peer_key(PROTO_TCP, FAMILY_V4), reply, 0)
            .unwrap();
    }
    eprintln!(
        "wrote {FLOWS} flows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // All of them, one JSON line each, counted as they come.
    let run = |args: &[&str]| -> (u64, libc::rusage, Duration) {
        let t = Instant::now();
        // Reaped by wait4 below, which also gives its resource usage.
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new(balancer_bin())
            .arg("flows")
            .arg("--config")
            .arg(lb.config_path())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = 0u64;
        let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
        let mut line = Vec::new();
        while out.read_until(b'\n', &mut line).unwrap() > 0 {
            if lines == 0 {
                let first: Value = serde_json::from_slice(&line).unwrap();
                assert_eq!(first["service"], "web", "{first}");
                assert_eq!(first["backend"].as_str().unwrap(), be.to_string());
            }
            lines += 1;
            line.clear();
        }
        let mut status = 0;
        // SAFETY: rusage is plain data for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, whose pid this is.
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as i32);
        assert_eq!(status, 0, "balancer flows exited with {status}");
        (lines, usage, t.elapsed())
    };
    let (lines, usage, took) = run(&["--json"]);
    assert_eq!(lines, u64::from(FLOWS));
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    eprintln!(
        "balancer flows --json: {lines} flows in {:.1} s, peak RSS {peak_mib:.1} MiB ({})",
        took.as_secs_f64(),
        balancer_bin().display()
    );
    // The table holds 2,000,000 entries of 120 bytes: 229 MiB if read whole.
    assert!(peak_mib < 64.0, "peak RSS {peak_mib:.1} MiB");
    let (lines, _, _) = run(&["--json", "--client", "198.51.100.150"]);
    assert_eq!(lines, u64::from(PER_CLIENT));
    drop(topo);
}
