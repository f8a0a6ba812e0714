//! `cargo xtask bench sync` runs this: HA flow sync (issue 13) between two
//! balancer hosts (`lb` as lb-a, the active node, priority 200; `lb2` as
//! lb-b, priority 100) of a namespace topology with three backends, default
//! HA timers and `ha.bulk_sync_rate` (100,000 flows/s).
//!
//! - **Live sync cost**: real TCP connections through the VIP (connect, one
//!   line, close) for a few seconds; both daemons' CPU time beyond what they
//!   use idle over as long, and the flow-sync datagrams on the wire, counted
//!   by nftables in the active node's namespace (IP bytes, both directions).
//! - **Bulk copy**: the active node's table is filled with N flows (100,000,
//!   then 1,000,000) through its own program: each flow's SYN from a client
//!   and its backend's SYN-ACK run with BPF_PROG_TEST_RUN on the program
//!   loaded again on the active daemon's pinned maps (balancer-user's
//!   data-plane layer), so the program chooses backends and SNAT ports and the
//!   flows are established, as real ones. Then a standby starts on a fresh
//!   host (nothing pinned) and asks for a copy; the time until its
//!   `sync_copies` says `complete`, its counters, and then both tables read
//!   whole (batches) and compared flow by flow.
//! - **Forwarding cost during a bulk copy**: per packet, BPF_PROG_TEST_RUN of
//!   established client packets on the active node's program (the same
//!   reloaded program on its maps), in rounds, before, during and after a
//!   bulk copy of 1,000,000 flows to another fresh standby.
//!
//! Prints the body of the `## Flow sync` section of BENCHMARKS.md.
//! `SYNC_SIZES=N,M` times other table sizes (a quick look), and
//! `SYNC_BULK_RATE=R` sets `ha.bulk_sync_rate` on both nodes.

mod support;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    fmt::Write as _,
    net::SocketAddr,
    ops::{ControlFlow, Range},
    os::fd::AsFd,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, IterableMap};
use balancer_common::{
    RawAddr,
    flow::{DIR_FORWARD, FlowKey, FlowValue, node_id},
    maps::Flows,
    stats::Counter,
};
use balancer_tests::{
    Balancer, Launch, LbHost, Netns, Pace, Topology, addrs,
    config::{Config, Flows as FlowSettings, Ha, Health, Service},
    cpu_time, tcp_request, thousands as group, wait_until,
};
use balancer_user::dataplane::{Dataplane, batch};
use support::{
    ACK, FlowPlan, PSH, Ran, Site, WireCount, daemon_dataplane, ha_count, ha_status, load_average,
    median, no_cookies, open_flow, pinned_flows, v4,
};

const VIP: [u8; 4] = [198, 51, 100, 10];
/// The filled flows' services: 200 on the VIP (ports 10000-10199) with 50
/// backends each, 203.0.113.(11 + b):(20000 + s), so that a million flows
/// take 100 SNAT ports per backend.
const SERVICES: u32 = 200;
const BACKENDS_PER_SERVICE: u32 = 50;
const PLAN: FlowPlan = FlowPlan {
    vip: VIP,
    services: SERVICES,
};
/// Table sizes whose bulk copy is timed.
const SIZES: [u32; 2] = [100_000, 1_000_000];
/// Entries (two a flow) with room to spare: 2.2 × the largest size.
const CAPACITY: u32 = 2_200_000;
const ACTIVE: &str = "lb-a";
const LIVE: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(60);
const COPY_TIMEOUT: Duration = Duration::from_secs(300);
/// The per-packet measurement follows a bulk copy for at most this long.
const MEASURED_COPY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the standby's copy is looked at (`balancer status`).
const POLL: Duration = Duration::from_millis(100);
/// Test runs per round of the per-packet measurement, and how long it runs
/// idle before and after the bulk copy.
const RUNS_PER_ROUND: usize = 4000;
/// A pause after each round (about 5 ms of runs), so that the measurement
/// takes about a quarter of a CPU: a loop that takes a whole one leaves the
/// standby (on the same two CPUs here) too little to keep up with the copy.
const ROUND_PAUSE: Duration = Duration::from_millis(15);
const IDLE_ROUNDS: Duration = Duration::from_secs(8);
/// The fill's pace: flows per second, in steps of this many.
const FILL_RATE: u32 = 50_000;
const FILL_STEP: u32 = 1000;
const FILL_PASSES: usize = 5;
/// Established flows whose packets are measured (to be1..be3, whose
/// neighbours are resolved, so that the program forwards them).
const MEASURED_FLOWS: usize = 256;

fn main() {
    support::bench_main("sync", run);
}

fn run() -> Result<()> {
    if !balancer_tests::require_root() || !balancer_tests::require_program("nft") {
        bail!("the sync benchmark needs root and nft");
    }
    eprintln!(
        "sync: balancer binary {}",
        balancer_tests::balancer_bin().display()
    );
    let site = Site::new("sync")?;
    let key = site.key.clone();
    let mut topo = site.topo;
    let config_a = config(ACTIVE, 200, "198.51.100.3", &key);
    let config_b = config("lb-b", 100, "198.51.100.1", &key);

    let a = start(topo.lb(), &config_a)?;
    let b = start(topo.lb2(), &config_b)?;
    wait_for(&a, "role", "active")?;
    wait_for(&b, "role", "standby")?;
    wait_copy(&b, COPY_TIMEOUT)?;
    WireCount::count_in(topo.lb())?;
    let front = topo.lb().ifindex("front")?;
    let back = topo.lb().ifindex("back")?;
    let dp = daemon_dataplane(&a.home().pin_dir(), CAPACITY)?;

    eprintln!("sync: live sync of new connections");
    let live = live_cost(&topo, &a, &b)?;

    let mut b = Some(b);
    let mut bulks = Vec::new();
    let mut filled = 0;
    let mut measured = Vec::new();
    for n in sizes()? {
        replace_standby(&mut topo, &mut b)?;
        eprintln!("sync: filling lb-a to {n} flows");
        let fill = fill(&topo, &dp, filled..n, front, back, &mut measured)?;
        filled = n;
        eprintln!("sync: a standby starts and copies {n} flows");
        let (bulk, standby) = bulk_copy(&topo, &a, &config_b, n, fill, None, COPY_TIMEOUT)?;
        eprintln!("sync: {bulk:?}");
        b = Some(standby);
        bulks.push(bulk);
    }

    eprintln!("sync: forwarding cost on lb-a before, during and after a bulk copy");
    replace_standby(&mut topo, &mut b)?;
    // The measured flows' backends answer ARP now, whatever happened since.
    for i in 1..=3 {
        topo.lb()
            .ping(addrs::backend(i).into(), Duration::from_secs(2))?;
    }
    let frames = measured_frames(&measured);
    let cost = packet_cost(&topo, &a, &config_b, &dp, &frames, front, filled)?;
    drop(dp);
    if let Some(b) = b {
        b.stop()?;
    }
    a.stop()?;
    print!("{}", render(&live, &bulks, &cost));
    Ok(())
}

