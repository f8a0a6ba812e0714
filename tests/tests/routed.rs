//! The routed topology of active-active, without the balancer: BIRD 2 with
//! the shipped examples on a router and three nodes, the nodes' VIP routes
//! put into table 200 by hand, as the daemon does. Proves the
//! infrastructure the active-active tests stand on (ECMP over every node,
//! an L4 hash that spreads one client's connections, BFD dropping a dead
//! node within a second, a withdrawn route leaving) and measures it.
//!
//! `cargo test -p balancer-tests --test routed` (root, bird2 installed).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use balancer_tests::{
    Routed, ServerHandle, require_program, require_root,
    routed::addrs::{VIP, VIP6},
    tcp_request, tcp_server_named,
};

/// BGP sessions come up within this (the nodes connect 1 s after start).
const SESSIONS: Duration = Duration::from_secs(15);
/// A route added, removed or lost shows at the router within this.
const CONVERGE: Duration = Duration::from_secs(5);
/// The bound for a dead node's next hop to go (BFD).
const DEAD_NODE: Duration = Duration::from_secs(1);

fn vip() -> IpAddr {
    VIP.into()
}

fn vip6() -> IpAddr {
    VIP6.into()
}

fn can_run() -> bool {
    require_root() && require_program("bird") && require_program("birdc")
}

/// A server on `VIP:80` in node `i`, answering `n<i> LINE`: without the
/// balancer, each node serves the VIP itself, so a reply names the node the
/// router picked.
fn serve_vip_on_node(topo: &Routed, i: usize) -> ServerHandle {
    topo.node(i)
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
        .unwrap();
    tcp_server_named(topo.node(i), SocketAddr::new(vip(), 80), &format!("n{i}")).unwrap()
}

/// `n` fresh connections from the client to `VIP:80`: how many each node
/// answered.
fn spread(topo: &Routed, n: usize) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for k in 0..n {
        let reply = tcp_request(
            topo.client(),
            SocketAddr::new(vip(), 80),
            &format!("c{k}"),
            Duration::from_secs(3),
        )
        .unwrap_or_else(|e| panic!("connection {k}: {e:#}"));
        let node = reply.split_once(' ').unwrap().0.to_string();
        *by_node.entry(node).or_insert(0) += 1;
    }
    by_node
}

