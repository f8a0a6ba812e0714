//! `cargo xtask bench e2e`: requests and throughput end to end on a namespace topology
//! (client, lb, three nginx backends), for the balancer, HAProxy (TCP, leastconn),
//! nftables DNAT (`numgen inc`) and a direct client-to-backend baseline, interleaved in
//! one run, with the CPU time they cost. Prints the tables and writes the `## End to end`
//! section of BENCHMARKS.md.
//!
//! `E2E_ROUNDS` (default 3) sets the number of rounds, `E2E_MODES` (a comma-separated
//! list of balancer, haproxy, nftables, direct) which modes run, `E2E_BUILD=head` builds
//! the committed HEAD alone (see `binary`); `BALANCER_BIN` names a balancer
//! binary to measure instead of the release build that it makes by default.

pub(super) mod binary;
pub(super) mod measure;
pub(super) mod modes;
pub(super) mod report;

use std::{
    cell::Cell,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use balancer_tests::{Process, TempDir, Topology, wait_tcp_ready};

use measure::{
    MachineCpu, children_cpu, netns_inode, others_cpu, parse_iperf, parse_wrk, processes_cpu,
};
use modes::{Active, HTTP_PORT, IPERF_PORT, Mode, NFT_SNAT_ADDR, VIP_HAPROXY, VIP_NFT};
use report::{Run, Sample, Test};

use super::host::{HostInfo, host_info};
use crate::workspace_root;

const DEFAULT_ROUNDS: usize = 3;
const BACKENDS: usize = 3;
/// wrk: one thread, 32 connections, this long per run.
const WRK_SECONDS: u32 = 8;
const WRK_CONNECTIONS: u32 = 32;
/// iperf3: one stream, this long per run.
const IPERF_SECONDS: u32 = 5;
/// Every client run is killed if it takes this much longer than asked.
const RUN_SLACK: Duration = Duration::from_secs(20);
/// No further slot starts once the benchmark has run this long (a safety net: the
/// planned runs take about 6 minutes, plus at most `EXTRA`).
const BUDGET: Duration = Duration::from_secs(12 * 60);
/// Other work on the machine (CPU-s/s) above which the benchmark waits before a run, or
/// repeats a run once; both only while the time `EXTRA` allows for that lasts.
const NOISY: f64 = 0.3;
const NOISY_RETRIES: usize = 1;
const EXTRA: Duration = Duration::from_secs(180);
/// At most this long before one run (1-s samples; the first is the pause between runs).
const RUN_QUIET_WAIT: Duration = Duration::from_secs(15);
/// At most this long at the start, for the machine to become quiet.
const QUIET_WAIT: Duration = Duration::from_secs(60);

pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the end-to-end benchmark creates network namespaces and attaches XDP: run it as root"
        );
    }
    for prog in [
        "wrk", "iperf3", "haproxy", "nft", "nginx", "ethtool", "curl",
    ] {
        if !in_path(prog) {
            bail!(
                "{prog} not found: run `cargo xtask setup` first (it installs the benchmark's packages)"
            );
        }
    }
    let rounds = match std::env::var("E2E_ROUNDS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10).contains(n))
            .context("E2E_ROUNDS must be a number in 1..=10")?,
        Err(_) => DEFAULT_ROUNDS,
    };
    let modes: Vec<Mode> = match std::env::var("E2E_MODES") {
        Ok(list) => list
            .split(',')
            .map(|name| {
                Mode::ALL
                    .into_iter()
                    .find(|m| m.name() == name.trim())
                    .with_context(|| {
                        format!(
                            "E2E_MODES: unknown mode {name:?} (balancer, haproxy, nftables, direct)"
                        )
                    })
            })
            .collect::<Result<_>>()?,
        Err(_) => Mode::ALL.to_vec(),
    };

    // The settings as given, for the command line in BENCHMARKS.md.
    let env: String = ["E2E_BUILD", "E2E_ROUNDS", "E2E_MODES", "BALANCER_BIN"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
        .collect();
    let binary = binary::prepare()?;
    let bin = balancer_tests::balancer_bin();
    eprintln!("e2e: balancer binary {} ({binary})", bin.display());

    let host = host_info(&[
        ("nginx", &["-v"]),
        ("haproxy", &["-v"]),
        ("nft", &["-v"]),
        ("wrk", &["-v"]),
        ("iperf3", &["-v"]),
    ]);
    eprintln!("e2e: measuring the machine's background load for 2 s");
    let mut idle_before = background_load(Duration::from_secs(2))?;
    let quiet_deadline = Instant::now() + QUIET_WAIT;
    while idle_before > NOISY && Instant::now() < quiet_deadline {
        eprintln!(
            "e2e: other work uses {idle_before:.2} CPU-s/s; waiting (at most {QUIET_WAIT:?} in all) for a quieter machine"
        );
        idle_before = background_load(Duration::from_secs(5))?;
    }
    let started = Instant::now();

    let topo = Topology::builder()
        .hint("e2e")
        .backends(BACKENDS)
        .ipv6(false)
        .build()?;
    topo.add_lb_front_addr(&format!("{VIP_HAPROXY}/24"))?;
    topo.add_lb_front_addr(&format!("{VIP_NFT}/24"))?;
    topo.lb()
        .add_addr(topo.lb_back_if(), &format!("{NFT_SNAT_ADDR}/24"))?;
    let servers = Servers::start(&topo)?;
    let ours: Vec<u64> = topo
        .namespaces()
        .iter()
        .filter_map(|ns| netns_inode(&ns.path().display().to_string()))
        .collect();
    let bench = Bench {
        topo: &topo,
        servers: &servers,
        ours,
        extra_left: Cell::new(EXTRA),
    };
    eprintln!(
        "e2e: topology {} up; nginx on be1..be{BACKENDS}:{HTTP_PORT}, iperf3 on be1:{IPERF_PORT}",
        topo.prefix()
    );

    let mut runs = Vec::new();
    let mut xdp_mode = None;
    let mut truncated = None;
    'rounds: for round in 0..rounds {
        for k in 0..modes.len() {
            // The order rotates per round, so that no mode always runs first or last.
            let mode = modes[(round + k) % modes.len()];
            if started.elapsed() > BUDGET {
                truncated = Some(format!(
                    "stopped after {:.0} s (time budget), in round {} before {}",
                    started.elapsed().as_secs_f64(),
                    round + 1,
                    mode.label()
                ));
                break 'rounds;
            }
            slot(&bench, mode, round, rounds, &mut runs, &mut xdp_mode)?;
        }
    }

    drop(bench);
    drop(servers);
    drop(topo);
    let idle_after = background_load(Duration::from_secs(2))?;
    let elapsed = started.elapsed();

    let mut tables = String::new();
    for test in Test::ALL {
        let _ = writeln!(
            tables,
            "\n{}:\n{}",
            test.label(),
            report::table(&runs, test)
        );
    }
    println!("{tables}");
    println!("{}", report::reading(&runs));

    let section = render(&Rendered {
        host: &host,
        binary: &binary,
        env: &env,
        rounds,
        runs: &runs,
        xdp_mode: xdp_mode.as_deref(),
        idle: (idle_before, idle_after),
        elapsed,
        truncated: truncated.as_deref(),
    });
    let path = workspace_root().join("BENCHMARKS.md");
    report::write_section(&path, "## End to end", &section)?;
    eprintln!(
        "e2e: done in {:.0} s; wrote the `## End to end` section of {}",
        elapsed.as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// What the runs need: the topology, its servers, the inodes of its namespaces.
struct Bench<'a> {
    topo: &'a Topology,
    servers: &'a Servers,
    ours: Vec<u64>,
    /// What is left of `EXTRA` for waiting and repeating.
    extra_left: Cell<Duration>,
}

