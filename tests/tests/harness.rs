//! Tests of the namespace harness itself (need root):
//! `cargo test -p balancer-tests --test harness`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use balancer_tests::*;

const T: Duration = Duration::from_secs(3);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn gone(prefix: &str) {
    let left = netns_with_prefix(&format!("{prefix}-"));
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with(prefix)),
        "ip netns list still shows {prefix}: {list}"
    );
}

/// Whether `pid` is gone or a zombie (killed, not yet reaped by its new parent).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

#[test]
fn topology_builds_routes_and_cleans_up() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let topo = Topology::balanced("topo", 3).unwrap();
    let took = started.elapsed();
    eprintln!("standard topology with 3 backends built in {took:?}");
    assert!(took < Duration::from_secs(10), "building took {took:?}");
    let prefix = topo.prefix().to_string();

    // Names: all namespaces carry the prefix; interfaces are named inside them.
    let names = netns_with_prefix(&format!("{prefix}-"));
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(topo.lb().name(), format!("{prefix}-lb"));
    assert_eq!(topo.backend(2).label(), "be2");
    assert_eq!(topo.backend_addr(3), Ipv4Addr::new(203, 0, 113, 13));
    assert_eq!(topo.backend_addr6(1).to_string(), "2001:db8:2::11");
    assert_eq!(
        topo.backend_index(IpAddr::V4(topo.backend_addr(2))),
        Some(2)
    );
    assert!(topo.lb().ifindex(topo.lb_front_if()).unwrap() > 1);
    assert!(topo.lb().ifindex(topo.lb_back_if()).unwrap() > 1);
    for dev in ["front", "back", "brf", "brb", "lbf", "lbb", "c", "be1"] {
        assert!(
            !std::path::Path::new("/sys/class/net").join(dev).exists(),
            "{dev} exists in the root namespace"
        );
    }

    // Settings.
    assert_eq!(topo.lb().sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        topo.client().sysctl_get("net.ipv4.ip_forward").unwrap(),
        "0"
    );
    let k = topo.switch().exec("ethtool", &["-k", "lbf"]).unwrap();
    let k = String::from_utf8_lossy(&k.stdout);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    assert!(k.contains("generic-receive-offload: on"), "{k}");
    for i in 1..=3 {
        let routes = topo.backend(i).ip(&["route", "show", "default"]).unwrap();
        assert!(
            routes.trim().is_empty(),
            "be{i} has a default route: {routes}"
        );
    }

    // Reachability.
    let c = topo.client();
    c.ping(IpAddr::V4(addrs::LB_FRONT), T).unwrap();
    c.ping(IpAddr::V6(addrs::LB_FRONT6), T).unwrap();
    for i in 1..=3 {
        let be = topo.backend(i);
        be.ping(IpAddr::V4(addrs::LB_BACK), T).unwrap();
        be.ping(IpAddr::V6(addrs::LB_BACK6), T).unwrap();
        topo.lb().ping(IpAddr::V4(topo.backend_addr(i)), T).unwrap();
    }
    // The client has no route to the backends.
    let err = format!(
        "{:#}",
        c.ping(IpAddr::V4(topo.backend_addr(1)), T).unwrap_err()
    );
    assert!(err.contains("unreachable"), "{err}");
    let t0 = Instant::now();
    let e = tcp_request(c, SocketAddr::new(topo.backend_addr(1).into(), 80), "x", T).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1), "{e:#}");

    // Second client address.
    topo.add_client_addr("198.51.100.5/24").unwrap();
    let srv = tcp_server(topo.lb(), sa("198.51.100.1:7100")).unwrap();
    let mut conn = tcp_connect_from(c, sa("198.51.100.5:0"), sa("198.51.100.1:7100"), T).unwrap();
    assert_eq!(conn.local_addr().unwrap().ip().to_string(), "198.51.100.5");
    assert_eq!(conn.request("from five").unwrap(), "lb from five");
    drop(conn);
    drop(srv);

    drop(topo);
    gone(&prefix);
    assert!(netns_with_prefix(&prefix).is_empty());
}

#[test]
fn cleanup_after_panic_kills_processes() {
    if !require_root() {
        return;
    }
    let seen: Mutex<Option<(String, i32, i32)>> = Mutex::new(None);
    let res = catch_unwind(AssertUnwindSafe(|| {
        let topo = Topology::balanced("pnc", 1).unwrap();
        // A process we hold and one that detached itself (only the namespace knows it).
        let held = topo.lb().spawn("sleep", &["600"]).unwrap();
        let out = topo
            .backend(1)
            .exec("sh", &["-c", "sleep 600 >/dev/null 2>&1 & echo $!"])
            .unwrap();
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(!dead(orphan));
        *seen.lock().unwrap() = Some((topo.prefix().to_string(), held.pid() as i32, orphan));
        let _held = held;
        panic!("deliberate panic inside the test body");
    }));
    assert!(res.is_err());
    let (prefix, held, orphan) = seen.lock().unwrap().clone().unwrap();
    gone(&prefix);
    assert!(dead(held), "held process {held} survived");
    assert!(
        wait_until(Duration::from_secs(2), || dead(orphan)),
        "detached process {orphan} survived"
    );
}

