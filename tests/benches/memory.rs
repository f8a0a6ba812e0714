//! `cargo xtask bench memory` runs this: kernel map memory per tracked flow,
//! and the daemon's resident memory, with 10,000 backends and a flow table for
//! 1,000,000 flows, beside a minimal configuration measured in the same run.
//!
//! Both daemons run, one after the other, in the `lb` namespace of a standard
//! topology (`balancer_tests::Topology`; nothing in the root namespace), each
//! with a home of its own (`balancer_tests::Balancer`: its pinned state on a
//! private BPF file system):
//!
//! - map memory: the maps of the daemon's own XDP program (its program id from
//!   `/proc/PID/fdinfo`, the map ids from `bpftool prog show`, the figures from
//!   `bpftool map show`: `bytes_memlock`, cross-checked with the fdinfo's
//!   `memlock`); beside it, what the kernel allocated meanwhile (`/proc/meminfo`:
//!   VmallocUsed + Percpu + SUnreclaim, machine-wide);
//! - the large daemon's table is then filled with 1,000,000 real flows
//!   (2,000,000 entries): TCP handshakes to its services run through its own
//!   program with BPF_PROG_TEST_RUN (a SYN alone would be half-open, kept in
//!   `HALF_OPEN`). Every kernel access goes through balancer-user's
//!   data-plane layer: `Dataplane::open` loads the program again on the
//!   daemon's pinned maps, `test_run` runs the segments, `flow_entries` counts the
//!   table in batches. So the program itself chooses backends and SNAT ports
//!   and inserts both entries of each flow. The kernel's memory before and
//!   after the fill shows whether a full table costs more than the empty one
//!   (it should not: an LRU hash is preallocated);
//! - resident memory (`VmRSS`, `VmHWM` of `/proc/PID/status`) after start, after
//!   the fill, after the daemon swept the full table (flows alive, nothing to
//!   expire), and after the sweeps that expired every flow (idle established
//!   flows age out after `tcp_established_timeout_s`, set to 90 s here). The peak is
//!   reset (`/proc/PID/clear_refs`) at the start of each phase, so each `VmHWM`
//!   is the peak of its phase. Sweeps are seen in the daemon's CPU time (an idle
//!   daemon uses none) and in its debug log (`expired flows`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use balancer_tests::{
    Balancer, Launch, Netns, Topology, balancer_bin,
    config::{Config, Flows, Health, Service},
    cpu_time, resident_kib, thousands as group,
};
use support::{FlowPlan, PORTS_PER_CLIENT, daemon_dataplane, no_cookies, open_flows};

mod support;

/// Flows to track: the figure. Each takes two entries (both directions).
const FLOWS: u32 = 1_000_000;
const CAPACITY: u32 = 2 * FLOWS;
/// 200 services × 50 backends.
const SERVICES: u32 = 200;
const BACKENDS_PER_SERVICE: u32 = 50;
const VIP: [u8; 4] = [198, 51, 100, 10];
/// Clients of the filled flows: 198.51.100.100-199, 10,000 source ports each,
/// to the services in turn.
const PLAN: FlowPlan = FlowPlan {
    vip: VIP,
    services: SERVICES,
};
/// `flows.tcp_established_timeout_s` and `tcp_transitory_timeout_s` of the
/// large configuration: the filled flows (established, then idle) expire
/// after it. Longer than the default 30 s, so that
/// one sweep (every 30 s: half the 60 s UDP limit) sees the full table alive: a
/// sweep of 2,000,000 entries takes seconds.
const TRANSITORY_S: u64 = 90;
/// Starts of a daemon, at most, until no other BPF map comes or goes meanwhile.
const START_ATTEMPTS: u32 = 3;
/// The fill goes in this many chunks.
const FILL_CHUNKS: u32 = 10;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A sweep has ended when the daemon used no CPU for this long.
const IDLE: Duration = Duration::from_millis(1500);
const SWEEP_TIMEOUT: Duration = Duration::from_secs(90);

fn main() {
    support::bench_main("memory", run);
}

