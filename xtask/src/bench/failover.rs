//! `cargo xtask bench failover`: two balancer hosts with flow sync on the
//! namespace topology; the active host's client link goes down `FAILOVER_RUNS`
//! times (default 20). Measures the gap until a new connection through the VIP
//! succeeds again and how many established connections keep working, and the
//! cost of flow sync per 10,000 new flows. Writes the `## Failover` section of
//! BENCHMARKS.md.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use balancer_tests::{
    Balancer, TempDir, Topology, addrs,
    config::{Config, Flows, Ha, Health, Service},
    poll_until, tcp_connect, tcp_request, tcp_server, wait_until,
};

use super::e2e::{binary, measure::processes_cpu, report::write_section};
use crate::workspace_root;

const VIP: &str = "198.51.100.10";
const HELD: usize = 20;
const ADVERT_MS: u32 = 100;
const DEAD_AFTER: u32 = 3;
const SYNC_SECONDS: u64 = 5;

fn config(name: &str, priority: u8, peer: &str, key: &str) -> Config {
    Config::new(name)
        .snat(["203.0.113.9"])
        .metrics_off()
        .flows(Flows::default().tcp_transitory_timeout_s(5))
        .ha(Ha::enabled()
            .interface("front")
            .peers([peer])
            .priority(priority)
            .advert_interval_ms(ADVERT_MS)
            .dead_after(DEAD_AFTER)
            .preempt(true)
            .auth_key_file(key)
            .sync_flows(true)
            .track_interfaces(["front", "back"]))
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::tcp().timing(500, 200, 1, 2))
                .backends((1..=3).map(|i| SocketAddr::new(addrs::backend(i).into(), 8080))),
        )
}

fn vip() -> SocketAddr {
    SocketAddr::new(VIP.parse().expect("address"), 80)
}

