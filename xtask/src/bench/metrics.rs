//! `cargo xtask bench metrics`: what a scrape of `[control].metrics` costs
//! with 10,000 backends (200 services × 50), without and with health checks
//! (whose duration histograms are the largest part of the exposition).
//!
//! The daemon runs in the `lb` namespace of a standard topology (nothing in
//! the root namespace); scrapes come from inside that namespace, one after the
//! other with a pause between them, alternately in the Prometheus text format
//! (what curl and promtool get) and OpenMetrics (what a Prometheus server asks
//! for). For each scrape: the time from connecting to the last byte of the
//! body, as the scraper sees it, and the daemon's own time to read the
//! counters and render (its debug log line `scrape ... took_ms`). The daemon's
//! CPU time per scrape is its CPU time over the scrapes less what it used over
//! as long a time without scrapes (health checks, sweeps).

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use balancer_tests::{
    Balancer, Launch, Netns, Topology, balancer_bin,
    config::{Config, Health, Service},
    cpu_time, resident_kib, thousands as group,
};

use super::host::host_info;

const SERVICES: u32 = 200;
const BACKENDS_PER_SERVICE: u32 = 50;
const METRICS: &str = "203.0.113.1:9108";
/// Scrapes per case, half in each format.
const SCRAPES: usize = 40;
const PAUSE: Duration = Duration::from_millis(250);
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// With checks: time for every backend to have been checked a few times.
const CHECKS_SETTLE: Duration = Duration::from_secs(16);

pub fn run() -> Result<()> {
    if !balancer_tests::require_root() {
        bail!("the metrics benchmark needs root");
    }
    // BALANCER_BIN names a binary to measure; else the release build of the tree.
    super::e2e::binary::prepare()?;
    eprintln!("metrics: balancer binary {}", balancer_bin().display());
    let host = host_info(&[]);
    let topo = Topology::builder()
        .hint("mtr")
        .backends(1)
        .ipv6(false)
        .build()?;
    // Every backend address on be1, so that a check meets a host that answers
    // at once (with a reset: nothing listens there).
    let lines: Vec<String> = (12..11 + BACKENDS_PER_SERVICE)
        .map(|a| format!("addr add 203.0.113.{a}/24 dev eth0"))
        .collect();
    topo.backend(1).ip_batch(&lines)?;

    let mut results = Vec::new();
    for (name, checks) in [
        ("no health checks", None),
        (
            "TCP checks every 5 s (all refused: 2,000 checks/s)",
            Some(Health::tcp().timing(5000, 1000, 1, 1)),
        ),
    ] {
        eprintln!("metrics: {SERVICES} services x {BACKENDS_PER_SERVICE} backends, {name}");
        let checked = checks.is_some();
        results.push((name, measure(topo.lb(), &config(checks), checked)?));
    }
    drop(topo);
    print!("{}", render(&host, &results));
    Ok(())
}

/// Backend `b` of service `s` is 203.0.113.(11 + b):(20000 + s).
fn config(checks: Option<Health>) -> Config {
    let health = checks.unwrap_or_else(Health::none);
    (0..SERVICES).fold(
        Config::new("bench-metrics")
            .snat(["203.0.113.9"])
            .metrics(METRICS),
        |config, svc| {
            let port = 20000 + svc as u16;
            config.service(
                Service::tcp(&format!("svc{svc}"), "198.51.100.10", 10000 + svc as u16)
                    .health(health.clone())
                    .backends(
                        (0..BACKENDS_PER_SERVICE)
                            .map(|b| SocketAddr::from(([203, 0, 113, 11 + b as u8], port))),
                    ),
            )
        },
    )
}

#[derive(Debug, Default)]
struct Measured {
    /// Per format: scraper's times, daemon's render times (ms), body bytes, samples.
    text: Scrapes,
    openmetrics: Scrapes,
    cpu_per_scrape: Duration,
    rss_kb: u64,
}

#[derive(Debug, Default)]
struct Scrapes {
    wall_ms: Vec<f64>,
    /// The daemon's time to read the kernel's counters, and in all.
    read_ms: Vec<f64>,
    render_ms: Vec<f64>,
    bytes: usize,
    samples: usize,
}