fn run() -> Result<()> {
    if !balancer_tests::require_root() || !balancer_tests::require_program("bpftool") {
        bail!("the memory benchmark needs root and bpftool");
    }
    eprintln!("memory: balancer binary {}", balancer_bin().display());
    let topo = Topology::builder()
        .hint("mem")
        .backends(1)
        .ipv6(false)
        .build()?;

    eprintln!("memory: minimal configuration (1 service, 3 backends, default capacity)");
    let minimal = measure(topo.lb(), &minimal_config(), false)?;
    eprintln!("memory: {SERVICES} services x {BACKENDS_PER_SERVICE} backends, capacity {CAPACITY}");
    let large = measure(topo.lb(), &large_config(), true)?;
    drop(topo);

    print!("{}", render(&minimal, &large));
    Ok(())
}

fn minimal_config() -> Config {
    Config::new("mem-minimal")
        .snat(["203.0.113.9"])
        .metrics_off()
        .firewall(no_cookies())
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::none())
                .backends([
                    "203.0.113.11:8080",
                    "203.0.113.12:8080",
                    "203.0.113.13:8080",
                ]),
        )
}

/// 200 services on one VIP (ports 10000-10199), 50 backends each: backend `b`
/// of service `s` is 203.0.113.(11 + b):(20000 + s).
fn large_config() -> Config {
    let config = Config::new("mem-large")
        .snat(["203.0.113.9"])
        .metrics_off()
        .firewall(no_cookies())
        .flows(
            Flows::default()
                .capacity(CAPACITY)
                .tcp_transitory_timeout_s(TRANSITORY_S as u32)
                .tcp_established_timeout_s(TRANSITORY_S as u32),
        );
    PLAN.services(config, BACKENDS_PER_SERVICE)
}

/// One map of the daemon's program.
#[derive(Debug, Clone)]
struct MapRow {
    id: u32,
    name: String,
    kind: String,
    key: u64,
    value: u64,
    max_entries: u64,
    memlock: u64,
}

/// `VmRSS` and `VmHWM`, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    rss_kb: u64,
    hwm_kb: u64,
}

/// One phase of the large daemon's life.
#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    rss: Rss,
    /// FLOWS entries when the phase ended.
    entries: u64,
    /// What the phase's sweeps did (from the daemon's log), and their CPU time.
    note: String,
}

#[derive(Debug, Default)]
struct Measured {
    services: usize,
    backends: usize,
    config_bytes: usize,
    prog_id: u32,
    prog_memlock: u64,
    maps: Vec<MapRow>,
    /// Maps the daemon holds that its program does not use.
    other_held: Vec<MapRow>,
    /// Kernel memory (VmallocUsed + Percpu + SUnreclaim) allocated while the
    /// daemon started, KiB, and whether any other BPF map came or went meanwhile.
    start_kernel_kb: i64,
    /// Of which other programs' maps (created minus freed), KiB.
    start_others_kb: i64,
    start_time: Duration,
    start_attempts: u32,
    after_start: Rss,
    fill: Option<Fill>,
    phases: Vec<Phase>,
}

#[derive(Debug, Clone)]
struct Fill {
    flows: u32,
    created: u64,
    refused: u64,
    elapsed: Duration,
    entries: u64,
    kernel_kb: i64,
    kernel_parts: String,
    /// Other programs' maps created minus freed meanwhile, KiB.
    others_kb: i64,
    /// Chunks of the fill during which no other BPF map came or went, the flows
    /// they created, and the kernel memory allocated during them, KiB.
    clean_chunks: u32,
    clean_flows: u64,
    clean_kb: i64,
    memlock_before: u64,
    memlock_after: u64,
}

impl Measured {
    fn flows_map(&self) -> Option<&MapRow> {
        self.maps.iter().find(|m| m.name == "FLOWS")
    }

    fn maps_total(&self) -> u64 {
        self.maps.iter().map(|m| m.memlock).sum()
    }
}

