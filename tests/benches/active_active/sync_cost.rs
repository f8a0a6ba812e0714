//! N-way sync cost: what the daemons of three active-active nodes spend on
//! flow sync (CPU, bytes on the wire) for new flows, against two nodes in
//! active-standby on the same hosts at the same rate, measured in the same
//! run, each beside the same nodes idle.
//!
//! Two loads, each in both modes:
//! - **generated**: new flows through each serving node's own program with
//!   BPF_PROG_TEST_RUN on its pinned maps ([`support::open_flow`]: the
//!   client's SYN, the backend's SYN-ACK; then the client's FIN), 10,000 a
//!   second in all, spread evenly over the nodes that serve. The program
//!   creates, establishes and ends each flow as it would a real one, and puts
//!   both changes in the ring the daemon sends to its peers; only the
//!   transmission is left out.
//! - **real**: real TCP connections (connect, a line, close) from the client
//!   through the router to the VIP, as many as two client threads make.
//!
//! Each window runs until the peers have installed and ended every flow and
//! every node's table is back to its size before (bounded); CPU and bytes
//! beyond idle are the window's less the idle rate times its length.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::HashMap;
use balancer_common::{
    flow::{FlowKey, FlowValue},
    maps::Flows,
    stats::Counter,
};
use balancer_tests::{
    Pace,
    config::{Config, Flows as FlowSettings, HaMode},
    cpu_time, poll_until,
    routed::addrs::{self, VIP},
    tcp_connect_from, tcp_request, thousands, wait_until,
};
use balancer_user::dataplane::Dataplane;

use crate::{
    STEP, Site,
    support::{
        ACK, FIN, FlowPlan, WireCount, daemon_dataplane, ha_status, load_average, no_cookies,
        open_flow,
    },
    vip,
};

/// New flows per second, all serving nodes together.
const RATE: u32 = 10_000;
/// Flows a driver opens between two pauses.
const BURST: u32 = 50;
const IDLE: Duration = Duration::from_secs(10);
const GENERATED: Duration = Duration::from_secs(10);
const REAL: Duration = Duration::from_secs(5);
/// Client threads of the real connections.
const CLIENTS: usize = 2;
/// The paced real connections' rate, all client threads together: one both
/// modes reach with CPU to spare here.
const REAL_RATE: u32 = 2000;
/// The client's source ports, taken in turn: a port comes back only after
/// 64,512 connections, long after its flow expired (the client keeps no
/// TIME_WAIT sockets, see `Site::new`).
const CLIENT_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;
/// A window ends when its flows are synced and gone, or after this.
const SETTLE: Duration = Duration::from_secs(30);
/// How often the settling is looked at: `balancer status` costs the
/// daemon CPU that the window counts.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// A table counts as back to its size within this many entries.
const ENTRIES_SLACK: u64 = 64;
/// `flows.capacity` of every node.
pub const CAPACITY: u32 = 1 << 20;
/// The generated flows: client 198.51.100.(100 + i / 10,000), port
/// 1024 + i % 10,000, to the VIP, port 10000 (`svc0`, backends
/// 203.0.113.11-13, port 20000, no health checks).
const PLAN: FlowPlan = FlowPlan {
    vip: VIP.octets(),
    services: 1,
};
/// The floating SNAT address of the active-standby pair.
const AS_SNAT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// What every node of the benchmark runs beside the topology's
/// configuration: [`PLAN`]'s service, closing flows expired after 2 s (swept
/// every second, so that a window sees its flows go, and a backend's 20,000
/// SNAT ports of the default range are enough at 10,000 new flows/s), no SYN
/// cookies (a generated burst must not look like a flood).
fn with_load(config: Config) -> Config {
    let config = config.firewall(no_cookies()).flows(
        FlowSettings::default()
            .capacity(CAPACITY)
            .tcp_transitory_timeout_s(2),
    );
    PLAN.services(config, 3)
}

/// Node `i`'s configuration in active-active (also for [`crate::gap`]): the
/// topology's, with [`with_load`] and a short drain (the benchmark stops
/// nodes that still hold flows).
pub fn active_active(site: &Site, i: usize) -> Config {
    let mut c = site.topo.node_config(i, &site.key);
    c.ha = c.ha.withdraw_wait_ms(300).drain_timeout_s(2);
    with_load(c)
}

