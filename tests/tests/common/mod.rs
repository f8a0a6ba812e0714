//! The packet fixture shared by the packet tests, the randomized packet test
//! and the per-packet benchmark: the program loaded in a private network
//! namespace with `front` and `back`, static neighbours so that its FIB lookups
//! resolve deterministically, maps written by the daemon's own code (config ->
//! plan -> Dataplane::apply), and frame builders and checkers.
// Each including target uses a part of it.
#![allow(dead_code)]

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use balancer_common::cookie;
use balancer_tests::{
    config::{Config, Health, Service},
    require_root,
};
use balancer_user::{
    config as daemon_config,
    dataplane::Dataplane,
    plan::{self, Plan},
    syncookie::Secret,
};
use std::net::IpAddr;

use etherparse::{
    NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket, TcpHeader, TransportSlice, UdpHeader,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const CLIENT: [u8; 4] = [198, 51, 100, 2];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
pub const VIP: [u8; 4] = [198, 51, 100, 10];
pub const HOST_FRONT: [u8; 4] = [198, 51, 100, 1];
pub const SNAT: [u8; 4] = [203, 0, 113, 9];
pub const BACKENDS: [[u8; 4]; 3] = [[203, 0, 113, 11], [203, 0, 113, 12], [203, 0, 113, 13]];
pub const UNRESOLVED_BACKEND: [u8; 4] = [203, 0, 113, 14];
pub const FRONT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xf0, 0x01];
pub const BACK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xb0, 0x01];

pub const CLIENT6: [u8; 16] = v6(0x0001, 2);
pub const VIP6: [u8; 16] = v6(0x0001, 0x10);
pub const SNAT6: [u8; 16] = v6(0x0002, 9);
pub const BACKENDS6: [[u8; 16]; 3] = [v6(0x0002, 0x11), v6(0x0002, 0x12), v6(0x0002, 0x13)];

/// 2001:db8:`net`::`host`
pub const fn v6(net: u16, host: u16) -> [u8; 16] {
    let n = net.to_be_bytes();
    let h = host.to_be_bytes();
    [
        0x20, 0x01, 0x0d, 0xb8, n[0], n[1], 0, 0, 0, 0, 0, 0, 0, 0, h[0], h[1],
    ]
}

pub fn backend_mac6(ip: [u8; 16]) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x06, ip[15]]
}

pub fn backend_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, ip[3]]
}

/// The fixture's SNAT port range: 32 ports per backend, few enough to fill.
pub const SNAT_PORTS: (u16, u16) = (40000, 40031);

/// The fixture's configuration: `web` (TCP 80, the three [`BACKENDS`]), `dns`
/// (UDP 53, the first backend) and `unresolved` (TCP 81, a backend without a
/// neighbour), all on [`VIP`], SNAT from [`SNAT`].
pub fn config() -> Config {
    Config::new("packet-test")
        .snat([SNAT])
        .snat_port_range(SNAT_PORTS.0, SNAT_PORTS.1)
        .service(
            Service::tcp("web", VIP, 80)
                .health(Health::none())
                .backends(BACKENDS.map(|b| SocketAddr::from((b, 8080)))),
        )
        .service(
            Service::udp("dns", VIP, 53)
                .health(Health::none())
                .backend(SocketAddr::from((BACKENDS[0], 5353))),
        )
        .service(
            Service::tcp("unresolved", VIP, 81)
                .health(Health::none())
                .backend(SocketAddr::from((UNRESOLVED_BACKEND, 8080))),
        )
}

/// [`config`] with an IPv6 SNAT address and `web6` (TCP 80 on [`VIP6`] to the
/// first of [`BACKENDS6`]).
pub fn config_with_ipv6() -> Config {
    let mut cfg = config().service(
        Service::tcp("web6", VIP6, 80)
            .health(Health::none())
            .backend(SocketAddr::from((BACKENDS6[0], 8080))),
    );
    cfg.node.snat_addresses = Some(vec![SNAT.into(), SNAT6.into()]);
    cfg
}

/// What the daemon would write to the maps for `config`: its own parser and planner.
pub fn plan_of(config: &Config) -> Plan {
    let text = config.to_toml();
    let cfg = daemon_config::parse(&text)
        .unwrap_or_else(|e| panic!("the fixture's configuration is refused: {e}\n{text}"))
        .config;
    plan::plan(&cfg, |_| unreachable!("snat addresses are configured")).expect("plan")
}

/// Pins the calling thread to CPU 0, so that per-CPU state (round-robin
/// cursors, the next-hop cache) is the same from one run to the next.
pub fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