#[test]
fn netns_basics() {
    if !require_root() {
        return;
    }
    let name = format!("{}-x", unique_prefix("nsb"));
    let ns = Netns::new(&name).unwrap();
    assert!(Netns::new(&name).is_err(), "duplicate namespace accepted");

    // exec: output, and a clear error with stderr.
    let out = ns.exec("ip", &["-o", "link"]).unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let err = format!(
        "{:#}",
        ns.exec("sh", &["-c", "echo oops >&2; exit 3"]).unwrap_err()
    );
    assert!(err.contains("oops") && err.contains("exit code 3"), "{err}");
    let err = format!(
        "{:#}",
        ns.exec_timeout("sleep", &["5"], Duration::from_millis(200))
            .unwrap_err()
    );
    assert!(err.contains("timed out"), "{err}");

    // run: a different network namespace than ours, and sysctl goes there.
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let there = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_ne!(here, there);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| ns.run(|| panic!("inner"))));
    assert!(r.is_err(), "panic in run was not propagated");
    let root_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if root_before.trim() == "1" { "0" } else { "1" };
    ns.sysctl("net.ipv4.ip_forward", want).unwrap();
    let v = ns.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), want);
    assert_eq!(ns.sysctl_get("net.ipv4.ip_forward").unwrap(), want);
    let root_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(
        root_before, root_after,
        "sysctl leaked into the root namespace"
    );

    // spawn: output is captured, the process is killed on drop.
    let mut p = ns
        .spawn("sh", &["-c", "echo started; echo err >&2; exec sleep 600"])
        .unwrap();
    assert!(wait_until(T, || p.output_so_far().contains("started")));
    assert!(p.output_so_far().contains("err"));
    assert!(p.is_running());
    let pid = p.pid() as i32;
    assert!(ns.pids().contains(&pid));
    drop(p);
    assert!(dead(pid));

    // links in a single namespace pair
    let name2 = format!("{}-y", unique_prefix("nsb"));
    let ns2 = Netns::new(&name2).unwrap();
    ns.add_veth("v0", &ns2, "v1").unwrap();
    ns.add_addr("v0", "192.0.2.1/24").unwrap();
    ns2.add_addr("v1", "192.0.2.2/24").unwrap();
    ns.add_addr("v0", "2001:db8:9::1/64").unwrap();
    ns2.add_addr("v1", "2001:db8:9::2/64").unwrap();
    ns.ethtool_k("v0", &[("tx", false)]).unwrap();
    ns2.ping("192.0.2.1".parse().unwrap(), T).unwrap();
    ns2.ping("2001:db8:9::1".parse().unwrap(), T).unwrap();
    ns2.add_bridge("br0").unwrap();
    ns2.set_master("v1", "br0").unwrap();
    drop(ns2);
    // The veth goes with ns2 (the kernel destroys namespaces asynchronously).
    assert!(wait_until(T, || ns.ifindex("v0").is_err()));
    drop(ns);
    gone(&name);
}