impl Bench<'_> {
    fn spend(&self, d: Duration) {
        self.extra_left.set(self.extra_left.get().saturating_sub(d));
    }

    /// Other work on the machine in CPU-s/s, over one second.
    fn other_load(&self) -> f64 {
        let before = others_cpu(&self.ours);
        std::thread::sleep(Duration::from_secs(1));
        others_cpu(&self.ours) - before
    }

    /// The pause before a run: one second, longer (at most `RUN_QUIET_WAIT`) while other
    /// work on the machine is above `NOISY`, as long as `EXTRA` lasts.
    fn pause_until_quiet(&self) {
        let t0 = Instant::now();
        loop {
            let load = self.other_load();
            if load <= NOISY || self.extra_left.get().is_zero() || t0.elapsed() >= RUN_QUIET_WAIT {
                if load > NOISY {
                    eprintln!("e2e:   other work at {load:.2} CPU-s/s; running anyway");
                }
                return;
            }
            self.spend(Duration::from_secs(1));
        }
    }
}

/// One mode's slot in a round: set up, the three tests, taken down.
fn slot(
    bench: &Bench,
    mode: Mode,
    round: usize,
    rounds: usize,
    runs: &mut Vec<Run>,
    xdp_mode: &mut Option<String>,
) -> Result<()> {
    let topo = bench.topo;
    eprintln!("e2e: round {}/{rounds}: {}", round + 1, mode.label());
    let mut active = match mode
        .start(topo, BACKENDS)
        .and_then(|a| check_path(topo, mode).map(|()| a))
    {
        Ok(a) => a,
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("e2e:   cannot set up {}: {why}", mode.label());
            for test in Test::ALL {
                runs.push(Run {
                    round,
                    mode,
                    test,
                    result: Err(format!("set-up failed: {why}")),
                });
            }
            return Ok(());
        }
    };
    if let Some(m) = active.xdp_mode(topo) {
        eprintln!("e2e:   XDP attached in {m} mode");
        xdp_mode.get_or_insert(m);
    }
    for test in Test::ALL {
        let mut retries = 0;
        let result = loop {
            bench.pause_until_quiet();
            let result = measure(bench, &mut active, mode, test).map_err(|e| format!("{e:#}"));
            let (other, wall) = result
                .as_ref()
                .map_or((0.0, 0.0), |s| (s.others / s.wall_s, s.wall_s));
            if other > NOISY && retries < NOISY_RETRIES && !bench.extra_left.get().is_zero() {
                retries += 1;
                bench.spend(Duration::from_secs_f64(wall));
                eprintln!(
                    "e2e:   {:<28} other work used {other:.2} CPU-s/s during the run: repeating it",
                    test.label()
                );
                continue;
            }
            break result;
        };
        match &result {
            Ok(s) if test == Test::Iperf => eprintln!(
                "e2e:   {:<28} {:>8.2} Gbit/s  {:.3} CPU-s/GB  ({} retransmits, other load {:.2})",
                test.label(),
                s.rate,
                (s.cpu.busy - s.others) / s.work,
                s.errors,
                s.others / s.wall_s
            ),
            Ok(s) => eprintln!(
                "e2e:   {:<28} {:>8.0} req/s  p99 {:.2} ms  {:.3} CPU-s/1k req  ({} errors, other load {:.2})",
                test.label(),
                s.rate,
                s.p99_ms,
                (s.cpu.busy - s.others) / s.work * 1000.0,
                s.errors,
                s.others / s.wall_s
            ),
            Err(e) => eprintln!("e2e:   {:<28} failed: {e}", test.label()),
        }
        runs.push(Run {
            round,
            mode,
            test,
            result,
        });
    }
    active
        .stop(topo)
        .with_context(|| format!("taking {} down", mode.label()))
}