/// Starts the daemon on `config` in `lb`, measures, stops it.
fn measure(lb: &Netns, config: &Config, fill: bool) -> Result<Measured> {
    let text = config.to_toml();
    let mut m = Measured {
        services: config.services.len(),
        backends: config.services.iter().map(|s| s.backends.len()).sum(),
        config_bytes: text.len(),
        ..Measured::default()
    };

    // The machine-wide kernel figure is attributable only if no other BPF map
    // came or went while the daemon started (other tests on the machine): if one
    // did, the daemon is stopped and started again, up to START_ATTEMPTS times.
    let mut attempt = 0;
    let (daemon, pid, before, after, ours, ids) = loop {
        attempt += 1;
        // The maps of a daemon that stopped just before are freed late (after an
        // RCU grace period, by a worker): wait until that is over.
        let before = Kernel::settled()?;
        let t0 = Instant::now();
        // The sweep's debug line says how many flows each sweep expired.
        let launch = Launch {
            env: &[("RUST_LOG", "info,balancer_user::daemon::state=debug")],
            ..Launch::default()
        };
        let daemon = Balancer::launch(lb, &text, launch)?;
        daemon.wait_for_log(&["balancer running"], START_TIMEOUT)?;
        m.start_time = t0.elapsed();
        let pid = daemon.pid();
        // The first sweep runs at once (empty table); let the daemon settle.
        wait_idle(pid, Duration::from_secs(10))?;
        let after = Kernel::read()?;
        let (prog_ids, held) = bpf_fds(pid)?;
        // The daemon also holds the flow sweep program; the packet path is "balancer".
        let mut found = None;
        for id in &prog_ids {
            let prog = bpftool(&["prog", "show", "id", &id.to_string()])?;
            if prog["name"] == "balancer" {
                found = Some((*id, prog));
            }
        }
        let Some((prog_id, prog)) = found else {
            bail!("pid {pid} holds no program named balancer among {prog_ids:?}");
        };
        m.prog_id = prog_id;
        m.prog_memlock = prog["bytes_memlock"].as_u64().unwrap_or(0);
        let ids: BTreeSet<u32> = prog["map_ids"]
            .as_array()
            .context("map_ids")?
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect();
        let ours: BTreeSet<u32> = ids.iter().chain(held.keys()).copied().collect();
        let others = others_delta_kb(&before, &after, &ours);
        if others != 0 && attempt < START_ATTEMPTS {
            eprintln!(
                "memory: other BPF maps changed by {others} KiB while the daemon started; again"
            );
            daemon.stop()?;
            continue;
        }
        // fdinfo's memlock of every map the daemon holds, to cross-check bpftool.
        let all = all_maps()?;
        for (id, fd_memlock) in &held {
            let row = all
                .get(id)
                .with_context(|| format!("map {id} held by the daemon is not in bpftool's list"))?;
            ensure!(
                row.memlock == *fd_memlock,
                "map {} ({id}): bpftool says {} bytes, fdinfo {}",
                row.name,
                row.memlock,
                fd_memlock
            );
            if !ids.contains(id) {
                m.other_held.push(row.clone());
            }
        }
        break (daemon, pid, before, after, ours, ids);
    };
    m.start_attempts = attempt;
    m.after_start = rss(pid)?;
    let all = all_maps()?;
    for id in &ids {
        m.maps.push(
            all.get(id)
                .with_context(|| format!("map {id} of the program is not in bpftool's list"))?
                .clone(),
        );
    }
    m.maps
        .sort_by(|a, b| b.memlock.cmp(&a.memlock).then(a.name.cmp(&b.name)));
    m.start_kernel_kb = after.kernel_kb() - before.kernel_kb();
    m.start_others_kb = others_delta_kb(&before, &after, &ours);
    let flows_id = m.flows_map().context("the program has no FLOWS map")?.id;
    eprintln!(
        "memory: pid {pid}, program {}, {} maps, {} bytes; FLOWS {} bytes; RSS {} KiB",
        m.prog_id,
        m.maps.len(),
        m.maps_total(),
        m.flows_map().map_or(0, |f| f.memlock),
        m.after_start.rss_kb
    );

    if fill {
        let capacity = config
            .flows
            .capacity
            .context("the large configuration sets a capacity")?;
        fill_and_sweep(lb, &mut m, &daemon, capacity, flows_id, &ours)?;
    }
    daemon.stop()?;
    Ok(m)
}

