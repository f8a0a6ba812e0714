//! Active-active (issue 15): three balancer nodes behind an ECMP router,
//! every node serving the VIP. Real daemons (`[ha] mode = "active-active"`),
//! real BIRD 2 with the shipped examples (tests/src/routed.rs), a real
//! client: new connections spread over the nodes and the backends; 30
//! long-lived connections survive a node's death, its replacement by a
//! fresh host and another node's drain; a node without a healthy backend
//! withdraws its route and announces it again; a peer with the wrong key is
//! refused.
//!
//! What the daemon must do for these to pass: keep `VIP/32` in table
//! [`addrs::ANNOUNCE_TABLE`] with protocol [`addrs::BALANCER_PROTO`] while
//! it can serve the VIP, never otherwise; sync flows to every peer and
//! forward a peer's flow exactly as the owner would; adopt a dead peer's
//! SNAT address; `balancer drain` withdraws the routes, serves what is left
//! until it ends or the drain timeout, then exits.

mod ha_common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use balancer_tests::{
    Balancer, Chatter, Routed, ServerHandle, TempDir,
    config::Config,
    require_program, require_root,
    routed::addrs::{self, VIP},
    served_again_after, tcp_request, tcp_server, wait_until,
};
use ha_common::{KEY, ha, key_file};

/// How long a step may take to show (a daemon's start, a route, a copy).
const STEP: Duration = Duration::from_secs(20);
/// BGP and BFD sessions come up within this.
const SESSIONS: Duration = Duration::from_secs(15);
/// The bound: after a node's death, new connections are served
/// again within this.
const SERVED_AGAIN: Duration = Duration::from_secs(1);
/// The long-lived connections of the churn test.
const CHATTERS: usize = 30;
/// A drained node serves what is left for at most this long.
const DRAIN_TIMEOUT_S: u32 = 3;

fn vip() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

fn vip_ip() -> IpAddr {
    VIP.into()
}

/// The routed topology with its BIRDs up, three backends serving, and a
/// key file; no balancer yet.
struct Site {
    topo: Routed,
    nodes: Vec<Option<Balancer>>,
    _servers: Vec<ServerHandle>,
    keys: TempDir,
    key: String,
}

impl Site {
    /// `None` where the test cannot run here (it said why).
    fn new(hint: &str) -> Option<Site> {
        if !require_root() || !require_program("bird") || !require_program("birdc") {
            return None;
        }
        let mut topo = Routed::builder()
            .hint(hint)
            .nodes(3)
            .backends(3)
            .build()
            .unwrap();
        topo.start_birds().unwrap();
        topo.wait_sessions(3, SESSIONS).unwrap();
        let servers = (1..=3)
            .map(|j| {
                tcp_server(
                    topo.backend(j),
                    SocketAddr::new(addrs::backend(j).into(), 8080),
                )
            })
            .collect::<Result<_, _>>()
            .unwrap();
        let keys = TempDir::new("aakey").unwrap();
        let key = key_file(&keys, 0o600);
        Some(Site {
            topo,
            nodes: (0..3).map(|_| None).collect(),
            _servers: servers,
            keys,
            key,
        })
    }

    /// Node `i`'s configuration: the topology's active-active one, with a
    /// short drain.
    fn config(&self, i: usize, key: &str) -> Config {
        let mut c = self.topo.node_config(i, key);
        c.ha = c.ha.drain_timeout_s(DRAIN_TIMEOUT_S);
        c
    }

    fn start(&mut self, i: usize) {
        let key = self.key.clone();
        self.start_with_key(i, &key);
    }

    fn start_with_key(&mut self, i: usize, key: &str) {
        let lb = Balancer::start(self.topo.node(i), &self.config(i, key)).unwrap();
        self.nodes[i - 1] = Some(lb);
    }

    fn node(&self, i: usize) -> &Balancer {
        self.nodes[i - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} runs no balancer"))
    }

    /// Waits until the router sends the VIP to exactly `nodes`.
    fn wait_hops(&self, nodes: &[usize], timeout: Duration) -> Duration {
        self.topo
            .wait_next_hops(vip_ip(), &self.topo.hops(nodes, vip_ip()), timeout)
            .unwrap_or_else(|e| {
                panic!(
                    "{e:#}\nannounce tables: {}\n{}",
                    self.announce_tables(),
                    self.logs()
                )
            })
    }