/// [`SIZES`], or `SYNC_SIZES=N,M,...` (ascending, at most 1,000,000; for a
/// quick look while working on the benchmark).
fn sizes() -> Result<Vec<u32>> {
    let Ok(list) = std::env::var("SYNC_SIZES") else {
        return Ok(SIZES.to_vec());
    };
    let sizes: Vec<u32> = list
        .split(',')
        .map(|n| n.trim().parse().context("SYNC_SIZES"))
        .collect::<Result<_>>()?;
    if sizes.is_empty() || !sizes.is_sorted() || sizes.iter().any(|&n| n > CAPACITY / 2) {
        bail!("SYNC_SIZES={list}: ascending sizes up to {}", CAPACITY / 2);
    }
    Ok(sizes)
}

/// `ha.bulk_sync_rate`: the default, or `SYNC_BULK_RATE` (flows per second).
fn bulk_rate() -> Option<u32> {
    std::env::var("SYNC_BULK_RATE").ok()?.parse().ok()
}

fn config(name: &str, priority: u8, peer: &str, key: &str) -> Config {
    let mut ha = Ha::enabled()
        .interface("front")
        .peers([peer])
        .priority(priority)
        .preempt(false)
        .auth_key_file(key)
        .sync_flows(true);
    if let Some(rate) = bulk_rate() {
        ha = ha.bulk_sync_rate(rate);
    }
    let config = Config::new(name)
        .snat(["203.0.113.9"])
        .metrics_off()
        .firewall(no_cookies())
        .flows(FlowSettings::default().capacity(CAPACITY))
        .ha(ha)
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::none())
                .backends((1..=3).map(|i| SocketAddr::new(addrs::backend(i).into(), 8080))),
        );
    PLAN.services(config, BACKENDS_PER_SERVICE)
}

/// How the daemons run: their log in JSON, to be read back (events such as
/// `ha_sync_bulk` with their reasons), with the sweep's line (`expired
/// flows`, debug) to see whether one ran during a measurement.
const LAUNCH: Launch = Launch {
    args: &["--log-format", "json"],
    env: &[("RUST_LOG", "info,balancer_user::daemon::state=debug")],
    wrapper: &[],
};

/// `balancer run` on `config` in `ns`, once it says it is running.
fn start(ns: &Netns, config: &Config) -> Result<Balancer> {
    let lb = Balancer::launch(ns, &config.to_toml(), LAUNCH)?;
    lb.wait_for_log(&["balancer running"], START_TIMEOUT)?;
    Ok(lb)
}

/// The events `event` in `lb`'s log after `mark`, counted by their field
/// `by` (the reason a bulk copy started, ...).
fn events_by(lb: &Balancer, mark: usize, event: &str, by: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in lb.output_so_far()[mark..].lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // `--log-format json` writes an event's fields beside its time and level.
        if v["event"] == event {
            let why = v[by].as_str().unwrap_or("?").to_string();
            *out.entry(why).or_default() += 1;
        }
    }
    out
}

/// When the lines of `lb`'s log after `mark` for which `pick` holds were
/// written: seconds into the UTC day (from their `timestamp`).
fn log_times(lb: &Balancer, mark: usize, pick: impl Fn(&serde_json::Value) -> bool) -> Vec<f64> {
    lb.output_so_far()[mark..]
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| pick(v))
        .filter_map(|v| {
            // 2026-12-07T17:51:16.139674Z
            let time = v["timestamp"]
                .as_str()?
                .split('T')
                .nth(1)?
                .trim_end_matches('Z');
            let mut parts = time.split(':');
            let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
            Some(
                h.parse::<f64>().ok()? * 3600.0
                    + m.parse::<f64>().ok()? * 60.0
                    + s.parse::<f64>().ok()?,
            )
        })
        .collect()
}