/// Fills the daemon's table through its own program (loaded again by this
/// process on the daemon's pinned maps: balancer-user's data-plane layer),
/// then follows the sweeps.
fn fill_and_sweep(
    lb: &Netns,
    m: &mut Measured,
    daemon: &Balancer,
    capacity: u32,
    flows_id: u32,
    ours: &BTreeSet<u32>,
) -> Result<()> {
    let pid = daemon.pid();
    let memlock = |id: u32| -> Result<u64> { Ok(all_maps()?.get(&id).map_or(0, |r| r.memlock)) };
    // Loaded before the first reading: the maps of its own that the loaded
    // program brings (`.rodata`) are not in the figures.
    let dp = daemon_dataplane(&daemon.home().pin_dir(), capacity)?;
    let count_entries = || -> Result<u64> { Ok(dp.flow_entries()? as u64) };
    // Phase: the fill.
    reset_hwm(pid)?;
    let before = Kernel::read()?;
    let memlock_before = memlock(flows_id)?;
    eprintln!("memory: filling FLOWS with {FLOWS} flows through the daemon's program");
    // In chunks, each between two readings of the kernel's memory: the chunks
    // during which no other BPF map came or went give an attributable figure.
    let (mut created, mut refused, mut elapsed) = (0, 0, Duration::ZERO);
    let (mut clean_chunks, mut clean_flows, mut clean_kb) = (0, 0, 0);
    let chunk = FLOWS / FILL_CHUNKS;
    for c in 0..FILL_CHUNKS {
        let k0 = Kernel::read()?;
        let t = Instant::now();
        // In `lb`, whose routes and neighbours the program's FIB lookups see.
        let ran = lb.try_run(|| open_flows(&dp, PLAN, c * chunk..(c + 1) * chunk, (0, 0)))??;
        elapsed += t.elapsed();
        let k1 = Kernel::read()?;
        created += ran.created;
        refused += ran.refused;
        if others_delta_kb(&k0, &k1, ours) == 0 && k0.maps.len() == k1.maps.len() {
            clean_chunks += 1;
            clean_flows += ran.created;
            clean_kb += k1.kernel_kb() - k0.kernel_kb();
        }
    }
    let fill_end = Instant::now();
    let after = Kernel::read()?;
    let memlock_after = memlock(flows_id)?;
    let entries = count_entries()?;
    eprintln!(
        "memory: {created} flows created, {refused} refused in {:.1} s; {entries} entries",
        elapsed.as_secs_f64()
    );
    m.fill = Some(Fill {
        flows: FLOWS,
        created,
        refused,
        elapsed,
        entries,
        kernel_kb: after.kernel_kb() - before.kernel_kb(),
        kernel_parts: after.parts_since(&before),
        others_kb: others_delta_kb(&before, &after, ours),
        clean_chunks,
        clean_flows,
        clean_kb,
        memlock_before,
        memlock_after,
    });
    m.phases.push(Phase {
        name: "after the fill",
        rss: rss(pid)?,
        entries,
        note: String::new(),
    });

    // Phase: a sweep over the full table that finds nothing to expire.
    wait_idle(pid, SWEEP_TIMEOUT)?;
    reset_hwm(pid)?;
    let log_from = daemon.output_so_far().len();
    let cpu = wait_sweep(pid, SWEEP_TIMEOUT).context("waiting for a sweep of the full table")?;
    let entries = count_entries()?;
    let swept = sweeps_logged(&daemon.output_so_far()[log_from..]);
    m.phases.push(Phase {
        name: "after a sweep of the full table",
        rss: rss(pid)?,
        entries,
        note: format!(
            "one sweep, {:.1} s of CPU; {}",
            cpu.as_secs_f64(),
            describe_sweeps(&swept, "it expired nothing")
        ),
    });
    eprintln!("memory: swept the full table: {entries} entries left");

    // Phase: the sweeps that expire every flow.
    reset_hwm(pid)?;
    let log_from = daemon.output_so_far().len();
    let expire_at = fill_end + Duration::from_secs(TRANSITORY_S);
    eprintln!("memory: waiting for the flows to expire ({TRANSITORY_S} s idle) and be swept");
    let deadline = Instant::now() + Duration::from_secs(TRANSITORY_S) + SWEEP_TIMEOUT * 2;
    let cpu_from = cpu_time(pid)?;
    let mut entries;
    loop {
        if let Some(wait) = expire_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        wait_idle(pid, SWEEP_TIMEOUT)?;
        entries = count_entries()?;
        if entries < u64::from(FLOWS) / 100 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{entries} entries still in FLOWS long after every flow expired"
        );
        wait_sweep(pid, SWEEP_TIMEOUT).context("waiting for an expiring sweep")?;
    }
    let cpu = cpu_time(pid)? - cpu_from;
    let swept = sweeps_logged(&daemon.output_so_far()[log_from..]);
    m.phases.push(Phase {
        name: "after the sweeps that expired every flow",
        rss: rss(pid)?,
        entries,
        note: format!(
            "{:.1} s of CPU in the phase; {}",
            cpu.as_secs_f64(),
            describe_sweeps(
                &swept,
                "nothing left to expire: the previous phase's sweep had expired every flow"
            )
        ),
    });
    Ok(())
}