fn measure(lb: &Netns, config: &Config, checks: bool) -> Result<Measured> {
    // The scrape's debug line has the daemon's own times.
    let launch = Launch {
        env: &[("RUST_LOG", "info,balancer_user::daemon::scrape=debug")],
        ..Launch::default()
    };
    let daemon = Balancer::launch(lb, &config.to_toml(), launch)?;
    daemon.wait_for_log(&["balancer running"], START_TIMEOUT)?;
    let pid = daemon.pid();
    if checks {
        std::thread::sleep(CHECKS_SETTLE);
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut m = Measured::default();
    // Warm up (first allocations), then the scrapes, then as long without.
    scrape(lb, false)?;
    let log_from = daemon.output_so_far().len();
    let t0 = Instant::now();
    let c0 = cpu_time(pid)?;
    for i in 0..SCRAPES {
        let om = i % 2 == 1;
        let t = Instant::now();
        let body = scrape(lb, om)?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let s = if om { &mut m.openmetrics } else { &mut m.text };
        s.wall_ms.push(wall);
        s.bytes = body.len();
        s.samples = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        std::thread::sleep(PAUSE);
    }
    let scraping = t0.elapsed();
    let busy = cpu_time(pid)? - c0;
    let c1 = cpu_time(pid)?;
    std::thread::sleep(scraping);
    let idle = cpu_time(pid)? - c1;
    m.cpu_per_scrape = busy.saturating_sub(idle) / SCRAPES as u32;
    m.rss_kb = resident_kib(pid)?.0;
    // The daemon's render times, in the order of the scrapes.
    let log = daemon.output_so_far();
    let field = |l: &str, name: &str| -> Option<f64> {
        let v = l.split(&format!("{name}=")).nth(1)?;
        v.split_whitespace().next()?.parse().ok()
    };
    let renders: Vec<(f64, f64)> = log[log_from..]
        .lines()
        .filter(|l| l.contains("scrape") && l.contains("took_ms="))
        .filter_map(|l| Some((field(l, "read_ms")?, field(l, "took_ms")?)))
        .collect();
    ensure!(
        renders.len() == SCRAPES,
        "{} render times logged for {SCRAPES} scrapes",
        renders.len()
    );
    for (i, (read, all)) in renders.into_iter().enumerate() {
        let s = if i % 2 == 1 {
            &mut m.openmetrics
        } else {
            &mut m.text
        };
        s.read_ms.push(read);
        s.render_ms.push(all);
    }
    daemon.stop()?;
    Ok(m)
}

/// One `GET /metrics` from inside `lb`; the body.
fn scrape(lb: &Netns, openmetrics: bool) -> Result<String> {
    lb.try_run(move || -> Result<String> {
        let mut s = TcpStream::connect(METRICS).context("connecting to the metrics endpoint")?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let accept = if openmetrics {
            "Accept: application/openmetrics-text; version=1.0.0\r\n"
        } else {
            ""
        };
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {METRICS}\r\n{accept}\r\n"
        )?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        let text = String::from_utf8(reply)?;
        let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP reply")?;
        ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
        Ok(body.to_string())
    })?
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn render(host: &super::host::HostInfo, results: &[(&str, Measured)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Metrics scrape\n\nCommand: `cargo xtask bench metrics` (as root). Run on {}: {} CPUs ({}), kernel {}. \
         {SERVICES} services × {BACKENDS_PER_SERVICE} backends = {} backends; {SCRAPES} scrapes per case, \
         one at a time {} ms apart, alternately in each format.\n",
        host.date,
        host.cpus,
        host.cpu_model,
        host.kernel,
        group(u64::from(SERVICES * BACKENDS_PER_SERVICE)),
        PAUSE.as_millis()
    );
    let _ = writeln!(
        out,
        "| case | format | samples | body | scrape, scraper's view: p50 / p90 / max ms | in the daemon: reading the maps p50, all p50 / max ms |\n|---|---|---:|---:|---:|---:|"
    );
    for (name, m) in results {
        for (format, s) in [
            ("Prometheus text", &m.text),
            ("OpenMetrics", &m.openmetrics),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {format} | {} | {:.1} MiB | {:.1} / {:.1} / {:.1} | {:.1}, {:.1} / {:.1} |",
                group(s.samples as u64),
                s.bytes as f64 / (1 << 20) as f64,
                quantile(&s.wall_ms, 0.5),
                quantile(&s.wall_ms, 0.9),
                quantile(&s.wall_ms, 1.0),
                quantile(&s.read_ms, 0.5),
                quantile(&s.render_ms, 0.5),
                quantile(&s.render_ms, 1.0),
            );
        }
    }
    let _ = writeln!(out);
    for (name, m) in results {
        let _ = writeln!(
            out,
            "- {name}: daemon CPU {:.1} ms per scrape (beyond what it used without scrapes); resident memory after the scrapes {} KiB.",
            m.cpu_per_scrape.as_secs_f64() * 1e3,
            group(m.rss_kb)
        );
    }
    out
}
