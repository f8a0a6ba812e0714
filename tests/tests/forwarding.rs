//! The balancer end to end: the real binary on the standard namespace topology
//! (client, balancer host with `front` and `back`, backends), real sockets, curl
//! and nginx.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use balancer_tests::{
    Balancer, Netns, Topology, addrs, balancer_bin,
    config::{Config, Flows, Forwarding, Health, Service},
    nginx, require_program, require_root, tcp_connect, tcp_connect_from, tcp_request, tcp_server,
    udp_request, udp_server, wait_until,
};
use serde_json::Value;

const VIP: &str = "198.51.100.10";
const T: Duration = Duration::from_secs(5);

/// `tcp` (port 80 to the backends at 8080, weighted) and `udp` (port 53 to
/// the same backends at 5353) on the VIP, full NAT from 203.0.113.9.
fn config(weights: &[u32]) -> Config {
    let backend = |i: usize, port: u16| SocketAddr::new(addrs::backend(i).into(), port);
    let tcp = weights.iter().enumerate().fold(
        Service::tcp("tcp", VIP, 80).health(Health::none()),
        |s, (i, &w)| s.weighted_backend(backend(i + 1, 8080), w),
    );
    let udp = Service::udp("udp", VIP, 53)
        .health(Health::none())
        .backends((1..=weights.len()).map(|i| backend(i, 5353)));
    Config::new("it")
        .snat(["203.0.113.9"])
        .metrics_off()
        .service(tcp)
        .service(udp)
}

/// `balancer status`: active connections of each backend of `tcp`, in file order.
fn active_tcp(lb: &Balancer) -> Vec<u64> {
    let out = lb.cli(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    status["status"]["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["active"].as_u64().unwrap())
        .collect()
}

/// `balancer flows`: the flows in the table.
fn flows(lb: &Balancer) -> Vec<String> {
    let out = Command::new(balancer_bin())
        .args(["flows", "--json", "--config"])
        .arg(lb.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// One server per backend, started by `start` on the backend's address and `port`.
fn per_backend<S>(
    topo: &Topology,
    port: u16,
    start: impl Fn(&Netns, SocketAddr, usize) -> anyhow::Result<S>,
) -> Vec<S> {
    (1..=topo.n_backends())
        .map(|i| {
            let addr = SocketAddr::new(IpAddr::V4(topo.backend_addr(i)), port);
            start(topo.backend(i), addr, i).unwrap()
        })
        .collect()
}

fn backend_servers(topo: &Topology, port: u16) -> Vec<balancer_tests::ServerHandle> {
    per_backend(topo, port, |ns, addr, _| tcp_server(ns, addr))
}

fn nginx_backends(topo: &Topology) -> Vec<balancer_tests::Nginx> {
    per_backend(topo, 8080, |ns, addr, i| {
        nginx(ns, addr, &format!("nginx-{i}"))
    })
}

/// Bodies of `n` sequential curl requests to the VIP, counted.
fn curl_vip(topo: &Topology, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let out = topo
            .client()
            .exec(
                "curl",
                &["-sS", "--max-time", "5", &format!("http://{VIP}/")],
            )
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        *seen.entry(body).or_default() += 1;
    }
    seen
}

/// Which backend answered: the servers prefix their replies with their name.
fn answered_by(reply: &str, line: &str) -> String {
    let (name, echoed) = reply
        .split_once(' ')
        .unwrap_or_else(|| panic!("reply {reply:?}"));
    assert_eq!(echoed, line, "payload came back intact");
    name.to_string()
}

#[test]
fn held_connections_spread_by_least_connections_and_freed_slots_fill_first() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("lc", 3).unwrap();
    let servers = backend_servers(&topo, 8080);
    let names: Vec<String> = servers.iter().map(|s| s.name().to_string()).collect();
    // Weights 2:2:1 of 200 held connections: 80, 80, 40.
    let lb = Balancer::start(topo.lb(), &config(&[200, 200, 100])).unwrap();

    let mut held: Vec<(String, balancer_tests::TcpClient)> = Vec::new();
    for i in 0..200 {
        let mut c = tcp_connect(topo.client(), vip(80), T).unwrap();
        let line = format!("hello {i} {}", "x".repeat(i % 50));
        let reply = c.request(&line).unwrap();
        held.push((answered_by(&reply, &line), c));
    }
    let count = |held: &[(String, _)]| {
        let mut m: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
        for (n, _) in held {
            *m.get_mut(n).unwrap() += 1;
        }
        m
    };
    let by_backend = count(&held);
    assert_eq!(
        by_backend.values().copied().collect::<Vec<_>>(),
        vec![80, 80, 40],
        "{by_backend:?}"
    );

    // Close 20 of the first backend's connections: the next 20 go there, since
    // it is now the least busy per unit of weight.
    let first = names[0].clone();
    let mut closed = 0;
    held.retain_mut(|(n, _)| {
        if *n == first && closed < 20 {
            closed += 1;
            false
        } else {
            true
        }
    });
    // Dropping the streams sends the FINs; wait for the balancer to see them.
    let freed = wait_until(T, || active_tcp(&lb) == [60, 80, 40]);
    assert!(freed, "active connections {:?}", active_tcp(&lb));
    for i in 0..20 {
        let mut c = tcp_connect(topo.client(), vip(80), T).unwrap();
        let line = format!("again {i}");
        let reply = c.request(&line).unwrap();
        assert_eq!(answered_by(&reply, &line), first, "connection {i}");
        held.push((first.clone(), c));
    }
    // Held connections still carry data.
    for (name, c) in held.iter_mut().step_by(17) {
        let reply = c.request("still there").unwrap();
        assert_eq!(answered_by(&reply, "still there"), *name);
    }
    drop(held);
    lb.stop().unwrap();
}

#[test]
fn sequential_short_connections_reach_every_backend() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("seq", 3).unwrap();
    let _servers = backend_servers(&topo, 8080);
    let lb = Balancer::start(topo.lb(), &config(&[100, 100, 100])).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..60 {
        let line = format!("short {i}");
        let reply = tcp_request(topo.client(), vip(80), &line, T).unwrap();
        *seen.entry(answered_by(&reply, &line)).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 10), "uneven: {seen:?}");
    lb.stop().unwrap();
}