/// Frames dropped at interface `dev` of `ns`, received and sent
/// (`ip -s link`: for a veth with an XDP program, a full ring of its peer's
/// frames counts here).
fn link_drops(ns: &Netns, dev: &str) -> Result<(u64, u64)> {
    let out = ns.ip(&["-s", "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let stats = &v[0]["stats64"];
    Ok((
        stats["rx"]["dropped"].as_u64().unwrap_or(0),
        stats["tx"]["dropped"].as_u64().unwrap_or(0),
    ))
}

/// A counter of the `Udp:` lines of `/proc/net/snmp` in `ns` (such as
/// `RcvbufErrors`: datagrams dropped because the socket's buffer was full).
fn udp_counter(ns: &Netns, name: &str) -> Result<u64> {
    let out = ns.exec("cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no Udp {name} in /proc/net/snmp"))
}

fn wait_for(lb: &Balancer, field: &str, want: &str) -> Result<()> {
    if !wait_until(Duration::from_secs(15), || ha_status(lb)[field] == want) {
        bail!("{field} is {}, wanted {want}", ha_status(lb)[field]);
    }
    Ok(())
}

/// The standby's copy of lb-a's table (`sync_copies["lb-a"]`).
#[derive(Debug, Clone, Default)]
struct Copy {
    state: String,
    received: u64,
    flows: u64,
    took_ms: u64,
}

fn copy_of(lb: &Balancer) -> Copy {
    let c = &ha_status(lb)["sync_copies"][ACTIVE];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    Copy {
        state: c["state"].as_str().unwrap_or("none").to_string(),
        received: n("received"),
        flows: n("flows"),
        took_ms: n("took_ms"),
    }
}

fn wait_copy(lb: &Balancer, timeout: Duration) -> Result<()> {
    if !wait_until(timeout, || copy_of(lb).state == "complete") {
        bail!("no complete copy within {timeout:?}: {:?}", copy_of(lb));
    }
    Ok(())
}

/// The standby's host dies and a fresh one (nothing pinned) takes its place,
/// with no daemon yet.
fn replace_standby(topo: &mut Topology, b: &mut Option<Balancer>) -> Result<()> {
    topo.kill_lb(LbHost::Lb2)?;
    drop(b.take());
    topo.replace_lb(LbHost::Lb2)
}

/// What live sync of new connections cost.
#[derive(Debug, Default)]
struct Live {
    flows: u64,
    seconds: f64,
    records: u64,
    installed: u64,
    closed: u64,
    /// CPU time beyond idle, per node.
    active_cpu: Duration,
    standby_cpu: Duration,
    wire: WireCount,
    idle_wire: WireCount,
    load: String,
}

fn live_cost(topo: &Topology, a: &Balancer, b: &Balancer) -> Result<Live> {
    let wire = || WireCount::read(topo.lb());
    let vip = SocketAddr::from((VIP, 80));
    let request = || tcp_request(topo.client(), vip, "ping", Duration::from_secs(1)).is_ok();
    if !wait_until(Duration::from_secs(10), request) {
        bail!("the VIP does not answer");
    }
    let cpu = || -> Result<(Duration, Duration)> { Ok((cpu_time(a.pid())?, cpu_time(b.pid())?)) };
    // Idle, as long as the load will run.
    let (w0, c0) = (wire()?, cpu()?);
    std::thread::sleep(LIVE);
    let (w1, c1) = (wire()?, cpu()?);
    let idle = (c1.0 - c0.0, c1.1 - c0.1);
    let sent0 = ha_count(a, "sync_sent");
    let (installed0, closed0) = (ha_count(b, "sync_installed"), ha_count(b, "sync_closed"));
    let flows = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while started.elapsed() < LIVE {
                    if request() {
                        flows.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let c2 = cpu()?;
    let flows = flows.into_inner();
    // Closing records follow the FIN: wait (bounded) for both records of every
    // flow to be sent and applied.
    wait_until(Duration::from_secs(10), || {
        ha_count(a, "sync_sent") - sent0 >= 2 * flows
            && ha_count(b, "sync_closed") - closed0 >= flows
    });
    let w2 = wire()?;
    Ok(Live {
        flows,
        seconds,
        records: ha_count(a, "sync_sent") - sent0,
        installed: ha_count(b, "sync_installed") - installed0,
        closed: ha_count(b, "sync_closed") - closed0,
        active_cpu: (c2.0 - c1.0).saturating_sub(idle.0),
        standby_cpu: (c2.1 - c1.1).saturating_sub(idle.1),
        wire: w2.since(w1),
        idle_wire: w1.since(w0),
        load: load_average(),
    })
}

/// Filling the active node's table.
#[derive(Debug, Clone, Copy, Default)]
struct Fill {
    /// Flows created, and SYNs still dropped after the last pass.
    ran: Ran,
    /// The first pass over the flows.
    first_pass: Ran,
    seconds: f64,
    /// Flow changes the program had no room for in `FLOW_EVENTS` meanwhile.
    sync_lost: u64,
    /// SYNs dropped because the node's HA lease had run out (its daemon did
    /// not renew it in time).
    not_active: u64,
    /// Entries in the table after the fill, and how long counting them took
    /// (`Dataplane::flow_entries`: the batches a bulk copy reads the table
    /// in, as the daemon counts it before each copy).
    entries: u64,
    count_time: Duration,
}

/// Opens flows `flows` of [`PLAN`] through the active node's program, in its
/// namespace: the client's SYN as if on `front`, then the chosen backend's
/// SYN-ACK as if on `back`, so that both entries exist and the flow is
/// established. At most [`FILL_RATE`] flows a second, so that the active
/// node's HA thread can drain the flow-change ring; SYNs the program drops
/// are sent again (up to [`FILL_PASSES`] passes over what is left). Flows to
/// be1..be3 go to `measured` (up to [`MEASURED_FLOWS`]).
fn fill(
    topo: &Topology,
    dp: &Dataplane,
    flows: Range<u32>,
    front: u32,
    back: u32,
    measured: &mut Vec<u32>,
) -> Result<Fill> {
    let lost0 = dp.counter(Counter::SyncLost)?;
    let not_active0 = dp.counter(Counter::DropNotActive)?;
    let started = Instant::now();
    let mut fill = Fill::default();
    let mut todo: Vec<u32> = flows.collect();
    for pass in 0..FILL_PASSES {
        if todo.is_empty() {
            break;
        }
        let (ran, refused) = topo
            .lb()
            .try_run(|| open_flows(dp, &todo, front, back, measured))??;
        if pass == 0 {
            fill.first_pass = ran;
        }
        fill.ran.created += ran.created;
        todo = refused;
    }
    fill.ran.refused = todo.len() as u64;
    fill.seconds = started.elapsed().as_secs_f64();
    fill.sync_lost = dp.counter(Counter::SyncLost)? - lost0;
    fill.not_active = dp.counter(Counter::DropNotActive)? - not_active0;
    let counting = Instant::now();
    fill.entries = dp.flow_entries()? as u64;
    fill.count_time = counting.elapsed();
    Ok(fill)
}

/// [`fill`]'s pass over `flows`, in the calling thread's namespace; returns
/// what it did and the flows whose SYN the program dropped.
fn open_flows(
    dp: &Dataplane,
    flows: &[u32],
    front: u32,
    back: u32,
    measured: &mut Vec<u32>,
) -> Result<(Ran, Vec<u32>)> {
    let table = dp.map::<Flows, HashMap<_, FlowKey, FlowValue>>()?;
    let (mut ran, mut refused, mut frame) = (Ran::default(), Vec::new(), Vec::with_capacity(64));
    let mut pace = Pace::new(Duration::from_secs(1) * FILL_STEP / FILL_RATE);
    for (n, &i) in flows.iter().enumerate() {
        if n > 0 && (n as u32).is_multiple_of(FILL_STEP) {
            pace.wait();
        }
        let Some(forward) = open_flow(dp, &table, PLAN, i, (front, back), &mut frame)? else {
            ran.refused += 1;
            refused.push(i);
            continue;
        };
        ran.created += 1;
        let backend = v4(forward.new_dst);
        if (11..=13).contains(&backend[3]) && measured.len() < MEASURED_FLOWS {
            measured.push(i);
        }
    }
    Ok((ran, refused))
}

/// A forward entry as the bulk copy carries it (the rewrite and the state).
type Rewrite = (RawAddr, u16, RawAddr, u16, u8);

/// The live forward entries of the flow table pinned in `pin_dir` (read in
/// batches), with their owners.
fn forward_flows(pin_dir: &Path) -> Result<StdHashMap<FlowKey, (Rewrite, u32)>> {
    let table = pinned_flows(pin_dir)?;
    let mut out = StdHashMap::new();
    batch::for_each(
        table.map().fd().as_fd(),
        size_of::<FlowKey>(),
        size_of::<FlowValue>(),
        4096,
        |k, v| {
            let v: FlowValue = batch::read(v);
            if v.direction == DIR_FORWARD && v.released == 0 {
                let rewrite = (
                    v.new_src,
                    v.new_sport_be,
                    v.new_dst,
                    v.new_dport_be,
                    v.state,
                );
                out.insert(batch::read(k), (rewrite, v.owner));
            }
            ControlFlow::Continue(())
        },
    )
    .context("reading a flow table")?;
    Ok(out)
}

/// The standby's table against the active node's, flow by flow.
#[derive(Debug, Clone, Copy, Default)]
struct Compared {
    active: u64,
    /// The standby's forward entries owned by lb-a.
    standby: u64,
    /// Of the active node's flows: not in the standby's table at all; there
    /// with another rewrite; there, as they should be, but owned by the
    /// standby itself (it adopted them when it took over).
    missing: u64,
    different: u64,
    adopted: u64,
    /// In the standby's table, not in the active node's.
    extra: u64,
}

fn compare(active: &Path, standby: &Path) -> Result<Compared> {
    let a = forward_flows(active)?;
    let b = forward_flows(standby)?;
    let peer = node_id(ACTIVE.as_bytes());
    let mut c = Compared {
        active: a.len() as u64,
        standby: b.values().filter(|(_, owner)| *owner == peer).count() as u64,
        ..Compared::default()
    };
    for (key, (rewrite, _)) in &a {
        match b.get(key) {
            None => c.missing += 1,
            Some((r, _)) if r != rewrite => c.different += 1,
            Some((_, owner)) if *owner != peer => c.adopted += 1,
            Some(_) => {}
        }
    }
    c.extra = b.keys().filter(|k| !a.contains_key(k)).count() as u64;
    Ok(c)
}

/// A bulk copy to a standby that started on a fresh host.
#[derive(Debug, Clone, Default)]
struct Bulk {
    flows: u32,
    fill: Fill,
    /// From `balancer run` of the standby: running, the copy seen in
    /// progress, complete.
    running: Duration,
    began: Option<Duration>,
    complete: Option<Duration>,
    /// From `balancer run` of the standby to the complete copy or the timeout.
    observed: Duration,
    copy: Copy,
    installed: u64,
    unmatched: u64,
    bulks_sent: u64,
    bulk_flows_sent: u64,
    retransmitted: u64,
    copies_lost: u64,
    compared: Compared,
    /// Daemon CPU time from the start of the standby to the complete copy.
    active_cpu: Duration,
    standby_cpu: Duration,
    wire: WireCount,
    /// Sweeps the active node ran meanwhile.
    sweeps: usize,
    /// Why the active node started its bulk copies (`ha_sync_bulk` events).
    bulk_reasons: BTreeMap<String, u64>,
    /// Datagrams the standby's kernel dropped for a full socket buffer.
    standby_rcvbuf_errors: u64,
    /// Adverts the active node sent from the standby's start to the end of
    /// the copy, and those the standby took (it started meanwhile).
    adverts: (u64, u64),
    /// Frames dropped on the way to the standby's `front` (received, sent by
    /// the switch's port towards it), over the copy.
    link_drops: (u64, u64),
    /// Adverts the standby refused, by reason (`stale`: read too late).
    standby_adverts_rejected: String,
    /// Role changes meanwhile: the active node must stay active, the standby
    /// standby (after its first, from `init`), and the standby's by cause.
    active_transitions: u64,
    standby_transitions: u64,
    standby_causes: BTreeMap<String, u64>,
    /// The longest time each HA thread (active, standby) went without
    /// sleeping while the standby copied (see [`Awake`]).
    active_awake: Stretch,
    standby_awake: Stretch,
    /// The machine's steal time over the copy (all CPUs), ms.
    stolen_ms: f64,
    /// For each time the standby took over from a live active node
    /// (`peer_dead`): seconds from the end of the active node's nearest sweep
    /// (its `expired flows` line; negative: before it ended), if it swept.
    takeovers_after_sweep: Vec<Option<f64>>,
    load_before: String,
    load_after: String,
}

/// Starts a standby on the fresh `lb2` and follows its copy of the active
/// node's table until complete (or `timeout`), marking the steps in `during`
/// for a measurement that runs meanwhile.
fn bulk_copy(
    topo: &Topology,
    a: &Balancer,
    config_b: &Config,
    flows: u32,
    fill: Fill,
    during: Option<&Progress>,
    timeout: Duration,
) -> Result<(Bulk, Balancer)> {
    let counter = |name: &str| ha_count(a, name);
    // The active node's HA thread has sent (to nowhere) what the fill made.
    let mut sent = counter("sync_sent");
    wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = counter("sync_sent");
        std::mem::replace(&mut sent, now) == now
    });
    let (bulks0, bulk_flows0, resent0) = (
        counter("sync_bulks_sent"),
        counter("sync_bulk_flows_sent"),
        counter("sync_retransmitted"),
    );
    let mut bulk = Bulk {
        flows,
        fill,
        load_before: load_average(),
        ..Bulk::default()
    };
    let log_mark = a.log_mark();
    let transitions = |lb: &Balancer| -> u64 {
        ha_status(lb)["transitions"]
            .as_object()
            .map_or(0, |t| t.values().filter_map(|v| v.as_u64()).sum())
    };
    let transitions0 = transitions(a);
    let adverts0 = counter("adverts_sent");
    let (w0, a0) = (WireCount::read(topo.lb())?, cpu_time(a.pid())?);
    let launched = Instant::now();
    let b = Balancer::launch(topo.lb2(), &config_b.to_toml(), LAUNCH)?;
    bulk.running = b.wait_for_log(&["balancer running"], START_TIMEOUT)?;
    let b0 = cpu_time(b.pid())?;
    if let Some(p) = during {
        p.mark(Mark::Launched);
    }
    let awake = Awake::watch([a.pid(), b.pid()]);
    let stolen0 = steal_ms();
    let port = balancer_tests::ifnames::SW_LB2_FRONT;
    let drops0 = (
        link_drops(topo.lb2(), "front")?.0,
        link_drops(topo.switch(), port)?.1,
    );
    loop {
        let copy = copy_of(&b);
        if copy.state == "in_progress" && bulk.began.is_none() {
            bulk.began = Some(launched.elapsed());
            if let Some(p) = during {
                p.mark(Mark::Began);
            }
        }
        if copy.state == "complete" {
            bulk.complete = Some(launched.elapsed());
            bulk.copy = copy;
            break;
        }
        if launched.elapsed() > timeout {
            eprintln!("sync: no complete copy in {timeout:?}: {copy:?}");
            bulk.copy = copy;
            break;
        }
        std::thread::sleep(POLL);
    }
    bulk.observed = launched.elapsed();
    if let Some(p) = during {
        p.mark(Mark::Complete);
    }
    [bulk.active_awake, bulk.standby_awake] = awake.stop();
    bulk.stolen_ms = steal_ms() - stolen0;
    bulk.adverts = (
        counter("adverts_sent") - adverts0,
        ha_count(&b, "adverts_received"),
    );
    bulk.link_drops = (
        link_drops(topo.lb2(), "front")?.0 - drops0.0,
        link_drops(topo.switch(), port)?.1 - drops0.1,
    );
    bulk.active_cpu = cpu_time(a.pid())? - a0;
    bulk.standby_cpu = cpu_time(b.pid())? - b0;
    bulk.wire = WireCount::read(topo.lb())?.since(w0);
    bulk.load_after = load_average();
    bulk.sweeps = a.output_so_far()[log_mark..]
        .lines()
        .filter(|l| l.contains("expired flows"))
        .count();
    bulk.bulk_reasons = events_by(a, log_mark, "ha_sync_bulk", "why");
    bulk.standby_rcvbuf_errors = udp_counter(topo.lb2(), "RcvbufErrors")?;
    bulk.standby_adverts_rejected = ha_status(&b)["adverts_rejected"].to_string();
    bulk.active_transitions = transitions(a) - transitions0;
    bulk.standby_transitions = transitions(&b).saturating_sub(1);
    bulk.standby_causes = events_by(&b, 0, "ha_transition", "cause");
    let sweeps = log_times(a, 0, |v| v["message"] == "expired flows");
    bulk.takeovers_after_sweep = log_times(&b, 0, |v| {
        v["event"] == "ha_transition" && v["cause"] == "peer_dead"
    })
    .into_iter()
    .map(|t| {
        sweeps
            .iter()
            .map(|s| t - s)
            .reduce(|x, y| if y.abs() < x.abs() { y } else { x })
    })
    .collect();
    // Live records of the last flows may still be on their way.
    std::thread::sleep(Duration::from_secs(1));
    let hb = ha_status(&b);
    let n = |k: &str| hb[k].as_u64().unwrap_or(0);
    (bulk.installed, bulk.unmatched, bulk.copies_lost) = (
        n("sync_installed"),
        n("sync_unmatched"),
        n("sync_copies_lost"),
    );
    bulk.bulks_sent = counter("sync_bulks_sent") - bulks0;
    bulk.bulk_flows_sent = counter("sync_bulk_flows_sent") - bulk_flows0;
    bulk.retransmitted = counter("sync_retransmitted") - resent0;
    bulk.compared = compare(&a.home().pin_dir(), &b.home().pin_dir())?;
    Ok((bulk, b))
}

/// The longest stretch a thread did not sleep: on a CPU, or runnable and
/// waiting for one (ms).
#[derive(Debug, Clone, Copy, Default)]
struct Stretch {
    awake_ms: f64,
    running_ms: f64,
    waiting_ms: f64,
    /// Time the hypervisor ran something else on this machine's CPUs
    /// meanwhile (steal, all CPUs summed), ms.
    stolen_ms: f64,
}

/// Follows the `ha` thread of processes (the HA election, adverts and flow
/// sync share it) through `/proc/PID/task/TID/schedstat` (time on a CPU and
/// time waiting for one, ns) every few milliseconds. A thread that neither
/// sleeps nor waits on its sockets for longer than `dead_after` advert
/// intervals (300 ms) reads no advert meanwhile.
struct Awake {
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<[Stretch; 2]>,
}

impl Awake {
    const EVERY: Duration = Duration::from_millis(5);

    fn watch(pids: [u32; 2]) -> Awake {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let tasks = pids.map(ha_thread);
            let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
            while !stopped.load(Ordering::Relaxed) {
                let stolen = steal_ms();
                for (task, samples) in tasks.iter().zip(samples.iter_mut()) {
                    if let Some((run, wait)) = task.as_deref().and_then(schedstat) {
                        samples.push((Instant::now(), run, wait, stolen));
                    }
                }
                std::thread::sleep(Self::EVERY);
            }
            samples.map(|s| longest_awake(&s))
        });
        Awake { stop, thread }
    }

    fn stop(self) -> [Stretch; 2] {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// When, the thread's time on a CPU and waiting for one (ns), and the
/// machine's steal time (ms).
type Sample = (Instant, u64, u64, f64);

/// Steal time of all CPUs (`/proc/stat`), ms.
fn steal_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0.0);
    // USER_HZ is 100 where this runs (10 ms ticks).
    ticks * 10.0
}