/// Node `i` (1 or 2) in an active-standby pair with the other: priority 200
/// for node 1, no preemption, the floating SNAT address [`AS_SNAT`], the
/// same timers, flow sync and services as in active-active.
fn active_standby(site: &Site, i: usize) -> Config {
    let mut c = site.topo.node_config(i, &site.key);
    c.node.snat_addresses = Some(vec![IpAddr::from(AS_SNAT)]);
    c.ha =
        c.ha.mode(HaMode::ActiveStandby)
            .peers([addrs::node_front(3 - i)])
            .priority(if i == 1 { 200 } else { 100 })
            .preempt(false);
    c.ha.announce_table = None;
    with_load(c)
}

/// Both modes, active-standby first; leaves the active-active daemons
/// running.
pub fn measure(site: &mut Site) -> Result<[Mode; 2]> {
    for i in 1..=site.topo.n_nodes() {
        WireCount::count_in(site.topo.node(i))?;
    }
    let next = AtomicU32::new(0);
    for i in [1, 2] {
        let config = active_standby(site, i);
        site.start(i, &config)?;
    }
    wait_for(
        site,
        "node1 active, node2 standby with a complete copy",
        |s| {
            let (a, b) = (ha_status(s.node(1)), ha_status(s.node(2)));
            a["role"] == "active"
                && b["role"] == "standby"
                && b["sync_copies"]["node1"]["state"] == "complete"
        },
    )?;
    let ports = AtomicU32::new(0);
    let standby = measure_mode(site, "active-standby", &[1, 2], &[1], None, &next, &ports)?;
    site.stop_all()?;

    for i in 1..=site.topo.n_nodes() {
        let config = active_active(site, i);
        site.start(i, &config)?;
    }
    let all = [1, 2, 3];
    let active = measure_mode(site, "active-active", &all, &all, Some(&all), &next, &ports)?;
    Ok([standby, active])
}

/// Waits (bounded) for `cond`.
fn wait_for(site: &Site, what: &str, mut cond: impl FnMut(&Site) -> bool) -> Result<()> {
    if !wait_until(STEP, || cond(site)) {
        bail!("not within {STEP:?}: {what}\n{}", site.logs());
    }
    Ok(())
}

/// One mode's figures.
#[derive(Debug)]
pub struct Mode {
    pub name: &'static str,
    /// Node numbers and their roles (`balancer status`).
    pub nodes: Vec<(usize, String)>,
    pub idle: Window,
    /// Generated flows, real connections at [`REAL_RATE`], real connections
    /// as fast as they go.
    pub phases: Vec<Phase>,
}

/// What the nodes' daemons used over a window, per node.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub secs: f64,
    pub cpu: Vec<Duration>,
    pub wire: Vec<WireCount>,
    pub load: String,
}

/// A load and what it cost.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub what: String,
    /// Per node: peers it declared dead meanwhile (`ha_member` lost in
    /// active-active, a `peer_dead` takeover in active-standby): none of
    /// them died.
    pub deaths: Vec<u64>,
    /// Flows opened (generated: SYNs the programs took; real: connections
    /// answered), and those refused or failed.
    pub flows: u64,
    pub failed: u64,
    /// How long the load ran (its rate is `flows` over this).
    pub load_secs: f64,
    /// The whole window: the load and the settling after it.
    pub window: Window,
    /// Whether everything was synced and expired within [`SETTLE`].
    pub settled: bool,
    /// Per node, from `balancer status`: records sent (to all peers
    /// together), installed, ended.
    pub sent: Vec<u64>,
    pub installed: Vec<u64>,
    pub closed: Vec<u64>,
    /// Per node: flow changes the ring had no room for (`sync_lost`), flow
    /// table entries before and after the window.
    pub lost: Vec<u64>,
    pub entries: Vec<(u64, u64)>,
    /// Per node: the active connections it counts for every backend
    /// (`ACTIVE_CONNS`, as `balancer status` shows them), before and after
    /// the window.
    pub counted: Vec<(Vec<u64>, Vec<u64>)>,
    /// Per node: sync records that matched no flow (`sync_unmatched`), and
    /// what the entries left after the window are, if any.
    pub unmatched: Vec<u64>,
    pub left: Vec<String>,
    pub load_before: String,
}