#[test]
fn udp_requests_get_answers_from_the_vip() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("udp", 2).unwrap();
    let _servers = per_backend(&topo, 5353, |ns, addr, _| udp_server(ns, addr));
    let lb = Balancer::start(topo.lb(), &config(&[100, 100])).unwrap();
    let mut seen = BTreeMap::<String, usize>::new();
    for i in 0..40 {
        // Each request from a new socket (source port): a new flow.
        let payload = format!("query {i}");
        let reply = udp_request(topo.client(), vip(53), &payload, T).unwrap();
        *seen.entry(answered_by(&reply, &payload)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    lb.stop().unwrap();
}

#[test]
fn the_host_still_answers_on_its_own_addresses() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("host", 1).unwrap();
    let _backend = backend_servers(&topo, 8080);
    let lb = Balancer::start(topo.lb(), &config(&[100])).unwrap();
    let own = tcp_server(
        topo.lb(),
        SocketAddr::new(IpAddr::V4(addrs::LB_FRONT), 2222),
    )
    .unwrap();
    let reply = tcp_request(
        topo.client(),
        SocketAddr::new(IpAddr::V4(addrs::LB_FRONT), 2222),
        "me",
        T,
    )
    .unwrap();
    assert_eq!(reply, format!("{} me", own.name()));
    // ICMP to the host and to the VIP is the host's to answer.
    topo.client().ping(IpAddr::V4(addrs::LB_FRONT), T).unwrap();
    topo.client().ping(VIP.parse().unwrap(), T).unwrap();
    // The host's own connections to a backend work beside translated flows.
    let reply = tcp_request(
        topo.lb(),
        SocketAddr::new(IpAddr::V4(topo.backend_addr(1)), 8080),
        "direct",
        T,
    )
    .unwrap();
    assert!(reply.ends_with(" direct"));
    lb.stop().unwrap();
}

#[test]
fn curl_through_the_vip_reaches_nginx_backends_with_full_nat() {
    if !require_root() || !require_program("nginx") || !require_program("curl") {
        return;
    }
    let topo = Topology::balanced("ngx", 3).unwrap();
    let servers = nginx_backends(&topo);
    let lb = Balancer::start(topo.lb(), &config(&[100, 100, 100])).unwrap();
    let seen = curl_vip(&topo, 30);
    assert_eq!(seen.len(), 3, "{seen:?}");
    for s in &servers {
        let log = s.access_log();
        assert!(
            log.contains("203.0.113.9"),
            "backends see the SNAT address: {log}"
        );
        assert!(!log.contains("198.51.100.2"), "not the client's: {log}");
    }
    lb.stop().unwrap();
}

#[test]
fn sigterm_detaches_and_restores_the_host() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("term", 1).unwrap();
    let reserved_before = topo
        .lb()
        .sysctl_get("net.ipv4.ip_local_reserved_ports")
        .unwrap();
    let lb = Balancer::start(topo.lb(), &config(&[100])).unwrap();
    let link = topo.lb().ip(&["-d", "link", "show", "front"]).unwrap();
    assert!(link.contains("xdp"), "attached while running: {link}");
    let addrs_running = topo.lb().ip(&["addr", "show"]).unwrap();
    assert!(addrs_running.contains("198.51.100.10/24") && addrs_running.contains("203.0.113.9/24"));
    assert!(
        topo.lb()
            .sysctl_get("net.ipv4.ip_local_reserved_ports")
            .unwrap()
            .contains("40000-59999")
    );

    let out = lb.stop().unwrap();
    assert!(out.contains("detached"), "{out}");
    for dev in ["front", "back"] {
        let link = topo.lb().ip(&["-d", "link", "show", dev]).unwrap();
        assert!(
            !link.contains("xdp"),
            "{dev} still has XDP after SIGTERM: {link}"
        );
    }
    let addrs_after = topo.lb().ip(&["addr", "show"]).unwrap();
    assert!(
        !addrs_after.contains("198.51.100.10"),
        "VIP removed: {addrs_after}"
    );
    assert!(
        !addrs_after.contains("203.0.113.9"),
        "SNAT address removed: {addrs_after}"
    );
    assert_eq!(
        topo.lb()
            .sysctl_get("net.ipv4.ip_local_reserved_ports")
            .unwrap(),
        reserved_before
    );
    // Nothing answers for the VIP any more.
    assert!(tcp_request(topo.client(), vip(80), "x", Duration::from_millis(500)).is_err());
}