/// `/proc/PID/task/TID` of the thread called `ha`.
fn ha_thread(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "ha"))
}

/// Time on a CPU and time runnable waiting for one, ns.
fn schedstat(task: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// The longest run of sampling intervals in which the thread was on a CPU or
/// waiting for one for at least 90 % of the interval.
fn longest_awake(samples: &[Sample]) -> Stretch {
    let (mut best, mut current) = (Stretch::default(), Stretch::default());
    for w in samples.windows(2) {
        let ((t0, r0, w0, s0), (t1, r1, w1, s1)) = (w[0], w[1]);
        let dt = t1.duration_since(t0).as_secs_f64() * 1000.0;
        let (run, wait) = ((r1 - r0) as f64 / 1e6, (w1 - w0) as f64 / 1e6);
        if run + wait >= 0.9 * dt {
            current.awake_ms += dt;
            current.running_ms += run;
            current.waiting_ms += wait;
            current.stolen_ms += s1 - s0;
            if current.awake_ms > best.awake_ms {
                best = current;
            }
        } else {
            current = Stretch::default();
        }
    }
    best
}

/// When the phases of a measurement running beside a bulk copy began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Launched,
    Began,
    Complete,
}

#[derive(Debug, Default)]
struct Progress {
    marks: Mutex<Vec<(Mark, Instant)>>,
}