fn role(lb: &Balancer) -> String {
    let Ok(out) = lb.cli(&["status", "--json"]) else {
        return String::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["status"]["ha"]["role"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn sync_sent(lb: &Balancer) -> u64 {
    ha_count(lb, "sync_sent")
}

fn sync_installed(lb: &Balancer) -> u64 {
    ha_count(lb, "sync_installed")
}

/// A count of `balancer status`'s HA part; 0 where there is none.
fn ha_count(lb: &Balancer, name: &str) -> u64 {
    let Ok(out) = lb.cli(&["status", "--json"]) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["status"]["ha"][name].as_u64().unwrap_or(0)
}

fn wait_roles(a: &Balancer, want_a: &str, b: &Balancer, want_b: &str) -> Result<()> {
    if !wait_until(Duration::from_secs(15), || {
        role(a) == want_a && role(b) == want_b
    }) {
        bail!(
            "roles a={} b={}, wanted {want_a}/{want_b}",
            role(a),
            role(b)
        );
    }
    Ok(())
}

fn request(topo: &Topology, timeout: Duration) -> bool {
    tcp_request(topo.client(), vip(), "ping", timeout).is_ok()
}

pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the failover benchmark creates network namespaces and attaches XDP: run it as root");
    }
    let runs: usize = std::env::var("FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let binary = binary::prepare()?;
    eprintln!("failover: balancer binary {binary}");
    let topo = Topology::builder()
        .hint("fo")
        .backends(3)
        .standby(true)
        .build()?;
    let _servers: Vec<_> = (1..=3)
        .map(|i| {
            tcp_server(
                topo.backend(i),
                SocketAddr::new(addrs::backend(i).into(), 8080),
            )
        })
        .collect::<Result<_>>()?;
    let keys = TempDir::new("fokey")?;
    let key = keys.join("ha.key");
    std::fs::write(&key, "failover-benchmark-key-0123456789")?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let key = key.display().to_string();
    let a = Balancer::start(topo.lb(), &config("lb-a", 200, "198.51.100.3", &key))?;
    let b = Balancer::start(topo.lb2(), &config("lb-b", 100, "198.51.100.1", &key))?;
    wait_roles(&a, "active", &b, "standby")?;
    if !wait_until(Duration::from_secs(10), || {
        request(&topo, Duration::from_secs(1))
    }) {
        bail!("the VIP does not answer");
    }

    // Sync cost: both daemons' CPU while new connections run, less their idle CPU.
    let pids = |lb: &Balancer| vec![lb.pid() as i32];
    let idle_start = (processes_cpu(&pids(&a)), processes_cpu(&pids(&b)));
    std::thread::sleep(Duration::from_secs(SYNC_SECONDS));
    let idle = (
        processes_cpu(&pids(&a)) - idle_start.0,
        processes_cpu(&pids(&b)) - idle_start.1,
    );
    let sent_before = sync_sent(&a);
    let busy_start = (processes_cpu(&pids(&a)), processes_cpu(&pids(&b)));
    let flows = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (topo, flows) = (&topo, flows.clone());
            s.spawn(move || {
                let deadline = started + Duration::from_secs(SYNC_SECONDS);
                for _ in 0..1_000_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    if request(topo, Duration::from_secs(1)) {
                        flows.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let busy = (
        processes_cpu(&pids(&a)) - busy_start.0 - idle.0,
        processes_cpu(&pids(&b)) - busy_start.1 - idle.1,
    );
    // Closing records follow the FIN: wait (a bounded time) until both
    // records of every counted flow, its new and its ended one, were sent.
    let counted = flows.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || {
        sync_sent(&a) - sent_before >= 2 * counted
    });
    let records = sync_sent(&a) - sent_before;
    let flows = flows.load(Ordering::Relaxed).max(1);
    let per_10k = |cpu: f64| (cpu.max(0.0) * 10_000.0 / flows as f64) * 1000.0;
    let rate = flows as f64 / elapsed;
    // 89 bytes a flow record (record layout 2; a closed record is 39); per
    // datagram of up to 15 records: 4+1+1+4+8+2 header, 32 MAC, 8 UDP, 40 IPv6
    // (the socket is dual-stack; 20 for IPv4).
    let bytes_per_record = 89.0 + (18.0 + 32.0 + 8.0 + 40.0) / 15.0;
    let bytes_per_flow = records as f64 * bytes_per_record / flows as f64;
    eprintln!(
        "failover: sync cost: {flows} flows at {rate:.0}/s, {records} records; active {:.1} ms, standby {:.1} ms CPU per 10,000 flows",
        per_10k(busy.0),
        per_10k(busy.1)
    );

    let mut gaps = Vec::with_capacity(runs);
    let (mut survived, mut held_total) = (0usize, 0usize);
    for run in 1..=runs {
        let installed_before = sync_installed(&b);
        let mut held: Vec<_> = (0..HELD)
            .map(|i| -> Result<_> {
                let mut c = tcp_connect(topo.client(), vip(), Duration::from_secs(5))?;
                let reply = c.request(&format!("held {i}"))?;
                Ok((reply.split_once(' ').map(|r| r.0.to_string()), c))
            })
            .collect::<Result<_>>()
            .context("opening the held connections")?;
        // The standby has the held flows.
        if !wait_until(Duration::from_secs(5), || {
            sync_installed(&b) >= installed_before + HELD as u64
        }) {
            bail!(
                "the standby installed {} of the {HELD} held flows in 5 s",
                sync_installed(&b) - installed_before
            );
        }
        // From the moment the link is down: attempts only after it.
        topo.lb().ip(&["link", "set", "front", "down"])?;
        let down = Instant::now();
        let mut gap = None;
        poll_until(Duration::from_secs(10), Duration::from_millis(5), || {
            let attempt = Instant::now();
            let served = request(&topo, Duration::from_millis(100));
            if served {
                gap = Some(attempt.duration_since(down));
            }
            served
        });
        let gap = gap.context("never served again within 10 s")?;
        gaps.push(gap);
        wait_roles(&a, "standby", &b, "active")?;
        for (i, (name, c)) in held.iter_mut().enumerate() {
            let line = format!("after {i}");
            match c.request(&line) {
                Ok(r) if r.split_once(' ').map(|r| r.0) == name.as_deref() => survived += 1,
                other => eprintln!("failover: run {run}: held connection {i} broke: {other:?}"),
            }
        }
        held_total += held.len();
        drop(held);
        eprintln!("failover: run {run}/{runs}: gap {gap:?}");
        topo.lb().ip(&["link", "set", "front", "up"])?;
        wait_roles(&a, "active", &b, "standby")?;
        if !wait_until(Duration::from_secs(10), || {
            request(&topo, Duration::from_secs(1))
        }) {
            bail!("the VIP does not answer after lb-a took the role back");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    a.stop()?;
    b.stop()?;

    gaps.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(gaps[gaps.len() / 2]);
    let worst = ms(*gaps.last().expect("runs > 0"));
    let best = ms(gaps[0]);
    // VRRP (RFC 5798) master down interval: 3 x advert_int + skew, skew =
    // (256 - priority) / 256 x advert_int; keepalived's defaults: 1 s, backup 100.
    let keepalived_ms = 3.0 * 1000.0 + (256.0 - 100.0) / 256.0 * 1000.0;
    let mut sec = String::new();
    let _ = writeln!(sec, "## Failover\n");
    let _ = writeln!(
        sec,
        "`cargo xtask bench failover` ({runs} runs; {binary}). Two balancer hosts (`lb` as lb-a, priority 200, and `lb2` as lb-b, priority 100) on the client and backend bridges of the namespace topology, three TCP echo backends, `advert_interval_ms = {ADVERT_MS}`, `dead_after = {DEAD_AFTER}`, `preempt = true`, `sync_flows = true`, `track_interfaces = [\"front\", \"back\"]`. Each run opens {HELD} connections through the VIP, then sets the active host's `front` link down; from when `ip link set front down` returned, a prober opens a new connection every 5 ms (100 ms connect timeout) and the gap is the time to the start of the first attempt that succeeded. Then every held connection sends a line and must get its backend's answer; the link comes back up and lb-a takes the role back (preemption) before the next run.\n"
    );
    let _ = writeln!(sec, "| | this balancer | keepalived defaults (computed) |");
    let _ = writeln!(sec, "|---|---|---|");
    let _ = writeln!(
        sec,
        "| failover gap, median | {median:.0} ms | {keepalived_ms:.0} ms |"
    );
    let _ = writeln!(sec, "| failover gap, worst of {runs} | {worst:.0} ms | |");
    let _ = writeln!(sec, "| failover gap, best | {best:.0} ms | |");
    let _ = writeln!(
        sec,
        "| established connections that kept working | {survived} of {held_total} | none without conntrackd |"
    );
    let _ = writeln!(
        sec,
        "\nkeepalived's figure is the VRRP master-down interval with its defaults (advert_int 1 s, backup priority 100): 3 x 1 s + (256 - 100)/256 s, before its gratuitous ARP; it was computed, not measured here. This balancer's bound with these settings is dead_after x advert interval = {} ms plus the announcement; the measured gap adds the prober's 5 ms step and its 100 ms connect timeout for an attempt that started just before the takeover.\n",
        DEAD_AFTER * ADVERT_MS
    );
    let _ = writeln!(
        sec,
        "Flow sync cost: {flows} new connections (connect, one line, close) at {rate:.0}/s from two client threads for {SYNC_SECONDS} s; {records} records sent (a new and an ended record per flow). CPU of the daemons beyond their idle use in the same length of time: active (reads the ring buffer, sends) {:.1} ms, standby (installs and removes entries) {:.1} ms per 10,000 flows; about {bytes_per_flow:.0} bytes on the wire per flow (89 bytes a flow record plus the datagram's share of header, MAC, UDP and IP), so 10,000 new flows per second cost about {:.1} Mbit/s. The kernel side is a ring-buffer reservation on flow creation and end (144 bytes), only with `sync_flows`.\n",
        per_10k(busy.0),
        per_10k(busy.1),
        bytes_per_flow * 10_000.0 * 8.0 / 1e6
    );
    let _ = writeln!(
        sec,
        "Left out: flows older than the standby (a standby that starts after connections were opened learns only newer ones; there is no bulk transfer yet), and a sync datagram lost on the wire is not resent: its flows reset after a takeover. The `kill -9` failover is in tests/tests/ha.rs: the killed node's program keeps forwarding the flows it has while the neighbours still send to it, takes no new ones once its lease runs out (`dead_after` intervals), and stops answering ARP for the floating addresses, so the peer's announcements win."
    );
    let path = workspace_root().join("BENCHMARKS.md");
    write_section(&path, "## Failover", &sec)?;
    eprintln!(
        "failover: median {median:.0} ms, worst {worst:.0} ms, {survived}/{held_total} connections kept; wrote the `## Failover` section of {}",
        path.display()
    );
    Ok(())
}
