//! New-connection gap when a node dies: three active-active nodes behind the
//! router (ECMP, BGP with BFD); each run kills one node's host
//! (`Routed::kill_node`: its links go, every process in it is SIGKILLed),
//! measures the time until new connections are served again
//! ([`balancer_tests::served_again_after`], as tests/tests/active_active.rs
//! does), and whether a set of held long-lived connections
//! ([`balancer_tests::Chatter`]) kept working; then a fresh host replaces the
//! node and joins before the next run. The node killed goes round: node1,
//! node2, node3, node1, ...
//!
//! Two series, run by turns: the switch as it is (a frame for a MAC address
//! it does not know, such as the dead node's, is flooded to every port, and
//! the XDP program on a surviving node's veth sees it, as it would not on a
//! NIC that filters by destination address), and with that flooding to the
//! node ports off (`flood off`: as such NICs).

use std::{
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use balancer_tests::{
    Chatter, Probed, poll_until, probe_until_served,
    routed::{
        addrs::{self, VIP},
        ifnames,
    },
    thousands,
};

use crate::{
    SESSIONS, STEP, Site,
    support::{ha_status, load_average, median},
    sync_cost::active_active,
    vip,
};

/// Held connections, each sending a line every 100 ms.
const HELD: usize = 30;
/// How long the router's route and the peers' adoption are watched after a
/// death, and how often (each look runs `ip` or `balancer status`: CPU that
/// the probing client also needs).
const WATCH: Duration = Duration::from_secs(10);
const ROUTE_POLL: Duration = Duration::from_millis(20);
const ADOPT_POLL: Duration = Duration::from_millis(100);

/// One node's death.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub node: usize,
    /// From the kill: new connections served again (a run of 20 in a row
    /// began), the router's route without the node, a survivor holding the
    /// node's SNAT address.
    pub served: Option<Duration>,
    pub route: Option<Duration>,
    pub adopted: Option<Duration>,
    /// From the kill to `Routed::kill_node` returning (links deleted,
    /// processes killed): the prober starts after it.
    pub killed: Duration,
    /// What the prober did.
    pub probed: Probed,
    /// Held connections that kept working, of [`HELD`], and why the others
    /// broke.
    pub survived: usize,
    pub broke: Vec<String>,
    /// From starting the fresh host's daemon to the router sending to all
    /// three again.
    pub rejoined: Option<Duration>,
    /// Packets to the VIP over the death (from just before the kill to the
    /// end of the held connections' check).
    pub syns: Syns,
    pub load: String,
}

/// Packets to the VIP over a death, counted by nftables.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syns {
    /// TCP SYNs (without ACK) the router sent to the node network (its
    /// `front`, postrouting hook: once per packet).
    pub routed: u64,
    /// Those delivered to the nodes' ports of the switch (bridge forward
    /// hook: a frame flooded to several ports counts once for each).
    pub nodes: u64,
    /// SYNs from the nodes' SNAT addresses to the backends (new backend
    /// connections).
    pub backends: u64,
    /// Frames to the VIP (any TCP, not only SYNs) delivered to a node port
    /// with a dead node's destination MAC address: the switch no longer
    /// knows where that address is and floods the frame to every port, and
    /// a node's XDP program on a veth sees a frame for another MAC address.
    pub flooded: u64,
}

/// The switch's counters (table `bridge aasyns`); the router's is `routed`
/// in `inet aasyns`.
const SWITCH_COUNTERS: [&str; 3] = ["nodes", "backends", "flooded"];

impl Syns {
    /// Adds the counters to the router and the switch.
    fn count(site: &Site) -> Result<()> {
        let syn = "tcp flags & (syn | ack) == syn";
        site.topo.router().exec(
            "nft",
            &[&format!(
                "add table inet aasyns; \
                 add chain inet aasyns post {{ type filter hook postrouting priority 0; }}; \
                 add counter inet aasyns routed; \
                 add rule inet aasyns post oifname \"{}\" ip daddr {VIP} tcp dport 80 {syn} counter name \"routed\"; ",
                ifnames::FRONT
            )],
        )?;
        let snat = format!(
            "{}-{}",
            addrs::node_snat(1),
            addrs::node_snat(site.topo.n_nodes())
        );
        let mut script = String::from(
            "add table bridge aasyns; \
             add chain bridge aasyns syns { type filter hook forward priority 0; }; ",
        );
        for name in SWITCH_COUNTERS {
            script.push_str(&format!("add counter bridge aasyns {name}; "));
        }
        script.push_str(&format!(
            "add rule bridge aasyns syns oifname \"nf*\" ip daddr {VIP} tcp dport 80 {syn} counter name \"nodes\"; \
             add rule bridge aasyns syns oifname \"be*\" ip saddr {snat} tcp dport 8080 {syn} counter name \"backends\"; "
        ));
        site.topo.switch().exec("nft", &[&script]).map(drop)
    }

