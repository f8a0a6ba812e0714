//! Per-packet cost of the XDP program through BPF_PROG_TEST_RUN, beside an
//! XDP_PASS program and a MAC-swap XDP_TX program measured the same way in the
//! same run. `cargo xtask bench packet` runs it (as root).
//!
//! Method: `repeat` would run the program again on its own rewritten output, so
//! every case instead averages many runs with repeat = 1, each on a fresh copy of
//! its frame (new-flow cases on a fresh 5-tuple each time). The cases take turns
//! in rounds so that drift hits them alike; the figure is the median of the
//! rounds' means, and "net" subtracts the XDP_PASS program's figure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::programs::Xdp;
use balancer_tests::config::{Config, Health, Service};
use balancer_user::dataplane::test_run;
use common::*;

const ROUNDS: usize = 7;
const RUNS_PER_ROUND: usize = 20_000;

/// An SNAT range wide enough that no new flow of the run meets an exhausted range.
fn bench_config() -> Config {
    let v4 = |b: usize, port: u16| SocketAddr::from((BACKENDS[b], port));
    Config::new("bench")
        .snat([IpAddr::from(SNAT), IpAddr::from(SNAT6)])
        .snat_port_range(1024, 65535)
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::none())
                .backends([v4(0, 8080), v4(1, 8080), v4(2, 8080)]),
        )
        .service(
            Service::tcp("walled", VIP, 81)
                .allow(["192.0.2.0/24"])
                .health(Health::none())
                .backend(v4(0, 8080)),
        )
        .service(
            Service::tcp("web6", VIP6, 80)
                .health(Health::none())
                .backend(SocketAddr::from((BACKENDS6[0], 8080))),
        )
        .service(
            Service::udp("dns", VIP, 53)
                .health(Health::none())
                .backend(v4(0, 5353)),
        )
}

fn run_once(prog: &Xdp, frame: &[u8], ifindex: u32) -> (u32, Duration) {
    let r = test_run(prog, frame, ifindex).expect("BPF_PROG_TEST_RUN");
    (r.action, r.duration)
}