/// The baseline programs (`balancer-ebpf/src/baseline.rs`, built with the
/// balancer's object by balancer-user's build script), with `names` loaded.
pub fn baseline_programs(names: &[&str]) -> aya::Ebpf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ebpf/bpfel-unknown-none/release/baseline");
    let mut ebpf = aya::Ebpf::load_file(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (built with the balancer by balancer-user's build script)",
            path.display()
        )
    });
    for name in names {
        let p: &mut aya::programs::Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    ebpf
}

/// A loaded program in a private network namespace with `front` and `back`.
pub struct Fixture {
    pub dp: Dataplane,
    pub front: u32,
    pub back: u32,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

pub fn sh(args: &str) {
    let out = Command::new("sh").arg("-c").arg(args).output().expect("sh");
    assert!(
        out.status.success(),
        "`{args}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Fixture {
    /// [`Fixture::with_config`] with the tests' [`config`].
    pub fn new() -> Option<Self> {
        Self::with_config(&config(), 65536)
    }

    /// Moves the calling thread into a new network namespace (children it
    /// spawns, `ip` included, inherit it) and loads the program there with
    /// `config` and a flow table of `flows` entries. `None` (after saying why)
    /// where the test cannot run; see `require_root`.
    pub fn with_config(config: &Config, flows: u32) -> Option<Self> {
        if !require_root() {
            return None;
        }
        // SAFETY: unshare affects only the calling thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        sh(&format!(
            "ip link set lo up && \
             ip link add front address {} type veth peer name front-p && \
             ip link add back address {} type veth peer name back-p && \
             for l in front front-p back back-p; do ip link set $l up; done && \
             ip addr add 198.51.100.1/24 dev front && ip addr add 203.0.113.1/24 dev back && \
             sysctl -qw net.ipv4.conf.all.forwarding=1 && \
             ip neigh add 198.51.100.2 lladdr {} dev front nud permanent",
            mac(FRONT_MAC),
            mac(BACK_MAC),
            mac(CLIENT_MAC)
        ));
        for b in BACKENDS {
            sh(&format!(
                "ip neigh add {} lladdr {} dev back nud permanent",
                Ipv4Addr::from(b),
                mac(backend_mac(b))
            ));
        }
        // The same for IPv6: 2001:db8:1::/64 on front, 2001:db8:2::/64 on back.
        sh(&format!(
            "ip addr add 2001:db8:1::1/64 dev front nodad && \
             ip addr add 2001:db8:2::1/64 dev back nodad && \
             sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             ip -6 neigh add {} lladdr {} dev front nud permanent",
            Ipv6Addr::from(CLIENT6),
            mac(CLIENT_MAC)
        ));
        for b in BACKENDS6 {
            sh(&format!(
                "ip -6 neigh add {} lladdr {} dev back nud permanent",
                Ipv6Addr::from(b),
                mac(backend_mac6(b))
            ));
        }
        let plan = plan_of(config);
        let mut dp = Dataplane::load(flows).expect("load program");
        dp.apply(&plan).expect("apply plan");
        // The SYN cookie keys, as a standalone daemon has them.
        dp.rotate_cookie_keys(&Secret::Local, cookie::period_at(unix_now()))
            .expect("cookie keys");
        let front = balancer_user::netconf::ifindex("front").unwrap();
        let back = balancer_user::netconf::ifindex("back").unwrap();
        dp.add_tx_port(front).unwrap();
        dp.add_tx_port(back).unwrap();
        Some(Self { dp, front, back })
    }

    /// Runs the program once on `frame` as if received on `ifindex`.
    pub fn run(&self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let (action, out, _) = self.run_timed(frame, ifindex);
        (action, out)
    }

    /// [`Fixture::run`], with the kernel's measure of the run's duration.
    pub fn run_timed(&self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>, Duration) {
        let run = self.dp.test_run(frame, ifindex).expect("BPF_PROG_TEST_RUN");
        (run.action, run.frame, run.duration)
    }
}

pub fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    write_tcp(b, flags, payload)
}

/// [`tcp_frame`] with the sequence and acknowledgement numbers given.
#[allow(clippy::too_many_arguments)]
pub fn tcp_seq_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: &str,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64240);
    write_tcp_ack(b, flags, ack, payload)
}

/// The client's ISN in [`handshake`], and the backend's.
pub const CLIENT_ISN: u32 = 1000;
pub const BACKEND_ISN: u32 = 5000;