impl Progress {
    fn mark(&self, m: Mark) {
        self.marks
            .lock()
            .expect("not poisoned")
            .push((m, Instant::now()));
    }

    fn at(&self, m: Mark) -> Option<Instant> {
        self.marks
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|(x, _)| *x == m)
            .map(|(_, t)| *t)
    }
}

/// The client packets of the measured flows: an ACK with 16 bytes of data,
/// as if on `front`.
fn measured_frames(measured: &[u32]) -> Vec<Vec<u8>> {
    measured
        .iter()
        .map(|&i| {
            let mut frame = Vec::new();
            PLAN.client(i, ACK | PSH)
                .write(b"0123456789abcdef", &mut frame);
            frame
        })
        .collect()
}

/// The per-packet cost on the active node before, during and after a bulk
/// copy.
#[derive(Debug, Default)]
struct PacketCost {
    /// Round means, ns per packet.
    before: Vec<f64>,
    during: Vec<f64>,
    after: Vec<f64>,
    actions: BTreeMap<u32, u64>,
    bulk: Bulk,
}

fn packet_cost(
    topo: &Topology,
    a: &Balancer,
    config_b: &Config,
    dp: &Dataplane,
    frames: &[Vec<u8>],
    front: u32,
    flows: u32,
) -> Result<PacketCost> {
    if frames.is_empty() {
        bail!("no filled flow goes to be1..be3");
    }
    let progress = Progress::default();
    let stop = AtomicBool::new(false);
    // (start, end, mean ns) of every round.
    let rounds: Mutex<Vec<(Instant, Instant, f64)>> = Mutex::new(Vec::new());
    let actions: Mutex<BTreeMap<u32, u64>> = Mutex::new(BTreeMap::new());
    let bulk = std::thread::scope(|s| -> Result<Bulk> {
        let measuring = s.spawn(|| {
            topo.lb().try_run(|| -> Result<()> {
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut total = Duration::ZERO;
                    for _ in 0..RUNS_PER_ROUND {
                        let run = dp.test_run(&frames[next % frames.len()], front)?;
                        next += 1;
                        total += run.duration;
                        *actions
                            .lock()
                            .expect("not poisoned")
                            .entry(run.action)
                            .or_default() += 1;
                    }
                    let mean = total.as_nanos() as f64 / RUNS_PER_ROUND as f64;
                    rounds
                        .lock()
                        .expect("not poisoned")
                        .push((start, Instant::now(), mean));
                    std::thread::sleep(ROUND_PAUSE);
                }
                Ok(())
            })
        });
        std::thread::sleep(IDLE_ROUNDS);
        let result = bulk_copy(
            topo,
            a,
            config_b,
            flows,
            Fill::default(),
            Some(&progress),
            MEASURED_COPY_TIMEOUT,
        );
        if result.is_ok() {
            std::thread::sleep(IDLE_ROUNDS);
        }
        stop.store(true, Ordering::Relaxed);
        measuring
            .join()
            .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))???;
        let (bulk, standby) = result?;
        standby.stop()?;
        Ok(bulk)
    })?;
    let launched = progress.at(Mark::Launched).context("no standby launched")?;
    let began = progress.at(Mark::Began).unwrap_or(launched);
    let complete = progress.at(Mark::Complete).context("no end of the copy")?;
    let mut cost = PacketCost {
        actions: actions.into_inner().expect("not poisoned"),
        bulk,
        ..PacketCost::default()
    };
    for (start, end, mean) in rounds.into_inner().expect("not poisoned") {
        if end < launched {
            cost.before.push(mean);
        } else if start >= began && end <= complete {
            cost.during.push(mean);
        } else if start >= complete + Duration::from_secs(1) {
            cost.after.push(mean);
        }
    }
    Ok(cost)
}

