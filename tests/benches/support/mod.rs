//! What the daemon benchmarks (`memory`, `sync`, `failover`, `active_active`)
//! share: the data plane of a running daemon opened on its pinned maps, TCP
//! frames to run through its program, flows opened through that program, and
//! the flow-sync datagrams counted on the wire.
// Each including bench uses a part of it.
#![allow(dead_code)]

use std::{net::SocketAddr, ops::Range, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use aya::maps::{HashMap, MapData};
use balancer_common::{
    FAMILY_V4, PROTO_TCP, csum,
    flow::{FlowKey, FlowValue},
    maps::Flows,
};
use balancer_tests::{
    Balancer, Netns, ServerHandle, TempDir, Topology, addrs,
    config::{Config, Firewall, Health, Service, SynCookies},
    tcp_server,
};
use balancer_user::{
    dataplane::{Dataplane, PinnedMaps, Pins},
    ha::sync::PORT,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;

/// Whether cargo runs this target as a benchmark (`cargo bench` passes
/// `--bench`). `cargo test --all-targets` runs bench targets too, without it:
/// the daemon benchmarks take minutes and then only say that they skipped.
pub fn benchmarking(name: &str) -> bool {
    let yes = std::env::args().any(|a| a == "--bench");
    if !yes {
        eprintln!("{name}: a benchmark; run it with `cargo xtask bench` (skipped)");
    }
    yes
}

/// A daemon benchmark's `main`: `run` under `cargo bench` (see
/// [`benchmarking`]); an error ends the process with status 1.
pub fn bench_main(name: &str, run: impl FnOnce() -> Result<()>) {
    if !benchmarking(name) {
        return;
    }
    if let Err(e) = run() {
        eprintln!("{name}: {e:#}");
        std::process::exit(1);
    }
}

/// Every SYN opens a flow, even a million in a few seconds: with
/// `syn_cookies = "auto"` (the default) a fill would look like a flood.
pub fn no_cookies() -> Firewall {
    Firewall::default().syn_cookies(SynCookies::Off)
}

/// Two balancer hosts of a namespace topology (`lb`, `lb2`; IPv4 only) with
/// nothing running on them yet, three backends that answer TCP on port 8080
/// (`tcp_server`: a line back, after their name), and an HA key file.
pub struct Site {
    pub topo: Topology,
    /// The key file's path.
    pub key: String,
    pub servers: Vec<ServerHandle>,
    pub keys: TempDir,
}

impl Site {
    pub fn new(hint: &str) -> Result<Site> {
        let topo = Topology::builder()
            .hint(hint)
            .backends(3)
            .standby(true)
            .ipv6(false)
            .build()?;
        let servers = (1..=3)
            .map(|i| {
                tcp_server(
                    topo.backend(i),
                    SocketAddr::new(addrs::backend(i).into(), 8080),
                )
            })
            .collect::<Result<_>>()?;
        let keys = TempDir::new(hint)?;
        let key = key_file(&keys)?;
        Ok(Site {
            topo,
            key,
            servers,
            keys,
        })
    }
}

/// An HA key file (mode 0600) in `dir`; its path.
pub fn key_file(dir: &TempDir) -> Result<String> {
    let key = dir.join("ha.key");
    std::fs::write(&key, "balancer-benchmark-key-0123456789abcdef")?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    Ok(key.display().to_string())
}

/// The program of the daemon whose state is pinned in `pin_dir`, loaded
/// again on the same maps: what this process runs through it with
/// BPF_PROG_TEST_RUN lands in the daemon's flow table. `capacity` must be
/// the daemon's `flows.capacity`.
pub fn daemon_dataplane(pin_dir: &Path, capacity: u32) -> Result<Dataplane> {
    let (dp, existing) = Dataplane::open(Pins::prepare(pin_dir, false)?, capacity)
        .with_context(|| format!("opening the daemon's data plane in {}", pin_dir.display()))?;
    ensure!(existing, "no daemon state pinned in {}", pin_dir.display());
    Ok(dp)
}

/// The flow table a daemon pinned, to read.
pub fn pinned_flows(pin_dir: &Path) -> Result<HashMap<MapData, FlowKey, FlowValue>> {
    PinnedMaps::new(pin_dir).open::<Flows, _>()
}

/// An IPv4 TCP segment in an Ethernet frame, as a client or backend sends it.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl Segment {
    /// The frame (no TCP options), its checksums computed with
    /// `balancer_common::csum`, into `frame` (cleared first).
    pub fn write(&self, payload: &[u8], frame: &mut Vec<u8>) {
        frame.clear();
        // Ethernet: any unicast addresses; IPv4.
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let tcp_len = 20 + payload.len();
        let ip_len = 20 + tcp_len as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&(self.seq as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = PROTO_TCP;
        ip[12..16].copy_from_slice(&self.src);
        ip[16..20].copy_from_slice(&self.dst);
        let c = csum::checksum(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        frame.extend_from_slice(&ip);
        let start = frame.len();
        frame.extend_from_slice(&self.sport.to_be_bytes());
        frame.extend_from_slice(&self.dport.to_be_bytes());
        frame.extend_from_slice(&self.seq.to_be_bytes());
        frame.extend_from_slice(&self.ack.to_be_bytes());
        frame.extend_from_slice(&[5 << 4, self.flags]);
        frame.extend_from_slice(&64240u16.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        frame.extend_from_slice(payload);
        let pseudo = csum::pseudo_header_v4(self.src, self.dst, PROTO_TCP, tcp_len as u16);
        let c = csum::checksum(pseudo, &frame[start..]);
        frame[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// The key of the flow entry this segment belongs to.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src: raw(self.src),
            dst: raw(self.dst),
            sport_be: self.sport.to_be(),
            dport_be: self.dport.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }
}

/// An IPv4 address as the flow table holds it.
pub fn raw(a: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

/// The IPv4 address of a flow table's `RawAddr`.
pub fn v4(a: [u32; 4]) -> [u8; 4] {
    a[0].to_ne_bytes()
}

/// The clients and services of the filled flows: flow `i` comes from
/// 198.51.100.(100 + i / 10,000), port 1024 + i % 10,000, to service
/// `i % services`, which listens on `vip`, port 10000 + its number.
#[derive(Debug, Clone, Copy)]
pub struct FlowPlan {
    pub vip: [u8; 4],
    pub services: u32,
}

pub const CLIENT_BASE: u8 = 100;
pub const PORTS_PER_CLIENT: u32 = 10_000;

impl FlowPlan {
    /// `config` with the plan's services, no health checks: service `s` on
    /// the VIP, port 10000 + `s`, with `backends` backends
    /// 203.0.113.(11 + b):(20000 + s).
    pub fn services(&self, mut config: Config, backends: u32) -> Config {
        for svc in 0..self.services {
            let port = 20000 + svc as u16;
            config = config.service(
                Service::tcp(&format!("svc{svc}"), self.vip, 10000 + svc as u16)
                    .health(Health::none())
                    .backends(
                        (0..backends)
                            .map(|b| SocketAddr::from(([203, 0, 113, 11 + b as u8], port))),
                    ),
            );
        }
        config
    }

    /// The client's SYN of flow `i`.
    pub fn syn(&self, i: u32) -> Segment {
        Segment {
            src: [198, 51, 100, CLIENT_BASE + (i / PORTS_PER_CLIENT) as u8],
            dst: self.vip,
            sport: 1024 + (i % PORTS_PER_CLIENT) as u16,
            dport: 10000 + (i % self.services) as u16,
            seq: i,
            ack: 0,
            flags: SYN,
        }
    }

    /// A later segment of flow `i` from its client (after the SYN), with
    /// `flags`.
    pub fn client(&self, i: u32, flags: u8) -> Segment {
        let syn = self.syn(i);
        Segment {
            seq: syn.seq + 1,
            ack: 8,
            flags,
            ..syn
        }
    }
}

/// What running frames through the program did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ran {
    /// Flows the program created (the SYN was not dropped).
    pub created: u64,
    /// SYNs it dropped (no flow).
    pub refused: u64,
}

/// Opens every flow of `flows` through the program ([`open_flow`]: the
/// handshake, in the calling thread's network namespace, as if on `front`
/// and `back`; 0: none), so that the program itself chooses each flow's
/// backend and SNAT port and inserts both entries into the flow table.
pub fn open_flows(
    dp: &Dataplane,
    plan: FlowPlan,
    flows: Range<u32>,
    ifs: (u32, u32),
) -> Result<Ran> {
    let table = dp.map::<Flows, HashMap<_, FlowKey, FlowValue>>()?;
    let mut frame = Vec::with_capacity(64);
    let mut ran = Ran::default();
    for i in flows {
        if open_flow(dp, &table, plan, i, ifs, &mut frame)?.is_some() {
            ran.created += 1;
        } else {
            ran.refused += 1;
        }
    }
    Ok(ran)
}

/// Opens flow `i` of `plan` through the program, in the calling thread's
/// network namespace: the client's SYN as if on `front`, the chosen
/// backend's SYN-ACK as if on `back`, then the client's ACK, so that the flow
/// is established and both its entries are in `table`, the program's flow
/// table (a flow whose handshake has not completed is half-open and kept
/// elsewhere). The flow's forward entry, or `None` if the program dropped
/// the SYN. `frame` is scratch space.
pub fn open_flow(
    dp: &Dataplane,
    table: &HashMap<&MapData, FlowKey, FlowValue>,
    plan: FlowPlan,
    i: u32,
    (front, back): (u32, u32),
    frame: &mut Vec<u8>,
) -> Result<Option<FlowValue>> {
    let syn = plan.syn(i);
    syn.write(&[], frame);
    let sent = dp.test_run(frame, front)?;
    if sent.action == XDP_DROP {
        return Ok(None);
    }
    // The SYN as the program sent it on (Ethernet, IPv4 without options,
    // TCP): from the SNAT address and port to the backend.
    let out = &sent.frame;
    ensure!(out.len() >= 38, "flow {i}: the SYN came out short");
    let addr = |at: usize| -> [u8; 4] { out[at..at + 4].try_into().unwrap() };
    let port = |at: usize| u16::from_be_bytes([out[at], out[at + 1]]);
    Segment {
        src: addr(30),
        dst: addr(26),
        sport: port(36),
        dport: port(34),
        seq: 7,
        ack: syn.seq + 1,
        flags: SYN | ACK,
    }
    .write(&[], frame);
    dp.test_run(frame, back)?;
    plan.client(i, ACK).write(&[], frame);
    dp.test_run(frame, front)?;
    let forward = table
        .get(&syn.key(), 0)
        .with_context(|| format!("flow {i} has no forward entry after its handshake"))?;
    Ok(Some(forward))
}

/// Flow-sync datagrams (UDP port [`PORT`]: records, acknowledgements, bulk
/// copies) in and out of a node's namespace, counted by nftables (IP bytes:
/// headers included, Ethernet not).
#[derive(Debug, Clone, Copy, Default)]
pub struct WireCount {
    pub out_packets: u64,
    pub out_bytes: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
}

impl WireCount {
    /// Adds the counters to `ns` (a table of the benchmark's own).
    pub fn count_in(ns: &Netns) -> Result<()> {
        let port = PORT.to_string();
        ns.exec("nft", &["add", "table", "inet", "syncbench"])?;
        for (chain, hook) in [("out", "output"), ("in", "input")] {
            ns.exec(
                "nft",
                &[
                    "add",
                    "chain",
                    "inet",
                    "syncbench",
                    chain,
                    "{",
                    "type",
                    "filter",
                    "hook",
                    hook,
                    "priority",
                    "0",
                    ";",
                    "}",
                ],
            )?;
            ns.exec(
                "nft",
                &[
                    "add",
                    "rule",
                    "inet",
                    "syncbench",
                    chain,
                    "udp",
                    "dport",
                    &port,
                    "counter",
                ],
            )?;
        }
        Ok(())
    }

    pub fn read(ns: &Netns) -> Result<WireCount> {
        let out = ns.exec("nft", &["-j", "list", "table", "inet", "syncbench"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut c = WireCount::default();
        for item in v["nftables"].as_array().context("nft -j output")? {
            let rule = &item["rule"];
            for e in rule["expr"].as_array().into_iter().flatten() {
                let counter = &e["counter"];
                let (p, b) = (
                    counter["packets"].as_u64().unwrap_or(0),
                    counter["bytes"].as_u64().unwrap_or(0),
                );
                match rule["chain"].as_str() {
                    Some("out") => (c.out_packets, c.out_bytes) = (p, b),
                    Some("in") => (c.in_packets, c.in_bytes) = (p, b),
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    pub fn since(self, before: WireCount) -> WireCount {
        WireCount {
            out_packets: self.out_packets - before.out_packets,
            out_bytes: self.out_bytes - before.out_bytes,
            in_packets: self.in_packets - before.in_packets,
            in_bytes: self.in_bytes - before.in_bytes,
        }
    }
}

/// `balancer status --json`'s HA part (`null` if the daemon does not answer).
pub fn ha_status(lb: &Balancer) -> serde_json::Value {
    lb.cli(&["status", "--json"])
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .map(|v| v["status"]["ha"].clone())
        .unwrap_or_default()
}

/// A count of the HA part of `balancer status` (0 where there is none).
pub fn ha_count(lb: &Balancer, name: &str) -> u64 {
    ha_status(lb)[name].as_u64().unwrap_or(0)
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The load average over the last minute (`/proc/loadavg`), for the report.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Waits (bounded) for the daemon `pid` to use no CPU for `quiet`.
pub fn wait_idle(pid: u32, quiet: Duration, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = balancer_tests::cpu_time(pid)?;
    let mut since = std::time::Instant::now();
    while since.elapsed() < quiet {
        ensure!(
            std::time::Instant::now() < deadline,
            "the daemon did not go idle in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = balancer_tests::cpu_time(pid)?;
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
    }
    Ok(())
}
