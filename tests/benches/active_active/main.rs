//! `cargo xtask bench active-active` runs this: what active-active (issue 15)
//! costs and how it behaves when a node dies, on the routed topology of
//! `tests/tests/active_active.rs` (a client behind a router running BIRD 2
//! with ECMP and BFD, three balancer nodes, three TCP echo backends;
//! `balancer_tests::Routed`).
//!
//! - **N-way sync cost** ([`sync_cost`]): daemon CPU and flow-sync bytes on
//!   the wire per node, three active-active nodes against two nodes in
//!   active-standby on the same hosts, idle and with new flows.
//! - **New-connection gap when a node dies** ([`gap`]): a node's host is
//!   killed, the time until new connections are served again, and the held
//!   long-lived connections that survive; the node is replaced by a fresh
//!   host between runs. Two series: the switch flooding frames for the dead
//!   node's MAC address to the survivors, and not.
//! - **A peer's flow, per packet** ([`peer_packet`]): BPF_PROG_TEST_RUN of
//!   the same established packet of a flow this node owns and of one a peer
//!   owns.
//!
//! Prints the body of the `## Active-active` section of BENCHMARKS.md.
//! `AA_GAP_RUNS=N` sets the number of node deaths in each of the gap's two
//! series (default 20: 40 deaths).

#[path = "../../tests/common/mod.rs"]
mod common;
mod gap;
mod peer_packet;
#[path = "../support/mod.rs"]
mod support;
mod sync_cost;

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use anyhow::{Result, bail};
use balancer_tests::{
    Balancer, Routed, ServerHandle, TempDir,
    config::Config,
    require_program, require_root,
    routed::addrs::{self, VIP},
    tcp_server,
};

/// How long a step may take to show (a daemon's start, a route, a copy).
const STEP: Duration = Duration::from_secs(20);
/// BGP and BFD sessions come up within this.
const SESSIONS: Duration = Duration::from_secs(30);
const NODES: usize = 3;

fn main() {
    support::bench_main("active_active", run);
}

fn run() -> Result<()> {
    if !require_root() || !require_program("bird") || !require_program("nft") {
        bail!("the active-active benchmark needs root, BIRD 2 and nft");
    }
    eprintln!(
        "active-active: balancer binary {}",
        balancer_tests::balancer_bin().display()
    );
    let runs: usize = std::env::var("AA_GAP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);

    eprintln!("active-active: a peer's flow against one's own, per packet");
    let packet = peer_packet::measure()?;

    let mut site = Site::new()?;
    eprintln!("active-active: sync cost, active-standby then active-active");
    let sync = sync_cost::measure(&mut site)?;
    eprintln!("active-active: {runs} node deaths");
    let gap = gap::measure(&mut site, runs)?;
    site.stop_all()?;

    let mut out = String::new();
    sync_cost::render(&mut out, &sync);
    gap::render(&mut out, &gap);
    peer_packet::render(&mut out, &packet);
    let _ = writeln!(out);
    print!("{out}");
    Ok(())
}

/// The VIP's service `web`, port 80.
fn vip() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

/// The routed topology with its BIRDs up (every BGP and BFD session), three
/// backends answering TCP on port 8080, an HA key file, and a daemon slot per
/// node.
pub struct Site {
    topo: Routed,
    nodes: Vec<Option<Balancer>>,
    key: String,
    _servers: Vec<ServerHandle>,
    _keys: TempDir,
}

impl Site {
    fn new() -> Result<Site> {
        let mut topo = Routed::builder()
            .hint("aab")
            .nodes(NODES)
            .backends(3)
            .build()?;
        // The client keeps no TIME_WAIT sockets: with tens of thousands of
        // them to the one VIP:80 (the real connections of the sync cost),
        // choosing a port for connect() cost the client 1.4 ms of CPU per
        // connection here, which measured the client, not the balancer. All
        // its ports, so that a port comes back only long after its flow
        // expired.
        let client = topo.client();
        client.sysctl("net.ipv4.tcp_max_tw_buckets", "0")?;
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        topo.start_birds()?;
        topo.wait_sessions(NODES, SESSIONS)?;
        let servers = (1..=3)
            .map(|j| {
                tcp_server(
                    topo.backend(j),
                    SocketAddr::new(addrs::backend(j).into(), 8080),
                )
            })
            .collect::<Result<_>>()?;
        let keys = TempDir::new("aabench")?;
        let key = support::key_file(&keys)?;
        Ok(Site {
            topo,
            nodes: (0..NODES).map(|_| None).collect(),
            key,
            _servers: servers,
            _keys: keys,
        })
    }

    /// Node `i`'s daemon.
    fn node(&self, i: usize) -> &Balancer {
        self.nodes[i - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} runs no balancer"))
    }

    /// Starts `config` on node `i` (its daemon must not run).
    fn start(&mut self, i: usize, config: &Config) -> Result<()> {
        if self.nodes[i - 1].is_some() {
            bail!("node {i} already runs a balancer");
        }
        self.nodes[i - 1] = Some(Balancer::start(self.topo.node(i), config)?);
        Ok(())
    }

    /// Stops every daemon cleanly (SIGTERM); a draining active-active node
    /// with flows left waits for `drain_timeout_s`.
    fn stop_all(&mut self) -> Result<()> {
        for lb in self.nodes.iter_mut().filter_map(Option::take) {
            lb.stop()?;
        }
        Ok(())
    }

    /// Waits until the router sends the VIP to exactly `nodes`.
    fn wait_hops(&self, nodes: &[usize]) -> Result<Duration> {
        let vip = VIP.into();
        self.topo
            .wait_next_hops(vip, &self.topo.hops(nodes, vip), STEP)
    }

    /// The daemons' logs, for an error.
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
}
