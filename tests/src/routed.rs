//! The routed topology of active-active: a client behind a router that
//! spreads connections over N balancer nodes by equal-cost multipath, the
//! routes learned by BGP (BIRD 2 on every host) with BFD.
//!
//! ```text
//!  ns client               ns router                 ns sw        ns nK (K = 1..N)
//!  eth0 192.0.2.2 ------- cl 192.0.2.1
//!                          front 198.51.100.254 -- rf ]-brf-[ nfK -- front 198.51.100.K
//!                                                                    back  203.0.113.K
//!  ns beJ (J = 1..M)                                  |
//!  eth0 203.0.113.1J ----------------------------- beJ ]-brb-[ nbK -- (back)
//! ```
//!
//! The router (AS 64496) runs `examples/active-active/bird-router.conf`:
//! BGP with every node, `merge paths` into one ECMP route per VIP, an L4
//! multipath hash (`fib_multipath_hash_policy = 1`) and BFD. Every node
//! (AS 64500) runs `examples/active-active/bird-node.conf`, which announces
//! the host routes kept in kernel table [`addrs::ANNOUNCE_TABLE`] with
//! protocol [`addrs::BALANCER_PROTO`]. The VIP, 198.51.100.10, lies in the
//! front network: the /32 learned by BGP wins over the connected /24, and no
//! one answers ARP for it. Nodes have a default route via the router (for
//! the replies to the client) and each its own SNAT address
//! ([`addrs::node_snat`]). IPv6 the same way: client 2001:db8:3::2, router
//! 2001:db8:3::1 and 2001:db8:1::fe, node K 2001:db8:1::K and 2001:db8:2::K,
//! VIP 2001:db8:1::10.
//!
//! Nothing is created in the root namespace; dropping the topology kills
//! every BIRD and every other process in it and removes every namespace.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    Netns,
    bird::{Bird, example_path, with_defines},
    config::{Config, Ha, HaMode, Health, Service},
    netns::{addr_add_line, bridge_line, veth_line},
    poll_until,
    topology::addrs as std_addrs,
    util::unique_prefix,
};

/// Addresses, AS numbers and names of the routed topology.
pub mod addrs {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 2);
    /// The router's address towards the client (`cl`).
    pub const ROUTER_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const ROUTER_CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);
    /// The router's address on the nodes' front network (`front`).
    pub const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
    pub const ROUTER_FRONT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
    /// The service address every node announces.
    pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
    pub const ROUTER_AS: u32 = 64496;
    /// Every node's AS.
    pub const NODE_AS: u32 = 64500;
    /// `[ha] announce_table`: the kernel table of the nodes' VIP routes.
    pub const ANNOUNCE_TABLE: u32 = 200;
    /// The route protocol number the balancer marks its VIP routes with
    /// (`define BALANCER_PROTO` of bird-node.conf).
    pub const BALANCER_PROTO: u8 = 249;
    /// At most this many nodes (198.51.100.1 ..= .9: .10 is the VIP).
    pub const MAX_NODES: usize = 9;
    pub const PREFIX_LEN4: u8 = 24;
    pub const PREFIX_LEN6: u8 = 64;

    fn check(i: usize) {
        assert!(
            (1..=MAX_NODES).contains(&i),
            "node {i} out of 1..={MAX_NODES}"
        );
    }

    /// Node `i` (1-based) on the front network: 198.51.100.i.
    pub fn node_front(i: usize) -> Ipv4Addr {
        check(i);
        Ipv4Addr::new(198, 51, 100, i as u8)
    }

    /// 2001:db8:1::i.
    pub fn node_front6(i: usize) -> Ipv6Addr {
        check(i);
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16)
    }

    /// Node `i` on the backend network: 203.0.113.i.
    pub fn node_back(i: usize) -> Ipv4Addr {
        check(i);
        Ipv4Addr::new(203, 0, 113, i as u8)
    }

    /// 2001:db8:2::i.
    pub fn node_back6(i: usize) -> Ipv6Addr {
        check(i);
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, i as u16)
    }

    /// Node `i`'s own SNAT address: 203.0.113.(100 + i). Not configured by
    /// the topology: the daemon adds it.
    pub fn node_snat(i: usize) -> Ipv4Addr {
        check(i);
        Ipv4Addr::new(203, 0, 113, 100 + i as u8)
    }

    /// 2001:db8:2::1:i.
    pub fn node_snat6(i: usize) -> Ipv6Addr {
        check(i);
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 1, i as u16)
    }

    /// Backend `j` (1-based): 203.0.113.(10 + j), as in the standard topology.
    pub fn backend(j: usize) -> Ipv4Addr {
        super::std_addrs::backend(j)
    }

    pub fn backend6(j: usize) -> Ipv6Addr {
        super::std_addrs::backend6(j)
    }
}