/// A few requests with curl: the target answers, and from the backends.
fn check_path(topo: &Topology, mode: Mode) -> Result<()> {
    let url = format!("http://{}/", mode.target(topo));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let out = topo
            .client()
            .exec("curl", &["-sS", "--max-time", "3", &url])?;
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !body.starts_with("be") {
            bail!("{url} answered {body:?}, not a backend's body");
        }
        seen.push(body);
    }
    eprintln!("e2e:   {url} answers: {}", seen.join(", "));
    Ok(())
}

fn measure(bench: &Bench, active: &mut Active, mode: Mode, test: Test) -> Result<Sample> {
    let topo = bench.topo;
    let target = mode.target(topo);
    let url = format!("http://{target}/");
    let (prog, args, seconds): (&str, Vec<String>, u32) = match test {
        Test::KeepAlive | Test::Close => {
            let mut a: Vec<String> = [
                "-t1".to_string(),
                format!("-c{WRK_CONNECTIONS}"),
                format!("-d{WRK_SECONDS}s"),
                "--latency".into(),
                "--timeout".into(),
                "2s".into(),
            ]
            .into();
            if test == Test::Close {
                a.extend(["-H".into(), "Connection: close".into()]);
            }
            a.push(url);
            ("wrk", a, WRK_SECONDS)
        }
        Test::Iperf => (
            "iperf3",
            [
                "-c",
                &target.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &IPERF_SECONDS.to_string(),
                "-P",
                "1",
                "-J",
                "--connect-timeout",
                "3000",
            ]
            .map(String::from)
            .into(),
            IPERF_SECONDS,
        ),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lb_pids = active.lb_pids();
    let be_pids = bench.servers.pids(topo);

    let lb0 = processes_cpu(&lb_pids);
    let be0 = processes_cpu(&be_pids);
    let ch0 = children_cpu();
    let o0 = others_cpu(&bench.ours);
    let m0 = MachineCpu::now()?;
    let t0 = Instant::now();
    let out = topo.client().exec_unchecked(
        prog,
        &args,
        Duration::from_secs(seconds.into()) + RUN_SLACK,
    )?;
    let cpu = MachineCpu::now()?.since(m0);
    let wall_s = t0.elapsed().as_secs_f64();
    let others = others_cpu(&bench.ours) - o0;
    let client_cpu = children_cpu() - ch0;
    let backend_cpu = processes_cpu(&be_pids) - be0;
    let lb_cpu = processes_cpu(&lb_pids) - lb0;

    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && test != Test::Iperf {
        bail!(
            "{prog} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut sample = Sample {
        cpu,
        others,
        wall_s,
        lb_cpu,
        client_cpu,
        backend_cpu,
        ..Sample::default()
    };
    if test == Test::Iperf {
        let i = parse_iperf(&stdout)?;
        sample.rate = i.bits_per_s / 1e9;
        sample.work = i.bytes / 1e9;
        sample.errors = i.retransmits;
    } else {
        let w = parse_wrk(&stdout)?;
        if w.requests == 0 {
            bail!("wrk completed no request:\n{stdout}");
        }
        sample.rate = w.requests_per_s;
        sample.work = w.requests as f64;
        sample.p50_ms = w.p50_ms;
        sample.p99_ms = w.p99_ms;
        sample.errors = w.socket_errors + w.non_2xx;
    }
    Ok(sample)
}

/// nginx on every backend (port 80, no access log) and an iperf3 server on be1.
pub(super) struct Servers {
    // Processes before their directories.
    nginx: Vec<Process>,
    _iperf: Process,
    _dirs: Vec<TempDir>,
}

impl Servers {
    pub(super) fn start(topo: &Topology) -> Result<Servers> {
        let mut nginx = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=BACKENDS {
            let dir = TempDir::new("e2e-nginx")?;
            let d = dir.path().display().to_string();
            let listen = SocketAddr::new(IpAddr::V4(topo.backend_addr(i)), HTTP_PORT);
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_config(&d, listen, &format!("be{i}")))
                .context("writing nginx.conf")?;
            let conf = conf.display().to_string();
            let err = format!("{d}/error.log");
            let p = topo
                .backend(i)
                .spawn("nginx", &["-p", &d, "-e", &err, "-c", &conf])?;
            nginx.push(p);
            dirs.push(dir);
            wait_tcp_ready(topo.backend(i), listen, Duration::from_secs(10))
                .with_context(|| format!("nginx on be{i}"))?;
        }
        let be1 = topo.backend_addr(1).to_string();
        let port = IPERF_PORT.to_string();
        let iperf = topo
            .backend(1)
            .spawn("iperf3", &["-s", "-B", &be1, "-p", &port])?;
        let ready = balancer_tests::wait_until(Duration::from_secs(10), || {
            topo.backend(1)
                .exec("ss", &["-Hltn", &format!("sport = :{port}")])
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        if !ready {
            bail!("iperf3 -s on be1 does not listen on {port}");
        }
        Ok(Servers {
            nginx,
            _iperf: iperf,
            _dirs: dirs,
        })
    }

    /// Every process in the backends' namespaces (nginx masters and workers, iperf3).
    fn pids(&self, topo: &Topology) -> Vec<i32> {
        debug_assert_eq!(self.nginx.len(), topo.n_backends());
        topo.backends().iter().flat_map(|b| b.pids()).collect()
    }
}

/// The smallest nginx that answers every request with 200 and `body`: one worker, no
/// access log (writing it would add the same cost to every mode and blur the rest).
fn nginx_config(dir: &str, listen: SocketAddr, body: &str) -> String {
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 30s;
    server {{
        listen {listen} backlog=4096;
        server_name _;
        default_type text/plain;
        location / {{
            return 200 "{body}\n";
        }}
    }}
}}
"#
    )
}