// --- report ----------------------------------------------------------------

fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

fn per_10k(cpu: Duration, flows: u64) -> f64 {
    cpu.as_secs_f64() * 1000.0 * 10_000.0 / flows.max(1) as f64
}

fn render(live: &Live, bulks: &[Bulk], cost: &PacketCost) -> String {
    let mut s = String::new();
    let rate = bulk_rate().map_or("100,000 flows/s, the default".into(), |r| {
        format!("{} flows/s (`SYNC_BULK_RATE`)", group(u64::from(r)))
    });
    let _ = writeln!(
        s,
        "### Bulk copy to a standby that starts late (`ha.bulk_sync_rate` = {rate})\n"
    );
    let _ = write!(s, "| |");
    for b in bulks {
        let _ = write!(s, " {} flows |", group(u64::from(b.flows)));
    }
    let _ = writeln!(s, "\n|---|{}", "---:|".repeat(bulks.len()));
    let row = |s: &mut String, name: &str, cell: &dyn Fn(&Bulk) -> String| {
        let _ = write!(s, "| {name} |");
        for b in bulks {
            let _ = write!(s, " {} |", cell(b));
        }
        let _ = writeln!(s);
    };
    row(
        &mut s,
        "the fill: flows created (SYNs dropped in the first pass; in the end), time",
        &|b| {
            format!(
                "{} ({}; {}), {:.1} s",
                group(b.fill.ran.created),
                group(b.fill.first_pass.refused),
                group(b.fill.ran.refused),
                b.fill.seconds
            )
        },
    );
    row(
        &mut s,
        "… flow changes the ring had no room for (`sync_lost`); SYNs dropped, lease run out (`drop_not_active`)",
        &|b| format!("{}; {}", group(b.fill.sync_lost), group(b.fill.not_active)),
    );
    row(
        &mut s,
        "flows in the active node's table / lb-a's in the standby's, after the copy",
        &|b| {
            format!(
                "{} / {}",
                group(b.compared.active),
                group(b.compared.standby)
            )
        },
    );
    row(
        &mut s,
        "entries in the active node's table; counting them in batches of 4,096 took",
        &|b| {
            format!(
                "{}; {:.2} s",
                group(b.fill.entries),
                b.fill.count_time.as_secs_f64()
            )
        },
    );
    row(
        &mut s,
        "standby: `balancer run` to `balancer running`",
        &|b| secs(Some(b.running)),
    );
    row(
        &mut s,
        "standby: `balancer run` to its copy seen `in_progress`",
        &|b| secs(b.began),
    );
    row(
        &mut s,
        "**standby: `balancer run` to its copy `complete`**",
        &|b| format!("**{}**", secs(b.complete)),
    );
    row(
        &mut s,
        "the copy by the standby's clock (`took_ms`: first to last record)",
        &|b| secs(b.complete.map(|_| Duration::from_millis(b.copy.took_ms))),
    );
    row(&mut s, "… flows per second", &|b| {
        (b.copy.flows * 1000)
            .checked_div(b.copy.took_ms)
            .map_or("-".into(), group)
    });
    row(
        &mut s,
        "`sync_copies`: flows / standby's `sync_installed` (`sync_unmatched`)",
        &|b| {
            format!(
                "{} / {} ({})",
                group(b.copy.flows.max(b.copy.received)),
                group(b.installed),
                group(b.unmatched)
            )
        },
    );
    row(
        &mut s,
        "**tables compared: missing on the standby / different / there but adopted by the standby / extra**",
        &|b| {
            format!(
                "**{} / {} / {} / {}**",
                group(b.compared.missing),
                group(b.compared.different),
                group(b.compared.adopted),
                group(b.compared.extra)
            )
        },
    );
    row(
        &mut s,
        "active: bulk copies started (`sync_bulks_sent`), flows they sent",
        &|b| format!("{}, {}", b.bulks_sent, group(b.bulk_flows_sent)),
    );
    row(
        &mut s,
        "active: datagrams resent (`sync_retransmitted`); standby: copies lost",
        &|b| format!("{}; {}", group(b.retransmitted), b.copies_lost),
    );
    row(
        &mut s,
        "CPU of the daemons, standby start to complete: active / standby",
        &|b| {
            format!(
                "{:.1} s / {:.1} s",
                b.active_cpu.as_secs_f64(),
                b.standby_cpu.as_secs_f64()
            )
        },
    );
    row(
        &mut s,
        "sync datagrams active → standby: packets, MB (IP bytes), bytes per flow",
        &|b| {
            format!(
                "{}, {:.1}, {:.0}",
                group(b.wire.out_packets),
                b.wire.out_bytes as f64 / 1e6,
                b.wire.out_bytes as f64 / b.compared.active.max(1) as f64
            )
        },
    );
    row(&mut s, "… standby → active: packets, kB", &|b| {
        format!(
            "{}, {:.0}",
            group(b.wire.in_packets),
            b.wire.in_bytes as f64 / 1e3
        )
    });
    row(
        &mut s,
        "active: why it started them (`ha_sync_bulk` events by `why`)",
        &|b| {
            b.bulk_reasons
                .iter()
                .map(|(why, n)| format!("{n} × {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    row(
        &mut s,
        "standby: datagrams its kernel dropped, socket buffer full (`RcvbufErrors`)",
        &|b| group(b.standby_rcvbuf_errors),
    );
    row(
        &mut s,
        "longest time the HA thread did not sleep, ms (on a CPU + waiting for one; the machine's steal time meanwhile): active; standby",
        &|b| {
            let f = |s: &Stretch| {
                format!(
                    "{:.0} ({:.0} + {:.0}; {:.0})",
                    s.awake_ms, s.running_ms, s.waiting_ms, s.stolen_ms
                )
            };
            format!("{}; {}", f(&b.active_awake), f(&b.standby_awake))
        },
    );
    row(
        &mut s,
        "adverts: sent by the active node from the standby's start to the end of the copy / taken by the standby",
        &|b| format!("{} / {}", b.adverts.0, b.adverts.1),
    );
    row(
        &mut s,
        "frames dropped towards the standby's `front`: received there / sent by the switch port",
        &|b| format!("{} / {}", group(b.link_drops.0), group(b.link_drops.1)),
    );
    row(
        &mut s,
        "the machine's steal time over the copy (all CPUs)",
        &|b| format!("{:.0} ms", b.stolen_ms),
    );
    row(&mut s, "standby: adverts refused, by reason", &|b| {
        b.standby_adverts_rejected.clone()
    });
    row(
        &mut s,
        "role changes meanwhile: active / standby (after its first; all of the standby's by cause)",
        &|b| {
            let causes: Vec<String> = b
                .standby_causes
                .iter()
                .map(|(cause, n)| format!("{n} × {cause}"))
                .collect();
            format!(
                "{} / {} ({})",
                b.active_transitions,
                b.standby_transitions,
                causes.join(", ")
            )
        },
    );
    row(
        &mut s,
        "sweeps of the active node's table meanwhile",
        &|b| b.sweeps.to_string(),
    );
    row(
        &mut s,
        "standby's `peer_dead` takeovers: seconds from the end of the active node's nearest sweep",
        &|b| {
            let after: Vec<String> = b
                .takeovers_after_sweep
                .iter()
                .map(|a| a.map_or("no sweep".into(), |a| format!("{a:+.2}")))
                .collect();
            if after.is_empty() {
                "-".into()
            } else {
                after.join(", ")
            }
        },
    );
    row(&mut s, "load average (1 min) before / after", &|b| {
        format!("{} / {}", b.load_before, b.load_after)
    });

    let _ = writeln!(
        s,
        "\n### The active node's forwarding cost while it sends a bulk copy\n"
    );
    let b = &cost.bulk;
    let _ = writeln!(
        s,
        "Per packet: BPF_PROG_TEST_RUN of established client packets (ACK with 16 bytes, {} flows to be1..be3 in turn) on the active node's program, {RUNS_PER_ROUND} runs a round, a round every {} ms or so on one thread ({} ms pause after each) for {} s before a fresh standby starts, while it copies {} flows, and for {} s after. Round means; the figure is their median.\n",
        MEASURED_FLOWS,
        ROUND_PAUSE.as_millis() + 5,
        ROUND_PAUSE.as_millis(),
        IDLE_ROUNDS.as_secs(),
        group(u64::from(b.flows)),
        IDLE_ROUNDS.as_secs()
    );
    let _ = writeln!(
        s,
        "| | idle before | during the bulk copy | idle after |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        s,
        "| ns per packet, median of the round means | **{:.0}** | **{:.0}** | **{:.0}** |",
        median(&cost.before),
        median(&cost.during),
        median(&cost.after)
    );
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{lo:.0}–{hi:.0}")
        }
    };
    let _ = writeln!(
        s,
        "| … range of the round means | {} | {} | {} |",
        range(&cost.before),
        range(&cost.during),
        range(&cost.after)
    );
    let _ = writeln!(
        s,
        "| rounds | {} | {} | {} |",
        cost.before.len(),
        cost.during.len(),
        cost.after.len()
    );
    let actions: Vec<String> = cost
        .actions
        .iter()
        .map(|(a, n)| format!("{} × {}", group(*n), action_name(*a)))
        .collect();
    let took = b.observed;
    let _ = writeln!(
        s,
        "\nActions of the measured runs: {}. The copy meanwhile: `balancer run` to `complete` {}, {} by the standby's clock; {} bulk copies started; tables compared: {} missing, {} different, {} adopted by the standby; the active daemon used {:.1} s of CPU in the {:.1} s from the standby's start to the end of the copy (or of the wait for it), {:.0} % of one CPU, the standby {:.1} s; role changes of the standby meanwhile: {} ({}); {} sweeps of the active node's table; load average {} / {}.",
        actions.join(", "),
        secs(b.complete),
        secs(b.complete.map(|_| Duration::from_millis(b.copy.took_ms))),
        b.bulks_sent,
        group(b.compared.missing),
        group(b.compared.different),
        group(b.compared.adopted),
        b.active_cpu.as_secs_f64(),
        took.as_secs_f64(),
        100.0 * b.active_cpu.as_secs_f64() / took.as_secs_f64().max(1e-9),
        b.standby_cpu.as_secs_f64(),
        b.standby_transitions,
        b.standby_causes
            .iter()
            .map(|(cause, n)| format!("{n} × {cause}"))
            .collect::<Vec<_>>()
            .join(", "),
        b.sweeps,
        b.load_before,
        b.load_after
    );

    let _ = writeln!(s, "\n### Live sync of new connections\n");
    let idle_rate = |bytes: u64| bytes as f64 / LIVE.as_secs_f64();
    let out = live.wire.out_bytes as f64 - idle_rate(live.idle_wire.out_bytes) * live.seconds;
    let inb = live.wire.in_bytes as f64 - idle_rate(live.idle_wire.in_bytes) * live.seconds;
    let _ = writeln!(
        s,
        "{} connections (connect, one line, close) through the VIP from two client threads in {:.1} s ({:.0}/s): the active node sent {} records (a new and an ended one per flow); the standby installed {} and ended {}. Load average {}.\n",
        group(live.flows),
        live.seconds,
        live.flows as f64 / live.seconds,
        group(live.records),
        group(live.installed),
        group(live.closed),
        live.load
    );
    let _ = writeln!(
        s,
        "| per 10,000 new flows | active (drains the ring, sends) | standby (installs, ends, acknowledges) |\n|---|---:|---:|"
    );
    let _ = writeln!(
        s,
        "| daemon CPU beyond its idle use | **{:.0} ms** | **{:.0} ms** |",
        per_10k(live.active_cpu, live.flows),
        per_10k(live.standby_cpu, live.flows)
    );
    let _ = writeln!(
        s,
        "| sync datagrams sent, beyond idle (IP bytes, nftables) | **{:.2} MB** ({:.0} B per flow) | **{:.2} MB** ({:.0} B per flow) |",
        out * 10_000.0 / live.flows.max(1) as f64 / 1e6,
        out / live.flows.max(1) as f64,
        inb * 10_000.0 / live.flows.max(1) as f64 / 1e6,
        inb / live.flows.max(1) as f64
    );
    let _ = writeln!(
        s,
        "| … at 10,000 new flows per second | {:.1} Mbit/s | {:.1} Mbit/s |",
        out * 8.0 * 10_000.0 / live.flows.max(1) as f64 / 1e6,
        inb * 8.0 * 10_000.0 / live.flows.max(1) as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "| idle (positions and acknowledgements), packets and bytes per second | {:.0}, {:.0} | {:.0}, {:.0} |",
        live.idle_wire.out_packets as f64 / LIVE.as_secs_f64(),
        idle_rate(live.idle_wire.out_bytes),
        live.idle_wire.in_packets as f64 / LIVE.as_secs_f64(),
        idle_rate(live.idle_wire.in_bytes)
    );
    s
}

fn action_name(action: u32) -> String {
    match action {
        1 => "XDP_DROP".into(),
        2 => "XDP_PASS".into(),
        3 => "XDP_TX".into(),
        4 => "XDP_REDIRECT".into(),
        other => format!("action {other}"),
    }
}