/// The per-node readings a window starts and ends with.
struct Reading {
    at: Instant,
    cpu: Vec<Duration>,
    wire: Vec<WireCount>,
}

fn read(site: &Site, nodes: &[usize]) -> Result<Reading> {
    let at = Instant::now();
    let cpu = nodes
        .iter()
        .map(|&i| cpu_time(site.node(i).pid()))
        .collect::<Result<_>>()?;
    let wire = nodes
        .iter()
        .map(|&i| WireCount::read(site.topo.node(i)))
        .collect::<Result<_>>()?;
    Ok(Reading { at, cpu, wire })
}

impl Reading {
    fn window(&self, before: &Reading, load: String) -> Window {
        Window {
            secs: self.at.duration_since(before.at).as_secs_f64(),
            cpu: self
                .cpu
                .iter()
                .zip(&before.cpu)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            wire: self
                .wire
                .iter()
                .zip(&before.wire)
                .map(|(a, b)| a.since(*b))
                .collect(),
            load,
        }
    }
}

/// Records sent, installed, ended and matching no flow, per node.
fn records(site: &Site, nodes: &[usize]) -> [Vec<u64>; 4] {
    let mut out = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for &i in nodes {
        let ha = ha_status(site.node(i));
        for (v, name) in out.iter_mut().zip([
            "sync_sent",
            "sync_installed",
            "sync_closed",
            "sync_unmatched",
        ]) {
            v.push(ha[name].as_u64().unwrap_or(0));
        }
    }
    out
}

/// The active connections node `i` counts, backend by backend of every
/// service (`balancer status`; empty if it does not answer).
fn counted(site: &Site, i: usize) -> Vec<u64> {
    let status = site
        .node(i)
        .cli(&["status", "--json"])
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .unwrap_or_default();
    status["status"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| b["active"].as_u64().unwrap_or(0))
        .collect()
}

/// Peers a node's log says it declared dead: `ha_member` lost
/// (active-active), a takeover for `peer_dead` (active-standby).
fn deaths(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("state=\"lost\"") || l.contains("cause=\"peer_dead\""))
        .count() as u64
}