#[test]
fn tcp_and_udp_servers_round_trip() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("srv", 2).unwrap();

    // client -> lb's own address, server in lb (IPv4 and IPv6).
    let tcp = tcp_server(topo.lb(), sa("198.51.100.1:7000")).unwrap();
    let udp = udp_server(topo.lb(), sa("198.51.100.1:7000")).unwrap();
    let tcp6 = tcp_server_named(topo.lb(), sa("[2001:db8:1::1]:7000"), "lb6").unwrap();
    let c = topo.client();
    assert_eq!(tcp_request(c, tcp.addr(), "hello", T).unwrap(), "lb hello");
    assert_eq!(udp_request(c, udp.addr(), "ping", T).unwrap(), "lb ping");
    assert_eq!(tcp_request(c, tcp6.addr(), "six", T).unwrap(), "lb6 six");
    assert_eq!(tcp.accepted(), 1);
    assert_eq!(udp.accepted(), 1);

    // Payload integrity with a large line, and several lines on one connection.
    let big: String = (0..200_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut conn = tcp_connect(c, tcp.addr(), T).unwrap();
    assert_eq!(conn.request(&big).unwrap(), format!("lb {big}"));
    assert_eq!(conn.request("second").unwrap(), "lb second");
    drop(conn);

    // Held connections are counted and stay open until closed.
    let held: Vec<TcpClient> = (0..3)
        .map(|_| tcp_connect(c, tcp.addr(), T).unwrap())
        .collect();
    assert!(
        wait_until(T, || tcp.active() == 3),
        "active {}",
        tcp.active()
    );
    assert_eq!(tcp.accepted(), 5);
    for mut h in held {
        assert_eq!(h.request("still").unwrap(), "lb still");
        h.close();
    }
    assert!(
        wait_until(T, || tcp.active() == 0),
        "active {}",
        tcp.active()
    );

    // Backend servers reached from lb, named after their namespace.
    let servers: Vec<_> = (1..=2)
        .map(|i| {
            tcp_server(
                topo.backend(i),
                SocketAddr::new(topo.backend_addr(i).into(), 8080),
            )
            .unwrap()
        })
        .collect();
    let userv: Vec<_> = (1..=2)
        .map(|i| {
            udp_server(
                topo.backend(i),
                SocketAddr::new(topo.backend_addr(i).into(), 5353),
            )
            .unwrap()
        })
        .collect();
    for i in 1..=2 {
        let addr = SocketAddr::new(topo.backend_addr(i).into(), 8080);
        assert_eq!(
            tcp_request(topo.lb(), addr, "x", T).unwrap(),
            format!("be{i} x")
        );
        let uaddr = SocketAddr::new(topo.backend_addr(i).into(), 5353);
        assert_eq!(
            udp_request(topo.lb(), uaddr, "u", T).unwrap(),
            format!("be{i} u")
        );
        let reply = tcp_request(topo.lb(), addr, "who", T).unwrap();
        let label = reply.split_whitespace().next().unwrap();
        assert_eq!(topo.backend_by_label(label), Some(i));
    }
    // A UDP client keeps its source port over several requests.
    let u = udp_connect(topo.lb(), None, userv[0].addr(), T).unwrap();
    assert_eq!(u.request("a").unwrap(), "be1 a");
    assert_eq!(u.request("b").unwrap(), "be1 b");
    assert_eq!(userv[0].accepted(), 3);

    // Servers stop quickly on drop.
    let t0 = Instant::now();
    drop(servers);
    drop(userv);
    drop(tcp);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(tcp_request(c, sa("198.51.100.1:7000"), "x", T).is_err());
}

#[test]
fn nginx_serves_a_page_to_curl() {
    if !require_root() || !require_program("nginx") || !require_program("curl") {
        return;
    }
    let topo = Topology::balanced("ngx", 1).unwrap();
    let web = nginx(
        topo.backend(1),
        SocketAddr::new(topo.backend_addr(1).into(), 8080),
        r#"hello "from" be1"#,
    )
    .unwrap();
    let out = topo
        .lb()
        .exec(
            "curl",
            &["-sS", "--max-time", "5", &format!("{}some/path", web.url())],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello \"from\" be1\n");
    assert!(
        web.access_log().contains("/some/path"),
        "{}",
        web.access_log()
    );

    let web6 = nginx(topo.lb(), sa("[2001:db8:1::1]:80"), "six").unwrap();
    let out = topo
        .client()
        .exec("curl", &["-sS", "--max-time", "5", &web6.url()])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "six\n");

    let pid = web.pid() as i32;
    drop(web);
    assert!(dead(pid));
    assert!(nginx(topo.lb(), sa("198.51.100.1:80"), "a $var").is_err());
}

#[test]
fn two_topologies_at_once() {
    if !require_root() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Topology::balanced("two", 2).unwrap());
        let b = s.spawn(|| Topology::balanced("two", 2).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.prefix(), b.prefix());
    // Same addresses in both, each topology sees only its own server.
    let addr = SocketAddr::new(addrs::backend(1).into(), 9000);
    let sa_ = tcp_server_named(a.backend(1), addr, "A").unwrap();
    let sb = tcp_server_named(b.backend(1), addr, "B").unwrap();
    assert_eq!(tcp_request(a.lb(), addr, "1", T).unwrap(), "A 1");
    assert_eq!(tcp_request(b.lb(), addr, "2", T).unwrap(), "B 2");
    a.client().ping(IpAddr::V4(addrs::LB_FRONT), T).unwrap();
    b.client().ping(IpAddr::V4(addrs::LB_FRONT), T).unwrap();
    let (pa, pb) = (a.prefix().to_string(), b.prefix().to_string());
    drop((sa_, sb));
    drop(a);
    gone(&pa);
    // b is untouched by a's removal.
    b.client().ping(IpAddr::V4(addrs::LB_FRONT), T).unwrap();
    drop(b);
    gone(&pb);
}

#[test]
fn builder_without_ipv6() {
    if !require_root() {
        return;
    }
    let topo = Topology::builder()
        .hint("nov6")
        .backends(1)
        .ipv6(false)
        .build()
        .unwrap();
    assert!(!topo.has_ipv6());
    topo.client().ping(IpAddr::V4(addrs::LB_FRONT), T).unwrap();
    assert!(
        topo.client()
            .ping(IpAddr::V6(addrs::LB_FRONT6), Duration::from_millis(300))
            .is_err()
    );
    assert!(topo.add_client_addr("2001:db8:1::5/64").is_err());
    assert!(Topology::balanced("bad", 0).is_err());
}