/// Interface names.
pub mod ifnames {
    /// The client's interface, and every backend's.
    pub const HOST: &str = "eth0";
    /// The router's interface towards the client.
    pub const ROUTER_CLIENT: &str = "cl";
    /// The router's and every node's interface on the front network.
    pub const FRONT: &str = "front";
    /// Every node's interface on the backend network.
    pub const BACK: &str = "back";
    pub const BRIDGE_FRONT: &str = "brf";
    pub const BRIDGE_BACK: &str = "brb";
    /// The switch-side peer of the router's `front`.
    pub const SW_ROUTER: &str = "rf";

    /// The switch-side peer of node `i`'s `front`.
    pub fn sw_node_front(i: usize) -> String {
        format!("nf{i}")
    }

    /// The switch-side peer of node `i`'s `back`.
    pub fn sw_node_back(i: usize) -> String {
        format!("nb{i}")
    }

    /// The switch-side peer of backend `j`'s `eth0`.
    pub fn sw_backend(j: usize) -> String {
        format!("be{j}")
    }
}

/// Builder for [`Routed`].
#[derive(Debug, Clone)]
pub struct RoutedBuilder {
    hint: String,
    nodes: usize,
    backends: usize,
}

impl RoutedBuilder {
    /// A few letters that go into the namespace names.
    pub fn hint(mut self, hint: &str) -> Self {
        self.hint = hint.into();
        self
    }

    /// Balancer nodes, 1..=[`addrs::MAX_NODES`]; default 3.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Backends; default 3.
    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    pub fn build(self) -> Result<Routed> {
        Routed::build(self)
    }
}

/// The routed topology (see the module documentation). Dropping it stops
/// every BIRD, kills every process in it and removes every namespace.
pub struct Routed {
    prefix: String,
    replacements: u32,
    // Field order is drop order: the daemons first, the switch last.
    router_bird: Option<Bird>,
    node_birds: Vec<Option<Bird>>,
    client: Netns,
    router: Netns,
    nodes: Vec<Netns>,
    backends: Vec<Netns>,
    sw: Netns,
}

impl Routed {
    pub fn builder() -> RoutedBuilder {
        RoutedBuilder {
            hint: String::new(),
            nodes: 3,
            backends: 3,
        }
    }

    fn build(b: RoutedBuilder) -> Result<Routed> {
        ensure!(
            (1..=addrs::MAX_NODES).contains(&b.nodes),
            "number of nodes must be in 1..={}, not {}",
            addrs::MAX_NODES,
            b.nodes
        );
        ensure!(
            (1..=std_addrs::MAX_BACKENDS).contains(&b.backends),
            "number of backends must be in 1..={}, not {}",
            std_addrs::MAX_BACKENDS,
            b.backends
        );
        let started = Instant::now();
        let prefix = unique_prefix(if b.hint.is_empty() { "ecmp" } else { &b.hint });
        let ns = |role: &str| Netns::with_label(&format!("{prefix}-{role}"), role);
        let sw = ns("sw")?;
        let client = ns("client")?;
        let router = ns("router")?;
        let mut nodes = Vec::with_capacity(b.nodes);
        for i in 1..=b.nodes {
            nodes.push(ns(&format!("n{i}"))?);
        }
        let mut backends = Vec::with_capacity(b.backends);
        for j in 1..=b.backends {
            backends.push(ns(&format!("be{j}"))?);
        }
        let topo = Routed {
            prefix,
            replacements: 0,
            router_bird: None,
            node_birds: (0..b.nodes).map(|_| None).collect(),
            client,
            router,
            nodes,
            backends,
            sw,
        };
        topo.wire()
            .with_context(|| format!("building routed topology {}", topo.prefix))?;
        if std::env::var_os("BALANCER_TESTS_VERBOSE").is_some() {
            eprintln!(
                "routed topology {} ({} nodes, {} backends) built in {:?}",
                topo.prefix,
                topo.nodes.len(),
                topo.backends.len(),
                started.elapsed()
            );
        }
        Ok(topo)
    }

