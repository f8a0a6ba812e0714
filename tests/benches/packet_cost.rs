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

use std::os::fd::AsFd;

use aya::{
    maps::{Array, HashMap, IterableMap, Map, MapData},
    programs::Xdp,
};
use balancer_common::{
    cookie::{self, CookieData, CookieKey},
    flow::{FlowKey, FlowValue},
    global::{Global, SYN_COOKIES_ALWAYS, SYN_COOKIES_OFF},
    maps::{Globals, HalfOpen, SynCookieKeys},
};
use balancer_tests::config::{Config, Firewall, Health, Service, SynCookies};
use balancer_user::dataplane::test_run;
use common::*;

const ROUNDS: usize = 7;
const RUNS_PER_ROUND: usize = 20_000;

/// An SNAT range wide enough that no new flow of the run meets an exhausted range.
fn bench_config() -> Config {
    let v4 = |b: usize, port: u16| SocketAddr::from((BACKENDS[b], port));
    Config::new("bench")
        // Two IPv4 SNAT addresses: both new-flow cases' flows fit.
        .snat([
            IpAddr::from(SNAT),
            IpAddr::from([203, 0, 113, 8]),
            IpAddr::from(SNAT6),
        ])
        .snat_port_range(1024, 65535)
        // Off for the cases of flows without the SYN proxy (a bench's SYNs
        // that never complete would turn auto mode on); the proxy's cases
        // turn it on for themselves.
        .firewall(Firewall::default().syn_cookies(SynCookies::Off))
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
/// must give, and the program; `cookies`: the SYN proxy on for it.
struct Case<'a> {
    name: &'static str,
    prog: &'a Xdp,
    ifindex: u32,
    action: u32,
    frames: Box<dyn FnMut(usize) -> Vec<u8> + 'a>,
    cookies: bool,
    means: Vec<f64>,
}

/// A handle of its own on the program's `GLOBAL` (the fixture's is borrowed
/// by the program's for the whole run).
fn globals(fx: &Fixture) -> Array<MapData, u32> {
    let view: Array<&MapData, u32> = fx.dp.map::<Globals, _>().unwrap();
    let fd = view.map().fd().as_fd().try_clone_to_owned().unwrap();
    Array::try_from(Map::Array(MapData::from_fd(fd).unwrap())).unwrap()
}

/// An owned handle on `HALF_OPEN`, for emptying it between rounds.
fn half_open(fx: &Fixture) -> HashMap<MapData, FlowKey, FlowValue> {
    let view: HashMap<&MapData, FlowKey, FlowValue> = fx.dp.map::<HalfOpen, _>().unwrap();
    let fd = view.map().fd().as_fd().try_clone_to_owned().unwrap();
    HashMap::try_from(Map::HashMap(MapData::from_fd(fd).unwrap())).unwrap()
}