/// A connection from `client`:`sport` to the VIP's `port` through the
/// program, its handshake completed (the SYN, the backend's SYN-ACK, the
/// client's ACK of it): the SYN as it was forwarded.
pub fn handshake(fx: &Fixture, client: [u8; 4], sport: u16, port: u16) -> Seen {
    let syn = tcp_seq_frame(client, VIP, sport, port, "S", CLIENT_ISN, 0, b"");
    let (action, out) = fx.run(&syn, fx.front);
    assert!(matches!(action, XDP_REDIRECT | XDP_TX), "SYN: {action}");
    let fwd = inspect(&out);
    let syn_ack = tcp_seq_frame(
        fwd.dst,
        fwd.src,
        fwd.dport,
        fwd.sport,
        "SA",
        BACKEND_ISN,
        CLIENT_ISN + 1,
        b"",
    );
    let (action, _) = fx.run(&syn_ack, fx.back);
    assert!(
        matches!(action, XDP_REDIRECT | XDP_TX | XDP_PASS),
        "SYN-ACK: {action}"
    );
    let ack = tcp_seq_frame(
        client,
        VIP,
        sport,
        port,
        "A",
        CLIENT_ISN + 1,
        BACKEND_ISN + 1,
        b"",
    );
    let (action, _) = fx.run(&ack, fx.front);
    assert!(matches!(action, XDP_REDIRECT | XDP_TX), "ACK: {action}");
    fwd
}

/// Sets `flags` (letters of "SAFRP") on a TCP builder and writes the frame.
fn write_tcp(b: PacketBuilderStep<TcpHeader>, flags: &str, payload: &[u8]) -> Vec<u8> {
    write_tcp_ack(b, flags, 1, payload)
}