    /// Counts, from now on, frames to `mac` (a node about to die) in
    /// `flooded`. A dead node's address never comes back: its replacement
    /// has links of its own.
    fn watch_mac(site: &Site, mac: &str) -> Result<()> {
        site.topo
            .switch()
            .exec(
                "nft",
                &[&format!(
                    "add rule bridge aasyns syns oifname \"nf*\" ether daddr {mac} ip daddr {VIP} tcp dport 80 counter name \"flooded\""
                )],
            )
            .map(drop)
    }

    fn read(site: &Site) -> Result<Syns> {
        let counter = |ns: &balancer_tests::Netns, family: &str, name: &str| {
            ns.nft_counter_packets(family, "aasyns", name)
        };
        let sw = site.topo.switch();
        Ok(Syns {
            routed: counter(site.topo.router(), "inet", "routed")?,
            nodes: counter(sw, "bridge", SWITCH_COUNTERS[0])?,
            backends: counter(sw, "bridge", SWITCH_COUNTERS[1])?,
            flooded: counter(sw, "bridge", SWITCH_COUNTERS[2])?,
        })
    }

    fn since(self, before: Syns) -> Syns {
        Syns {
            routed: self.routed - before.routed,
            nodes: self.nodes - before.nodes,
            backends: self.backends - before.backends,
            flooded: self.flooded - before.flooded,
        }
    }
}

/// Node `i`'s MAC address on the front network.
fn front_mac(site: &Site, i: usize) -> Result<String> {
    let out = site
        .topo
        .node(i)
        .ip(&["-j", "link", "show", ifnames::FRONT])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no address in {out}"))
}

#[derive(Debug, Default)]
pub struct Gap {
    /// The runs with the switch flooding frames for unknown MAC addresses
    /// to the node ports, and those without.
    pub flooding: Vec<Run>,
    pub no_flooding: Vec<Run>,
    pub load_before: String,
    pub load_after: String,
}

/// Whether the switch floods frames for a MAC address it does not know to
/// the node ports (the front bridge's ports `nf1`..).
fn set_flooding(site: &Site, on: bool) -> Result<()> {
    let lines: Vec<String> = (1..=site.topo.n_nodes())
        .map(|i| {
            format!(
                "link set dev {} type bridge_slave flood {}",
                ifnames::sw_node_front(i),
                if on { "on" } else { "off" }
            )
        })
        .collect();
    site.topo.switch().ip_batch(&lines)
}