/// Empties `HALF_OPEN` (outside the timed runs). The new-flow cases' flows
/// never complete their handshakes, and `HALF_OPEN` is a plain hash that
/// refuses new flows when full rather than evict (as the LRU it was did):
/// both cases' flows of a whole run would not fit.
fn empty_half_open(map: &mut HashMap<MapData, FlowKey, FlowValue>) {
    let keys: Vec<FlowKey> = map.keys().map(|k| k.unwrap()).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Sets `firewall.syn_cookies` in the loaded program.
fn set_cookies(global: &mut Array<MapData, u32>, on: bool) {
    let mode = if on {
        SYN_COOKIES_ALWAYS
    } else {
        SYN_COOKIES_OFF
    };
    global.set(Global::SynCookies.index(), mode, 0).unwrap();
}

/// The cookie the program answers a SYN of `client`:`sport` (ISN `isn`,
/// MSS 1460, window scale 7, SACK) to the VIP's port 80 with now.
fn cookie_for(fx: &Fixture, client: [u8; 4], sport: u16, isn: u32) -> u32 {
    let global: Array<_, u32> = fx.dp.map::<Globals, _>().unwrap();
    let period = global.get(&Global::SynCookiePeriod.index(), 0).unwrap();
    let keys: Array<_, CookieKey> = fx.dp.map::<SynCookieKeys, _>().unwrap();
    let key = keys.get(&(period % 4), 0).unwrap();
    let words = cookie::words_v4(
        u32::from_ne_bytes(client),
        u32::from_ne_bytes(VIP),
        sport.to_be(),
        80u16.to_be(),
        isn,
    );
    let hash = cookie::siphash24(key.k0, key.k1, &words) as u32;
    cookie::make(hash, period, CookieData::of_syn(1460, 7, true, false))
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

    // Established flows for the steady-state cases: their handshakes
    // completed (SYN, the backend's SYN-ACK, the client's ACK).
    let est = tcp_frame(CLIENT, VIP, 50000, 80, "A", b"0123456789abcdef");
    let fwd = handshake(&fx, CLIENT, 50000, 80);
    let reply = tcp_frame(fwd.dst, fwd.src, 8080, fwd.sport, "A", b"0123456789abcdef");
    // A flow the SYN proxy opened, its sequence numbers translated.
    let mut global = globals(&fx);
    let mut half_open_map = half_open(&fx);
    set_cookies(&mut global, true);
    let syn = Tcp::new(CLIENT.into(), VIP.into(), 50100, 80, SYN)
        .seq(7000, 0)
        .opts(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2]);
    let (action, out) = fx.run(&syn.client_frame(), fx.front);
    assert_eq!(action, XDP_TX);
    let c = seen(&out).0.seq;
    let ack = Tcp::new(CLIENT.into(), VIP.into(), 50100, 80, ACK).seq(7001, c.wrapping_add(1));
    let (action, out) = fx.run(&ack.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let pxsyn = seen(&out).0;
    let sa = Tcp::new(pxsyn.dst, pxsyn.src, pxsyn.dport, pxsyn.sport, SYN | ACK)
        .seq(90_000, 7001)
        .opts(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
    assert_eq!(fx.run(&sa.backend_frame(), fx.back).0, XDP_TX);
    let px_est = Tcp::new(CLIENT.into(), VIP.into(), 50100, 80, ACK | PSH)
        .seq(7001, c.wrapping_add(1))
        .payload(b"0123456789abcdef")
        .client_frame();
    let px_reply = Tcp::new(pxsyn.dst, pxsyn.src, pxsyn.dport, pxsyn.sport, ACK | PSH)
        .seq(90_001, 7001)
        .payload(b"0123456789abcdef")
        .backend_frame();
    set_cookies(&mut global, false);
    let udp = udp_frame(CLIENT, VIP, 50001, 53, b"0123456789abcdef");
    assert_eq!(fx.run(&udp, fx.front).0, XDP_REDIRECT);
    let not_ours = tcp_frame(CLIENT, [192, 0, 2, 1], 50002, 80, "A", b"0123456789abcdef");
    let walled = tcp_frame(CLIENT, VIP, 50003, 81, "S", b"");
    let est6 = tcp6_frame(CLIENT6, VIP6, 50004, 80, "A", b"0123456789abcdef");
    // Its handshake completed too.
    let syn6 = Tcp::new(CLIENT6.into(), VIP6.into(), 50004, 80, SYN).seq(999, 0);
    let (action, out) = fx.run(&syn6.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let fwd6 = seen(&out).0;
    let sa6 = Tcp::new(fwd6.dst, fwd6.src, fwd6.dport, fwd6.sport, SYN | ACK).seq(4999, 1000);
    assert_eq!(fx.run(&sa6.backend_frame(), fx.back).0, XDP_REDIRECT);
    let ack6 = Tcp::new(CLIENT6.into(), VIP6.into(), 50004, 80, ACK).seq(1000, 5000);
    assert_eq!(fx.run(&ack6.client_frame(), fx.front).0, XDP_REDIRECT);

    let fixed = |f: Vec<u8>| -> Box<dyn FnMut(usize) -> Vec<u8>> { Box::new(move |_| f.clone()) };
    // The proxy's new-flow case: an ACK of a cookie for a fresh tuple each run
    // (the cookies computed here from the program's key, as it would).
    let cookie_acks: Vec<Vec<u8>> = (0..RUNS_PER_ROUND * ROUNDS)
        .map(|i| {
            let client = [198, 51, 100, 150 + (i / 60_000) as u8];
            let sport = 1024 + (i % 60_000) as u16;
            let c = cookie_for(&fx, client, sport, 3000);
            Tcp::new(client.into(), VIP.into(), sport, 80, ACK)
                .seq(3001, c.wrapping_add(1))
                .client_frame()
        })
        .collect();
    let mut cases = vec![
        Case {
            name: "XDP_PASS program (baseline)",
            prog: pass,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: fixed(est.clone()),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "MAC-swap XDP_TX program (baseline)",
            prog: mac_swap,
            ifindex: fx.front,
            action: XDP_TX,
            frames: fixed(est.clone()),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "one LRU hash insert, fresh key (baseline)",
            prog: lru_insert,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: fixed(est.clone()),
            cookies: false,
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
            cookies: false,
            means: vec![],
        },
        Case {
            name: "TCP established, client to backend",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(est.clone()),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "TCP reply, backend to client",
            prog: lb,
            ifindex: fx.back,
            action: XDP_REDIRECT,
            frames: fixed(reply),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "UDP, established flow",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(udp),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "firewall drop (new flow, source not allowed)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_DROP,
            frames: fixed(walled),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "IPv6 TCP established, client to backend",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(est6),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "SYN to a VIP, no service on the port: pass (the flow tables missed)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: Box::new(|i| {
                let client = [198, 51, 100, 220 + (i / 60_000) as u8];
                tcp_frame(client, VIP, 1024 + (i % 60_000) as u16, 443, "S", b"")
            }),
            cookies: true,
            means: vec![],
        },
        Case {
            name: "SYN proxy: SYN answered with a cookie (SYN-ACK, XDP_TX)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_TX,
            // Clients of their own: no flow of theirs is in the tables.
            frames: Box::new(|i| {
                let client = [198, 51, 100, 200 + (i / 60_000) as u8];
                Tcp::new(
                    client.into(),
                    VIP.into(),
                    1024 + (i % 60_000) as u16,
                    80,
                    SYN,
                )
                .seq(3000, 0)
                .opts(&[
                    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
                ])
                .client_frame()
            }),
            cookies: true,
            means: vec![],
        },
        Case {
            name: "SYN proxy: ACK with a valid cookie (new flow, SYN to the backend)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: Box::new(move |i| cookie_acks[i % cookie_acks.len()].clone()),
            cookies: true,
            means: vec![],
        },
        Case {
            name: "SYN proxy: established, client to backend (translated)",
            prog: lb,
            ifindex: fx.front,
            action: XDP_REDIRECT,
            frames: fixed(px_est),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "SYN proxy: established, backend to client (translated)",
            prog: lb,
            ifindex: fx.back,
            action: XDP_REDIRECT,
            frames: fixed(px_reply),
            cookies: false,
            means: vec![],
        },
        Case {
            name: "not for a VIP: pass",
            prog: lb,
            ifindex: fx.front,
            action: XDP_PASS,
            frames: fixed(not_ours),
            cookies: false,
            means: vec![],
        },
    ];
    // `BENCH_CASE=text` keeps the cases whose name holds it (for profiling
    // one); `a|b` those that hold either. `BENCH_CASES=base` keeps the cases
    // the bench had before the SYN proxy's, for a comparison with an older
    // build under the same load.
    if let Ok(only) = std::env::var("BENCH_CASE") {
        cases
            .retain(|c| only.split('|').any(|o| c.name.contains(o)) || c.name.contains("XDP_PASS"));
    }
    if std::env::var("BENCH_CASES").is_ok_and(|v| v == "base") {
        cases.retain(|c| !c.name.contains("SYN proxy") && !c.name.contains("no service"));
    }
    // The SYN case's frames go to clients 198.51.100.2.. on front: their replies
    // are not measured, so no neighbours are needed.
    let mut syn_counter = 0usize;
    let mut proxy_counter = 0usize;
    let mut cookie_syns = 0usize;
    for round in 0..ROUNDS {
        empty_half_open(&mut half_open_map);
        for case in cases.iter_mut() {
            set_cookies(&mut global, case.cookies);
            let mut total = Duration::ZERO;
            for _ in 0..RUNS_PER_ROUND {
                let frame = if case.name.starts_with("TCP SYN") {
                    syn_counter += 1;
                    (case.frames)(syn_counter - 1)
                } else if case.name.contains("valid cookie") {
                    proxy_counter += 1;
                    (case.frames)(proxy_counter - 1)
                } else if case.name.contains("SYN answered") || case.name.contains("no service") {
                    cookie_syns += 1;
                    (case.frames)(cookie_syns - 1)
                } else {
                    (case.frames)(0)
                };
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