#[test]
fn dnat_mode_keeps_the_client_address() {
    if !require_root() || !require_program("nginx") || !require_program("curl") {
        return;
    }
    let topo = Topology::balanced("dnat", 2).unwrap();
    // DNAT needs the balancer as the backends' gateway.
    for backend in topo.backends() {
        backend
            .add_route(&format!("default via {}", addrs::LB_BACK))
            .unwrap();
    }
    let servers = nginx_backends(&topo);
    let mut config = config(&[100, 100]).forwarding(Forwarding::Dnat);
    config.node.snat_addresses = None;
    let lb = Balancer::start(topo.lb(), &config).unwrap();
    let seen = curl_vip(&topo, 10);
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &servers {
        let log = s.access_log();
        assert!(
            log.contains("198.51.100.2 "),
            "backends see the client: {log}"
        );
    }
    let addrs_running = topo.lb().ip(&["addr", "show"]).unwrap();
    assert!(
        !addrs_running.contains("203.0.113.9"),
        "no SNAT address in DNAT mode"
    );
    lb.stop().unwrap();
}

#[test]
fn idle_udp_flows_expire_and_free_their_snat_ports() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("exp", 1).unwrap();
    let _server = per_backend(&topo, 5353, |ns, addr, _| udp_server(ns, addr));
    // Four SNAT ports and a one-second UDP timeout.
    let config = config(&[100])
        .snat_port_range(40000, 40003)
        .flows(Flows::default().udp_timeout_s(1));
    let lb = Balancer::start(topo.lb(), &config).unwrap();
    let ask = |i: usize| udp_request(topo.client(), vip(53), &format!("q{i}"), T);
    for i in 0..4 {
        ask(i).unwrap();
    }
    // Every port is held by a live flow: a fifth client is refused.
    assert!(
        udp_request(topo.client(), vip(53), "q4", Duration::from_millis(500)).is_err(),
        "no SNAT port should be free"
    );
    // Idle past the timeout (1 s), the next sweep (every second) removes the
    // flows and frees their ports.
    let swept = wait_until(Duration::from_secs(10), || flows(&lb).is_empty());
    assert!(swept, "flows left: {:?}", flows(&lb));
    for i in 5..9 {
        ask(i).unwrap();
    }
    lb.stop().unwrap();
}

#[test]
fn a_source_outside_the_allow_list_cannot_connect() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("fw", 1).unwrap();
    let _servers = backend_servers(&topo, 8080);
    topo.add_client_addr("198.51.100.200/24").unwrap();
    let config = config(&[100]).edit_service("tcp", |s| s.allow(["198.51.100.0/25"]));
    let lb = Balancer::start(topo.lb(), &config).unwrap();
    let from = |last: u8| SocketAddr::new(IpAddr::V4([198, 51, 100, last].into()), 0);
    let mut allowed = tcp_connect_from(topo.client(), from(2), vip(80), T).unwrap();
    assert!(allowed.request("in").unwrap().ends_with(" in"));
    let refused = tcp_connect_from(topo.client(), from(200), vip(80), Duration::from_secs(1));
    assert!(refused.is_err(), "198.51.100.200 is not in the allow list");
    lb.stop().unwrap();
}

#[test]
fn ipv6_service_end_to_end() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("six", 2).unwrap();
    let _servers = (1..=2)
        .map(|i| {
            tcp_server(
                topo.backend(i),
                SocketAddr::new(IpAddr::V6(topo.backend_addr6(i)), 8080),
            )
            .unwrap()
        })
        .collect::<Vec<_>>();
    let config = Config::new("six")
        .snat(["2001:db8:2::9"])
        .metrics_off()
        .service(
            Service::tcp("web6", "2001:db8:1::10", 80)
                .health(Health::none())
                .backends((1..=2).map(|i| SocketAddr::new(topo.backend_addr6(i).into(), 8080))),
        );
    let lb = Balancer::start(topo.lb(), &config).unwrap();
    let vip6: SocketAddr = "[2001:db8:1::10]:80".parse().unwrap();
    let mut seen = BTreeMap::<String, usize>::new();
    for i in 0..20 {
        let line = format!("six {i}");
        let reply = tcp_request(topo.client(), vip6, &line, T).unwrap();
        *seen.entry(answered_by(&reply, &line)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    lb.stop().unwrap();
}
