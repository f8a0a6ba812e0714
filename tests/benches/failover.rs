//! `cargo xtask bench failover` runs this: two balancer hosts with flow sync
//! on the namespace topology; the active host's client link goes down
//! `FAILOVER_RUNS` times (default 20). Measures the gap until a new
//! connection through the VIP succeeds again and how many established
//! connections keep working. Prints the body of the `## Failover` section of
//! BENCHMARKS.md (xtask writes it there). What flow sync costs is
//! `tests/benches/sync.rs`'s.

mod support;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use balancer_tests::{
    Balancer, Pace, Topology, addrs,
    config::{Config, Flows, Ha, Health, Service},
    tcp_connect, tcp_request, wait_until,
};
use support::{Site, ha_count, ha_status};

const VIP: &str = "198.51.100.10";
const HELD: usize = 20;
const ADVERT_MS: u32 = 100;
const DEAD_AFTER: u32 = 3;
/// The prober: a new connection this often, each given this long.
const PROBE_EVERY: Duration = Duration::from_millis(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

fn main() {
    support::bench_main("failover", run);
}

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
    ha_status(lb)["role"]
        .as_str()
        .unwrap_or_default()
        .to_string()
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

/// The time from now (the link just went down) to the start of the first
/// new connection through the VIP that is served: an attempt starts every
/// [`PROBE_EVERY`], each on a thread of its own and given [`PROBE_TIMEOUT`],
/// so that an attempt that started before the takeover and waits for its
/// answer in vain delays no later one (a client's SYN that goes unanswered is
/// sent again only after a second).
fn first_served(topo: &Topology) -> Option<Duration> {
    let down = Instant::now();
    let first: Mutex<Option<Duration>> = Mutex::new(None);
    std::thread::scope(|s| {
        let mut pace = Pace::new(PROBE_EVERY);
        while first.lock().expect("not poisoned").is_none()
            && down.elapsed() < Duration::from_secs(10)
        {
            let first = &first;
            s.spawn(move || {
                let started = down.elapsed();
                if request(topo, PROBE_TIMEOUT) {
                    let mut first = first.lock().expect("not poisoned");
                    *first = Some(first.map_or(started, |f| f.min(started)));
                }
            });
            pace.wait();
        }
    });
    first.into_inner().expect("not poisoned")
}

fn run() -> Result<()> {
    if !balancer_tests::require_root() {
        bail!("the failover benchmark creates network namespaces and attaches XDP: run it as root");
    }
    let runs: usize = std::env::var("FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    eprintln!(
        "failover: balancer binary {}",
        balancer_tests::balancer_bin().display()
    );
    let site = Site::new("fo")?;
    let a = Balancer::start(
        site.topo.lb(),
        &config("lb-a", 200, "198.51.100.3", &site.key),
    )?;
    let b = Balancer::start(
        site.topo.lb2(),
        &config("lb-b", 100, "198.51.100.1", &site.key),
    )?;
    wait_roles(&a, "active", &b, "standby")?;
    if !wait_until(Duration::from_secs(10), || {
        request(&site.topo, Duration::from_secs(1))
    }) {
        bail!("the VIP does not answer");
    }
    let section = measure(&site.topo, &a, &b, runs)?;
    a.stop()?;
    b.stop()?;
    print!("{section}");
    Ok(())
}

fn measure(topo: &Topology, a: &Balancer, b: &Balancer, runs: usize) -> Result<String> {
    let mut gaps = Vec::with_capacity(runs);
    let (mut survived, mut held_total) = (0usize, 0usize);
    for run in 1..=runs {
        let installed_before = ha_count(b, "sync_installed");
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
            ha_count(b, "sync_installed") >= installed_before + HELD as u64
        }) {
            bail!(
                "the standby installed {} of the {HELD} held flows in 5 s",
                ha_count(b, "sync_installed") - installed_before
            );
        }
        // From the moment the link is down: attempts only after it.
        topo.lb().ip(&["link", "set", "front", "down"])?;
        let gap = first_served(topo).context("never served again within 10 s")?;
        gaps.push(gap);
        wait_roles(a, "standby", b, "active")?;
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
        wait_roles(a, "active", b, "standby")?;
        if !wait_until(Duration::from_secs(10), || {
            request(topo, Duration::from_secs(1))
        }) {
            bail!("the VIP does not answer after lb-a took the role back");
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    gaps.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(gaps[gaps.len() / 2]);
    let worst = ms(*gaps.last().expect("runs > 0"));
    let best = ms(gaps[0]);
    // VRRP (RFC 5798) master down interval: 3 x advert_int + skew, skew =
    // (256 - priority) / 256 x advert_int; keepalived's defaults: 1 s, backup 100.
    let keepalived_ms = 3.0 * 1000.0 + (256.0 - 100.0) / 256.0 * 1000.0;
    let mut sec = String::new();
    let _ = writeln!(
        sec,
        "{runs} runs. Two balancer hosts (`lb` as lb-a, priority 200, and `lb2` as lb-b, priority 100) on the client and backend bridges of the namespace topology, three TCP echo backends, `advert_interval_ms = {ADVERT_MS}`, `dead_after = {DEAD_AFTER}`, `preempt = true`, `sync_flows = true`, `track_interfaces = [\"front\", \"back\"]`. Each run opens {HELD} connections through the VIP, then sets the active host's `front` link down; from when `ip link set front down` returned, a prober starts a new connection every 5 ms, each on its own thread with a 100 ms timeout (so that attempts overlap and one that waits in vain delays no later one), and the gap is the time to the start of the first attempt that was served. Then every held connection sends a line and must get its backend's answer; the link comes back up and lb-a takes the role back (preemption) before the next run.\n"
    );
    let _ = writeln!(sec, "| | this balancer | keepalived defaults (computed) |");
    let _ = writeln!(sec, "|---|---|---|");
    let _ = writeln!(
        sec,
        "| failover gap, median | {median:.0} ms | {keepalived_ms:.0} ms |"
    );
    let _ = writeln!(sec, "| failover gap, worst of {runs} | {worst:.0} ms | |");
    let _ = writeln!(sec, "| failover gap, best | {best:.0} ms | |");
    let all: Vec<String> = gaps.iter().map(|g| format!("{:.0}", ms(*g))).collect();
    let _ = writeln!(sec, "| every gap, ms, sorted | {} | |", all.join(", "));
    let _ = writeln!(
        sec,
        "| established connections that kept working | {survived} of {held_total} | none without conntrackd |"
    );
    let _ = writeln!(
        sec,
        "\nkeepalived's figure is the VRRP master-down interval with its defaults (advert_int 1 s, backup priority 100): 3 x 1 s + (256 - 100)/256 s, before its gratuitous ARP; it was computed, not measured here. With these settings the standby takes over once it has heard no advert for dead_after x advert interval = {} ms, which is 200 to 300 ms after the link went down (the last advert came up to one interval before), and then announces the addresses; the measured gap adds up to the prober's 5 ms step.\n",
        DEAD_AFTER * ADVERT_MS
    );
    let _ = writeln!(
        sec,
        "The flow table reaches the standby through flow sync (what it costs, and bulk copies to a standby that starts late: `## Flow sync`). The `kill -9` failover is in tests/tests/ha.rs: the killed node's program keeps forwarding the flows it has while the neighbours still send to it, takes no new ones once its lease runs out (`dead_after` intervals), and stops answering ARP for the floating addresses, so the peer's announcements win; tests/tests/ha_churn.rs has a late standby, a replaced host and 10 % sync loss."
    );
    Ok(sec)
}