pub(super) fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Busy CPU seconds per second of the whole machine while this benchmark runs nothing.
fn background_load(window: Duration) -> Result<f64> {
    let before = MachineCpu::now()?;
    std::thread::sleep(window);
    Ok(MachineCpu::now()?.since(before).busy / window.as_secs_f64())
}

struct Rendered<'a> {
    host: &'a HostInfo,
    binary: &'a str,
    env: &'a str,
    rounds: usize,
    runs: &'a [Run],
    xdp_mode: Option<&'a str>,
    idle: (f64, f64),
    elapsed: Duration,
    truncated: Option<&'a str>,
}

fn render(r: &Rendered) -> String {
    let h = r.host;
    let mut s = String::new();
    let _ = writeln!(s, "## End to end\n");
    let _ = writeln!(
        s,
        "Command: `{}cargo xtask bench e2e` (as root; {} rounds, {:.0} s). Run on {}: {} CPUs \
         ({}), {:.0} GiB, kernel {}. Debian 12 packages: {}. The balancer: {}; its XDP \
         program was attached in **{}** mode on the veths.\n",
        r.env,
        r.rounds,
        r.elapsed.as_secs_f64(),
        h.date,
        h.cpus,
        h.cpu_model,
        h.mem_gib,
        h.kernel,
        h.versions
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", "),
        r.binary,
        r.xdp_mode.unwrap_or("unknown (the balancer never started)"),
    );
    s.push_str(METHOD);
    let _ = writeln!(
        s,
        "- Other work on the machine with nothing of the benchmark running: {:.2} CPU-s/s \
         at the start, {:.2} at the end (of {} available).\n",
        r.idle.0, r.idle.1, h.cpus
    );
    if let Some(t) = r.truncated {
        let _ = writeln!(s, "**Incomplete run:** {t}.\n");
    }
    let _ = writeln!(
        s,
        "### HTTP, keep-alive: `wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s --latency --timeout 2s`\n\n{}",
        report::table(r.runs, Test::KeepAlive)
    );
    let _ = writeln!(
        s,
        "### HTTP, new connection per request: the same with `-H \"Connection: close\"`\n\n{}",
        report::table(r.runs, Test::Close)
    );
    let _ = writeln!(
        s,
        "### TCP throughput: `iperf3 -c TARGET -t {IPERF_SECONDS} -P 1` (to be1 in every mode)\n\n{}",
        report::table(r.runs, Test::Iperf)
    );
    let _ = writeln!(
        s,
        "### Reading\n\nComputed from the medians above (target: more requests/s and fewer CPU \
         seconds per request than both HAProxy and nftables). \"Rounds overlap\" marks a \
         difference where the two modes' per-round values overlap, i.e. one within the \
         noise of this run:\n\n{}",
        report::reading(r.runs)
    );
    let failures: Vec<String> = r
        .runs
        .iter()
        .filter_map(|run| {
            run.result.as_ref().err().map(|e| {
                format!(
                    "- round {}, {}, {}: {}",
                    run.round + 1,
                    run.mode.label(),
                    run.test.label(),
                    e.lines().next().unwrap_or("")
                )
            })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "### Runs that failed\n\n{}\n", failures.join("\n"));
    }
    s.push_str(LEFT_OUT);
    s
}

