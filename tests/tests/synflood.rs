//! The SYN proxy and SYN floods end to end: the real daemon on the namespace
//! topology, real TCP (curl, wrk, iperf3, the test servers) through a VIP
//! whose SYNs are answered with cookies, also over a lossy client path; and
//! a spoofed SYN flood against the default settings (auto), with HAProxy in
//! front of the same backends facing the same flood for comparison.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{
    Balancer, Nginx, Pace, Process, TempDir, Topology, addrs,
    config::{Config, Firewall, Ha, Health, Service, SynCookies},
    flood::{FloodReport, SynFlood, syn_flood},
    nginx, require_program, require_root, tcp_request, tcp_server, wait_tcp_ready, wait_until,
};
use serde_json::Value;

const VIP: &str = "198.51.100.10";
const VIP6: &str = "2001:db8:1::10";
const T: Duration = Duration::from_secs(10);

fn backend(i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(addrs::backend(i).into(), port)
}

fn backend6(i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(addrs::backend6(i).into(), port)
}

/// `web` (80, nginx), `echo` (9000, the line servers), `iperf` (5201, one
/// backend: iperf3's control and data connections must meet), `web6`.
fn config(cookies: SynCookies) -> Config {
    Config::new("synpx")
        .snat(["203.0.113.9", "2001:db8:2::9"])
        .snat_port_range(20000, 59999)
        .metrics_off()
        .firewall(Firewall::default().syn_cookies(cookies))
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::none())
                .backends((1..=3).map(|i| backend(i, 8080))),
        )
        .service(
            Service::tcp("echo", VIP, 9000)
                .health(Health::none())
                .backends((1..=3).map(|i| backend(i, 9000))),
        )
        .service(
            Service::tcp("iperf", VIP, 5201)
                .health(Health::none())
                .backend(backend(1, 5201)),
        )
        .service(
            Service::tcp("web6", VIP6, 80)
                .health(Health::none())
                .backends((1..=3).map(|i| backend6(i, 8080))),
        )
}

/// The backends' servers, stopped on drop.
struct Servers {
    _nginx: Vec<Nginx>,
    _echo: Vec<balancer_tests::ServerHandle>,
    _iperf: Process,
}

fn servers(topo: &Topology) -> Servers {
    let nginx = (1..=3)
        .flat_map(|i| {
            [backend(i, 8080), backend6(i, 8080)]
                .map(|a| nginx(topo.backend(i), a, &format!("be{i}")).unwrap())
        })
        .collect();
    let echo = (1..=3)
        .map(|i| tcp_server(topo.backend(i), backend(i, 9000)).unwrap())
        .collect();
    let iperf = topo
        .backend(1)
        .spawn(
            "iperf3",
            &["-s", "-p", "5201", "-B", &addrs::backend(1).to_string()],
        )
        .unwrap();
    wait_tcp_ready(topo.backend(1), backend(1, 5201), T).unwrap();
    Servers {
        _nginx: nginx,
        _echo: echo,
        _iperf: iperf,
    }
}