    fn wire(&self) -> Result<()> {
        use ifnames::*;
        self.sw.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        self.sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        self.sw.ip_batch(&[
            bridge_line(BRIDGE_FRONT),
            bridge_line(BRIDGE_BACK),
            format!("link set {BRIDGE_FRONT} up"),
            format!("link set {BRIDGE_BACK} up"),
        ])?;
        let hosts = [&self.client, &self.router]
            .into_iter()
            .chain(self.nodes.iter())
            .chain(self.backends.iter());
        for h in hosts {
            no_dad(h)?;
        }

        // client -- router, one veth pair.
        self.client.ip_batch(&[
            veth_line(HOST, &self.router, ROUTER_CLIENT),
            addr_add_line(HOST, &format!("{}/24", addrs::CLIENT)),
            addr_add_line(HOST, &format!("{}/64", addrs::CLIENT6)),
            format!("link set {HOST} up"),
            format!("route add default via {}", addrs::ROUTER_CLIENT),
            format!("route add default via {}", addrs::ROUTER_CLIENT6),
        ])?;
        self.router.ip_batch(&[
            veth_line(FRONT, &self.sw, SW_ROUTER),
            addr_add_line(ROUTER_CLIENT, &format!("{}/24", addrs::ROUTER_CLIENT)),
            addr_add_line(ROUTER_CLIENT, &format!("{}/64", addrs::ROUTER_CLIENT6)),
            addr_add_line(
                FRONT,
                &format!("{}/{}", addrs::ROUTER_FRONT, addrs::PREFIX_LEN4),
            ),
            addr_add_line(
                FRONT,
                &format!("{}/{}", addrs::ROUTER_FRONT6, addrs::PREFIX_LEN6),
            ),
            format!("link set {ROUTER_CLIENT} up"),
            format!("link set {FRONT} up"),
        ])?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // Layer-4 hash: one client's connections spread over the nodes.
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
        ] {
            self.router.sysctl(key, value)?;
        }

        for i in 1..=self.nodes.len() {
            self.wire_node(i, &self.nodes[i - 1])?;
        }

        for (idx, be) in self.backends.iter().enumerate() {
            let j = idx + 1;
            be.ip_batch(&[
                veth_line(HOST, &self.sw, &sw_backend(j)),
                addr_add_line(
                    HOST,
                    &format!("{}/{}", addrs::backend(j), addrs::PREFIX_LEN4),
                ),
                addr_add_line(
                    HOST,
                    &format!("{}/{}", addrs::backend6(j), addrs::PREFIX_LEN6),
                ),
                format!("link set {HOST} up"),
            ])?;
        }