/// What the entries of a node's flow table are: how many of each kind
/// (this node's or a peer's, forward or reply, state, released); "" when
/// there are none.
fn left(dp: &Dataplane) -> String {
    let Ok(table) = dp.map::<Flows, HashMap<_, FlowKey, FlowValue>>() else {
        return "?".into();
    };
    let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, v) in table.iter().filter_map(Result::ok) {
        let kind = format!(
            "{} {} state {} released {}",
            if v.owner == 0 { "own" } else { "peer's" },
            if v.direction == 0 { "forward" } else { "reply" },
            v.state,
            v.released
        );
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The data plane of a node's daemon, with its interfaces.
struct NodePlane {
    dp: Dataplane,
    front: u32,
    back: u32,
}

/// A load: it returns flows opened, flows refused or failed, and how long
/// it ran.
type Load<'a> = dyn Fn() -> Result<(u64, u64, f64)> + 'a;

/// One mode: idle, then the three loads. With `hops`, the router must send
/// the VIP to exactly those nodes before each (active-active).
fn measure_mode(
    site: &Site,
    name: &'static str,
    nodes: &[usize],
    drivers: &[usize],
    hops: Option<&[usize]>,
    next: &AtomicU32,
    ports: &AtomicU32,
) -> Result<Mode> {
    let ready = || -> Result<()> {
        if let Some(hops) = hops {
            site.wait_hops(hops).with_context(|| site.logs())?;
        }
        if !wait_until(STEP, || {
            tcp_request(site.topo.client(), vip(), "ping", Duration::from_secs(1)).is_ok()
        }) {
            bail!("{name}: the VIP does not answer\n{}", site.logs());
        }
        Ok(())
    };
    ready()?;
    let planes = nodes
        .iter()
        .map(|&i| -> Result<NodePlane> {
            let ns = site.topo.node(i);
            Ok(NodePlane {
                dp: daemon_dataplane(&site.node(i).home().pin_dir(), CAPACITY)?,
                front: ns.ifindex("front")?,
                back: ns.ifindex("back")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    eprintln!("active-active: {name}: idle");
    let before = read(site, nodes)?;
    // The idle window itself (a measurement, not a wait for a condition).
    std::thread::sleep(IDLE);
    let idle = read(site, nodes)?.window(&before, load_average());

    let mut phases = Vec::new();
    let loads: [(String, &Load); 3] = [
        (
            format!("generated, {} flows/s", thousands(u64::from(RATE))),
            &|| generate(site, nodes, drivers, &planes, next),
        ),
        (
            format!(
                "real connections, {} a second",
                thousands(u64::from(REAL_RATE))
            ),
            &|| connect(site, Some(REAL_RATE), ports),
        ),
        (
            format!("real connections, as fast as {CLIENTS} client threads go"),
            &|| connect(site, None, ports),
        ),
    ];
    for (what, load) in loads {
        ready()?;
        eprintln!("active-active: {name}: {what}");
        let mut p = phase(site, nodes, &planes, load)?;
        p.what = what;
        report(name, &p);
        phases.push(p);
    }
    let roles = nodes
        .iter()
        .map(|&i| {
            let role = ha_status(site.node(i))["role"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            (i, role)
        })
        .collect();
    Ok(Mode {
        name,
        nodes: roles,
        idle,
        phases,
    })
}

/// A phase's progress line.
fn report(mode: &str, p: &Phase) {
    eprintln!(
        "active-active: {mode}: {}: {} flows in {:.1} s, {} failed; window {:.1} s, settled: {}; peers declared dead {:?}; records sent {:?} installed {:?} ended {:?} unmatched {:?}; lost {:?}; entries {:?}, left {:?}; counted {:?}",
        p.what,
        p.flows,
        p.load_secs,
        p.failed,
        p.window.secs,
        p.settled,
        p.deaths,
        p.sent,
        p.installed,
        p.closed,
        p.unmatched,
        p.lost,
        p.entries,
        p.left,
        p.counted
    );
}

/// Runs `load` (it returns flows opened, flows refused and how long it ran),
/// then waits until every peer has installed and ended every flow and every
/// table is back to its size before (at most [`SETTLE`]).
fn phase(
    site: &Site,
    nodes: &[usize],
    planes: &[NodePlane],
    load: impl FnOnce() -> Result<(u64, u64, f64)>,
) -> Result<Phase> {
    let entries = |p: &NodePlane| p.dp.flow_entries().map(|n| n as u64);
    let entries0 = planes.iter().map(entries).collect::<Result<Vec<_>>>()?;
    let lost0 = planes
        .iter()
        .map(|p| p.dp.counter(Counter::SyncLost))
        .collect::<Result<Vec<_>>>()?;
    let records0 = records(site, nodes);
    let counted0: Vec<Vec<u64>> = nodes.iter().map(|&i| counted(site, i)).collect();
    let marks: Vec<usize> = nodes.iter().map(|&i| site.node(i).log_mark()).collect();
    let load_before = load_average();
    let before = read(site, nodes)?;
    let (flows, failed, load_secs) = load()?;
    // Each flow reaches every peer of its node: a new and an ended record.
    let peers = nodes.len() as u64 - 1;
    let delta = |now: &[Vec<u64>; 4], k: usize| -> u64 {
        now[k].iter().zip(&records0[k]).map(|(a, b)| a - b).sum()
    };
    let settled = poll_until(SETTLE, SETTLE_POLL, || {
        let now = records(site, nodes);
        delta(&now, 1) >= flows * peers
            && delta(&now, 2) >= flows * peers
            && planes
                .iter()
                .zip(&entries0)
                .all(|(p, e0)| entries(p).is_ok_and(|e| e <= e0 + ENTRIES_SLACK))
    })
    .is_some();
    let window = read(site, nodes)?.window(&before, load_average());
    let now = records(site, nodes);
    let per_node = |k: usize| -> Vec<u64> {
        now[k]
            .iter()
            .zip(&records0[k])
            .map(|(a, b)| a - b)
            .collect()
    };
    Ok(Phase {
        what: String::new(),
        flows,
        failed,
        load_secs,
        window,
        settled,
        sent: per_node(0),
        installed: per_node(1),
        closed: per_node(2),
        lost: planes
            .iter()
            .zip(&lost0)
            .map(|(p, l0)| Ok(p.dp.counter(Counter::SyncLost)? - l0))
            .collect::<Result<_>>()?,
        entries: planes
            .iter()
            .zip(&entries0)
            .map(|(p, e0)| Ok((*e0, entries(p)?)))
            .collect::<Result<_>>()?,
        counted: counted0
            .into_iter()
            .zip(nodes)
            .map(|(c0, &i)| (c0, counted(site, i)))
            .collect(),
        unmatched: per_node(3),
        deaths: nodes
            .iter()
            .zip(&marks)
            .map(|(&i, &mark)| deaths(&site.node(i).output_so_far()[mark..]))
            .collect(),
        left: planes.iter().map(|p| left(&p.dp)).collect(),
        load_before,
    })
}

/// [`RATE`] new flows a second for [`GENERATED`], spread evenly over the
/// `drivers`, each through its own program in its own namespace.
fn generate(
    site: &Site,
    nodes: &[usize],
    drivers: &[usize],
    planes: &[NodePlane],
    next: &AtomicU32,
) -> Result<(u64, u64, f64)> {
    let rate = RATE / drivers.len() as u32;
    let started = Instant::now();
    let (created, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| -> Result<()> {
        let threads: Vec<_> = drivers
            .iter()
            .map(|&i| {
                let plane = &planes[nodes.iter().position(|&n| n == i).expect("a node")];
                let (created, refused) = (&created, &refused);
                s.spawn(move || {
                    site.topo.node(i).try_run(|| {
                        let (c, r) = drive(plane, rate, next)?;
                        created.fetch_add(c, Ordering::Relaxed);
                        refused.fetch_add(r, Ordering::Relaxed);
                        anyhow::Ok(())
                    })
                })
            })
            .collect();
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a driver panicked"))???;
        }
        Ok(())
    })?;
    Ok((
        created.into_inner(),
        refused.into_inner(),
        started.elapsed().as_secs_f64(),
    ))
}

/// Opens and ends flows through one node's program at `rate` for
/// [`GENERATED`], in the calling thread's namespace: flows opened, SYNs
/// refused.
fn drive(plane: &NodePlane, rate: u32, next: &AtomicU32) -> Result<(u64, u64)> {
    let table = plane.dp.map::<Flows, HashMap<_, FlowKey, FlowValue>>()?;
    let mut pace = Pace::new(Duration::from_secs(1) * BURST / rate);
    let mut frame = Vec::with_capacity(64);
    let (mut created, mut refused) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < GENERATED {
        for _ in 0..BURST {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let ifs = (plane.front, plane.back);
            if open_flow(&plane.dp, &table, PLAN, i, ifs, &mut frame)?.is_none() {
                refused += 1;
                continue;
            }
            created += 1;
            PLAN.client(i, FIN | ACK).write(&[], &mut frame);
            plane.dp.test_run(&frame, plane.front)?;
        }
        pace.wait();
    }
    Ok((created, refused))
}

/// Real connections through the VIP (connect, a line, close) from
/// [`CLIENTS`] threads for [`REAL`], at `rate` in all or as fast as they go,
/// each from the next port of [`CLIENT_PORTS`]: answered, failed, how long.
fn connect(site: &Site, rate: Option<u32>, ports: &AtomicU32) -> Result<(u64, u64, f64)> {
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let span = u32::from(CLIENT_PORTS.end() - CLIENT_PORTS.start()) + 1;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                // Ten connections a step at the thread's share of `rate`.
                let mut pace =
                    rate.map(|r| Pace::new(Duration::from_secs(10) * CLIENTS as u32 / r));
                while started.elapsed() < REAL {
                    for _ in 0..10 {
                        let port = CLIENT_PORTS.start()
                            + (ports.fetch_add(1, Ordering::Relaxed) % span) as u16;
                        let from = SocketAddr::new(addrs::CLIENT.into(), port);
                        let answered = tcp_connect_from(
                            site.topo.client(),
                            from,
                            vip(),
                            Duration::from_secs(1),
                        )
                        .and_then(|mut c| {
                            let r = c.request("ping");
                            c.close();
                            r
                        })
                        .is_ok();
                        let counter = if answered { &ok } else { &failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(p) = pace.as_mut() {
                        p.wait();
                    }
                }
            });
        }
    });
    Ok((
        ok.into_inner(),
        failed.into_inner(),
        started.elapsed().as_secs_f64(),
    ))
}

// --- report ------------------------------------------------------------------

/// A phase's figures for node `k` (index) of `mode`, beyond idle.
struct Beyond {
    cpu_ms: f64,
    out_bytes: f64,
    in_bytes: f64,
}

fn beyond(mode: &Mode, phase: &Phase, k: usize) -> Beyond {
    let scale = phase.window.secs / mode.idle.secs;
    let (w, idle) = (&phase.window.wire[k], &mode.idle.wire[k]);
    Beyond {
        cpu_ms: (phase.window.cpu[k].as_secs_f64() - mode.idle.cpu[k].as_secs_f64() * scale)
            * 1000.0,
        out_bytes: w.out_bytes as f64 - idle.out_bytes as f64 * scale,
        in_bytes: w.in_bytes as f64 - idle.in_bytes as f64 * scale,
    }
}

/// Per 10,000 flows of the phase (all nodes together).
fn per_10k(v: f64, phase: &Phase) -> f64 {
    v * 10_000.0 / phase.flows.max(1) as f64
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

/// The columns: every node of every mode, then each mode's sum.
fn columns(modes: &[Mode]) -> Vec<String> {
    let mut cols = Vec::new();
    for m in modes {
        for (i, role) in &m.nodes {
            cols.push(format!("{}: node{i} ({role})", m.name));
        }
        cols.push(format!("{}: all {} nodes", m.name, m.nodes.len()));
    }
    cols
}

/// A row of figures per node, with each mode's sum.
fn row(
    out: &mut String,
    modes: &[Mode],
    label: &str,
    cell: impl Fn(&Mode, usize) -> f64,
    fmt: impl Fn(f64) -> String,
) {
    let mut cells = Vec::new();
    for m in modes {
        let values: Vec<f64> = (0..m.nodes.len()).map(|k| cell(m, k)).collect();
        cells.extend(values.iter().map(|&v| fmt(v)));
        cells.push(fmt(values.iter().sum()));
    }
    let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
}

/// A row of text per node (no sum).
fn text_row(out: &mut String, modes: &[Mode], label: &str, cell: impl Fn(&Mode, usize) -> String) {
    let mut cells = Vec::new();
    for m in modes {
        cells.extend((0..m.nodes.len()).map(|k| cell(m, k)));
        cells.push(String::new());
    }
    let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
}

fn table(out: &mut String, modes: &[Mode], idx: usize) {
    let cols = columns(modes);
    let _ = writeln!(out, "| per 10,000 new flows | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols.len()));
    // Flows opened through each node: its records sent, over its peers, over
    // two (a new and an ended record each).
    row(
        out,
        modes,
        "flows opened through the node (its records sent / peers / 2)",
        |m, k| m.phases[idx].sent[k] as f64 / ((m.nodes.len() - 1) as f64 * 2.0),
        |v| thousands(v.round() as u64),
    );
    row(
        out,
        modes,
        "**daemon CPU beyond idle**",
        |m, k| per_10k(beyond(m, &m.phases[idx], k).cpu_ms, &m.phases[idx]),
        |v| format!("**{v:.0} ms**"),
    );
    row(
        out,
        modes,
        "**sync bytes sent beyond idle** (IP, nftables, UDP 8910)",
        |m, k| per_10k(beyond(m, &m.phases[idx], k).out_bytes, &m.phases[idx]),
        |v| format!("**{}**", mb(v)),
    );
    row(
        out,
        modes,
        "sync bytes received beyond idle",
        |m, k| per_10k(beyond(m, &m.phases[idx], k).in_bytes, &m.phases[idx]),
        mb,
    );
    row(
        out,
        modes,
        "… sent at 10,000 new flows/s",
        |m, k| per_10k(beyond(m, &m.phases[idx], k).out_bytes, &m.phases[idx]) * 8.0 / 1e6,
        |v| format!("{v:.1} Mbit/s"),
    );
    text_row(
        out,
        modes,
        "records sent (to all peers) / installed / ended, whole window",
        |m, k| {
            let p = &m.phases[idx];
            format!(
                "{} / {} / {}",
                thousands(p.sent[k]),
                thousands(p.installed[k]),
                thousands(p.closed[k])
            )
        },
    );
    text_row(
        out,
        modes,
        "flow-table entries before → after the window; changes lost (`sync_lost`)",
        |m, k| {
            let p = &m.phases[idx];
            format!(
                "{} → {}; {}",
                thousands(p.entries[k].0),
                thousands(p.entries[k].1),
                p.lost[k]
            )
        },
    );
    row(
        out,
        modes,
        "sync records that matched no flow (`sync_unmatched`)",
        |m, k| m.phases[idx].unmatched[k] as f64,
        |v| thousands(v as u64),
    );
    row(
        out,
        modes,
        "peers declared dead meanwhile (none died)",
        |m, k| m.phases[idx].deaths[k] as f64,
        |v| thousands(v as u64),
    );
    text_row(
        out,
        modes,
        "active connections counted per backend (`ACTIVE_CONNS`) before → after the window",
        |m, k| {
            let (before, after) = &m.phases[idx].counted[k];
            format!("{} → {}", signed(before), signed(after))
        },
    );
}

/// Counts as the kernel keeps them (`u64`), read as signed: a count
/// decremented below zero wraps to 2^64 − n, shown as −n.
fn signed(counts: &[u64]) -> String {
    let v: Vec<String> = counts.iter().map(|&c| (c as i64).to_string()).collect();
    v.join(" ")
}

pub fn render(out: &mut String, modes: &[Mode; 2]) {
    let _ = writeln!(out, "### N-way sync cost\n");
    let _ = writeln!(
        out,
        "Three nodes in active-active (each its own SNAT address, every flow synced to both peers) against two of the same hosts in active-standby (node1 active, priority 200; node2 standby; one floating SNAT address), measured one after the other in this run, with the same configuration otherwise: adverts every 100 ms, `dead_after = 3`, `sync_flows = true`, `tcp_transitory_timeout_s = 2` (closing flows go within about 3 s: every window sees its flows expire), `flows.capacity` {}, no health checks on the generated flows' service. Per node: the daemon's CPU time (`/proc/PID/stat`) and the flow-sync datagrams in and out of its namespace (nftables, UDP port 8910 both directions: records, acknowledgements, positions; IP bytes). Figures beyond idle subtract what the same daemons used over {} s idle just before, scaled to the window. Each window runs from the start of the load until every peer has installed and ended every flow (`balancer status`, read every 0.5 s) and every table is back to its size before, at most {} s after the load. \"Per 10,000 new flows\" divides by the flows of all nodes together, so at 10,000 new flows/s in all it is also the cost per second.\n",
        thousands(u64::from(CAPACITY)),
        IDLE.as_secs(),
        SETTLE.as_secs(),
    );
    for idx in 0..modes[0].phases.len() {
        let _ = writeln!(out, "#### {}\n", modes[0].phases[idx].what);
        for m in modes.iter() {
            let p = &m.phases[idx];
            let _ = writeln!(
                out,
                "- {}: {} flows in {:.1} s ({:.0}/s; {} refused or failed), window {:.1} s; load average {} before, {} after.{}",
                m.name,
                thousands(p.flows),
                p.load_secs,
                p.flows as f64 / p.load_secs,
                p.failed,
                p.window.secs,
                p.load_before,
                p.window.load,
                if p.settled {
                    String::new()
                } else {
                    format!(
                        " **Not settled** in {} s: entries left per node: {}.",
                        SETTLE.as_secs(),
                        p.left
                            .iter()
                            .map(|l| if l.is_empty() { "none" } else { l.as_str() })
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                },
            );
        }
        let _ = writeln!(out);
        table(out, modes, idx);
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "#### Idle\n");
    let cols = columns(modes);
    let _ = writeln!(out, "| idle, per second | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols.len()));
    row(
        out,
        modes,
        "daemon CPU",
        |m, k| m.idle.cpu[k].as_secs_f64() * 1000.0 / m.idle.secs,
        |v| format!("{v:.1} ms"),
    );
    row(
        out,
        modes,
        "sync datagrams sent",
        |m, k| m.idle.wire[k].out_packets as f64 / m.idle.secs,
        |v| format!("{v:.1}"),
    );
    row(
        out,
        modes,
        "sync bytes sent",
        |m, k| m.idle.wire[k].out_bytes as f64 / m.idle.secs,
        |v| format!("{v:.0} B"),
    );
    for m in modes.iter() {
        let _ = writeln!(
            out,
            "\n{}: idle {:.1} s, load average {} at its end.",
            m.name, m.idle.secs, m.idle.load
        );
    }
    let _ = writeln!(out);
}