fn stats(lb: &Balancer) -> Value {
    let out = lb.cli(&["stats", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["stats"].clone()
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats["counters"][name].as_u64().unwrap_or(0)
}

/// `curl` of `url` from the client: the body, or why not.
fn curl(topo: &Topology, url: &str) -> Result<String, String> {
    let out = topo
        .client()
        .exec_unchecked("curl", &["-sS", "--max-time", "10", url], T + T)
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A line of `len` bytes that says where each part of it is.
fn payload(len: usize, seed: u64) -> String {
    let mut s = String::with_capacity(len);
    let mut i = seed;
    while s.len() < len {
        s.push_str(&format!("{i:016x}"));
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    s.truncate(len);
    s
}

/// wrk for `seconds` with `conns` connections (`close`: one request each):
/// requests completed, and the errors it reported.
fn wrk(topo: &Topology, conns: u32, seconds: u32, close: bool) -> (u64, String) {
    let url = format!("http://{VIP}/");
    let (c, d) = (conns.to_string(), format!("{seconds}s"));
    let mut args = vec!["-t1", "-c", &c, "-d", &d, "--timeout", "5s"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let out = topo
        .client()
        .exec_timeout("wrk", &args, Duration::from_secs(u64::from(seconds) + 30))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{text}"));
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .collect::<Vec<_>>()
        .join("; ");
    (requests, errors)
}

/// iperf3 of `bytes` through the VIP (`reverse`: from the server): bytes
/// sent and received, and retransmissions. The receiving side's count is
/// exact when it is the client (`reverse`); a server stops counting when the
/// test's end reaches it on the control connection, which can be before the
/// last bytes in flight (seen here without the balancer too), so its count
/// is a lower bound.
fn iperf(topo: &Topology, bytes: &str, reverse: bool) -> (u64, u64, u64) {
    let mut args = vec![
        "-c",
        VIP,
        "-p",
        "5201",
        "-n",
        bytes,
        "-J",
        "--connect-timeout",
        "10000",
    ];
    if reverse {
        args.push("-R");
    }
    let out = topo
        .client()
        .exec_timeout("iperf3", &args, Duration::from_secs(120))
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let end = &v["end"];
    (
        end["sum_sent"]["bytes"].as_u64().unwrap(),
        end["sum_received"]["bytes"].as_u64().unwrap(),
        end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    )
}

/// What iperf3's receiver counted of `sent`, of a test of `requested`
/// bytes. Where the client counts (`reverse`): at least every byte it asked
/// for, and not more than was sent. The sender counts whole blocks written,
/// which can go past `requested` (seen: 128 KiB past it, the client counting
/// exactly `requested`), and the client may stop reading before the last of
/// those arrive (seen under 5 % loss), so an exact match is not iperf3's to
/// give. The server's count is a lower bound (see [`iperf`]). The bytes'
/// contents are checked by the echo requests.
fn check_received(sent: u64, received: u64, reverse: bool, requested: u64) {
    if reverse {
        assert!(
            received >= requested && received <= sent,
            "the client received {received} bytes of {sent} sent, {requested} asked for"
        );
    } else {
        assert!(
            received > sent / 2 && received <= sent,
            "the server counted {received} of {sent} bytes"
        );
    }
}

/// Drops one in `one_in` of the frames to and from the client, in the
/// switch (this kernel has no netem: nftables' `numgen random` on the
/// bridge), so that either end sees network loss, not a local drop.
fn lossy_client(topo: &Topology, one_in: u32) {
    let rules = format!(
        "table bridge loss {{\n\
           chain forward {{ type filter hook forward priority 0;\n\
             iifname \"c\" numgen random mod {one_in} 0 counter drop\n\
             oifname \"c\" numgen random mod {one_in} 0 counter drop\n\
           }}\n\
         }}\n"
    );
    let dir = TempDir::new("nft").unwrap();
    let path = dir.join("loss.nft");
    std::fs::write(&path, rules).unwrap();
    topo.switch()
        .exec("nft", &["-f", &path.display().to_string()])
        .unwrap();
}

/// Frames the loss rule dropped so far.
fn dropped(topo: &Topology) -> u64 {
    let out = topo
        .switch()
        .exec("nft", &["list", "table", "bridge", "loss"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split("packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn proxied(topo: &Topology, lb: &Balancer) {
    // curl, both families.
    for _ in 0..5 {
        let body = curl(topo, &format!("http://{VIP}/")).unwrap();
        assert!(["be1", "be2", "be3"].contains(&body.as_str()), "{body}");
        let body = curl(topo, &format!("http://[{VIP6}]/"))
            .unwrap_or_else(|e| panic!("{e}: {:#}", stats(lb)["counters"]));
        assert!(["be1", "be2", "be3"].contains(&body.as_str()), "{body}");
    }
    // Payloads both ways, whole: the echo servers send the line back.
    let echo = SocketAddr::new(VIP.parse().unwrap(), 9000);
    for (len, seed) in [(1, 1), (1460, 2), (100_000, 3), (1_000_000, 4)] {
        let line = payload(len, seed);
        let reply = tcp_request(topo.client(), echo, &line, Duration::from_secs(30)).unwrap();
        let (name, back) = reply.split_once(' ').unwrap();
        assert!(name.starts_with("be"), "{name}");
        assert!(back == line, "{len} bytes came back altered");
    }
    // wrk, keep-alive and one request per connection.
    let (requests, errors) = wrk(topo, 8, 3, false);
    assert!(requests > 100 && errors.is_empty(), "{requests} {errors}");
    let (requests, errors) = wrk(topo, 8, 3, true);
    assert!(requests > 10 && errors.is_empty(), "{requests} {errors}");
    // iperf3 both ways: every byte across.
    for reverse in [false, true] {
        let (sent, received, retransmits) = iperf(topo, "50M", reverse);
        let requested = 50 << 20;
        // (A server sends whole blocks: up to one more.)
        assert!(
            (50 << 20..=(50 << 20) + (1 << 20)).contains(&sent),
            "{sent}"
        );
        check_received(sent, received, reverse, requested);
        eprintln!("iperf3 reverse={reverse}: {received} bytes, {retransmits} retransmitted");
    }
    let s = stats(lb);
    eprintln!(
        "syn proxy: cookies sent {} valid {} invalid {}, proxied {} refused {}, early data dropped {}",
        counter(&s, "syn_cookie_sent"),
        counter(&s, "syn_cookie_valid"),
        counter(&s, "drop_syn_cookie_invalid"),
        counter(&s, "syn_proxy_established"),
        counter(&s, "syn_proxy_refused"),
        counter(&s, "drop_syn_proxy_early_data"),
    );
    eprintln!("counters: {}", s["counters"]);
    assert!(counter(&s, "syn_proxy_established") >= 20);
    // Every valid cookie opened a backend connection, or its flow was
    // refused and counted: the client's ACK and its first segment both carry
    // the cookie, and with generic XDP two CPUs may open and complete the
    // same client's flow at once; the loser's backend answer finds its flow's
    // other half gone or another flow's (`drop_half_open_orphan`; 1 or 2 in
    // 10,000 here). Never more than one in a thousand, and never silently.
    let (valid, established) = (
        counter(&s, "syn_cookie_valid"),
        counter(&s, "syn_proxy_established"),
    );
    let refused = counter(&s, "drop_flow_table_full") + counter(&s, "drop_half_open_orphan");
    assert!(
        established <= valid && valid - established <= refused && refused * 1000 <= valid,
        "valid cookies {valid}, backend connections {established}, flows refused {refused}"
    );
    assert_eq!(
        counter(&s, "tcp_handshake_completed"),
        0,
        "all through the proxy"
    );
}

#[test]
fn with_syn_cookies_always_curl_wrk_and_iperf3_carry_their_bytes_intact() {
    if !require_root() || !require_program("wrk") || !require_program("iperf3") {
        return;
    }
    let topo = Topology::builder()
        .hint("synpx")
        .backends(3)
        .ipv6(true)
        .build()
        .unwrap();
    let _servers = servers(&topo);
    let lb = Balancer::start(topo.lb(), &config(SynCookies::Always)).unwrap();
    assert!(wait_until(T, || curl(&topo, &format!("http://{VIP}/")).is_ok()));
    let status = lb.cli(&["status"]).unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("syn cookies: always"), "{text}");
    proxied(&topo, &lb);
}

#[test]
fn with_syn_cookies_always_and_five_percent_loss_transfers_complete_intact() {
    if !require_root()
        || !require_program("wrk")
        || !require_program("iperf3")
        || !require_program("nft")
    {
        return;
    }
    let topo = Topology::builder()
        .hint("synls")
        .backends(3)
        .ipv6(true)
        .build()
        .unwrap();
    let _servers = servers(&topo);
    let lb = Balancer::start(topo.lb(), &config(SynCookies::Always)).unwrap();
    assert!(wait_until(T, || curl(&topo, &format!("http://{VIP}/")).is_ok()));
    lossy_client(&topo, 20);
    let echo = SocketAddr::new(VIP.parse().unwrap(), 9000);
    for (len, seed) in [(50_000, 5), (1_000_000, 6)] {
        let line = payload(len, seed);
        let reply = tcp_request(topo.client(), echo, &line, Duration::from_secs(60)).unwrap();
        assert!(
            reply.split_once(' ').unwrap().1 == line,
            "{len} bytes altered"
        );
    }
    for _ in 0..10 {
        let body = curl(&topo, &format!("http://{VIP}/")).unwrap();
        assert!(["be1", "be2", "be3"].contains(&body.as_str()), "{body}");
    }
    for reverse in [false, true] {
        let (sent, received, retransmits) = iperf(&topo, "20M", reverse);
        let requested = 20 << 20;
        assert!(
            (20 << 20..=(20 << 20) + (1 << 20)).contains(&sent),
            "{sent}"
        );
        check_received(sent, received, reverse, requested);
        // (In reverse the sender is the server, whose retransmissions the
        // client does not see.)
        assert!(retransmits > 0 || reverse, "the loss was felt");
        eprintln!(
            "iperf3 with 5% loss, reverse={reverse}: {received} bytes, {retransmits} retransmitted"
        );
    }
    let s = stats(&lb);
    assert!(counter(&s, "syn_proxy_established") >= 10);
    let lost = dropped(&topo);
    eprintln!("the switch dropped {lost} frames to or from the client");
    // Frames, some of them GSO bursts of many segments.
    assert!(lost > 20, "{lost} frames dropped");
}

/// HAProxy's address, beside the VIP on the same host.
const HAPROXY: &str = "198.51.100.20";
const ECHO: u16 = 9000;

/// One of the legitimate client's connections: when it started, in which
/// phase, and whether a request got its answer.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    phase: u8,
    ok: bool,
}

const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

/// What one target went through.
#[derive(Debug)]
struct Outcome {
    /// (succeeded, tried) before, during and after the flood.
    legit: [(usize, usize); 3],
    flood: FloodReport,
}

/// Floods `target` for `flood_for` while a legitimate client opens a new
/// connection every 20 ms (a request, its answer within 5 s; each on its own
/// thread, so that a slow one does not hold the next back), from `warm`
/// before the flood to `cool` after it. `during` runs about once a second
/// during the flood.
fn flood_run(
    topo: &Topology,
    target: SocketAddr,
    flood_for: Duration,
    (warm, cool): (Duration, Duration),
    mut during: impl FnMut(),
) -> Outcome {
    let SocketAddr::V4(target4) = target else {
        panic!("IPv4 flood")
    };
    let flood = SynFlood {
        target: target4,
        sources: vec![
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.128/25".parse().unwrap(),
        ],
        rate: 60_000,
        duration: flood_for,
    };
    let phase = AtomicU8::new(BEFORE);
    let stop_client = AtomicBool::new(false);
    let attempts = Mutex::new(Vec::<Attempt>::new());
    let stop_flood = Arc::new(AtomicBool::new(false));
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            let mut pace = Pace::new(Duration::from_millis(20));
            let mut n = 0u64;
            while !stop_client.load(Ordering::Relaxed) {
                n += 1;
                let at = phase.load(Ordering::Relaxed);
                let attempts = &attempts;
                s.spawn(move || {
                    let line = format!("legit {n}");
                    let ok = tcp_request(topo.client(), target, &line, Duration::from_secs(5))
                        .is_ok_and(|reply| reply.ends_with(&line));
                    attempts.lock().unwrap().push(Attempt { phase: at, ok });
                });
                pace.wait();
            }
        });
        // The phases are lengths of time of the client's load, paced like it.
        Pace::new(warm).wait();
        phase.store(DURING, Ordering::Relaxed);
        let flooder = s.spawn(|| syn_flood(topo.client(), &flood, stop_flood.clone()));
        let started = Instant::now();
        let mut sample = Pace::new(Duration::from_secs(1));
        while started.elapsed() < flood_for && !flooder.is_finished() {
            during();
            sample.wait();
        }
        let report = flooder.join().unwrap().unwrap();
        phase.store(AFTER, Ordering::Relaxed);
        Pace::new(cool).wait();
        stop_client.store(true, Ordering::Relaxed);
        report
    });
    let mut legit = [(0, 0); 3];
    for a in attempts.lock().unwrap().iter() {
        let o = &mut legit[a.phase as usize];
        o.0 += usize::from(a.ok);
        o.1 += 1;
    }
    Outcome {
        legit,
        flood: report,
    }
}

fn haproxy(topo: &Topology) -> (Process, TempDir) {
    let dir = TempDir::new("haproxy").unwrap();
    let cfg = dir.join("haproxy.cfg");
    let servers: Vec<String> = (1..=3)
        .map(|i| format!("    server be{i} {}", backend(i, ECHO)))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\nlisten echo\n    bind {HAPROXY}:{ECHO}\n    balance leastconn\n{}\n",
            servers.join("\n")
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    topo.lb()
        .exec("haproxy", &["-c", "-q", "-f", &cfg])
        .unwrap();
    let process = topo.lb().spawn("haproxy", &["-db", "-f", &cfg]).unwrap();
    let addr = SocketAddr::new(HAPROXY.parse().unwrap(), ECHO);
    wait_tcp_ready(topo.client(), addr, T).unwrap();
    (process, dir)
}

fn rate(ok: usize, tried: usize) -> f64 {
    ok as f64 * 100.0 / tried.max(1) as f64
}

#[test]
fn a_spoofed_syn_flood_denies_nothing_with_the_default_settings() {
    if !require_root() || !require_program("haproxy") {
        return;
    }
    let topo = Topology::builder()
        .hint("synfl")
        .backends(3)
        .build()
        .unwrap();
    let _echo: Vec<_> = (1..=3)
        .map(|i| tcp_server(topo.backend(i), backend(i, ECHO)).unwrap())
        .collect();
    // Defaults: syn_cookies = "auto" and its threshold; flows as documented.
    let config = Config::new("synfl")
        .snat(["203.0.113.9"])
        .metrics_off()
        .service(
            Service::tcp("echo", VIP, ECHO)
                .health(Health::none())
                .backends((1..=3).map(|i| backend(i, ECHO))),
        );
    let lb = Balancer::start(topo.lb(), &config).unwrap();
    // HAProxy on the same host, its own address, the same backends; spoofed
    // SYNs must reach it (no reverse-path filter), where the kernel's own
    // SYN cookies defend it.
    topo.add_lb_front_addr(&format!("{HAPROXY}/24")).unwrap();
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.front.rp_filter",
    ] {
        topo.lb().sysctl(key, "0").unwrap();
    }
    let _haproxy = haproxy(&topo);
    let vip = SocketAddr::new(VIP.parse().unwrap(), ECHO);
    assert!(wait_until(T, || tcp_request(topo.client(), vip, "up", T).is_ok()));

    let flood_for = Duration::from_secs(10);
    let phases = (Duration::from_secs(2), Duration::from_secs(4));
    let mut ports_max = 0u64;
    let mut modes = Vec::new();
    let balancer = flood_run(&topo, vip, flood_for, phases, || {
        let s = stats(&lb);
        let ports: u64 = s["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["snat_ports"].as_u64().unwrap_or(0))
            .sum();
        ports_max = ports_max.max(ports);
        modes.push(s["syn_cookies"]["active"].as_bool().unwrap_or(false));
    });
    let s = stats(&lb);
    let sent = counter(&s, "syn_cookie_sent");
    let haproxy_vip = SocketAddr::new(HAPROXY.parse().unwrap(), ECHO);
    let haproxy = flood_run(&topo, haproxy_vip, flood_for, phases, || {});

    let report = |name: &str, o: &Outcome| {
        let [before, during, after] = o.legit;
        eprintln!(
            "{name}: flood {} SYNs at {:.0}/s; legitimate connections before {}/{} ({:.1}%), during {}/{} ({:.1}%), after {}/{} ({:.1}%)",
            o.flood.sent,
            o.flood.rate(),
            before.0,
            before.1,
            rate(before.0, before.1),
            during.0,
            during.1,
            rate(during.0, during.1),
            after.0,
            after.1,
            rate(after.0, after.1),
        );
    };
    report("balancer (auto)", &balancer);
    report("HAProxy (kernel SYN cookies)", &haproxy);
    eprintln!(
        "balancer: {sent} cookies sent, {} valid; SNAT ports held at most {ports_max}; cookies on at the samples: {modes:?}",
        counter(&s, "syn_cookie_valid")
    );
    assert!(
        balancer.flood.rate() >= 50_000.0,
        "the flood reached {:.0} SYNs/s only",
        balancer.flood.rate()
    );
    let [_, during, after] = balancer.legit;
    assert!(during.1 >= 300, "{during:?} legitimate connections during");
    assert!(
        rate(during.0, during.1) >= 99.0,
        "{during:?} legitimate connections succeeded during the flood"
    );
    assert_eq!(after.0, after.1, "every one right after it");
    assert!(
        sent as f64 > balancer.flood.sent as f64 * 0.9,
        "the flood was answered with cookies"
    );
    // The flood took (almost) no SNAT port: those held are the legitimate
    // connections' of the last flows.tcp_transitory_timeout_s (closing) and
    // a few half-open flows from before cookies came on.
    let legit_recent = (during.1 + after.1) as u64;
    assert!(
        ports_max <= legit_recent + 200,
        "{ports_max} SNAT ports held, {legit_recent} legitimate connections"
    );
    // Auto mode said so, and goes off again once the flood is over.
    lb.wait_for_log(&["syn_cookies_on"], T).unwrap();
    lb.wait_for_log(&["syn_cookies_off"], Duration::from_secs(30))
        .unwrap();
}

/// The HA peers' shared key.
const HA_KEY: &str = "0123456789abcdef0123456789abcdef";

fn ha_config(name: &str, priority: u8, peer: &str, key: &str) -> Config {
    Config::new(name)
        .snat(["203.0.113.9"])
        .metrics_off()
        .firewall(Firewall::default().syn_cookies(SynCookies::Always))
        .ha(Ha::enabled()
            .interface("front")
            .peers([peer])
            .priority(priority)
            .advert_interval_ms(100)
            .dead_after(3)
            .preempt(false)
            .auth_key_file(key)
            .sync_flows(true)
            .track_interfaces(["front", "back"]))
        .service(
            Service::tcp("echo", VIP, ECHO)
                .health(Health::none())
                .backends((1..=3).map(|i| backend(i, ECHO))),
        )
}

fn ha_status(lb: &Balancer) -> Value {
    let out = lb.cli(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["status"]["ha"].clone()
}

fn ha_role(lb: &Balancer) -> String {
    ha_status(lb)["role"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn proxied_connections_carry_their_data_through_a_failover() {
    if !require_root() {
        return;
    }
    let topo = Topology::builder()
        .hint("synha")
        .backends(3)
        .standby(true)
        .build()
        .unwrap();
    let _echo: Vec<_> = (1..=3)
        .map(|i| tcp_server(topo.backend(i), backend(i, ECHO)).unwrap())
        .collect();
    let keys = TempDir::new("hakey").unwrap();
    let key = keys.join("ha.key");
    std::fs::write(&key, HA_KEY).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key = key.display().to_string();
    let a = Balancer::start(topo.lb(), &ha_config("lb-a", 200, "198.51.100.3", &key)).unwrap();
    let b = Balancer::start(topo.lb2(), &ha_config("lb-b", 100, "198.51.100.1", &key)).unwrap();
    assert!(
        wait_until(T, || ha_role(&a) == "active" && ha_role(&b) == "standby"),
        "roles {} {}",
        ha_role(&a),
        ha_role(&b)
    );
    let vip = SocketAddr::new(VIP.parse().unwrap(), ECHO);
    assert!(wait_until(T, || tcp_request(topo.client(), vip, "up", T).is_ok()));
    // Connections through the SYN proxy of lb-a, each carrying data.
    let mut conns: Vec<_> = (0..20)
        .map(|i| {
            let mut c = balancer_tests::tcp_connect(topo.client(), vip, T).unwrap();
            let line = payload(20_000, i);
            let reply = c.request(&line).unwrap();
            let (name, back) = reply.split_once(' ').unwrap();
            assert!(back == line);
            (name.to_string(), c)
        })
        .collect();
    let s = stats(&a);
    assert!(counter(&s, "syn_proxy_established") >= 21, "proxied");
    // The standby has them, with their sequence offsets.
    assert!(
        wait_until(T, || ha_status(&b)["sync_installed"].as_u64().unwrap_or(0)
            >= 21),
        "{}",
        ha_status(&b)
    );
    // lb-a loses its link: lb-b takes over.
    topo.lb().ip(&["link", "set", "front", "down"]).unwrap();
    assert!(
        wait_until(T, || ha_role(&b) == "active"),
        "lb-b took over: {}",
        ha_status(&b)
    );
    let mut survived = 0;
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = payload(50_000, 1000 + i as u64);
        match c.request(&line) {
            Ok(reply) if reply == format!("{name} {line}") => survived += 1,
            Ok(reply) => eprintln!("connection {i}: {} bytes back, altered", reply.len()),
            Err(e) => eprintln!("connection {i} on {name}: {e:#}"),
        }
    }
    assert_eq!(
        survived,
        conns.len(),
        "proxied connections survived the failover"
    );
    // New connections on lb-b: its cookies, from the same keys.
    for i in 0..5 {
        let line = format!("after {i}");
        let reply = tcp_request(topo.client(), vip, &line, T).unwrap();
        assert!(reply.ends_with(&line));
    }
    assert!(counter(&stats(&b), "syn_proxy_established") >= 5);
}