/// `(scanned, expired)` of every sweep's `expired flows` line.
fn sweeps_logged(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains("expired flows"))
        .map(|l| (field(l, "scanned="), field(l, "expired=")))
        .collect()
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn describe_sweeps(sweeps: &[(u64, u64)], none: &str) -> String {
    if sweeps.is_empty() {
        return none.to_string();
    }
    let parts: Vec<String> = sweeps
        .iter()
        .map(|(s, e)| format!("scanned {} entries, expired {} flows", group(*s), group(*e)))
        .collect();
    format!(
        "{} sweep(s) expiring flows: {}",
        sweeps.len(),
        parts.join("; ")
    )
}

/// Waits until the daemon has used no CPU for [`IDLE`].
fn wait_idle(pid: u32, timeout: Duration) -> Result<()> {
    support::wait_idle(pid, IDLE, timeout)
}

/// Waits for the daemon to start using CPU (a sweep of a non-empty table) and
/// to be idle again; returns the CPU time it used.
fn wait_sweep(pid: u32, timeout: Duration) -> Result<Duration> {
    let deadline = Instant::now() + timeout;
    let first = cpu_time(pid)?;
    while cpu_time(pid)? == first {
        ensure!(Instant::now() < deadline, "no sweep within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_idle(pid, timeout)?;
    Ok(cpu_time(pid)? - first)
}

fn rss(pid: u32) -> Result<Rss> {
    let (rss_kb, hwm_kb) = resident_kib(pid)?;
    Ok(Rss { rss_kb, hwm_kb })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS.
fn reset_hwm(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting VmHWM of {pid}"))
}

/// The ids of the BPF programs whose fds `pid` holds, and the maps it holds
/// (id → fdinfo `memlock`).
fn bpf_fds(pid: u32) -> Result<(Vec<u32>, BTreeMap<u32, u64>)> {
    let mut progs = Vec::new();
    let mut maps = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let get = |k: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
        };
        if link == "anon_inode:bpf-prog"
            && let Some(id) = get("prog_id:")
        {
            progs.push(id as u32);
        } else if link == "anon_inode:bpf-map"
            && let (Some(id), Some(memlock)) = (get("map_id:"), get("memlock:"))
        {
            maps.insert(id as u32, memlock);
        }
    }
    progs.sort();
    progs.dedup();
    if progs.is_empty() {
        bail!("pid {pid} holds no BPF program");
    }
    Ok((progs, maps))
}

fn bpftool(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("running bpftool")?;
    ensure!(
        out.status.success(),
        "bpftool {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).context("parsing bpftool's output")
}

/// Every BPF map of the machine, by id.
fn all_maps() -> Result<BTreeMap<u32, MapRow>> {
    let list = bpftool(&["map", "show"])?;
    let mut out = BTreeMap::new();
    for m in list.as_array().context("bpftool map show")? {
        let n = |k: &str| m[k].as_u64().unwrap_or(0);
        let id = n("id") as u32;
        out.insert(
            id,
            MapRow {
                id,
                name: m["name"].as_str().unwrap_or("").to_string(),
                kind: m["type"].as_str().unwrap_or("").to_string(),
                key: n("bytes_key"),
                value: n("bytes_value"),
                max_entries: n("max_entries"),
                memlock: n("bytes_memlock"),
            },
        );
    }
    Ok(out)
}

/// Machine-wide kernel memory that BPF maps are allocated from, and every BPF
/// map's memlock (to see whether anything else came or went meanwhile).
#[derive(Debug, Clone)]
struct Kernel {
    vmalloc_kb: i64,
    percpu_kb: i64,
    sunreclaim_kb: i64,
    maps: BTreeMap<u32, u64>,
}

impl Kernel {
    fn read() -> Result<Kernel> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let kb = |name: &str| -> i64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Kernel {
            vmalloc_kb: kb("VmallocUsed:"),
            percpu_kb: kb("Percpu:"),
            sunreclaim_kb: kb("SUnreclaim:"),
            maps: all_maps()?
                .into_values()
                .map(|r| (r.id, r.memlock))
                .collect(),
        })
    }

    /// A reading once the kernel's figure changed by less than 1 MiB in a
    /// second (at most 20 s).
    fn settled() -> Result<Kernel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = Kernel::read()?;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = Kernel::read()?;
            if (now.kernel_kb() - last.kernel_kb()).abs() < 1024 || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    fn kernel_kb(&self) -> i64 {
        self.vmalloc_kb + self.percpu_kb + self.sunreclaim_kb
    }

    fn parts_since(&self, before: &Kernel) -> String {
        format!(
            "VmallocUsed {:+} KiB, Percpu {:+} KiB, SUnreclaim {:+} KiB",
            self.vmalloc_kb - before.vmalloc_kb,
            self.percpu_kb - before.percpu_kb,
            self.sunreclaim_kb - before.sunreclaim_kb
        )
    }
}

