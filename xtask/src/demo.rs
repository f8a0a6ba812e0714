//! `cargo xtask demo`: the balancer on a topology in network namespaces, with
//! real traffic through the VIP, then everything removed again.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use balancer_tests::{Balancer, Topology, nginx, udp_request, udp_server, wait_until};

use crate::workspace_root;

const VIP: &str = "198.51.100.10";

pub fn run(requests: u32) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    let config_path = workspace_root().join("config/demo.toml");
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;

    println!("demo: building the topology in network namespaces");
    let topo = Topology::balanced("demo", 3)?;
    println!(
        "  client {}  ->  [front {} | balancer | back {}]  ->  backends {}",
        topo.client_addr(),
        topo.lb_front_addr(),
        topo.lb_back_addr(),
        (1..=3)
            .map(|i| topo.backend_addr(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut web = Vec::new();
    let mut echo = Vec::new();
    for i in 1..=3 {
        let addr = IpAddr::V4(topo.backend_addr(i));
        web.push(nginx(
            topo.backend(i),
            SocketAddr::new(addr, 80),
            &format!("hello from backend be{i} ({addr})"),
        )?);
        if i <= 2 {
            echo.push(udp_server(topo.backend(i), SocketAddr::new(addr, 7))?);
        }
    }
    println!("  nginx on each backend :80, a UDP echo server on be1 and be2 :7");

    println!(
        "demo: starting `balancer run --config {}`",
        config_path.display()
    );
    let lb = Balancer::start(topo.lb(), &config)?;
    // Every backend waits for its first health check before it gets flows.
    lb.wait_for_log_since(
        0,
        &["backend up", "203.0.113.13:80"],
        Duration::from_secs(10),
    )?;
    let up = wait_until(Duration::from_secs(10), || {
        lb.output_so_far().matches("backend up").count() >= 5
    });
    if !up {
        bail!("backends did not come up:\n{}", lb.output_so_far());
    }
    println!("demo: health checks passed for all five backends");

    println!("demo: {requests} HTTP requests with curl from the client to http://{VIP}/");
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    for i in 1..=requests {
        let out = topo
            .client()
            .exec(
                "curl",
                &["-sS", "--max-time", "5", &format!("http://{VIP}/")],
            )
            .with_context(|| format!("request {i}"))?;
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("  request {i:>3}: {body}");
        *tally.entry(body).or_default() += 1;
    }
    println!("demo: where the connections went (least-connections, equal weights)");
    for (body, n) in &tally {
        println!("  {n:>4}  {body}");
    }
    for (i, server) in web.iter().enumerate() {
        let log = server.access_log();
        if let Some(line) = log.lines().find(|l| !l.contains("balancer-health")) {
            println!("  be{} sees the balancer's SNAT address: {line}", i + 1);
        }
    }

    println!("demo: UDP through {VIP}:7");
    for i in 1..=4 {
        let reply = udp_request(
            topo.client(),
            SocketAddr::new(VIP.parse()?, 7),
            &format!("ping {i}"),
            Duration::from_secs(3),
        )?;
        println!("  ping {i} -> {reply}");
    }

    println!("demo: `balancer status`");
    print_cli(&lb, &["status"])?;

    println!("demo: stopping nginx on be2: its health check fails (interval 500 ms, fall 2)");
    let mark = lb.log_mark();
    let stopped = std::time::Instant::now();
    drop(web.remove(1));
    lb.wait_for_log_since(
        mark,
        &["backend down", "203.0.113.12:80"],
        Duration::from_secs(10),
    )?;
    println!(
        "  be2 out of rotation {:?} after nginx stopped",
        stopped.elapsed()
    );
    for i in 1..=4 {
        let out = topo
            .client()
            .exec(
                "curl",
                &["-sS", "--max-time", "5", &format!("http://{VIP}/")],
            )
            .with_context(|| format!("request {i} after be2 stopped"))?;
        println!(
            "  request {i}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    print_cli(&lb, &["status"])?;

    println!("demo: stopping the balancer (SIGTERM)");
    let log = lb.stop()?;
    println!("demo: the balancer's log (events have the target `event`)");
    for line in log
        .lines()
        .filter(|l| l.contains("INFO") || l.contains("WARN"))
    {
        println!("  | {line}");
    }
    drop(echo);
    drop(web);
    drop(topo);
    println!("demo: namespaces removed; done");
    Ok(())
}

fn print_cli(lb: &Balancer, args: &[&str]) -> Result<()> {
    let out = lb.cli(args)?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  | {line}");
    }
    if !out.status.success() {
        bail!(
            "balancer {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