        let mut lines = vec![format!("link set {SW_ROUTER} master {BRIDGE_FRONT} up")];
        for j in 1..=self.backends.len() {
            lines.push(format!(
                "link set {} master {BRIDGE_BACK} up",
                sw_backend(j)
            ));
        }
        self.sw.ip_batch(&lines)
    }

    /// Node `i`'s links, addresses and routes in `ns`, its ports on the
    /// bridges (up) and the offloads XDP on veth needs.
    fn wire_node(&self, i: usize, ns: &Netns) -> Result<()> {
        use ifnames::*;
        ns.ip_batch(&[
            veth_line(FRONT, &self.sw, &sw_node_front(i)),
            veth_line(BACK, &self.sw, &sw_node_back(i)),
            addr_add_line(
                FRONT,
                &format!("{}/{}", addrs::node_front(i), addrs::PREFIX_LEN4),
            ),
            addr_add_line(
                FRONT,
                &format!("{}/{}", addrs::node_front6(i), addrs::PREFIX_LEN6),
            ),
            addr_add_line(
                BACK,
                &format!("{}/{}", addrs::node_back(i), addrs::PREFIX_LEN4),
            ),
            addr_add_line(
                BACK,
                &format!("{}/{}", addrs::node_back6(i), addrs::PREFIX_LEN6),
            ),
            format!("link set {FRONT} up"),
            format!("link set {BACK} up"),
            format!("route add default via {}", addrs::ROUTER_FRONT),
            format!("route add default via {}", addrs::ROUTER_FRONT6),
        ])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        self.sw.ip_batch(&[
            format!("link set {} master {BRIDGE_FRONT} up", sw_node_front(i)),
            format!("link set {} master {BRIDGE_BACK} up", sw_node_back(i)),
        ])?;
        // TOOLCHAIN.md, "XDP on veth pairs": checksums filled in before frames
        // reach the node's XDP program, and NAPI on the peers for redirects.
        for dev in [sw_node_front(i), sw_node_back(i)] {
            self.sw.ethtool_k(&dev, &[("tx", false), ("gro", true)])?;
        }
        for dev in [FRONT, BACK] {
            ns.ethtool_k(dev, &[("tx", false)])?;
        }
        Ok(())
    }

    // ---- BIRD --------------------------------------------------------------

    /// The router's configuration: `examples/active-active/bird-router.conf`
    /// with this topology's values.
    pub fn router_bird_config(&self) -> Result<String> {
        let text = std::fs::read_to_string(example_path("bird-router.conf"))?;
        with_defines(
            &text,
            &[
                ("ROUTER_ID", addrs::ROUTER_CLIENT.to_string()),
                ("ROUTER_AS", addrs::ROUTER_AS.to_string()),
                ("NODE_AS", addrs::NODE_AS.to_string()),
                ("NODES4", format!("198.51.100.0/{}", addrs::PREFIX_LEN4)),
                ("NODES6", format!("2001:db8:1::/{}", addrs::PREFIX_LEN6)),
            ],
        )
    }

    /// Node `i`'s configuration: `examples/active-active/bird-node.conf`
    /// with node `i`'s values.
    pub fn node_bird_config(&self, i: usize) -> Result<String> {
        let text = std::fs::read_to_string(example_path("bird-node.conf"))?;
        with_defines(
            &text,
            &[
                ("NODE_ID", addrs::node_front(i).to_string()),
                ("NODE_AS", addrs::NODE_AS.to_string()),
                ("ROUTER_AS", addrs::ROUTER_AS.to_string()),
                ("ROUTER4", addrs::ROUTER_FRONT.to_string()),
                ("ROUTER6", addrs::ROUTER_FRONT6.to_string()),
                ("ANNOUNCE_TABLE", addrs::ANNOUNCE_TABLE.to_string()),
            ],
        )
    }

    /// Starts BIRD on the router and on every node.
    pub fn start_birds(&mut self) -> Result<()> {
        self.start_router_bird()?;
        for i in 1..=self.nodes.len() {
            self.start_node_bird(i)?;
        }
        Ok(())
    }

    pub fn start_router_bird(&mut self) -> Result<()> {
        ensure!(
            self.router_bird.is_none(),
            "BIRD already runs on the router"
        );
        self.router_bird = Some(Bird::start(&self.router, &self.router_bird_config()?)?);
        Ok(())
    }

    pub fn start_node_bird(&mut self, i: usize) -> Result<()> {
        self.check_node(i);
        ensure!(
            self.node_birds[i - 1].is_none(),
            "BIRD already runs on node {i}"
        );
        let bird = Bird::start(&self.nodes[i - 1], &self.node_bird_config(i)?)?;
        self.node_birds[i - 1] = Some(bird);
        Ok(())
    }

    /// Kills node `i`'s BIRD (its routes go when the router's BFD notices).
    pub fn kill_node_bird(&mut self, i: usize) -> Result<()> {
        self.check_node(i);
        match self.node_birds[i - 1].take() {
            Some(mut bird) => bird.kill(),
            None => bail!("BIRD does not run on node {i}"),
        }
    }

    pub fn router_bird(&self) -> &Bird {
        self.router_bird
            .as_ref()
            .expect("BIRD does not run on the router")
    }

    pub fn node_bird(&self, i: usize) -> &Bird {
        self.check_node(i);
        self.node_birds[i - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("BIRD does not run on node {i}"))
    }

    /// Waits until the router has an established BGP session with each of
    /// `n` nodes, for IPv4 and for IPv6, each watched by a BFD session that
    /// is up (until then a node's death would go unnoticed for the BGP hold
    /// time); returns how long that took.
    pub fn wait_sessions(&self, n: usize, timeout: Duration) -> Result<Duration> {
        let bird = self.router_bird();
        let mut last = String::new();
        let took = poll_until(timeout, Duration::from_millis(20), || {
            let bgp = bird.established().unwrap_or(0);
            let bfd = bird.bfd_sessions().unwrap_or_default();
            let bfd_up = bfd.iter().filter(|(_, state)| state == "Up").count();
            last = format!("BGP established: {bgp}, BFD: {bfd:?}");
            bgp == 2 * n && bfd_up == 2 * n
        });
        took.with_context(|| {
            format!(
                "the router has not {n} nodes' BGP and BFD sessions (IPv4 and IPv6) up within \
                 {timeout:?}: {last}\n{}",
                bird.birdc(&["show", "protocols"]).unwrap_or_default()
            )
        })
    }

    // ---- Balancers -----------------------------------------------------------

    /// Node `i`'s balancer configuration for active-active: named `node{i}`,
    /// the other nodes as peers, its own SNAT address ([`addrs::node_snat`]),
    /// flow sync, adverts every 100 ms (dead after 3), the VIP's host route
    /// in [`addrs::ANNOUNCE_TABLE`], no metrics endpoint, and the service
    /// `web` (the VIP, port 80) on every backend's port 8080 with TCP health
    /// checks every 200 ms; `key` is the HA key file.
    pub fn node_config(&self, i: usize, key: &str) -> Config {
        self.check_node(i);
        let peers = (1..=self.nodes.len())
            .filter(|&k| k != i)
            .map(addrs::node_front);
        Config::new(&format!("node{i}"))
            .snat([addrs::node_snat(i)])
            .metrics_off()
            .ha(Ha::enabled()
                .mode(HaMode::ActiveActive)
                .interface(ifnames::FRONT)
                .peers(peers)
                .announce_table(addrs::ANNOUNCE_TABLE)
                .auth_key_file(key)
                .sync_flows(true)
                .advert_interval_ms(100)
                .dead_after(3))
            .service(
                Service::tcp("web", addrs::VIP, 80)
                    .health(Health::tcp().timing(200, 100, 1, 2))
                    .backends(
                        (1..=self.backends.len())
                            .map(|j| SocketAddr::new(addrs::backend(j).into(), 8080)),
                    ),
            )
    }

    // ---- Routes ------------------------------------------------------------

    /// The next hops of the router's route to exactly `ip` (a /32 or /128) in
    /// its main table; none if it has no such route.
    pub fn next_hops(&self, ip: IpAddr) -> Result<Vec<IpAddr>> {
        let family = if ip.is_ipv4() { "-4" } else { "-6" };
        let text = self.router.ip(&[
            family,
            "route",
            "show",
            "table",
            "main",
            "exact",
            &ip.to_string(),
        ])?;
        Ok(parse_next_hops(&text))
    }

    /// Waits (polling every 5 ms, so the result is that precise) until the
    /// router's route to `ip` has exactly the next hops `want` (any order;
    /// empty: no route); returns how long that took.
    pub fn wait_next_hops(
        &self,
        ip: IpAddr,
        want: &[IpAddr],
        timeout: Duration,
    ) -> Result<Duration> {
        let mut want = want.to_vec();
        want.sort();
        let mut last = Vec::new();
        let took = poll_until(timeout, Duration::from_millis(5), || {
            last = self.next_hops(ip).unwrap_or_default();
            last.sort();
            last == want
        });
        took.with_context(|| {
            format!(
                "the router's route to {ip} has next hops {last:?}, not {want:?}, after {timeout:?}\n\
                 router BIRD:\n{}",
                self.router_bird
                    .as_ref()
                    .and_then(|b| b.birdc(&["show", "protocols"]).ok())
                    .unwrap_or_default()
            )
        })
    }

    /// The next hop of node `i` for `ip`'s family (its front address).
    pub fn node_hop(&self, i: usize, ip: IpAddr) -> IpAddr {
        if ip.is_ipv4() {
            addrs::node_front(i).into()
        } else {
            addrs::node_front6(i).into()
        }
    }

    /// The next hops of nodes `nodes` for `ip`'s family.
    pub fn hops(&self, nodes: &[usize], ip: IpAddr) -> Vec<IpAddr> {
        nodes.iter().map(|&i| self.node_hop(i, ip)).collect()
    }

    /// What the balancer does while it can serve `ip`, done by hand: a host
    /// route to it in node `i`'s table [`addrs::ANNOUNCE_TABLE`] with
    /// protocol [`addrs::BALANCER_PROTO`] (a blackhole: the table only
    /// carries the announcement, nothing is routed by it).
    pub fn add_announce_route(&self, i: usize, ip: IpAddr) -> Result<()> {
        self.node(i).ip_batch(&[announce_route_line("add", ip)])
    }

    /// Removes what [`Routed::add_announce_route`] added.
    pub fn del_announce_route(&self, i: usize, ip: IpAddr) -> Result<()> {
        self.node(i).ip_batch(&[announce_route_line("del", ip)])
    }

    /// The destinations of node `i`'s routes in table
    /// [`addrs::ANNOUNCE_TABLE`] with protocol [`addrs::BALANCER_PROTO`]
    /// (IPv4, then IPv6), as `ip route` prints them; none if the table
    /// does not exist.
    pub fn announce_routes(&self, i: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for family in ["-4", "-6"] {
            let args = [
                family,
                "route",
                "show",
                "table",
                &addrs::ANNOUNCE_TABLE.to_string(),
                "proto",
                &addrs::BALANCER_PROTO.to_string(),
            ];
            let text = match self.node(i).ip(&args) {
                Ok(text) => text,
                // A table the kernel never had a route in.
                Err(e) if format!("{e:#}").contains("FIB table does not exist") => continue,
                Err(e) => return Err(e),
            };
            out.extend(text.lines().filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.parse::<IpAddr>().is_ok() || w.contains('/'))
                    .map(str::to_string)
            }));
        }
        Ok(out)
    }

    // ---- Hosts ---------------------------------------------------------------

    /// Node `i`'s host dies: every process in it is killed at once
    /// (SIGKILL; its BIRD and balancer too) and its links go, and with them
    /// any XDP program. Nothing is cleaned up; the namespace stays, empty,
    /// until [`Routed::replace_node`].
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        self.check_node(i);
        let ns = &self.nodes[i - 1];
        // The links first: a host that dies says nothing. Processes killed
        // while the links are up would have their kernel close their TCP
        // connections (a FIN or RST to the router ends the BGP session at
        // once, sooner than BFD would).
        ns.ip_batch(&[
            format!("link del {}", ifnames::FRONT),
            format!("link del {}", ifnames::BACK),
        ])?;
        for pid in ns.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Reaped (it was killed above with everything else).
        self.node_birds[i - 1] = None;
        Ok(())
    }

    /// A fresh host in place of node `i` (after [`Routed::kill_node`]): a
    /// new namespace with nothing running and nothing pinned, wired to the
    /// same bridge ports with the same addresses. BIRD is not started.
    pub fn replace_node(&mut self, i: usize) -> Result<()> {
        self.check_node(i);
        ensure!(
            self.node_birds[i - 1].is_none(),
            "node {i} is still running BIRD: kill it first"
        );
        self.replacements += 1;
        let label = format!("n{i}");
        let name = format!("{}-{label}r{}", self.prefix, self.replacements);
        let fresh = Netns::with_label(&name, &label)?;
        no_dad(&fresh)?;
        self.wire_node(i, &fresh)?;
        let old = std::mem::replace(&mut self.nodes[i - 1], fresh);
        drop(old);
        Ok(())
    }

    // ---- Counting what the router sends to each node -----------------------

    /// Starts counting, in the switch, the TCP SYNs (new connections) to
    /// `vip`:`port` that the router sends to each node. See
    /// [`Routed::new_connections_per_node`].
    pub fn count_new_connections(&self, vip: IpAddr, port: u16) -> Result<()> {
        let family = if vip.is_ipv4() { "ip" } else { "ip6" };
        // One argument, commands separated by `;` (nft reads no newlines there).
        let mut script = String::from(
            "add table bridge ecmpcount; \
             add chain bridge ecmpcount syns { type filter hook forward priority 0; }; ",
        );
        for i in 1..=self.nodes.len() {
            script.push_str(&format!(
                "add counter bridge ecmpcount n{i}; \
                 add rule bridge ecmpcount syns oifname \"{}\" {family} daddr {vip} \
                 tcp dport {port} tcp flags & (syn | ack) == syn counter name \"n{i}\"; ",
                ifnames::sw_node_front(i)
            ));
        }
        self.sw.exec("nft", &[&script]).map(drop)
    }

    /// SYNs counted per node since [`Routed::count_new_connections`]
    /// (index 0 is node 1).
    pub fn new_connections_per_node(&self) -> Result<Vec<u64>> {
        (1..=self.nodes.len())
            .map(|i| {
                self.sw
                    .nft_counter_packets("bridge", "ecmpcount", &format!("n{i}"))
            })
            .collect()
    }

    // ---- Accessors -----------------------------------------------------------

    fn check_node(&self, i: usize) {
        assert!(
            (1..=self.nodes.len()).contains(&i),
            "node {i} out of 1..={}",
            self.nodes.len()
        );
    }

    /// The unique prefix of all namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client (`eth0` 192.0.2.2/24, 2001:db8:3::2/64; default via the router).
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The router (`cl` 192.0.2.1/24, `front` 198.51.100.254/24).
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// Node `i`, 1-based (`front` 198.51.100.i/24, `back` 203.0.113.i/24).
    pub fn node(&self, i: usize) -> &Netns {
        self.check_node(i);
        &self.nodes[i - 1]
    }

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Backend `j`, 1-based (`eth0` 203.0.113.(10 + j)/24).
    pub fn backend(&self, j: usize) -> &Netns {
        assert!(
            (1..=self.backends.len()).contains(&j),
            "backend {j} out of 1..={}",
            self.backends.len()
        );
        &self.backends[j - 1]
    }

    pub fn n_backends(&self) -> usize {
        self.backends.len()
    }

    /// The switch namespace holding the bridges `brf` and `brb`.
    pub fn switch(&self) -> &Netns {
        &self.sw
    }

    /// All namespaces of the topology.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![&self.client, &self.router];
        v.extend(self.nodes.iter());
        v.extend(self.backends.iter());
        v.push(&self.sw);
        v
    }
}