/// A case: frames to run (one per run, cycled) on an interface, the action it
/// must give, and the program.
struct Case<'a> {
    name: &'static str,
    prog: &'a Xdp,
    ifindex: u32,
    action: u32,
    frames: Box<dyn FnMut(usize) -> Vec<u8> + 'a>,
    means: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let Some(fx) = Fixture::with_config(
        &bench_config(),
        std::env::var("BENCH_CAP")
            .map(|v| v.parse().unwrap())
            .unwrap_or(1 << 21),
    ) else {
        return;
    };
    let baseline =
        baseline_programs(&["baseline_pass", "baseline_mac_swap", "baseline_lru_insert"]);
    let pass: &Xdp = baseline
        .program("baseline_pass")
        .unwrap()
        .try_into()
        .unwrap();
    let mac_swap: &Xdp = baseline
        .program("baseline_mac_swap")
        .unwrap()
        .try_into()
        .unwrap();
    let lru_insert: &Xdp = baseline
        .program("baseline_lru_insert")
        .unwrap()
        .try_into()
        .unwrap();
    let lb = fx.dp.program().unwrap();

    // Established flows for the steady-state cases.
    let est = tcp_frame(CLIENT, VIP, 50000, 80, "A", b"0123456789abcdef");
    let (action, out) = fx.run(&tcp_frame(CLIENT, VIP, 50000, 80, "S", b""), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let fwd = inspect(&out);
    let reply = tcp_frame(fwd.dst, SNAT, 8080, fwd.sport, "A", b"0123456789abcdef");
    let udp = udp_frame(CLIENT, VIP, 50001, 53, b"0123456789abcdef");
    assert_eq!(fx.run(&udp, fx.front).0, XDP_REDIRECT);
    let not_ours = tcp_frame(CLIENT, [192, 0, 2, 1], 50002, 80, "A", b"0123456789abcdef");
    let walled = tcp_frame(CLIENT, VIP, 50003, 81, "S", b"");
    let est6 = tcp6_frame(CLIENT6, VIP6, 50004, 80, "A", b"0123456789abcdef");
    assert_eq!(
        fx.run(&tcp6_frame(CLIENT6, VIP6, 50004, 80, "S", b""), fx.front)
            .0,
        XDP_REDIRECT
    );

    let fixed = |f: Vec<u8>| -> Box<dyn FnMut(usize) -> Vec<u8>> { Box::new(move |_| f.clone()) };
    let mut cases = vec![
        Case {
            name: "XDP_PASS program (baseline)",
            prog: pass,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: fixed(est.clone()),
            means: vec![],
        },
        Case {
            name: "MAC-swap XDP_TX program (baseline)",
            prog: mac_swap,
            ifindex: fx.front,
            action: XDP_TX,
            frames: fixed(est.clone()),
            means: vec![],
        },
        Case {
            name: "one LRU hash insert, fresh key (baseline)",
            prog: lru_insert,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: fixed(est.clone()),
            means: vec![],
        },
        Case {
            name: "TCP SYN, new flow (flow-table insert)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            // A fresh 5-tuple every run: client port and address vary.
            frames: Box::new(|i| {
                let client = [198, 51, 100, 2 + (i / 60_000) as u8];
                tcp_frame(client, VIP, 1024 + (i % 60_000) as u16, 80, "S", b"")
            }),
            means: vec![],
        },
        Case {
            name: "TCP established, client to backend",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(est.clone()),
            means: vec![],
        },
        Case {
            name: "TCP reply, backend to client",
            prog: lb,
            ifindex: fx.back,
            action: XDP_REDIRECT,
            frames: fixed(reply),
            means: vec![],
        },
        Case {
            name: "UDP, established flow",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(udp),
            means: vec![],
        },
        Case {
            name: "firewall drop (new flow, source not allowed)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_DROP,
            frames: fixed(walled),
            means: vec![],
        },
        Case {
            name: "IPv6 TCP established, client to backend",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(est6),
            means: vec![],
        },
        Case {
            name: "not for a VIP: pass",
            prog: lb,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: fixed(not_ours),
            means: vec![],
        },
    ];
    // `BENCH_CASE=text` keeps the cases whose name holds it (for profiling one).
    if let Ok(only) = std::env::var("BENCH_CASE") {
        cases.retain(|c| c.name.contains(only.as_str()) || c.name.contains("XDP_PASS"));
    }
    // The SYN case's frames go to clients 198.51.100.2.. on front: their replies
    // are not measured, so no neighbours are needed.
    let mut syn_counter = 0usize;
    for round in 0..ROUNDS {
        for case in cases.iter_mut() {
            let mut total = Duration::ZERO;
            for _ in 0..RUNS_PER_ROUND {
                let frame = (case.frames)(syn_counter);
                if case.name.starts_with("TCP SYN") {
                    syn_counter += 1;
                }
                let (action, d) = run_once(case.prog, &frame, case.ifindex);
                assert_eq!(
                    action,
                    case.action,
                    "{} (round {round}): counters {:?}",
                    case.name,
                    fx.dp.counters().unwrap()
                );
                total += d;
            }
            case.means
                .push(total.as_nanos() as f64 / RUNS_PER_ROUND as f64);
        }
    }
    if std::env::var_os("BENCH_ROUNDS").is_some() {
        for case in &cases {
            println!("{}: {:?}", case.name, case.means);
        }
    }
    let pass_ns = median(&cases[0].means);
    println!(
        "per-packet cost, BPF_PROG_TEST_RUN, median of {ROUNDS} rounds x {RUNS_PER_ROUND} runs (repeat = 1)"
    );
    println!("| case | ns/packet | net of XDP_PASS |");
    println!("|---|---:|---:|");
    for case in &cases {
        let ns = median(&case.means);
        println!("| {} | {:.0} | {:.0} |", case.name, ns, ns - pass_ns);
    }
}