/// [`write_tcp`] with the acknowledgement number `ack` (with the flag A).
fn write_tcp_ack(
    mut b: PacketBuilderStep<TcpHeader>,
    flags: &str,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => panic!("flag {f}"),
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// What a forwarded frame says, after checking that every checksum validates.
#[derive(Debug)]
pub struct Seen {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

pub fn inspect(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("forwarded frame parses");
    let eth = etherparse::Ethernet2Header::from_slice(frame).unwrap().0;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let iph = ip.header().to_header();
    assert_eq!(
        iph.calc_header_checksum(),
        iph.header_checksum,
        "IPv4 header checksum"
    );
    let (sport, dport, data) = transport(
        &p,
        |tcp, payload| tcp.calc_checksum_ipv4(&iph, payload).unwrap(),
        |udp, payload| udp.calc_checksum_ipv4(&iph, payload).unwrap(),
        true,
    );
    Seen {
        eth_src: eth.source,
        eth_dst: eth.destination,
        src: iph.source,
        dst: iph.destination,
        sport,
        dport,
        ttl: iph.time_to_live,
        payload: data,
    }
}

pub fn tcp6_frame(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    write_tcp(b, flags, payload)
}

pub fn udp6_frame(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv6(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// An IPv6 frame with `ext` (extension headers, each `[next, len, ...]` with
/// its next-header byte fixed up here) inserted after the fixed header.
pub fn with_ipv6_ext(frame: &[u8], ext: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let (head, rest) = frame.split_at(14 + 40);
    let mut head = head.to_vec();
    let mut chain = Vec::new();
    let mut next = head[14 + 6];
    for (kind, body) in ext.iter().rev() {
        let mut h = body.clone();
        h[0] = next;
        next = *kind;
        chain.splice(0..0, h);
    }
    head[14 + 6] = next;
    let payload_len = u16::from_be_bytes([head[14 + 4], head[14 + 5]]) as usize + chain.len();
    head[14 + 4..14 + 6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    [head, chain, rest.to_vec()].concat()
}

/// What a forwarded IPv6 frame says, after checking its L4 checksum.
#[derive(Debug)]
pub struct Seen6 {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

pub fn inspect6(frame: &[u8]) -> Seen6 {
    let p = SlicedPacket::from_ethernet(frame).expect("forwarded frame parses");
    let eth = etherparse::Ethernet2Header::from_slice(frame).unwrap().0;
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let iph = ip.header().to_header();
    let (sport, dport, data) = transport(
        &p,
        |tcp, payload| tcp.calc_checksum_ipv6(&iph, payload).unwrap(),
        |udp, payload| udp.calc_checksum_ipv6(&iph, payload).unwrap(),
        false,
    );
    Seen6 {
        eth_src: eth.source,
        eth_dst: eth.destination,
        src: iph.source,
        dst: iph.destination,
        sport,
        dport,
        payload: data,
    }
}

/// Ports and payload of a forwarded frame's TCP or UDP part, after checking its
/// checksum against the one `tcp_sum`/`udp_sum` compute. A zero UDP checksum
/// means "none" in IPv4 (`zero_udp_is_none`) and is not checked there.
fn transport(
    p: &SlicedPacket,
    tcp_sum: impl Fn(&TcpHeader, &[u8]) -> u16,
    udp_sum: impl Fn(&UdpHeader, &[u8]) -> u16,
    zero_udp_is_none: bool,
) -> (u16, u16, Vec<u8>) {
    match p.transport.as_ref().expect("L4") {
        TransportSlice::Tcp(t) => {
            let h = t.to_header();
            assert_eq!(h.checksum, tcp_sum(&h, t.payload()), "TCP checksum");
            (h.source_port, h.destination_port, t.payload().to_vec())
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            if h.checksum != 0 || !zero_udp_is_none {
                assert_eq!(h.checksum, udp_sum(&h, u.payload()), "UDP checksum");
            }
            (h.source_port, h.destination_port, u.payload().to_vec())
        }
        other => panic!("unexpected L4 {other:?}"),
    }
}

// --- TCP segments with chosen numbers and options (the SYN proxy's tests) ---

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A TCP segment to build or as seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The option bytes (a multiple of 4 to build).
    pub opts: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    pub fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Self {
        Tcp {
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags,
            window: 64240,
            opts: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn seq(mut self, seq: u32, ack: u32) -> Self {
        self.seq = seq;
        self.ack = ack;
        self
    }

    pub fn opts(mut self, opts: &[u8]) -> Self {
        self.opts = opts.to_vec();
        while !self.opts.len().is_multiple_of(4) {
            self.opts.push(1);
        }
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }

    /// The frame, from `mac` to the balancer's `to`.
    pub fn frame(&self, mac: [u8; 6], to: [u8; 6]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(mac, to);
        let b = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed families"),
        };
        let mut b = b
            .tcp(self.sport, self.dport, self.seq, self.window)
            .options_raw(&self.opts)
            .unwrap();
        if self.flags & SYN != 0 {
            b = b.syn();
        }
        if self.flags & ACK != 0 {
            b = b.ack(self.ack);
        }
        if self.flags & FIN != 0 {
            b = b.fin();
        }
        if self.flags & RST != 0 {
            b = b.rst();
        }
        if self.flags & PSH != 0 {
            b = b.psh();
        }
        let mut v = Vec::new();
        b.write(&mut v, &self.payload).unwrap();
        v
    }

    /// A client's frame.
    pub fn client_frame(&self) -> Vec<u8> {
        self.frame(CLIENT_MAC, FRONT_MAC)
    }

    /// A backend's frame.
    pub fn backend_frame(&self) -> Vec<u8> {
        let mac = match self.src {
            IpAddr::V4(a) => backend_mac(a.octets()),
            IpAddr::V6(a) => backend_mac6(a.octets()),
        };
        self.frame(mac, BACK_MAC)
    }
}

/// What a frame the program sent says, after checking every checksum.
pub fn seen(frame: &[u8]) -> (Tcp, [u8; 6], [u8; 6]) {
    let p = SlicedPacket::from_ethernet(frame).expect("the frame parses");
    let eth = etherparse::Ethernet2Header::from_slice(frame).unwrap().0;
    let (src, dst): (IpAddr, IpAddr) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 checksum");
            (h.source.into(), h.destination.into())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            (h.source.into(), h.destination.into())
        }
        _ => panic!("not IP"),
    };
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("not TCP")
    };
    let h = t.to_header();
    let want = match &p.net {
        Some(NetSlice::Ipv4(ip)) => h.calc_checksum_ipv4(&ip.header().to_header(), t.payload()),
        Some(NetSlice::Ipv6(ip)) => h.calc_checksum_ipv6(&ip.header().to_header(), t.payload()),
        _ => unreachable!(),
    }
    .unwrap();
    assert_eq!(h.checksum, want, "TCP checksum");
    let flags = (h.fin as u8)
        | (h.syn as u8) << 1
        | (h.rst as u8) << 2
        | (h.psh as u8) << 3
        | (h.ack as u8) << 4;
    (
        Tcp {
            src,
            dst,
            sport: h.source_port,
            dport: h.destination_port,
            seq: h.sequence_number,
            ack: h.acknowledgment_number,
            flags,
            window: h.window_size,
            opts: h.options.as_slice().to_vec(),
            payload: t.payload().to_vec(),
        },
        eth.source,
        eth.destination,
    )
}

/// What the proxy writes: MSS, NOP + window scale, NOP NOP + SACK permitted.
pub fn proxy_opts(mss: u16, wscale: Option<u8>, sack: bool) -> Vec<u8> {
    let [m0, m1] = mss.to_be_bytes();
    let mut o = vec![2, 4, m0, m1];
    o.extend_from_slice(&match wscale {
        Some(w) => [1, 3, 3, w],
        None => [1, 1, 1, 1],
    });
    o.extend_from_slice(if sack { &[1, 1, 4, 2] } else { &[1, 1, 1, 1] });
    o
}
