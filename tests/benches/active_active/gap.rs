//! New-connection gap when a node dies: three active-active nodes behind the
//! router (ECMP, BGP with BFD); each run kills one node's host
//! (`Routed::kill_node`: its links go, every process in it is SIGKILLed),
//! measures the time until new connections are served again
//! ([`balancer_tests::served_again_after`], as tests/tests/active_active.rs
//! does), and whether a set of held long-lived connections
//! ([`balancer_tests::Chatter`]) kept working; then a fresh host replaces the
//! node and joins before the next run. The node killed goes round: node1,
//! node2, node3, node1, ...

use std::{
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use balancer_tests::{
    Chatter, poll_until,
    routed::{
        addrs::{self, VIP},
        ifnames,
    },
    served_again_after, thousands,
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
    /// Held connections that kept working, of [`HELD`], and why the others
    /// broke.
    pub survived: usize,
    pub broke: Vec<String>,
    /// From starting the fresh host's daemon to the router sending to all
    /// three again.
    pub rejoined: Option<Duration>,
    /// SYNs to the VIP over the death (from just before the kill to the end
    /// of the held connections' check), counted in the switch.
    pub syns: Syns,
    pub load: String,
}

/// TCP SYNs (without ACK) through the switch's bridges (nftables, bridge
/// family, forward hook: once per port a frame leaves by).
#[derive(Debug, Clone, Copy, Default)]
pub struct Syns {
    /// From the router to the VIP.
    pub router: u64,
    /// Delivered to the nodes' ports: a frame flooded to several ports
    /// counts once for each.
    pub nodes: u64,
    /// From the nodes' SNAT addresses to the backends (new backend
    /// connections).
    pub backends: u64,
}

const SYN_COUNTERS: [&str; 3] = ["router", "nodes", "backends"];

impl Syns {
    /// Adds the counters to the switch.
    fn count(site: &Site) -> Result<()> {
        let syn = "tcp flags & (syn | ack) == syn";
        let snat = format!(
            "{}-{}",
            addrs::node_snat(1),
            addrs::node_snat(site.topo.n_nodes())
        );
        let mut script = String::from(
            "add table bridge aasyns; \
             add chain bridge aasyns syns { type filter hook forward priority 0; }; ",
        );
        for name in SYN_COUNTERS {
            script.push_str(&format!("add counter bridge aasyns {name}; "));
        }
        script.push_str(&format!(
            "add rule bridge aasyns syns iifname \"{}\" ip daddr {VIP} tcp dport 80 {syn} counter name \"router\"; \
             add rule bridge aasyns syns oifname \"nf*\" ip daddr {VIP} tcp dport 80 {syn} counter name \"nodes\"; \
             add rule bridge aasyns syns oifname \"be*\" ip saddr {snat} tcp dport 8080 {syn} counter name \"backends\"; ",
            ifnames::SW_ROUTER
        ));
        site.topo.switch().exec("nft", &[&script]).map(drop)
    }

    fn read(site: &Site) -> Result<Syns> {
        let mut v = [0; 3];
        for (n, name) in v.iter_mut().zip(SYN_COUNTERS) {
            let out = site
                .topo
                .switch()
                .exec("nft", &["list", "counter", "bridge", "aasyns", name])?;
            let text = String::from_utf8_lossy(&out.stdout);
            *n = text
                .split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no packet count in {text}"))?;
        }
        Ok(Syns {
            router: v[0],
            nodes: v[1],
            backends: v[2],
        })
    }

    fn since(self, before: Syns) -> Syns {
        Syns {
            router: self.router - before.router,
            nodes: self.nodes - before.nodes,
            backends: self.backends - before.backends,
        }
    }
}

#[derive(Debug, Default)]
pub struct Gap {
    pub runs: Vec<Run>,
    pub load_before: String,
    pub load_after: String,
}

/// `runs` node deaths; the active-active daemons of [`crate::sync_cost`] run
/// on all three nodes.
pub fn measure(site: &mut Site, runs: usize) -> Result<Gap> {
    let n = site.topo.n_nodes();
    let mut gap = Gap {
        load_before: load_average(),
        ..Gap::default()
    };
    Syns::count(site)?;
    for r in 1..=runs {
        let k = (r - 1) % n + 1;
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
        let syns0 = Syns::read(site)?;
        let died = Instant::now();
        site.topo.kill_node(k)?;
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
            run.served = served_again_after(site_ref.topo.client(), vip(), died);
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
            "active-active: run {r}/{runs}: node{k} died; served again after {:?}, route {:?}, adopted {:?}; {} of {HELD} held connections kept working; SYNs {:?}",
            run.served, run.route, run.adopted, run.survived, run.syns
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
        gap.runs.push(run);
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
    let runs = gap.runs.len();
    let _ = writeln!(out, "### New connections when a node dies\n");
    let _ = writeln!(
        out,
        "{runs} runs on the routed topology: the client 192.0.2.2 behind a router (BIRD 2 with `examples/active-active/bird-router.conf`: ECMP over the nodes' BGP routes to the VIP, L4 hash, BFD every 100 ms × 3) and three active-active nodes (BIRD 2 with `bird-node.conf` announcing the balancer's route; the daemons as above, the `web` service with TCP health checks every 200 ms). Each run: every node serves, the router's BGP and BFD sessions with all three are up, and nobody holds another node's addresses; {HELD} long-lived connections through the VIP each send a line every 100 ms and check that their backend echoes it; one node's host dies (its links deleted, every process in it SIGKILLed; the node killed goes round); a prober opens a new connection every 20 ms (a line and its answer, 200 ms limit) until 20 in a row are answered, and the gap is the time from the kill to the start of the first of those 20; every held connection must then answer 10 more lines; then a fresh host (nothing pinned) replaces the node, starts BIRD and the daemon, and joins before the next run. Watched beside it, from the kill: the router's route to the VIP without the dead node (`ip route`, every 20 ms) and a survivor holding the dead node's SNAT address (`balancer status`, every 100 ms). Load average {} at the start, {} at the end.\n",
        gap.load_before, gap.load_after
    );
    let _ = writeln!(
        out,
        "| from the kill | median | best | worst | not seen within 10 s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (label, values) in [
        (
            "**new connections served again**",
            gap.runs.iter().map(|r| r.served).collect::<Vec<_>>(),
        ),
        (
            "the router's route without the dead node",
            gap.runs.iter().map(|r| r.route).collect(),
        ),
        (
            "a survivor holds the dead node's SNAT address",
            gap.runs.iter().map(|r| r.adopted).collect(),
        ),
        (
            "a fresh node's daemon started → the router sends to it (rejoin)",
            gap.runs.iter().map(|r| r.rejoined).collect(),
        ),
    ] {
        let (text, missing) = spread(values.into_iter());
        let _ = writeln!(out, "| {label} | {text} | {missing} |");
    }
    let survived: usize = gap.runs.iter().map(|r| r.survived).sum();
    let _ = writeln!(
        out,
        "\nHeld long-lived connections that kept working: **{survived} of {}** ({HELD} in each of {runs} runs).\n",
        runs * HELD
    );
    let syns = gap.runs.iter().fold(Syns::default(), |a, r| Syns {
        router: a.router + r.syns.router,
        nodes: a.nodes + r.syns.nodes,
        backends: a.backends + r.syns.backends,
    });
    let doubled = gap
        .runs
        .iter()
        .filter(|r| r.syns.nodes > r.syns.router)
        .count();
    let _ = writeln!(
        out,
        "SYNs to the VIP over the deaths (from just before each kill to the end of the held connections' check; nftables in the switch, bridge forward hook): {} sent by the router, **{} delivered to node ports** (in {doubled} of {runs} runs more than the router sent), {} sent on by the nodes to the backends.\n",
        thousands(syns.router),
        thousands(syns.nodes),
        thousands(syns.backends)
    );
    let gaps: Vec<String> = gap
        .runs
        .iter()
        .map(|r| {
            r.served.map_or("none".into(), |d| {
                format!("{:.0} (node{}, load {})", ms(d), r.node, r.load)
            })
        })
        .collect();
    let _ = writeln!(
        out,
        "Every gap in run order, ms (the node that died, the 1-minute load average then): {}.\n",
        gaps.join(", ")
    );
    let broken: Vec<String> = gap
        .runs
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