/// `bytes_memlock` of the BPF maps other than `ours` (other tests, other
/// programs) created minus freed between the two readings, KiB.
fn others_delta_kb(before: &Kernel, after: &Kernel, ours: &BTreeSet<u32>) -> i64 {
    let theirs = |k: &Kernel| -> i64 {
        k.maps
            .iter()
            .filter(|(id, _)| !ours.contains(id))
            .map(|(_, m)| *m as i64)
            .sum()
    };
    (theirs(after) - theirs(before)) / 1024
}

// --- report ----------------------------------------------------------------

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

fn kib_mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn signed_kib(kb: i64) -> String {
    format!("{:+.1} MiB", kb as f64 / 1024.0)
}

fn rss_cell(r: &Rss) -> String {
    format!("{} / {}", kib_mib(r.rss_kb), kib_mib(r.hwm_kb))
}

/// The section's body (xtask writes the heading and the machine above it).
fn render(small: &Measured, large: &Measured) -> String {
    let mut s = String::new();
    let flows_per = |m: &Measured| -> (u64, f64, f64) {
        let f = m.flows_map().map_or(0, |f| f.memlock);
        let cap = m.flows_map().map_or(1, |f| f.max_entries.max(1));
        (f, f as f64 / (cap as f64 / 2.0), f as f64 / cap as f64)
    };
    let (sf, sper, sent) = flows_per(small);
    let (lf, lper, lent) = flows_per(large);
    let _ = writeln!(
        s,
        "| | minimal: {} service, {} backends, default capacity | large: {} services, {} backends, capacity {} |",
        small.services,
        small.backends,
        large.services,
        group(large.backends as u64),
        group(u64::from(CAPACITY))
    );
    let _ = writeln!(s, "|---|---:|---:|");
    let row = |s: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(s, "| {name} | {a} | {b} |");
    };
    let cap = |m: &Measured| m.flows_map().map_or(0, |f| f.max_entries);
    row(
        &mut s,
        "`FLOWS` entries (flows × 2 directions)",
        group(cap(small)),
        group(cap(large)),
    );
    row(
        &mut s,
        "`FLOWS` `bytes_memlock`",
        format!("{} ({})", group(sf), mib(sf)),
        format!("**{}** ({})", group(lf), mib(lf)),
    );
    row(
        &mut s,
        "… per tracked flow (two entries)",
        format!("{sper:.1} B"),
        format!("**{lper:.1} B**"),
    );
    row(
        &mut s,
        "… per entry",
        format!("{sent:.1} B"),
        format!("{lent:.1} B"),
    );
    row(
        &mut s,
        "all maps of the program",
        format!("{} ({} maps)", mib(small.maps_total()), small.maps.len()),
        format!(
            "**{}** ({} maps)",
            mib(large.maps_total()),
            large.maps.len()
        ),
    );
    row(
        &mut s,
        "… other than `FLOWS`",
        mib(small.maps_total() - sf),
        mib(large.maps_total() - lf),
    );
    row(
        &mut s,
        "the program itself (`bytes_memlock`)",
        format!("{} B", group(small.prog_memlock)),
        format!("{} B", group(large.prog_memlock)),
    );
    // Machine-wide figures: only meaningful when no other BPF map came or went
    // meanwhile (their memory is freed late, after an RCU grace period, so it
    // cannot be subtracted reliably).
    let kernel = |total: i64, others: i64| {
        if others == 0 {
            signed_kib(total)
        } else {
            format!(
                "{} (not attributable: other tests' BPF maps changed by {} meanwhile)",
                signed_kib(total),
                signed_kib(others)
            )
        }
    };
    row(
        &mut s,
        "kernel memory allocated while the daemon started (Δ VmallocUsed + Percpu + SUnreclaim, machine-wide)",
        kernel(small.start_kernel_kb, small.start_others_kb),
        kernel(large.start_kernel_kb, large.start_others_kb),
    );
    row(
        &mut s,
        "start-up time (to `balancer running`)",
        format!("{:.2} s", small.start_time.as_secs_f64()),
        format!("{:.2} s", large.start_time.as_secs_f64()),
    );
    row(
        &mut s,
        "daemon VmRSS / VmHWM after start (table empty)",
        rss_cell(&small.after_start),
        format!("**{}**", rss_cell(&large.after_start)),
    );
    for p in &large.phases {
        row(
            &mut s,
            &format!(
                "daemon VmRSS / VmHWM of the phase, {} ({} entries left)",
                p.name,
                group(p.entries)
            ),
            "not run".into(),
            format!("**{}**", rss_cell(&p.rss)),
        );
    }
    if let Some(f) = &large.fill {
        let _ = writeln!(
            s,
            "\nThe fill (large configuration): {} TCP handshakes (the client's SYN, the backend's SYN-ACK, the client's ACK) from 100 clients × {} ports to the {} services, through the daemon's own program (BPF_PROG_TEST_RUN) in {:.1} s: {} flows created, {} refused; `FLOWS` then held **{}** entries. `bytes_memlock` of `FLOWS` before and after: {} and {} bytes. Kernel memory meanwhile (machine-wide): **{}** ({}).",
            group(u64::from(f.flows)),
            group(u64::from(PORTS_PER_CLIENT)),
            SERVICES,
            f.elapsed.as_secs_f64(),
            group(f.created),
            group(f.refused),
            group(f.entries),
            group(f.memlock_before),
            group(f.memlock_after),
            kernel(f.kernel_kb, f.others_kb),
            f.kernel_parts
        );
        let per_entry = if f.clean_flows > 0 {
            format!(
                "{:.2} B per entry added",
                f.clean_kb as f64 * 1024.0 / (2 * f.clean_flows) as f64
            )
        } else {
            "no figure".to_string()
        };
        let _ = writeln!(
            s,
            "\nIn the {} of {FILL_CHUNKS} chunks of the fill during which no other BPF map came or went ({} flows, {} entries), the kernel allocated **{}**: {per_entry} (a table that allocated its entries on insert would need about {lent:.0} B each).",
            f.clean_chunks,
            group(f.clean_flows),
            group(2 * f.clean_flows),
            signed_kib(f.clean_kb),
        );
    }
    for (which, m) in [("minimal", small), ("large", large)] {
        if m.start_attempts > 1 {
            let _ = writeln!(
                s,
                "\nThe {which} daemon was started {} times: other tests' BPF maps came or went while the earlier starts were measured.",
                m.start_attempts
            );
        }
    }
    if !large.phases.is_empty() {
        let _ = writeln!(s, "\nSweeps (large configuration):");
        for p in &large.phases {
            if !p.note.is_empty() {
                let _ = writeln!(s, "- {}: {}.", p.name, p.note);
            }
        }
    }
    let _ = writeln!(
        s,
        "\nMaps of the program (large configuration; program id {}):\n",
        large.prog_id
    );
    let _ = writeln!(
        s,
        "| map | type | key + value, B | max_entries | bytes_memlock | minimal |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for m in &large.maps {
        let small_bytes = small
            .maps
            .iter()
            .find(|x| x.name == m.name)
            .map_or("-".to_string(), |x| group(x.memlock));
        let _ = writeln!(
            s,
            "| `{}` | {} | {} + {} | {} | {} | {} |",
            m.name,
            m.kind,
            m.key,
            m.value,
            group(m.max_entries),
            group(m.memlock),
            small_bytes
        );
    }
    for (which, m) in [("minimal", small), ("large", large)] {
        if !m.other_held.is_empty() {
            let names: Vec<String> = m
                .other_held
                .iter()
                .map(|r| format!("`{}` {}", r.name, group(r.memlock)))
                .collect();
            let _ = writeln!(
                s,
                "\nMaps the {which} daemon holds that its program does not use: {}.",
                names.join(", ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n(config sizes: {} and {} bytes of TOML)",
        small.config_bytes, large.config_bytes
    );
    s
}