    fn announce_tables(&self) -> String {
        (1..=self.topo.n_nodes())
            .map(|i| format!("node{i}: {:?}", self.topo.announce_routes(i).ok()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(k, lb)| {
                lb.as_ref()
                    .map(|lb| format!("--- node{}:\n{}", k + 1, lb.output_so_far()))
            })
            .collect()
    }

    /// `n` fresh connections: how many each node got (counted in the
    /// switch) and how many each backend answered.
    fn spread(&self, n: usize) -> (Vec<u64>, BTreeMap<String, usize>) {
        let before = self.topo.new_connections_per_node().unwrap();
        let mut backends = BTreeMap::new();
        for k in 0..n {
            let reply = tcp_request(
                self.topo.client(),
                vip(),
                &format!("new {k}"),
                Duration::from_secs(3),
            )
            .unwrap_or_else(|e| panic!("new connection {k}: {e:#}\n{}", self.logs()));
            let backend = reply.split_once(' ').unwrap().0.to_string();
            *backends.entry(backend).or_insert(0) += 1;
        }
        let after = self.topo.new_connections_per_node().unwrap();
        let nodes = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        (nodes, backends)
    }
}

fn assert_all_survived(failed: Vec<String>, n: usize, site: &Site) {
    assert!(
        failed.is_empty(),
        "{} of {n} connections broke:\n{}\n{}",
        failed.len(),
        failed.join("\n"),
        site.logs()
    );
    eprintln!("{n} of {n} connections kept working");
}

fn chatter_step(chatter: &Chatter, site: &Site, what: &str) {
    if let Err(e) = chatter.wait_for_more(10, STEP) {
        panic!("{what}: {e:#}\n{}", site.logs());
    }
}

#[test]
fn three_nodes_share_new_connections_and_keep_every_connection_through_death_replacement_and_drain()
{
    let Some(mut site) = Site::new("aach") else {
        return;
    };
    for i in 1..=3 {
        site.start(i);
    }
    // Every node announces the VIP with the balancer's protocol number.
    let announced = site.wait_hops(&[1, 2, 3], STEP);
    eprintln!("3 next hops at the router {announced:?} after the last daemon started");
    for i in 1..=3 {
        let routes = site.topo.announce_routes(i).unwrap();
        assert!(
            routes.contains(&VIP.to_string()),
            "node{i}'s table {}: {routes:?}",
            addrs::ANNOUNCE_TABLE
        );
    }
    // Nobody owns the VIP by ARP: no node has it as an address.
    for i in 1..=3 {
        let addrs = site.topo.node(i).ip(&["-4", "addr", "show"]).unwrap();
        assert!(!addrs.contains(&format!("{VIP}/")), "node{i}: {addrs}");
    }

    // New connections spread over the nodes and over the backends.
    site.topo.count_new_connections(vip_ip(), 80).unwrap();
    let (by_node, by_backend) = site.spread(90);
    eprintln!("90 new connections: per node {by_node:?}, per backend {by_backend:?}");
    for (k, n) in by_node.iter().enumerate() {
        assert!(
            n * 100 >= 90 * 15,
            "node{} took {n} of 90: {by_node:?}",
            k + 1
        );
    }
    for j in 1..=3 {
        let n = by_backend.get(&format!("be{j}")).copied().unwrap_or(0);
        assert!(
            n * 100 >= 90 * 15,
            "be{j} answered {n} of 90: {by_backend:?}"
        );
    }

    let chatter = Chatter::start(site.topo.client(), vip(), CHATTERS).unwrap();
    chatter_step(&chatter, &site, "before anything happened");

    // Node 1's host dies.
    let died = Instant::now();
    site.topo.kill_node(1).unwrap();
    let served = served_again_after(site.topo.client(), vip(), died);
    site.wait_hops(&[2, 3], STEP);
    eprintln!("after node1's death, new connections served again after {served:?}");
    match served {
        Some(t) => assert!(
            t <= SERVED_AGAIN,
            "new connections served again only after {t:?}"
        ),
        None => panic!(
            "new connections not served again within 10 s\n{}",
            site.logs()
        ),
    }
    chatter_step(&chatter, &site, "after node1's death");
    drop(site.nodes[0].take());

    // A fresh host (nothing pinned) replaces it and joins.
    site.topo.replace_node(1).unwrap();
    site.topo.start_node_bird(1).unwrap();
    site.start(1);
    site.wait_hops(&[1, 2, 3], STEP);
    site.topo.wait_sessions(3, SESSIONS).unwrap();
    chatter_step(&chatter, &site, "after a fresh node1 joined");

    // Node 2 is drained: its route goes first, then it serves what is
    // left until the drain timeout, then stops.
    let out = site.node(2).cli(&["drain"]).unwrap();
    assert!(out.status.success(), "balancer drain: {out:?}");
    site.wait_hops(&[1, 3], STEP);
    chatter_step(&chatter, &site, "while node2 drains");
    let mut drained = site.nodes[1].take().unwrap();
    let exited = drained
        .process()
        .wait_timeout(Duration::from_secs(u64::from(DRAIN_TIMEOUT_S) + 15))
        .unwrap();
    assert!(
        exited.is_some_and(|s| s.success()),
        "node2 did not stop cleanly after its drain ({exited:?}):\n{}",
        drained.output_so_far()
    );
    assert!(
        site.topo.announce_routes(2).unwrap().is_empty(),
        "a drained node's announcements stay: {:?}",
        site.topo.announce_routes(2)
    );
    chatter_step(&chatter, &site, "after node2 stopped");
    assert_all_survived(chatter.stop(), CHATTERS, &site);
}

#[test]
fn a_node_whose_backends_are_all_down_withdraws_its_route_and_announces_again() {
    let Some(mut site) = Site::new("aabe") else {
        return;
    };
    for i in 1..=3 {
        site.start(i);
    }
    site.wait_hops(&[1, 2, 3], STEP);
    // Node 2's health checks fail (its own traffic to the backends is
    // dropped): to it, every backend is down.
    let block = "add table inet hc; \
                 add chain inet hc out { type filter hook output priority 0; }; \
                 add rule inet hc out tcp dport 8080 drop";
    site.topo.node(2).exec("nft", &[block]).unwrap();
    let down = Instant::now();
    site.wait_hops(&[1, 3], STEP);
    eprintln!(
        "node2 withdrew {:?} after its backends went down",
        down.elapsed()
    );
    assert!(
        site.topo.announce_routes(2).unwrap().is_empty(),
        "{:?}",
        site.topo.announce_routes(2)
    );
    // The others serve.
    let (by_node, _) = {
        site.topo.count_new_connections(vip_ip(), 80).unwrap();
        site.spread(30)
    };
    assert_eq!(
        by_node[1], 0,
        "the router still sends to node2: {by_node:?}"
    );
    // The backends come back for it: it announces again.
    site.topo
        .node(2)
        .exec("nft", &["delete table inet hc"])
        .unwrap();
    let up = Instant::now();
    site.wait_hops(&[1, 2, 3], STEP);
    eprintln!(
        "node2 announced again {:?} after its backends came back",
        up.elapsed()
    );
    assert!(
        site.topo
            .announce_routes(2)
            .unwrap()
            .contains(&VIP.to_string())
    );
}

#[test]
fn a_peer_with_the_wrong_key_is_refused() {
    let Some(mut site) = Site::new("aakey") else {
        return;
    };
    let other = site.keys.join("other.key");
    std::fs::write(&other, "another key, not the sites' at all").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(std::fs::read_to_string(&other).unwrap(), KEY);
    site.start(1);
    site.start(2);
    site.start_with_key(3, other.to_str().unwrap());
    // Nodes 1 and 2 serve, whatever node 3 does.
    let (n1, n2) = (
        site.topo.node_hop(1, vip_ip()),
        site.topo.node_hop(2, vip_ip()),
    );
    let ok = wait_until(STEP, || {
        let hops = site.topo.next_hops(vip_ip()).unwrap_or_default();
        hops.contains(&n1) && hops.contains(&n2)
    });
    assert!(
        ok,
        "nodes 1 and 2 do not both announce the VIP: {}\n{}",
        site.announce_tables(),
        site.logs()
    );
    // Nodes 1 and 2 refuse node 3's adverts, and node 3 theirs.
    let refused = |i: usize| -> u64 {
        ha(site.node(i))["adverts_rejected"]["forged"]
            .as_u64()
            .unwrap_or(0)
    };
    let ok = wait_until(STEP, || (1..=3).all(|i| refused(i) > 0));
    assert!(
        ok,
        "adverts refused as forged: node1 {}, node2 {}, node3 {}\n{}",
        refused(1),
        refused(2),
        refused(3),
        site.logs()
    );
    // Nobody counts the stranger as a live peer; nodes 1 and 2 each other.
    let alive = |i: usize, peer: &str| -> bool {
        ha(site.node(i))["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["node"] == peer && p["alive"] == true)
    };
    let ok = wait_until(STEP, || alive(1, "node2") && alive(2, "node1"));
    assert!(ok, "{}\n{}", ha(site.node(1)), ha(site.node(2)));
    for (i, peer) in [(1, "node3"), (2, "node3"), (3, "node1"), (3, "node2")] {
        assert!(
            !alive(i, peer),
            "node{i} counts {peer} alive: {}",
            ha(site.node(i))
        );
    }
    // Node 3's flows reach nodes 1 and 2 as sync records they refuse.
    site.topo.count_new_connections(vip_ip(), 80).unwrap();
    let (by_node, _) = site.spread(30);
    if by_node[2] == 0 {
        // Node 3 announces nothing: it has no flows to send.
        eprintln!("no connection went through node3: {by_node:?}");
        return;
    }
    let rejected = |i: usize| ha(site.node(i))["sync_rejected"].as_u64().unwrap_or(0);
    let ok = wait_until(STEP, || rejected(1) > 0 && rejected(2) > 0);
    assert!(
        ok,
        "node3's sync records refused: node1 {}, node2 {}",
        ha(site.node(1))["sync_rejected_by_reason"],
        ha(site.node(2))["sync_rejected_by_reason"]
    );
}