/// `runs` node deaths in each series, by turns; the active-active daemons
/// of [`crate::sync_cost`] run on all three nodes.
pub fn measure(site: &mut Site, runs: usize) -> Result<Gap> {
    let n = site.topo.n_nodes();
    let mut gap = Gap {
        load_before: load_average(),
        ..Gap::default()
    };
    Syns::count(site)?;
    for r in 1..=2 * runs {
        let k = (r - 1) % n + 1;
        let flooding = r % 2 == 1;
        // A fresh node's port floods (the bridge's default) until set here.
        set_flooding(site, flooding)?;
        let all: Vec<usize> = (1..=n).collect();
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != k).collect();
        // Every node serves, the router watches each by BFD, nobody holds
        // another's addresses.
        site.wait_hops(&all).with_context(|| site.logs())?;
        site.topo.wait_sessions(n, SESSIONS)?;
        let nobody_adopted = || {
            all.iter().all(|&i| {
                ha_status(site.node(i))["adopted"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
            })
        };
        if !balancer_tests::wait_until(STEP, nobody_adopted) {
            anyhow::bail!(
                "run {r}: a node still holds a peer's addresses\n{}",
                site.logs()
            );
        }
        let chatter = Chatter::start(site.topo.client(), vip(), HELD)?;
        chatter
            .wait_for_more(5, STEP)
            .context("held connections before the death")?;

        let mut run = Run {
            node: k,
            load: load_average(),
            ..Run::default()
        };
        Syns::watch_mac(site, &front_mac(site, k)?)?;
        let syns0 = Syns::read(site)?;
        let died = Instant::now();
        site.topo.kill_node(k)?;
        run.killed = died.elapsed();
        let vip_ip: IpAddr = VIP.into();
        let mut want = site.topo.hops(&others, vip_ip);
        want.sort();
        let (site_ref, others_ref) = (&*site, &others);
        let adopter = format!("node{k}");
        std::thread::scope(|s| {
            let route = s.spawn(|| {
                poll_until(WATCH, ROUTE_POLL, || {
                    let mut hops = site_ref.topo.next_hops(vip_ip).unwrap_or_default();
                    hops.sort();
                    hops == want
                })
                .map(|_| died.elapsed())
            });
            let adopted = s.spawn(|| {
                poll_until(WATCH, ADOPT_POLL, || {
                    others_ref.iter().any(|&i| {
                        ha_status(site_ref.node(i))["adopted"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|v| v == adopter.as_str()))
                    })
                })
                .map(|_| died.elapsed())
            });
            run.probed = probe_until_served(site_ref.topo.client(), vip(), died);
            run.served = run.probed.served;
            run.route = route.join().unwrap_or_default();
            run.adopted = adopted.join().unwrap_or_default();
        });
        // Every held connection talks through what happened (or fails).
        if let Err(e) = chatter.wait_for_more(10, STEP) {
            eprintln!("active-active: run {r}: held connections: {e:#}");
        }
        run.broke = chatter.stop();
        run.survived = HELD - run.broke.len();
        run.syns = Syns::read(site)?.since(syns0);
        eprintln!(
            "active-active: run {r}/{}: node{k} died (flooding {flooding}); kill done after {:?}; served again after {:?}, route {:?}, adopted {:?}; prober {:?}; {} of {HELD} held connections kept working; {:?}",
            2 * runs,
            run.killed,
            run.served,
            run.route,
            run.adopted,
            run.probed,
            run.survived,
            run.syns
        );
        for why in &run.broke {
            eprintln!("active-active: run {r}: {why}");
        }

        // A fresh host in its place joins.
        drop(site.nodes[k - 1].take());
        site.topo.replace_node(k)?;
        site.topo.start_node_bird(k)?;
        let config = active_active(site, k);
        let started = Instant::now();
        site.start(k, &config)?;
        run.rejoined = site.wait_hops(&all).ok().map(|_| started.elapsed());
        if flooding {
            gap.flooding.push(run);
        } else {
            gap.no_flooding.push(run);
        }
    }
    gap.load_after = load_average();
    Ok(gap)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, best and worst of `v` (ms), and how many there were.
fn spread(v: impl Iterator<Item = Option<Duration>>) -> (String, usize) {
    let mut got: Vec<f64> = Vec::new();
    let mut missing = 0;
    for d in v {
        match d {
            Some(d) => got.push(ms(d)),
            None => missing += 1,
        }
    }
    got.sort_by(f64::total_cmp);
    let text = if got.is_empty() {
        "none".to_string()
    } else {
        format!(
            "{:.0} ms | {:.0} ms | {:.0} ms",
            median(&got),
            got[0],
            got[got.len() - 1]
        )
    };
    (text, missing)
}

pub fn render(out: &mut String, gap: &Gap) {
    let runs = gap.flooding.len() + gap.no_flooding.len();
    let _ = writeln!(out, "### New connections when a node dies\n");
    let _ = writeln!(
        out,
        "{runs} runs ({} in each series below) on the routed topology: the client 192.0.2.2 behind a router (BIRD 2 with `examples/active-active/bird-router.conf`: ECMP over the nodes' BGP routes to the VIP, L4 hash, BFD every 100 ms × 3) and three active-active nodes (BIRD 2 with `bird-node.conf` announcing the balancer's route; the daemons as above, the `web` service with TCP health checks every 200 ms). Each run: every node serves, the router's BGP and BFD sessions with all three are up, and nobody holds another node's addresses; {HELD} long-lived connections through the VIP each send a line every 100 ms and check that their backend echoes it; one node's host dies (its links deleted, every process in it SIGKILLed; the node killed goes round); as soon as that is done, a prober opens a new connection every 20 ms (a line and its answer, 200 ms limit) until 20 in a row are answered, and the gap is the time from the kill to the start of the first of those 20; every held connection must then answer 10 more lines; then a fresh host (nothing pinned) replaces the node, starts BIRD and the daemon, and joins before the next run. Two series of runs, by turns: the switch as it is, flooding a frame for a MAC address it does not know (the dead node's, once its port is gone) to every port, where the XDP program on a surviving node's veth sees it (a NIC that filters by destination address would drop it before XDP; the program does not look at the destination MAC address), and the switch with that flooding to the node ports off (`bridge_slave flood off`), as such NICs. Watched beside it, from the kill: the router's route to the VIP without the dead node (`ip route`, every 20 ms) and a survivor holding the dead node's SNAT address (`balancer status`, every 100 ms). Load average {} at the start, {} at the end.\n",
        gap.flooding.len(),
        gap.load_before,
        gap.load_after
    );
    for (title, series) in [
        (
            "The switch floods frames for the dead node's MAC address to the survivors",
            &gap.flooding,
        ),
        (
            "Flooding to the node ports off (as NICs that filter by destination MAC address)",
            &gap.no_flooding,
        ),
    ] {
        let _ = writeln!(out, "#### {title}\n");
        render_series(out, series);
    }
}