#[test]
fn the_router_spreads_a_vip_over_every_node_and_drops_a_dead_node_within_a_second() {
    if !can_run() {
        return;
    }
    let mut topo = Routed::builder()
        .hint("ecmp")
        .nodes(3)
        .backends(1)
        .build()
        .unwrap();
    // Routes the node's BIRD must not announce: another protocol's host
    // route, and a route of the balancer's protocol that is not a host route.
    topo.node(1)
        .ip(&[
            "route",
            "add",
            "blackhole",
            "198.51.100.11/32",
            "table",
            "200",
            "proto",
            "static",
        ])
        .unwrap();
    topo.node(1)
        .ip(&[
            "route",
            "add",
            "blackhole",
            "198.51.100.16/28",
            "table",
            "200",
            "proto",
            "249",
        ])
        .unwrap();

    let started = Instant::now();
    topo.start_birds().unwrap();
    let sessions = topo.wait_sessions(3, SESSIONS).unwrap();
    eprintln!(
        "BGP and BFD: 3 nodes x (IPv4 + IPv6) up {:?} after BIRD started",
        started.elapsed()
    );
    assert!(sessions < SESSIONS);

    // Every node announces the VIP: one route, three equal next hops.
    let announced = Instant::now();
    for i in 1..=3 {
        topo.add_announce_route(i, vip()).unwrap();
        topo.add_announce_route(i, vip6()).unwrap();
        let routes = topo.announce_routes(i).unwrap();
        assert!(
            routes.contains(&VIP.to_string()) && routes.contains(&VIP6.to_string()),
            "{routes:?}"
        );
    }
    let all = [1, 2, 3];
    let ecmp = topo
        .wait_next_hops(vip(), &topo.hops(&all, vip()), CONVERGE)
        .unwrap();
    topo.wait_next_hops(vip6(), &topo.hops(&all, vip6()), CONVERGE)
        .unwrap();
    eprintln!(
        "ECMP: 3 next hops at the router {ecmp:?} after the routes were added \
         (IPv6 too after {:?})",
        announced.elapsed()
    );
    let route = topo
        .router()
        .ip(&["route", "show", "exact", &VIP.to_string()])
        .unwrap();
    assert!(
        route.contains("nexthop via") && route.contains("proto bird"),
        "{route}"
    );
    assert!(
        topo.next_hops("198.51.100.11".parse().unwrap())
            .unwrap()
            .is_empty(),
        "a route of another protocol was announced"
    );
    let wider = topo
        .router()
        .ip(&["route", "show", "exact", "198.51.100.16/28"])
        .unwrap();
    assert!(
        wider.trim().is_empty(),
        "a non-host route was announced: {wider}"
    );

    // The L4 hash spreads one client's connections over the three nodes.
    let servers: Vec<ServerHandle> = all.iter().map(|&i| serve_vip_on_node(&topo, i)).collect();
    let by_node = spread(&topo, 90);
    eprintln!("90 connections from one client: {by_node:?}");
    for i in all {
        let n = by_node.get(&format!("n{i}")).copied().unwrap_or(0);
        assert!(n * 100 >= 90 * 15, "node {i} took {n} of 90: {by_node:?}");
    }
    drop(servers);

    // Node 2's host dies: BFD takes its next hop away within a second.
    let died = Instant::now();
    topo.kill_node(2).unwrap();
    topo.wait_next_hops(vip(), &topo.hops(&[1, 3], vip()), DEAD_NODE)
        .unwrap();
    let gone = died.elapsed();
    topo.wait_next_hops(vip6(), &topo.hops(&[1, 3], vip6()), CONVERGE)
        .unwrap();
    eprintln!(
        "BFD: the dead node's next hop gone {gone:?} after its host died (IPv6 too after {:?})",
        died.elapsed()
    );

    // Node 3 withdraws its route: its next hop goes, BGP stays up.
    let withdrawn = Instant::now();
    topo.del_announce_route(3, vip()).unwrap();
    let took = topo
        .wait_next_hops(vip(), &topo.hops(&[1], vip()), CONVERGE)
        .unwrap();
    eprintln!("withdrawal: node 3's next hop gone {took:?} after its route was removed");
    assert!(withdrawn.elapsed() < DEAD_NODE, "{:?}", withdrawn.elapsed());
    let route = topo
        .router()
        .ip(&["route", "show", "exact", &VIP.to_string()])
        .unwrap();
    assert!(
        !route.contains("nexthop"),
        "one next hop is no multipath route: {route}"
    );
    assert_eq!(topo.node_bird(3).established().unwrap(), 2);

    // A fresh host replaces node 2 and announces again; node 3 too.
    topo.replace_node(2).unwrap();
    let joined = Instant::now();
    topo.start_node_bird(2).unwrap();
    topo.add_announce_route(2, vip()).unwrap();
    topo.add_announce_route(3, vip()).unwrap();
    let back = topo
        .wait_next_hops(vip(), &topo.hops(&all, vip()), SESSIONS)
        .unwrap();
    topo.wait_sessions(3, SESSIONS).unwrap();
    eprintln!(
        "rejoin: a fresh node 2 is a next hop again {back:?} after its routes were added \
         ({:?} after its BIRD started)",
        joined.elapsed()
    );

    // Every node withdraws: no route at all.
    for i in all {
        topo.del_announce_route(i, vip()).unwrap();
    }
    topo.wait_next_hops(vip(), &[], CONVERGE).unwrap();
}

#[test]
fn a_node_whose_bird_dies_loses_its_next_hop_and_a_restarted_one_announces_again() {
    if !can_run() {
        return;
    }
    let mut topo = Routed::builder()
        .hint("ecbd")
        .nodes(2)
        .backends(1)
        .build()
        .unwrap();
    assert!(topo.announce_routes(1).unwrap().is_empty());
    topo.add_announce_route(1, vip()).unwrap();
    topo.add_announce_route(2, vip()).unwrap();
    topo.start_birds().unwrap();
    // Routes already in the table when BIRD starts are announced too.
    topo.wait_next_hops(vip(), &topo.hops(&[1, 2], vip()), SESSIONS)
        .unwrap();
    topo.wait_sessions(2, SESSIONS).unwrap();
    // BIRD dies, the host and its route stay: its kernel closes the BGP
    // connection, and the router drops the session at once.
    let killed = Instant::now();
    topo.kill_node_bird(1).unwrap();
    topo.wait_next_hops(vip(), &topo.hops(&[2], vip()), DEAD_NODE)
        .unwrap();
    eprintln!(
        "a killed BIRD's next hop gone {:?} after (its TCP connection closed)",
        killed.elapsed()
    );
    topo.start_node_bird(1).unwrap();
    topo.wait_next_hops(vip(), &topo.hops(&[1, 2], vip()), SESSIONS)
        .unwrap();
    assert_eq!(topo.router_bird().established().unwrap(), 2 * 2);
}