fn no_dad(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
}

fn announce_route_line(verb: &str, ip: IpAddr) -> String {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    format!(
        "route {verb} blackhole {ip}/{len} table {} proto {}",
        addrs::ANNOUNCE_TABLE,
        addrs::BALANCER_PROTO
    )
}

/// The gateways of `ip route show` output for one destination: `via X` of a
/// single-path route, or of each `nexthop` line of a multipath one.
fn parse_next_hops(text: &str) -> Vec<IpAddr> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .chain(
            // `via inet6 X` (a gateway of the other family).
            words
                .windows(3)
                .filter(|w| w[0] == "via" && w[1].starts_with("inet"))
                .filter_map(|w| w[2].parse().ok()),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn next_hops_of_single_and_multipath_routes() {
        let single = "198.51.100.10 via 198.51.100.1 dev front proto bird metric 32\n";
        assert_eq!(
            parse_next_hops(single),
            vec![IpAddr::from(Ipv4Addr::new(198, 51, 100, 1))]
        );
        let multi = "198.51.100.10 proto bird metric 32 \n\
            \tnexthop via 198.51.100.1 dev front weight 1 \n\
            \tnexthop via 198.51.100.3 dev front weight 1 \n";
        assert_eq!(parse_next_hops(multi).len(), 2);
        let six = "2001:db8:1::10 proto bird metric 32 pref medium\n\
            \tnexthop via 2001:db8:1::1 dev front weight 1 \n";
        assert_eq!(
            parse_next_hops(six),
            vec![IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1))]
        );
        assert!(parse_next_hops("").is_empty());
    }

    #[test]
    fn the_node_example_uses_the_balancers_protocol_number_and_table() {
        let text = std::fs::read_to_string(example_path("bird-node.conf")).unwrap();
        let line = format!("define BALANCER_PROTO = {};", addrs::BALANCER_PROTO);
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} in bird-node.conf"
        );
        let line = format!("define ANNOUNCE_TABLE = {};", addrs::ANNOUNCE_TABLE);
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} in bird-node.conf"
        );
    }

    #[test]
    fn node_addresses() {
        assert_eq!(addrs::node_front(3), Ipv4Addr::new(198, 51, 100, 3));
        assert_eq!(addrs::node_snat(2), Ipv4Addr::new(203, 0, 113, 102));
        assert_eq!(addrs::node_front6(2).to_string(), "2001:db8:1::2");
        assert_eq!(addrs::node_snat6(1).to_string(), "2001:db8:2::1:1");
        assert!(std::panic::catch_unwind(|| addrs::node_front(10)).is_err());
    }
}