fn render_series(out: &mut String, series: &[Run]) {
    let runs = series.len();
    let _ = writeln!(
        out,
        "| from the kill | median | best | worst | not seen within 10 s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (label, values) in [
        (
            "**new connections served again**",
            series.iter().map(|r| r.served).collect::<Vec<_>>(),
        ),
        (
            "the kill done (links deleted, processes killed): the prober's first attempt",
            series.iter().map(|r| Some(r.killed)).collect(),
        ),
        (
            "the router's route without the dead node",
            series.iter().map(|r| r.route).collect(),
        ),
        (
            "a survivor holds the dead node's SNAT address",
            series.iter().map(|r| r.adopted).collect(),
        ),
        (
            "a fresh node's daemon started → the router sends to it (rejoin)",
            series.iter().map(|r| r.rejoined).collect(),
        ),
    ] {
        let (text, missing) = spread(values.into_iter());
        let _ = writeln!(out, "| {label} | {text} | {missing} |");
    }
    let survived: usize = series.iter().map(|r| r.survived).sum();
    let _ = writeln!(
        out,
        "\nHeld long-lived connections that kept working: **{survived} of {}** ({HELD} in each of {runs} runs).\n",
        runs * HELD
    );
    let syns = series.iter().fold(Syns::default(), |a, r| Syns {
        routed: a.routed + r.syns.routed,
        nodes: a.nodes + r.syns.nodes,
        backends: a.backends + r.syns.backends,
        flooded: a.flooded + r.syns.flooded,
    });
    let doubled = series
        .iter()
        .filter(|r| r.syns.nodes > r.syns.routed)
        .count();
    let flooded_runs = series.iter().filter(|r| r.syns.flooded > 0).count();
    let (attempts, failed): (u32, u32) = series.iter().fold((0, 0), |(a, f), r| {
        (a + r.probed.attempts, f + r.probed.failed)
    });
    let _ = writeln!(
        out,
        "The prober made {attempts} attempts in all, **{failed} of them not answered**. Over the deaths (from just before each kill to the end of the held connections' check; nftables): {} SYNs to the VIP sent by the router to the node network (its postrouting hook, once each), {} delivered to node ports of the switch (bridge forward hook: once per port a frame leaves by; more than the router sent in {doubled} of {runs} runs), {} SYNs from the nodes to the backends; **{} frames to the VIP (any TCP) delivered to a surviving node's port with the dead node's destination MAC address**, in {flooded_runs} of {runs} runs.\n",
        thousands(syns.routed),
        thousands(syns.nodes),
        thousands(syns.backends),
        thousands(syns.flooded)
    );
    let gaps: Vec<String> = series
        .iter()
        .map(|r| {
            let served = r.served.map_or("none".into(), |d| format!("{:.0}", ms(d)));
            format!(
                "{served} (node{}, load {}, kill done {:.0}, {} of {} attempts unanswered, {} SYNs routed, {} flooded frames)",
                r.node,
                r.load,
                ms(r.killed),
                r.probed.failed,
                r.probed.attempts,
                r.syns.routed,
                r.syns.flooded
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Every run in order: the gap, ms (the node that died, the 1-minute load average then, the kill done, ms, the prober's unanswered attempts, SYNs the router sent to the node network, frames flooded to survivors with the dead node's MAC address): {}.\n",
        gaps.join(", ")
    );
    let broken: Vec<String> = series
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.broke.iter().map(move |b| format!("run {}: {b}", i + 1)))
        .collect();
    if !broken.is_empty() {
        let _ = writeln!(out, "Connections that broke:\n");
        for b in broken {
            let _ = writeln!(out, "- {b}");
        }
        let _ = writeln!(out);
    }
}