const METHOD: &str = "\
### Method

- Topology (`balancer_tests::Topology`, network namespaces, nothing in the root namespace): \
`client` 198.51.100.2 — bridge — `lb` (`front` 198.51.100.1, `back` 203.0.113.1, IP \
forwarding on) — bridge — three backends be1..be3 (203.0.113.11–13), each running nginx \
(one worker, no access log, a 4-byte body) and be1 also `iperf3 -s`. The veth offload \
settings that XDP needs (transmit checksum offload off on the lb's veths and their peers, \
GRO on on the peers; TOOLCHAIN.md, \"XDP on veth pairs\") are set once and are the same \
for every mode.
- Modes, each reached by the client at its own address, port 80 (HTTP) and 5201 \
(iperf3, to be1 alone in every mode, since its control and data connections must meet \
the same server):
  - **balancer (XDP)**: `balancer run` in `lb`, VIP 198.51.100.10, full NAT (SNAT \
203.0.113.9), `least-conn`, `health = none`, XDP mode `auto`; `[flows] \
tcp_transitory_timeout_s = 2` and `snat_port_range = \"10000-65000\"`, so that closed \
flows give their SNAT port back quickly. With the defaults (20,000 SNAT ports per \
backend, a closed flow keeps its port 30 s) a backend sustains only about 670 new \
connections per second; the new-connection runs here reach about 3,500 per backend and \
second and would run out of ports after about 6 s (SYNs then dropped as \
`DropSnatExhausted`).
  - **HAProxy**: `haproxy -db` in `lb` on 198.51.100.20, `mode tcp`, `balance leastconn`, \
no health checks, `nbthread 2`; it connects from 203.0.113.1.
  - **nftables DNAT**: a table in `lb` that DNATs 198.51.100.30 to the backends with \
`numgen inc mod 3` and SNATs to 203.0.113.2 towards them (conntrack, kernel path).
  - **direct**: the client talks to be1 itself, routed by `lb`'s plain IP forwarding \
(routes added for this mode only). One backend and one nginx worker, not three: a \
baseline for the path through `lb` without load balancing, not an upper bound for \
three backends.
  - Each mode reaches the backends from its own source address: nginx's TIME_WAIT \
sockets from one mode's short connections would otherwise meet the next mode's SYNs on \
the same address and port, and PAWS drops those with older timestamps (a 1 s SYN \
retransmission each; seen at first as nftables falling to a few hundred requests/s \
after HAProxy had run, both from 203.0.113.1).
- Interleaving: in every round each mode gets one slot, in an order rotated per round; a \
slot sets its mode up (balancer started, HAProxy started, nft table loaded, routes \
added), checks with curl that the backends answer, runs keep-alive wrk, \
new-connection wrk and iperf3 (at least 1 s apart), and takes the mode down again. So no mode \
runs with another's hooks in place (an attached XDP program, netfilter NAT and \
conntrack). Each cell is the median of the rounds; requests/s also show the range.
- CPU: busy time of the whole machine during each run (`/proc/stat`: user + nice + \
system + irq + softirq, all CPUs) less the CPU time that processes outside the \
benchmark used meanwhile (other engineers' builds and tests on the same machine: every \
process that is neither in the benchmark's namespaces, nor this one, nor a kernel \
thread, with its reaped children), per 1,000 requests or per GB for iperf3. The figure \
includes wrk and nginx (or the iperf3 pair), which do the same work in every mode; the \
rows below it split it up: softirq (machine-wide), the load balancer's process \
(`/proc/PID/stat` of `balancer run` or HAProxy), wrk (reaped-child rusage), nginx (the \
backends' processes). The kernel has no IRQ time accounting, so softirq work is charged \
to whichever task it interrupts: XDP, nftables NAT and the veth/bridge forwarding run in \
softirq and appear only in the whole-machine figure (and partly inside the wrk and \
nginx rows, or inside the other work subtracted); there is no separate \"lb only\" \
figure for the balancer or nftables.
- Other work: the benchmark waits up to a minute at the start, and up to 15 s before \
each run, for the machine to be quiet (below 0.3 CPU-s/s of other work), and repeats \
once a run during which other work used more; waiting and repeating may add 3 minutes \
in all, then it runs regardless. The row \"other work\" shows what remained. It still slows the \
requests/s of the runs it overlaps (fewer CPUs left); the CPU-per-request rows are less \
affected.
";

const LEFT_OUT: &str = "\
### Left out, and limits of this measurement

- One machine with 2 CPUs runs client, load balancer and backends together: they compete \
for the same CPUs, so requests/s measure the whole system, and the CPU figures per \
request are the better comparison of the load balancers.
- veth pairs and bridges, not NICs: native XDP on veth is not a NIC driver's XDP, and \
the offload settings it needs slow the kernel-path modes' bulk throughput \
(TOOLCHAIN.md). Absolute numbers do not transfer to real hardware.
- IPv4, TCP, one VIP and one service per load balancer; no UDP, no IPv6, no large \
numbers of concurrent connections, no health checks in any mode, no firewall lists.
- The XDP program's own run time (`bpf_stats`) is not measured: enabling it is \
machine-wide and would also slow the per-packet benchmark if it ran at the same time.
- `E2E_ROUNDS=N` (1–10) runs more rounds, `E2E_MODES=balancer,haproxy,...` fewer \
modes, `E2E_BUILD=head` measures a build of the committed HEAD alone (exported with \
`git archive` to a temporary directory), `BALANCER_BIN=PATH` another balancer binary \
(then nothing is built).
";
