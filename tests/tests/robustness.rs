//! The randomized robustness test of issue 3: at least 100,000 generated and
//! mutated frames (truncated, wrong lengths, bad IHL, IP and TCP options, VLAN
//! and QinQ tags, fragments, every TCP flag combination, IPv6 extension chains,
//! ARP, random ethertypes and bytes) go through BPF_PROG_TEST_RUN, one run each.
//!
//! Every frame is judged twice. Always: the action is PASS, DROP, TX or
//! REDIRECT, never ABORTED; a PASS leaves the frame byte for byte as it came,
//! unless it is a translated packet whose next hop has no neighbour; a TX or
//! REDIRECT has the input's length, parses, and every checksum validates. And
//! against a model of the documented behaviour, built from the frame's bytes
//! by a parser of the test's own and from the flows seen so far: not for a VIP
//! or the SNAT address (IPv6, VLAN-tagged, ARP, other hosts, frames too short
//! to hold an IPv4 header) -> passed unchanged; for us with headers that do
//! not add up -> dropped; a fragment or another IP protocol -> passed
//! unchanged; TCP/UDP -> translated exactly as its flow says (a new flow to one
//! of the service's backends with an SNAT port that no other flow of that
//! backend uses), or passed unchanged (no service, a TCP segment other than a
//! SYN without a flow, which the host answers with a reset, SNAT address
//! without a flow).
//!
//! Checksums: the program does not verify them and updates them incrementally,
//! so an input whose checksum was wrong (corrupted on purpose, or by a byte
//! flip or a length change) may be forwarded with a checksum that is wrong by
//! exactly as much. For every translated frame the test requires that the
//! one's-complement residual of the IPv4 header and of the TCP/UDP checksum
//! (pseudo-header included) is the same in the output as in the input, which
//! for an input whose checksums validate means that the output's validate; for
//! those inputs the fixture's `inspect` (etherparse) checks the output as well.
//!
//! The forwarded direction: the FIB's next hop (TX or REDIRECT with the
//! neighbour's MAC, PASS without a neighbour or route). A reply may also go
//! back the way the flow's first packet came (its interface, its Ethernet
//! addresses swapped), which the program caches.
//!
//! Deterministic: a fixed seed, printed, that `ROBUSTNESS_SEED` (decimal or
//! 0x-hex) overrides; `ROBUSTNESS_FRAMES` overrides the count (default
//! 200,000, about 3 s; the time is bounded by `TIME_LIMIT`). The random
//! generator is defined here (xoshiro256**), so that a seed gives the same
//! frames whatever crate versions the workspace resolves; frames that follow
//! up a flow also depend on the program's own choices (random SNAT ports,
//! per-CPU backend rotation), so a failure is reported with its bytes.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use balancer_common::{
    cookie::{self, CookieData},
    csum,
    service::BackendIndex,
    stats::Counter,
};
use balancer_tests::config::{Firewall, SynCookies};
use common::*;

const DEFAULT_SEED: u64 = 0x1b3d_0003_5eed_2026;
const DEFAULT_FRAMES: u64 = 200_000;
/// The run fails rather than going on past this.
const TIME_LIMIT: Duration = Duration::from_secs(120);

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const XDP_ABORTED: u32 = 0;

/// The fixture's configuration with an SNAT range wide enough that no new flow
/// is ever refused for want of a port.
const SNAT_RANGE: (u16, u16) = (20000, 59999);
/// Flow table entries: both directions of every flow fit with room to spare
/// (about one frame in ten opens a flow), so that the LRU evicts nothing
/// behind the model's back.
fn flow_table(frames: u64) -> u32 {
    (frames / 2).next_power_of_two().max(1 << 18) as u32
}
/// A new flow may be refused for want of an SNAT port (the program probes a
/// limited number of random ports) only once its backend's ports are this full.
const SNAT_FULL_ENOUGH: f64 = 0.75;

/// A service of the fixture's configuration.
struct Svc {
    port: u16,
    proto: u8,
    backends: &'static [([u8; 4], u16)],
}

const SERVICES: [Svc; 3] = [
    Svc {
        port: 80,
        proto: TCP,
        backends: &[
            (BACKENDS[0], 8080),
            (BACKENDS[1], 8080),
            (BACKENDS[2], 8080),
        ],
    },
    Svc {
        port: 53,
        proto: UDP,
        backends: &[(BACKENDS[0], 5353)],
    },
    Svc {
        port: 81,
        proto: TCP,
        backends: &[(UNRESOLVED_BACKEND, 8080)],
    },
];

/// Clients on `front` with a static neighbour (replies to them are forwarded).
const FRONT_CLIENTS: [[u8; 4]; 5] = [
    CLIENT,
    [198, 51, 100, 100],
    [198, 51, 100, 101],
    [198, 51, 100, 102],
    [198, 51, 100, 103],
];
/// A client on the backends' side, with a neighbour on `back`.
const BACK_CLIENT: [u8; 4] = [203, 0, 113, 50];
const BACK_CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x00, 0x50];
/// On the front subnet without a neighbour: replies pass translated.
const NO_NEIGH_CLIENT: [u8; 4] = [198, 51, 100, 200];
/// No route at all: replies pass translated.
const NO_ROUTE_CLIENT: [u8; 4] = [192, 0, 2, 7];
const HOST_BACK: [u8; 4] = [203, 0, 113, 1];

/// The MAC address of the sender `ip`: its neighbour entry's where it has one.
fn host_mac(ip: [u8; 4]) -> [u8; 6] {
    if BACKENDS.contains(&ip) {
        backend_mac(ip)
    } else if ip == BACK_CLIENT {
        BACK_CLIENT_MAC
    } else if FRONT_CLIENTS.contains(&ip) {
        front_client_mac(ip)
    } else {
        [0x02, 0, 0, 0, 0x03, ip[3]]
    }
}

fn front_client_mac(ip: [u8; 4]) -> [u8; 6] {
    if ip == CLIENT {
        CLIENT_MAC
    } else {
        [0x02, 0, 0, 0, 0x01, ip[3]]
    }
}

// ---------------------------------------------------------------------------
// Random numbers

/// xoshiro256**, seeded through SplitMix64.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([split(), split(), split(), split()])
    }

    fn u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `0..n` (`n` > 0, at most 2^32).
    fn below(&mut self, n: usize) -> usize {
        (((self.u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with `percent` percent probability.
    fn pct(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn u8(&mut self) -> u8 {
        self.u64() as u8
    }

    fn u16(&mut self) -> u16 {
        self.u64() as u16
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// One of `items` or, as often as each of them, any byte.
    fn pick_or_any_u8(&mut self, items: &[u8]) -> u8 {
        match self.below(items.len() + 1) {
            i if i == items.len() => self.u8(),
            i => items[i],
        }
    }

    /// One of `items` or, as often as each of them, any value.
    fn pick_or_any_u16(&mut self, items: &[u16]) -> u16 {
        match self.below(items.len() + 1) {
            i if i == items.len() => self.u16(),
            i => items[i],
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }

    /// Random bytes, as many as one of `lengths`.
    fn bytes_of(&mut self, lengths: &[usize]) -> Vec<u8> {
        let n = self.pick(lengths);
        self.bytes(n)
    }
}

// ---------------------------------------------------------------------------
// Checksums: full sums over the frame with balancer_common::csum (the one
// implementation), while the program updates checksums incrementally.

/// The one's-complement sum of a region whose checksum field is included:
/// 0xffff when the checksum validates. 0 and 0xffff are the same number in
/// one's complement and come out as 0xffff.
fn residual(sum: u64) -> u16 {
    match csum::fold(sum) {
        0 => 0xffff,
        r => r,
    }
}

fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    let s = csum::sum_be(0, src);
    csum::sum_be(s, dst) + proto as u64 + len as u64
}

fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Frame building

#[derive(Clone)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        /// The eight flag bits of byte 13.
        flags: u8,
        /// The ninth flag (NS), in byte 12.
        ns: bool,
        options: Vec<u8>,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        /// Checksum 0: "none".
        no_checksum: bool,
    },
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
}

struct V4 {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    /// (TPID, TCI) of each VLAN tag, outer first.
    tags: Vec<(u16, u16)>,
    src: [u8; 4],
    dst: [u8; 4],
    tos: u8,
    id: u16,
    /// Flags and fragment offset, as on the wire.
    frag: u16,
    ttl: u8,
    /// IP options, a multiple of 4 bytes, at most 40.
    options: Vec<u8>,
    l4: L4,
}

impl V4 {
    fn new(src: [u8; 4], dst: [u8; 4], l4: L4) -> Self {
        V4 {
            eth_src: CLIENT_MAC,
            eth_dst: FRONT_MAC,
            tags: Vec::new(),
            src,
            dst,
            tos: 0,
            id: 0x1234,
            frag: 0x4000,
            ttl: 64,
            options: Vec::new(),
            l4,
        }
    }
}

/// Where an IPv4 frame's header starts, for the mutations.
#[derive(Clone, Copy)]
struct Layout {
    l3: usize,
}

fn build_v4(v: &V4) -> (Vec<u8>, Layout) {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&v.eth_dst);
    f.extend_from_slice(&v.eth_src);
    for (tpid, tci) in &v.tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ETH_IPV4.to_be_bytes());
    let l3 = f.len();
    assert!(v.options.len().is_multiple_of(4) && v.options.len() <= 40);
    let hl = 20 + v.options.len();
    let (proto, l4) = match &v.l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            ns,
            options,
            payload,
        } => {
            assert!(options.len().is_multiple_of(4) && options.len() <= 40);
            let mut t = Vec::with_capacity(20 + options.len() + payload.len());
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&0x0102_0304u32.to_be_bytes());
            let ack: u32 = if flags & 0x10 != 0 { 0x0a0b_0c0d } else { 0 };
            t.extend_from_slice(&ack.to_be_bytes());
            t.push((((20 + options.len()) / 4) as u8) << 4 | *ns as u8);
            t.push(*flags);
            t.extend_from_slice(&64240u16.to_be_bytes());
            t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            t.extend_from_slice(options);
            t.extend_from_slice(payload);
            (TCP, t)
        }
        L4::Udp {
            sport,
            dport,
            payload,
            ..
        } => {
            let mut u = Vec::with_capacity(8 + payload.len());
            u.extend_from_slice(&sport.to_be_bytes());
            u.extend_from_slice(&dport.to_be_bytes());
            u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(payload);
            (UDP, u)
        }
        L4::Raw { proto, payload } => (*proto, payload.clone()),
    };
    f.push(0x40 | (hl / 4) as u8);
    f.push(v.tos);
    f.extend_from_slice(&((hl + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&v.id.to_be_bytes());
    f.extend_from_slice(&v.frag.to_be_bytes());
    f.push(v.ttl);
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&v.src);
    f.extend_from_slice(&v.dst);
    f.extend_from_slice(&v.options);
    let c = csum::checksum(0, &f[l3..l3 + hl]);
    put16(&mut f, l3 + 10, c);
    let l4_off = f.len();
    f.extend_from_slice(&l4);
    let pseudo = pseudo_v4(&v.src, &v.dst, proto, l4.len());
    match &v.l4 {
        L4::Tcp { .. } => {
            let c = csum::checksum(pseudo, &f[l4_off..]);
            put16(&mut f, l4_off + 16, c);
        }
        L4::Udp { no_checksum, .. } if !no_checksum => {
            let c = match csum::checksum(pseudo, &f[l4_off..]) {
                0 => 0xffff,
                c => c,
            };
            put16(&mut f, l4_off + 6, c);
        }
        L4::Raw { proto: ICMP, .. } if l4.len() >= 4 => {
            let c = csum::checksum(0, &f[l4_off..]);
            put16(&mut f, l4_off + 2, c);
        }
        _ => {}
    }
    (f, Layout { l3 })
}

/// Recomputes the IPv4 header checksum and, where the headers say where it
/// is, the TCP/UDP checksum, of a (mutated) frame.
fn repair_checksums(f: &mut [u8], l3: usize) {
    if f.len() < l3 + 20 {
        return;
    }
    let hl = (f[l3] & 0x0f) as usize * 4;
    if hl < 20 || f.len() < l3 + hl {
        return;
    }
    put16(f, l3 + 10, 0);
    let c = csum::checksum(0, &f[l3..l3 + hl]);
    put16(f, l3 + 10, c);
    let ip_len = get16(f, l3 + 2) as usize;
    if ip_len < hl || ip_len > f.len() - l3 {
        return;
    }
    let l4 = l3 + hl;
    let l4_len = ip_len - hl;
    let (src, dst) = (f[l3 + 12..l3 + 16].to_vec(), f[l3 + 16..l3 + 20].to_vec());
    match f[l3 + 9] {
        TCP if l4_len >= 20 => {
            put16(f, l4 + 16, 0);
            let c = csum::checksum(pseudo_v4(&src, &dst, TCP, l4_len), &f[l4..l4 + l4_len]);
            put16(f, l4 + 16, c);
        }
        UDP if l4_len >= 8 => {
            let udp_len = get16(f, l4 + 4) as usize;
            if udp_len < 8 || udp_len > l4_len || get16(f, l4 + 6) == 0 {
                return;
            }
            put16(f, l4 + 6, 0);
            let pseudo = pseudo_v4(&src, &dst, UDP, udp_len);
            let c = match csum::checksum(pseudo, &f[l4..l4 + udp_len]) {
                0 => 0xffff,
                c => c,
            };
            put16(f, l4 + 6, c);
        }
        _ => {}
    }
}

fn ip_options(rng: &mut Rng) -> Vec<u8> {
    let words = rng.between(1, 10);
    let mut o = Vec::with_capacity(words * 4);
    while o.len() < words * 4 {
        let room = words * 4 - o.len();
        match rng.below(6) {
            0 => o.push(1),                                         // NOP
            1 if room >= 4 => o.extend_from_slice(&[148, 4, 0, 0]), // router alert
            2 if room >= 7 => {
                // record route with room for one or more addresses
                let n = (room - 3) / 4;
                let n = rng.between(1, n);
                o.extend_from_slice(&[7, (3 + 4 * n) as u8, 4]);
                o.extend(std::iter::repeat_n(0, 4 * n));
            }
            3 if room >= 8 => {
                // timestamp, one slot
                o.extend_from_slice(&[68, 8, 5, 0]);
                o.extend_from_slice(&rng.bytes(4));
            }
            4 => {
                // garbage, lengths that lie included
                let n = rng.between(1, room);
                o.extend(rng.bytes(n));
            }
            _ => o.push(0), // EOL
        }
    }
    o.truncate(words * 4);
    o
}

fn tcp_options(rng: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    if rng.pct(70) {
        o.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS
    }
    if rng.pct(50) {
        o.extend_from_slice(&[4, 2]); // SACK permitted
    }
    if rng.pct(50) {
        o.extend_from_slice(&[8, 10]); // timestamps
        o.extend(rng.bytes(8));
    }
    if rng.pct(40) {
        o.extend_from_slice(&[1, 3, 3, 7]); // NOP, window scale
    }
    if rng.pct(15) {
        let n = rng.between(1, 12);
        o.extend(rng.bytes(n));
    }
    o.truncate(40);
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}

/// Up to 1380 bytes: with the longest IP and TCP headers (60 + 60 bytes) a
/// packet stays within the interfaces' 1500-byte MTU (a larger one takes
/// another path; see `oversized_packet_of_an_established_flow_is_not_redirected`).
fn payload(rng: &mut Rng) -> Vec<u8> {
    let n = match rng.below(20) {
        0..=7 => 0,
        8..=17 => rng.between(1, 64),
        18 => rng.between(65, 600),
        _ => rng.between(601, 1380),
    };
    rng.bytes(n)
}

/// TCP flags: any of the 256 combinations of byte 13, SYN alone more often.
fn any_flags(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0..=2 => 0x02,
        3 => 0x02 | (rng.u8() & 0xe8), // SYN with PSH/URG/ECE/CWR
        _ => rng.u8(),
    }
}

fn tcp(sport: u16, dport: u16, flags: u8, rng: &mut Rng) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags,
        ns: rng.pct(3),
        options: Vec::new(),
        payload: payload(rng),
    }
}

fn udp(sport: u16, dport: u16, rng: &mut Rng) -> L4 {
    L4::Udp {
        sport,
        dport,
        payload: payload(rng),
        no_checksum: rng.pct(5),
    }
}

fn ipv6_frame(rng: &mut Rng, labels: &mut Vec<&'static str>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&FRONT_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ETH_IPV6.to_be_bytes());
    let l3 = f.len();
    let src: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut dst = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    dst[15] = rng.pick_or_any_u8(&[0x10, 0x01, 0x09]);
    let last = match rng.below(10) {
        0..=4 => TCP,
        5..=8 => UDP,
        _ => rng.pick_or_any_u8(&[59, 58]), // no next header, ICMPv6, anything
    };
    // The extension chain: hop-by-hop, routing, fragment, destination options,
    // in any order and number (the RFC order included, not required).
    let n = rng.below(5);
    if n > 0 {
        labels.push("ipv6-ext-chain");
    }
    let kinds: Vec<u8> = (0..n).map(|_| rng.pick(&[0, 43, 44, 60])).collect();
    let mut exts = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(last);
        match kind {
            44 => {
                exts.push(next);
                exts.push(0);
                let off_m = (rng.below(4) as u16 * 8) << 3 | rng.below(2) as u16;
                exts.extend_from_slice(&off_m.to_be_bytes());
                exts.extend(rng.bytes(4));
            }
            43 => {
                let len = rng.below(3);
                exts.extend_from_slice(&[
                    next,
                    (len * 2) as u8,
                    rng.pick(&[0, 2, 3, 4]),
                    rng.u8() % 3,
                ]);
                exts.extend([0; 4]);
                exts.extend(rng.bytes(len * 16));
            }
            _ => {
                let len = rng.below(3);
                exts.extend_from_slice(&[next, len as u8]);
                // PadN over the rest, or garbage
                let rest = 8 * (len + 1) - 2;
                if rng.pct(80) {
                    exts.extend_from_slice(&[1, (rest - 2) as u8]);
                    exts.extend(std::iter::repeat_n(0, rest - 2));
                } else {
                    exts.extend(rng.bytes(rest));
                }
            }
        }
    }
    let first = kinds.first().copied().unwrap_or(last);
    let mut l4 = Vec::new();
    let csum_at = match last {
        TCP => {
            l4.extend_from_slice(&rng.u16().to_be_bytes());
            l4.extend_from_slice(&rng.pick_or_any_u16(&[80, 53, 81]).to_be_bytes());
            l4.extend(rng.bytes(8));
            l4.push(0x50);
            l4.push(any_flags(rng));
            l4.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
            Some(16)
        }
        UDP => {
            let p = payload(rng);
            l4.extend_from_slice(&rng.u16().to_be_bytes());
            l4.extend_from_slice(&rng.pick_or_any_u16(&[53, 80]).to_be_bytes());
            l4.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            l4.extend(p);
            Some(6)
        }
        _ => None,
    };
    if csum_at == Some(16) {
        l4.extend(payload(rng));
    }
    if let Some(at) = csum_at {
        let mut sum = csum::sum_be(csum::sum_be(0, &src), &dst);
        sum += l4.len() as u64 + last as u64;
        let c = csum::checksum(sum, &l4);
        put16(&mut l4, at, c);
    }
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
    f.push(first);
    f.push(64);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    debug_assert_eq!(f.len(), l3 + 40);
    f.extend(exts);
    f.extend(l4);
    f
}

// ---------------------------------------------------------------------------
// The model: what the program must do with a frame

/// What the frame is, by the test's own reading of its bytes.
enum Class {
    /// Not an IPv4 frame for a VIP or the SNAT address: passed unchanged.
    NotOurs,
    /// For us, headers that do not add up: dropped.
    Malformed,
    /// For us, a fragment: passed unchanged.
    Fragment,
    /// For us, neither TCP nor UDP: passed unchanged.
    OtherProto,
    /// For us, consistent TCP or UDP.
    L4(Tuple),
    /// An ICMP error message to one of our addresses.
    IcmpError,
}

/// The backend index (into the per-backend maps) of `SERVICES[service]`'s
/// backend `slot`: the daemon numbers backends in order, service after service.
fn backend_index(service: usize, slot: usize) -> u32 {
    (SERVICES[..service]
        .iter()
        .map(|s| s.backends.len())
        .sum::<usize>()
        + slot) as u32
}

#[derive(Clone, Copy, Debug)]
struct Tuple {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
    /// Offset of the L4 header.
    l4: usize,
}

fn addr(f: &[u8], at: usize) -> [u8; 4] {
    f[at..at + 4].try_into().unwrap()
}

fn classify(f: &[u8]) -> Class {
    const L3: usize = 14;
    if f.len() < L3 + 20 || get16(f, 12) != ETH_IPV4 {
        return Class::NotOurs;
    }
    let dst = addr(f, L3 + 16);
    if dst != VIP && dst != SNAT {
        return Class::NotOurs;
    }
    let (version, hl) = (f[L3] >> 4, (f[L3] & 0x0f) as usize * 4);
    if version != 4 || hl < 20 {
        return Class::Malformed;
    }
    let ip_len = get16(f, L3 + 2) as usize;
    if ip_len > f.len() - L3 || ip_len < hl {
        return Class::Malformed;
    }
    if get16(f, L3 + 6) & 0x3fff != 0 {
        return Class::Fragment;
    }
    let proto = f[L3 + 9];
    let l4 = L3 + hl;
    let room = ip_len - hl;
    let tcp_flags = match proto {
        TCP => {
            let doff = (f.get(l4 + 12).copied().unwrap_or(0) >> 4) as usize * 4;
            if room < 20 || doff < 20 || doff > room {
                return Class::Malformed;
            }
            f[l4 + 13]
        }
        UDP => {
            let udp_len = if room >= 8 {
                get16(f, l4 + 4) as usize
            } else {
                0
            };
            if room < 8 || udp_len < 8 || udp_len > room {
                return Class::Malformed;
            }
            0
        }
        // ICMP errors (destination unreachable, time exceeded) may quote a
        // flow and be translated; shorter than their header they are dropped.
        ICMP if room < 8 => return Class::Malformed,
        ICMP if matches!(f.get(l4), Some(3 | 11)) => return Class::IcmpError,
        _ => return Class::OtherProto,
    };
    Class::L4(Tuple {
        src: addr(f, L3 + 12),
        dst,
        sport: get16(f, l4),
        dport: get16(f, l4 + 2),
        proto,
        tcp_flags,
        l4,
    })
}

/// Addresses and ports after translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Xlate {
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FwdKey {
    client: [u8; 4],
    cport: u16,
    vport: u16,
    proto: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RevKey {
    backend: [u8; 4],
    bport: u16,
    snat_port: u16,
    proto: u8,
}

/// How a flow's first packet came: its interface and Ethernet addresses.
#[derive(Clone, Copy, Debug)]
struct Path {
    ingress: u32,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
}

enum Expect {
    Pass(&'static str),
    Drop(&'static str),
    /// An existing flow; for a reply, how the flow's first packet came.
    Xlate(Xlate, Option<Path>),
    /// A new flow of `SERVICES[i]`.
    NewFlow(usize),
    /// An ICMP error: passed unchanged, or (quoting a flow) translated with
    /// its headers whole. tests/icmp.rs checks the translation itself.
    PassOrRelay,
}

#[derive(Default)]
struct Model {
    fwd: HashMap<FwdKey, (RevKey, Path)>,
    rev: HashMap<RevKey, FwdKey>,
    /// Every flow, to pick follow-ups and replies from.
    flows: Vec<FwdKey>,
    /// TCP flows that saw a FIN or RST in either direction: their backend's
    /// active count was given back.
    ended: HashSet<FwdKey>,
    /// SNAT ports taken per backend address, port and protocol.
    ports_used: HashMap<([u8; 4], u16, u8), usize>,
    /// New flows refused for want of an SNAT port, and the program's count.
    refused: u64,
    exhausted_counter: u64,
}

impl Model {
    /// Records the end of the TCP flow that `t`, a packet of an existing
    /// flow, belongs to, if it carries a FIN or RST.
    fn saw(&mut self, t: &Tuple) {
        if t.proto != TCP || t.tcp_flags & 0x05 == 0 {
            return;
        }
        let key = if t.dst == VIP {
            FwdKey {
                client: t.src,
                cport: t.sport,
                vport: t.dport,
                proto: t.proto,
            }
        } else {
            self.rev[&RevKey {
                backend: t.src,
                bport: t.sport,
                snat_port: t.dport,
                proto: t.proto,
            }]
        };
        self.ended.insert(key);
    }

    /// Active connections per backend slot (`BACKENDS` index): opened, not ended.
    fn active(&self) -> BTreeMap<u32, u64> {
        let mut active = BTreeMap::new();
        for (svc_id, s) in SERVICES.iter().enumerate() {
            for slot in 0..s.backends.len() {
                active.insert(backend_index(svc_id, slot), 0);
            }
        }
        for (k, (r, _)) in &self.fwd {
            if self.ended.contains(k) {
                continue;
            }
            let svc_id = SERVICES
                .iter()
                .position(|s| s.port == k.vport && s.proto == k.proto)
                .unwrap();
            let slot = SERVICES[svc_id]
                .backends
                .iter()
                .position(|b| *b == (r.backend, r.bport))
                .unwrap();
            *active.get_mut(&backend_index(svc_id, slot)).unwrap() += 1;
        }
        active
    }

    fn expect(&self, class: &Class) -> Expect {
        let t = match class {
            Class::NotOurs => return Expect::Pass("not for us"),
            Class::Malformed => return Expect::Drop("malformed"),
            Class::Fragment => return Expect::Pass("fragment"),
            Class::OtherProto => return Expect::Pass("other protocol"),
            Class::IcmpError => return Expect::PassOrRelay,
            Class::L4(t) => t,
        };
        if t.dst == VIP {
            let key = FwdKey {
                client: t.src,
                cport: t.sport,
                vport: t.dport,
                proto: t.proto,
            };
            if let Some((r, _)) = self.fwd.get(&key) {
                return Expect::Xlate(
                    Xlate {
                        src: SNAT,
                        sport: r.snat_port,
                        dst: r.backend,
                        dport: r.bport,
                    },
                    None,
                );
            }
            let Some(svc) = SERVICES
                .iter()
                .position(|s| s.port == t.dport && s.proto == t.proto)
            else {
                return Expect::Pass("VIP, no service");
            };
            // UDP always opens a flow; TCP a SYN without ACK, RST or FIN.
            if t.proto == UDP || t.tcp_flags & 0x17 == 0x02 {
                Expect::NewFlow(svc)
            } else {
                Expect::Pass("no flow")
            }
        } else {
            let key = RevKey {
                backend: t.src,
                bport: t.sport,
                snat_port: t.dport,
                proto: t.proto,
            };
            match self.rev.get(&key) {
                Some(c) => Expect::Xlate(
                    Xlate {
                        src: VIP,
                        sport: c.vport,
                        dst: c.client,
                        dport: c.cport,
                    },
                    Some(self.fwd[c].1),
                ),
                None => Expect::Pass("SNAT address, no flow"),
            }
        }
    }

    /// Checks and records the flow that `out` shows the program created.
    fn new_flow(&mut self, t: &Tuple, svc: usize, x: Xlate, path: Path) -> Result<(), String> {
        let s = &SERVICES[svc];
        let fwd = FwdKey {
            client: t.src,
            cport: t.sport,
            vport: t.dport,
            proto: t.proto,
        };
        let rev = RevKey {
            backend: x.dst,
            bport: x.dport,
            snat_port: x.sport,
            proto: t.proto,
        };
        let mut problems = Vec::new();
        if x.src != SNAT {
            problems.push(format!("source {:?} is not the SNAT address", x.src));
        }
        if !s.backends.contains(&(x.dst, x.dport)) {
            problems.push(format!(
                "{:?}:{} is not a backend of port {}",
                x.dst, x.dport, s.port
            ));
        }
        if !(SNAT_RANGE.0..=SNAT_RANGE.1).contains(&x.sport) {
            problems.push(format!("SNAT port {} outside the range", x.sport));
        }
        if let Some(other) = self.rev.get(&rev) {
            problems.push(format!(
                "SNAT port {} of backend {:?} already used by {other:?}",
                x.sport, x.dst
            ));
        }
        self.fwd.insert(fwd, (rev, path));
        *self
            .ports_used
            .entry((x.dst, x.dport, t.proto))
            .or_default() += 1;
        self.rev.entry(rev).or_insert(fwd);
        self.flows.push(fwd);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Where a translated packet goes: the egress interface and MAC addresses if
/// the fixture knows the neighbour, else nowhere (the program passes it).
struct Net {
    front: u32,
    back: u32,
}

impl Net {
    fn neighbour(&self, ip: [u8; 4]) -> Option<(u32, [u8; 6], [u8; 6])> {
        if BACKENDS.contains(&ip) {
            Some((self.back, BACK_MAC, backend_mac(ip)))
        } else if ip == BACK_CLIENT {
            Some((self.back, BACK_MAC, BACK_CLIENT_MAC))
        } else if FRONT_CLIENTS.contains(&ip) {
            Some((self.front, FRONT_MAC, front_client_mac(ip)))
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Checking one translated frame

/// An action and, for TX and REDIRECT, the Ethernet source and destination.
#[derive(Debug)]
struct Hop {
    action: u32,
    macs: Option<([u8; 6], [u8; 6])>,
}

impl Hop {
    fn out(egress: u32, ingress: u32, smac: [u8; 6], dmac: [u8; 6]) -> Self {
        Hop {
            action: if egress == ingress {
                XDP_TX
            } else {
                XDP_REDIRECT
            },
            macs: Some((smac, dmac)),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// IPv4 header residual and TCP/UDP residual (None: UDP without checksum).
fn residuals(f: &[u8], t: &Tuple) -> (u16, Option<u16>) {
    const L3: usize = 14;
    let hl = t.l4 - L3;
    let ip = residual(csum::sum_be(0, &f[L3..L3 + hl]));
    let ip_len = get16(f, L3 + 2) as usize;
    let (src, dst) = (&f[L3 + 12..L3 + 16], &f[L3 + 16..L3 + 20]);
    let l4 = if t.proto == TCP {
        let len = ip_len - hl;
        Some(residual(csum::sum_be(
            pseudo_v4(src, dst, TCP, len),
            &f[t.l4..t.l4 + len],
        )))
    } else if get16(f, t.l4 + 6) == 0 {
        None
    } else {
        let len = get16(f, t.l4 + 4) as usize;
        Some(residual(csum::sum_be(
            pseudo_v4(src, dst, UDP, len),
            &f[t.l4..t.l4 + len],
        )))
    };
    (ip, l4)
}

/// The addresses and ports of a translated output.
fn xlate_of(out: &[u8], t: &Tuple) -> Option<Xlate> {
    (out.len() >= t.l4 + 4).then(|| Xlate {
        src: addr(out, 26),
        dst: addr(out, 30),
        sport: get16(out, t.l4),
        dport: get16(out, t.l4 + 2),
    })
}

/// One run of the program: the frame in, where it came in, what came out.
#[derive(Clone, Copy)]
struct Run<'a> {
    frame: &'a [u8],
    ingress: u32,
    action: u32,
    out: &'a [u8],
}

fn check_xlate(
    net: &Net,
    run: &Run,
    t: &Tuple,
    want: Xlate,
    learned: Option<Path>,
) -> Result<(), String> {
    let Run {
        frame: input,
        ingress,
        action,
        out,
    } = *run;
    if out.len() != input.len() {
        return Err(format!(
            "length {} after translation, {} before",
            out.len(),
            input.len()
        ));
    }
    // Where it may go: where the FIB and the neighbour table say; for a reply,
    // also back the way the flow's first packet came (its interface, its
    // Ethernet addresses swapped). Either is a sensible design.
    let mut hops = vec![match net.neighbour(want.dst) {
        Some((egress, smac, dmac)) => Hop::out(egress, ingress, smac, dmac),
        None => Hop {
            action: XDP_PASS,
            macs: None,
        },
    }];
    if let Some(p) = learned {
        hops.push(Hop::out(p.ingress, ingress, p.eth_dst, p.eth_src));
    }
    let Some(hop) = hops.iter().find(|h| {
        h.action == action
            && h.macs
                .is_none_or(|(smac, dmac)| out[0..6] == dmac && out[6..12] == smac)
    }) else {
        return Err(format!(
            "action {action}, MACs {} > {}; expected one of {hops:x?} towards {:?}",
            hex(&out[6..12]),
            hex(&out[0..6]),
            want.dst
        ));
    };
    // The expected frame: the input with the new addresses, ports and MACs;
    // checksums and the TTL are compared separately.
    let mut expected = input.to_vec();
    if let Some((smac, dmac)) = hop.macs {
        expected[0..6].copy_from_slice(&dmac);
        expected[6..12].copy_from_slice(&smac);
    }
    expected[26..30].copy_from_slice(&want.src);
    expected[30..34].copy_from_slice(&want.dst);
    put16(&mut expected, t.l4, want.sport);
    put16(&mut expected, t.l4 + 2, want.dport);
    let l4_check = t.l4 + if t.proto == TCP { 16 } else { 6 };
    let (ttl_in, ttl_out) = (input[22], out[22]);
    if ttl_out != ttl_in && ttl_out.wrapping_add(1) != ttl_in {
        return Err(format!("TTL {ttl_in} became {ttl_out}"));
    }
    for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
        let free = i == 22 || (24..26).contains(&i) || (l4_check..l4_check + 2).contains(&i);
        if !free && a != b {
            return Err(format!(
                "byte {i} is {a:#04x}, expected {b:#04x} (translation {want:?})"
            ));
        }
    }
    // Checksums: wrong by exactly as much as in the input, i.e. right where
    // the input's were.
    let (ip_in, l4_in) = residuals(input, t);
    let (ip_out, l4_out) = residuals(out, t);
    if ip_in != ip_out {
        return Err(format!(
            "IPv4 header checksum residual {ip_out:#06x}, input's {ip_in:#06x}"
        ));
    }
    if l4_in != l4_out {
        return Err(format!(
            "L4 checksum residual {l4_out:x?}, input's {l4_in:x?} (None: UDP without checksum)"
        ));
    }
    // An input that validated: the fixture's etherparse check as well, unless
    // it has bits that etherparse drops when it computes a checksum (the IPv4
    // reserved flag, the TCP reserved bits): it would disagree with itself.
    let unrepresentable =
        get16(input, 20) & 0x8000 != 0 || (t.proto == TCP && input[t.l4 + 12] & 0x0e != 0);
    if ip_in == 0xffff && l4_in.is_none_or(|r| r == 0xffff) && !unrepresentable {
        let seen = catch_unwind(AssertUnwindSafe(|| inspect(out))).map_err(|e| {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("inspect: {msg}")
        })?;
        let got = Xlate {
            src: seen.src,
            sport: seen.sport,
            dst: seen.dst,
            dport: seen.dport,
        };
        if got != want {
            return Err(format!("inspect saw {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generation

struct Generated {
    frame: Vec<u8>,
    ingress: u32,
    labels: Vec<&'static str>,
}

fn some_client(rng: &mut Rng) -> [u8; 4] {
    match rng.below(20) {
        0..=11 => rng.pick(&FRONT_CLIENTS),
        12..=13 => BACK_CLIENT,
        14 => NO_NEIGH_CLIENT,
        15 => NO_ROUTE_CLIENT,
        16..=17 => [198, 51, 100, rng.u8()],
        18 => [192, 0, 2, rng.u8()],
        _ => [203, 0, 113, rng.u8()],
    }
}

/// The interface a packet from `src` arrives on; now and then the other one.
fn ingress_for(net: &Net, rng: &mut Rng, src: [u8; 4]) -> u32 {
    let natural = if src[..3] == [203, 0, 113] {
        net.back
    } else {
        net.front
    };
    if rng.pct(10) {
        if natural == net.front {
            net.back
        } else {
            net.front
        }
    } else {
        natural
    }
}

fn vip_port(rng: &mut Rng) -> u16 {
    match rng.below(20) {
        0..=9 => 80,
        10..=13 => 53,
        14..=15 => 81,
        _ => rng.u16(),
    }
}

fn generate(rng: &mut Rng, model: &Model, net: &Net) -> Generated {
    let mut labels = Vec::new();
    let mut roll = rng.below(100);
    if model.flows.is_empty() && (32..58).contains(&roll) {
        roll = 0;
    }
    let mut v4 = match roll {
        0..=21 => {
            labels.push("gen:tcp-to-vip");
            let flags = any_flags(rng);
            let l4 = tcp(rng.u16(), vip_port(rng), flags, rng);
            V4::new(some_client(rng), VIP, l4)
        }
        22..=31 => {
            labels.push("gen:udp-to-vip");
            let dport = if rng.pct(75) { 53 } else { vip_port(rng) };
            V4::new(some_client(rng), VIP, udp(rng.u16(), dport, rng))
        }
        32..=43 => {
            labels.push("gen:flow-client");
            let k = rng.pick(&model.flows);
            let l4 = if k.proto == TCP {
                let flags = match rng.below(10) {
                    0..=1 => 0x10,
                    2..=3 => 0x18,
                    4 => 0x11,
                    5 => 0x04,
                    _ => rng.u8(),
                };
                tcp(k.cport, k.vport, flags, rng)
            } else {
                udp(k.cport, k.vport, rng)
            };
            V4::new(k.client, VIP, l4)
        }
        44..=57 => {
            labels.push("gen:flow-reply");
            let k = rng.pick(&model.flows);
            let (r, _) = model.fwd[&k];
            let l4 = if k.proto == TCP {
                let flags = match rng.below(10) {
                    0..=2 => 0x12,
                    3..=5 => 0x10,
                    6 => 0x11,
                    _ => rng.u8(),
                };
                tcp(r.bport, r.snat_port, flags, rng)
            } else {
                udp(r.bport, r.snat_port, rng)
            };
            V4::new(r.backend, SNAT, l4)
        }
        58..=62 => {
            labels.push("gen:snat-no-flow");
            let src = if rng.pct(70) {
                rng.pick(&BACKENDS)
            } else {
                some_client(rng)
            };
            let sport = rng.pick_or_any_u16(&[8080, 5353]);
            let dport = if rng.pct(80) {
                rng.between(SNAT_RANGE.0 as usize, SNAT_RANGE.1 as usize) as u16
            } else {
                rng.u16()
            };
            let l4 = if rng.pct(60) {
                let flags = any_flags(rng);
                tcp(sport, dport, flags, rng)
            } else {
                udp(sport, dport, rng)
            };
            V4::new(src, SNAT, l4)
        }
        63..=67 => {
            labels.push("gen:to-host");
            let dst = rng.pick(&[HOST_FRONT, HOST_BACK]);
            let dport = rng.pick_or_any_u16(&[22, 80, 53]);
            let l4 = match rng.below(3) {
                0 => {
                    let flags = any_flags(rng);
                    tcp(rng.u16(), dport, flags, rng)
                }
                1 => udp(rng.u16(), dport, rng),
                _ => L4::Raw {
                    proto: ICMP,
                    payload: [&[8u8, 0, 0, 0, 0, 1, 0, 1][..], &rng.bytes(16)].concat(),
                },
            };
            V4::new(some_client(rng), dst, l4)
        }
        68..=71 => {
            labels.push("gen:to-other-host");
            let host = rng.u8();
            let dst = match rng.below(4) {
                0 => [192, 0, 2, host],
                1 => [198, 51, 100, host],
                2 => [203, 0, 113, host],
                _ => rng.u64().to_be_bytes()[..4].try_into().unwrap(),
            };
            let l4 = if rng.pct(50) {
                let flags = any_flags(rng);
                tcp(rng.u16(), vip_port(rng), flags, rng)
            } else {
                udp(rng.u16(), vip_port(rng), rng)
            };
            V4::new(some_client(rng), dst, l4)
        }
        72..=74 => {
            labels.push("gen:other-ip-proto");
            let dst = rng.pick(&[VIP, SNAT]);
            let proto = rng.pick_or_any_u8(&[ICMP, 47, 50, 132, 2]);
            let n = rng.below(64);
            let l4 = L4::Raw {
                proto,
                payload: rng.bytes(n),
            };
            V4::new(some_client(rng), dst, l4)
        }
        75..=79 => {
            labels.push("gen:vlan");
            let l4 = if rng.pct(60) {
                tcp(rng.u16(), 80, 0x02, rng)
            } else {
                udp(rng.u16(), 53, rng)
            };
            let mut v = V4::new(some_client(rng), rng.pick(&[VIP, SNAT]), l4);
            let vid = rng.u16() & 0x0fff;
            v.tags = match rng.below(3) {
                0 => vec![(ETH_VLAN, vid)],
                1 => {
                    labels.push("qinq");
                    vec![(ETH_QINQ, rng.u16() & 0x0fff), (ETH_VLAN, vid)]
                }
                _ => {
                    labels.push("qinq");
                    vec![(ETH_VLAN, rng.u16()), (ETH_VLAN, vid)]
                }
            };
            v
        }
        80..=86 => {
            labels.push("gen:ipv6");
            let frame = ipv6_frame(rng, &mut labels);
            return finish(rng, frame, None, net.front, labels);
        }
        87..=88 => {
            labels.push("gen:arp");
            let mut f = Vec::new();
            f.extend_from_slice(&[0xff; 6]);
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&ETH_ARP.to_be_bytes());
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, rng.pick(&[1, 2])]);
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&CLIENT);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&rng.pick(&[VIP, SNAT, HOST_FRONT]));
            let ingress = rng.pick(&[net.front, net.back]);
            return finish(rng, f, None, ingress, labels);
        }
        89..=91 => {
            labels.push("gen:other-ethertype");
            let mut f = Vec::new();
            f.extend_from_slice(&FRONT_MAC);
            f.extend_from_slice(&CLIENT_MAC);
            let et = rng.pick_or_any_u16(&[0x88cc, 0x8847, 0x8863, 0x0801, 0x0008, 0x86dc]);
            f.extend_from_slice(&u16::to_be_bytes(et));
            // Often an IPv4 packet for the VIP behind the wrong ethertype.
            if rng.pct(50) {
                let (inner, _) = build_v4(&V4::new(CLIENT, VIP, tcp(1000, 80, 0x02, rng)));
                f.extend_from_slice(&inner[14..]);
            } else {
                let n = rng.below(100);
                f.extend(rng.bytes(n));
            }
            return finish(rng, f, None, net.front, labels);
        }
        92..=93 => {
            labels.push("gen:random-bytes");
            let n = rng.between(14, 200);
            let mut f = rng.bytes(n);
            if rng.pct(50) && n >= 34 {
                // An IPv4 ethertype and our destination, the rest random.
                put16(&mut f, 12, ETH_IPV4);
                f[30..34].copy_from_slice(&rng.pick(&[VIP, SNAT]));
            }
            let ingress = rng.pick(&[net.front, net.back]);
            return finish(rng, f, None, ingress, labels);
        }
        _ => {
            labels.push("gen:fragment");
            let dst = rng.pick(&[VIP, VIP, SNAT, HOST_FRONT]);
            let l4 = if rng.pct(50) {
                tcp(rng.u16(), vip_port(rng), 0x02, rng)
            } else {
                udp(rng.u16(), 53, rng)
            };
            let mut v = V4::new(some_client(rng), dst, l4);
            let offset = if rng.pct(40) {
                0
            } else {
                rng.between(1, 0x1fff) as u16
            };
            let mf = if offset == 0 || rng.pct(50) {
                0x2000
            } else {
                0
            };
            v.frag = mf | offset | if rng.pct(20) { 0x4000 } else { 0 };
            v
        }
    };
    // Features of any IPv4 frame.
    if rng.pct(12) {
        labels.push("ip-options");
        v4.options = ip_options(rng);
    }
    if let L4::Tcp { options, .. } = &mut v4.l4
        && rng.pct(20)
    {
        *options = tcp_options(rng);
        if !options.is_empty() {
            labels.push("tcp-options");
        }
    }
    if rng.pct(30) {
        v4.frag &= !0x4000;
    }
    if rng.pct(3) {
        labels.push("ttl-0-or-1");
        v4.ttl = rng.pick(&[0, 1]);
    } else if rng.pct(20) {
        v4.ttl = rng.u8();
    }
    v4.tos = if rng.pct(20) { rng.u8() } else { 0 };
    v4.id = rng.u16();
    // Ethernet addresses as a real sender would write them.
    let ingress = ingress_for(net, rng, v4.src);
    v4.eth_src = host_mac(v4.src);
    v4.eth_dst = if ingress == net.front {
        FRONT_MAC
    } else {
        BACK_MAC
    };
    let (frame, layout) = build_v4(&v4);
    finish(rng, frame, Some(layout), ingress, labels)
}

/// Mutations: a third of the frames get one to three.
fn finish(
    rng: &mut Rng,
    mut f: Vec<u8>,
    layout: Option<Layout>,
    ingress: u32,
    mut labels: Vec<&'static str>,
) -> Generated {
    if !rng.pct(33) {
        return Generated {
            frame: f,
            ingress,
            labels,
        };
    }
    let mut corrupted_checksum = false;
    for _ in 0..rng.between(1, 3) {
        let l3 = layout.map(|l| l.l3);
        let hl = l3.map(|l3| (f.get(l3).copied().unwrap_or(0x45) & 0x0f) as usize * 4);
        let l4 = l3.zip(hl).map(|(l3, hl)| l3 + hl.max(20));
        let proto = l3.and_then(|l3| f.get(l3 + 9).copied());
        match rng.below(13) {
            0 | 1 if f.len() > 14 => {
                labels.push("mut:truncate");
                let n = rng.between(14, f.len() - 1);
                f.truncate(n);
            }
            2 => {
                labels.push("mut:pad");
                let n = rng.between(1, 64);
                f.extend(rng.bytes(n));
            }
            3 | 4 => {
                labels.push("mut:flip-header-byte");
                let span = f.len().min(l4.map_or(64, |l4| l4 + 20));
                let at = rng.below(span);
                f[at] ^= if rng.pct(50) {
                    1 << rng.below(8)
                } else {
                    rng.between(1, 255) as u8
                };
            }
            5 if l3.is_some_and(|l3| f.len() >= l3 + 4) => {
                labels.push("mut:ip-total-length");
                let l3 = l3.unwrap();
                let old = get16(&f, l3 + 2);
                let new = match rng.below(4) {
                    0 => rng.u16(),
                    1 => old.wrapping_add(rng.between(1, 8) as u16),
                    2 => old.wrapping_sub(rng.between(1, 8) as u16),
                    _ => rng.below(40) as u16,
                };
                put16(&mut f, l3 + 2, new);
            }
            6 if l3.is_some_and(|l3| f.len() > l3) => {
                labels.push("mut:ihl");
                let l3 = l3.unwrap();
                let ihl = if rng.pct(60) {
                    rng.below(5)
                } else {
                    rng.below(16)
                };
                f[l3] = (f[l3] & 0xf0) | ihl as u8;
            }
            7 if l3.is_some_and(|l3| f.len() > l3) => {
                labels.push("mut:ip-version");
                let l3 = l3.unwrap();
                f[l3] = (f[l3] & 0x0f) | (rng.pick_or_any_u8(&[0, 6, 5, 15]) << 4);
            }
            8 if proto == Some(TCP) && l4.is_some_and(|l4| f.len() > l4 + 12) => {
                labels.push("mut:tcp-data-offset");
                let at = l4.unwrap() + 12;
                let doff = if rng.pct(50) {
                    rng.below(5)
                } else {
                    rng.between(5, 15)
                };
                f[at] = (f[at] & 0x0f) | (doff as u8) << 4;
            }
            9 if proto == Some(UDP) && l4.is_some_and(|l4| f.len() >= l4 + 6) => {
                labels.push("mut:udp-length");
                let at = l4.unwrap() + 4;
                let old = get16(&f, at);
                let new = match rng.below(4) {
                    0 => rng.u16(),
                    1 => old.wrapping_add(rng.between(1, 8) as u16),
                    2 => old.wrapping_sub(rng.between(1, 8) as u16),
                    _ => rng.below(8) as u16,
                };
                put16(&mut f, at, new);
            }
            10 if l3.is_some_and(|l3| f.len() >= l3 + 12) => {
                labels.push("mut:bad-checksum");
                corrupted_checksum = true;
                // The IPv4 header's or the L4 one, when the frame holds it.
                let at = match (proto, l4) {
                    (Some(TCP), Some(l4)) if rng.pct(60) && f.len() >= l4 + 18 => l4 + 16,
                    (Some(UDP), Some(l4)) if rng.pct(60) && f.len() >= l4 + 8 => l4 + 6,
                    _ => l3.unwrap() + 10,
                };
                let delta = rng.between(1, 0xfffe) as u16;
                let old = get16(&f, at);
                put16(&mut f, at, old ^ delta);
            }
            11 if l3.is_some_and(|l3| f.len() >= l3 + 10) => {
                labels.push("mut:ip-protocol");
                let l3 = l3.unwrap();
                f[l3 + 9] = rng.pick_or_any_u8(&[TCP, UDP, ICMP, 0]);
            }
            12 if l3.is_some_and(|l3| f.len() >= l3 + 8) => {
                labels.push("mut:fragment-bits");
                let l3 = l3.unwrap();
                let v = rng.pick_or_any_u16(&[0x2000, 0x0001, 0x1fff, 0x8000]);
                put16(&mut f, l3 + 6, v);
            }
            _ => {
                labels.push("mut:truncate");
                let n = rng.between(14, f.len().max(15) - 1).min(f.len());
                f.truncate(n);
            }
        }
    }
    // Half of the mutated IPv4 frames get consistent checksums again, so that
    // odd but checksum-valid frames reach the strict output checks too.
    if let Some(l) = layout
        && !corrupted_checksum
        && rng.pct(50)
    {
        labels.push("mut:checksums-repaired");
        repair_checksums(&mut f, l.l3);
    }
    Generated {
        frame: f,
        ingress,
        labels,
    }
}

// ---------------------------------------------------------------------------
// The test

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    PassUnchanged,
    PassTranslated,
    Drop,
    Tx,
    Redirect,
    Other,
}

const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::PassUnchanged, "pass="),
    (Outcome::PassTranslated, "pass~"),
    (Outcome::Drop, "drop"),
    (Outcome::Tx, "tx"),
    (Outcome::Redirect, "redirect"),
    (Outcome::Other, "ABORTED/other"),
];

fn outcome(action: u32, input: &[u8], out: &[u8]) -> Outcome {
    match action {
        XDP_PASS if out == input => Outcome::PassUnchanged,
        XDP_PASS => Outcome::PassTranslated,
        XDP_DROP => Outcome::Drop,
        XDP_TX => Outcome::Tx,
        XDP_REDIRECT => Outcome::Redirect,
        _ => Outcome::Other,
    }
}

struct Failure {
    index: u64,
    labels: Vec<&'static str>,
    ingress: u32,
    what: String,
    action: u32,
    input: Vec<u8>,
    output: Vec<u8>,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// Judges one frame; the flow it creates (if any) goes into the model.
fn judge(fx: &Fixture, net: &Net, model: &mut Model, run: &Run) -> Result<&'static str, String> {
    let Run {
        frame,
        ingress,
        action,
        out,
    } = *run;
    if !matches!(action, XDP_PASS | XDP_DROP | XDP_TX | XDP_REDIRECT) {
        return Err(format!("action {action} (XDP_ABORTED is {XDP_ABORTED})"));
    }
    let class = classify(frame);
    match model.expect(&class) {
        Expect::Pass(why) => {
            if action != XDP_PASS || out != frame {
                return Err(format!("{why}: expected to pass unchanged"));
            }
            Ok(why)
        }
        Expect::Drop(why) => {
            if action != XDP_DROP {
                return Err(format!("{why}: expected a drop"));
            }
            Ok(why)
        }
        Expect::PassOrRelay => {
            if action == XDP_PASS && out == frame {
                return Ok("ICMP error, passed");
            }
            if action == XDP_DROP {
                return Err("ICMP error: dropped".into());
            }
            // Translated: same length, the outer IPv4 header checksum valid, and
            // the ICMP checksum as valid as it came.
            let ip_len = get16(frame, 14 + 2) as usize;
            let hl = (frame[14] & 0x0f) as usize * 4;
            let ok_ip = |f: &[u8]| csum::checksum(0, &f[14..14 + hl]) == 0;
            let ok_icmp = |f: &[u8]| csum::checksum(0, &f[14 + hl..14 + ip_len]) == 0;
            if out.len() != frame.len() || !ok_ip(out) || ok_icmp(out) != ok_icmp(frame) {
                return Err("ICMP error: translated with broken checksums".into());
            }
            Ok("ICMP error, relayed")
        }
        Expect::Xlate(want, learned) => {
            let Class::L4(t) = class else { unreachable!() };
            model.saw(&t);
            check_xlate(net, run, &t, want, learned).map_err(|e| format!("existing flow: {e}"))?;
            Ok("existing flow")
        }
        Expect::NewFlow(svc) => {
            let Class::L4(t) = class else { unreachable!() };
            if action == XDP_DROP {
                // Only where the service's backends' ports are nearly all taken.
                let s = &SERVICES[svc];
                let span = (SNAT_RANGE.1 - SNAT_RANGE.0) as f64 + 1.0;
                let fullest = s
                    .backends
                    .iter()
                    .map(|(a, p)| {
                        model
                            .ports_used
                            .get(&(*a, *p, s.proto))
                            .copied()
                            .unwrap_or(0)
                    })
                    .max()
                    .unwrap_or(0);
                let counter = fx.dp.counter(Counter::DropSnatExhausted).unwrap();
                let counted = counter > model.exhausted_counter;
                model.exhausted_counter = counter;
                if counted && fullest as f64 >= SNAT_FULL_ENOUGH * span {
                    model.refused += 1;
                    return Ok("new flow refused, SNAT ports nearly all taken");
                }
                return Err(format!(
                    "new flow of port {} refused (SNAT exhausted counted: {counted}) with {fullest} of {span} ports taken",
                    s.port
                ));
            }
            if action == XDP_PASS && out == frame {
                return Err(format!(
                    "new flow of port {} expected, got action {action} with the frame unchanged",
                    SERVICES[svc].port
                ));
            }
            let got = xlate_of(out, &t).ok_or("output too short")?;
            // Recorded even if wrong, so that one bad flow does not make all of
            // its later packets fail too.
            let path = Path {
                ingress,
                eth_src: frame[6..12].try_into().unwrap(),
                eth_dst: frame[0..6].try_into().unwrap(),
            };
            let recorded = model.new_flow(&t, svc, got, path);
            check_xlate(net, run, &t, got, None)
                .and(recorded)
                .map_err(|e| format!("new flow: {e}"))?;
            Ok("new flow")
        }
    }
}

#[test]
fn randomized_frames_pass_unchanged_drop_or_forward_valid_packets() {
    // Without the SYN proxy: a flood of SYNs that never complete would turn
    // auto mode on (the proxy's paths have a test of their own below).
    let config = config()
        .snat_port_range(SNAT_RANGE.0, SNAT_RANGE.1)
        .firewall(Firewall::default().syn_cookies(SynCookies::Off));
    let seed = env_u64("ROBUSTNESS_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_u64("ROBUSTNESS_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let Some(fx) = Fixture::with_config(&config, flow_table(frames)) else {
        return;
    };
    for c in &FRONT_CLIENTS[1..] {
        sh(&format!(
            "ip neigh add {}.{}.{}.{} lladdr {} dev front nud permanent",
            c[0],
            c[1],
            c[2],
            c[3],
            mac(front_client_mac(*c))
        ));
    }
    sh(&format!(
        "ip neigh add 203.0.113.50 lladdr {} dev back nud permanent",
        mac(BACK_CLIENT_MAC)
    ));
    let net = Net {
        front: fx.front,
        back: fx.back,
    };

    eprintln!(
        "robustness: seed {seed:#x} (ROBUSTNESS_SEED overrides), {frames} frames (ROBUSTNESS_FRAMES)"
    );
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut by_label: BTreeMap<&'static str, [u64; 6]> = BTreeMap::new();
    let mut by_expectation: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut totals = [0u64; 6];
    let mut failures: Vec<Failure> = Vec::new();
    let mut failed = 0u64;
    let start = Instant::now();

    for index in 0..frames {
        if index % 4096 == 0 {
            assert!(
                start.elapsed() < TIME_LIMIT,
                "still running after {TIME_LIMIT:?} at frame {index}"
            );
        }
        let g = generate(&mut rng, &model, &net);
        let (action, out) = fx.run(&g.frame, g.ingress);
        let o = outcome(action, &g.frame, &out);
        let col = OUTCOMES.iter().position(|(x, _)| *x == o).unwrap();
        totals[col] += 1;
        for l in &g.labels {
            by_label.entry(l).or_default()[col] += 1;
        }
        let run = Run {
            frame: &g.frame,
            ingress: g.ingress,
            action,
            out: &out,
        };
        match judge(&fx, &net, &mut model, &run) {
            Ok(why) => *by_expectation.entry(why).or_default() += 1,
            Err(what) => {
                failed += 1;
                if failures.len() < 20 {
                    failures.push(Failure {
                        index,
                        labels: g.labels,
                        ingress: g.ingress,
                        what,
                        action,
                        input: g.frame,
                        output: out,
                    });
                }
            }
        }
    }
    let elapsed = start.elapsed();

    // What the run exercised.
    let mut table = String::new();
    let _ = write!(table, "{:<26}{:>8}", "frames with", "total");
    for (_, name) in OUTCOMES {
        let _ = write!(table, "{name:>15}");
    }
    table.push('\n');
    for (label, counts) in by_label.iter().chain([(&"ALL", &totals)]) {
        let _ = write!(table, "{label:<26}{:>8}", counts.iter().sum::<u64>());
        for c in counts {
            let _ = write!(table, "{c:>15}");
        }
        table.push('\n');
    }
    eprintln!("{table}");
    eprintln!("expected outcomes met: {by_expectation:?}");
    let counters = fx.dp.counters().unwrap();
    eprintln!("program counters: {counters:?}");
    eprintln!(
        "{frames} frames in {elapsed:.1?}, {} flows created, {failed} failures",
        model.flows.len()
    );
    for f in &failures {
        eprintln!(
            "FAILURE frame #{} {:?} ingress {}: {}\n  action {}\n  in  {}\n  out {}",
            f.index,
            f.labels,
            if f.ingress == fx.front {
                "front"
            } else {
                "back"
            },
            f.what,
            f.action,
            hex(&f.input),
            hex(&f.output)
        );
    }
    assert_eq!(failed, 0, "{failed} frames mishandled (first ones above)");

    // The run cannot pass vacuously.
    for (col, (_, name)) in OUTCOMES.iter().enumerate().take(5) {
        assert!(totals[col] > 0, "no frame had outcome {name}");
    }
    let forwarded = |l: &str| by_label.get(l).map_or(0, |c| c[3] + c[4]);
    let dropped = |l: &str| by_label.get(l).map_or(0, |c| c[2]);
    for l in [
        "gen:tcp-to-vip",
        "gen:udp-to-vip",
        "gen:flow-client",
        "gen:flow-reply",
        "ip-options",
        "tcp-options",
        "mut:pad",
        "mut:bad-checksum",
        "mut:checksums-repaired",
    ] {
        assert!(forwarded(l) > 0, "no {l} frame was forwarded");
    }
    for l in [
        "mut:truncate",
        "mut:ip-total-length",
        "mut:ihl",
        "mut:ip-version",
        "mut:tcp-data-offset",
        "mut:udp-length",
        "mut:checksums-repaired",
    ] {
        assert!(dropped(l) > 0, "no {l} frame was dropped");
    }
    for l in [
        "gen:snat-no-flow",
        "gen:to-host",
        "gen:to-other-host",
        "gen:other-ip-proto",
        "gen:vlan",
        "qinq",
        "gen:ipv6",
        "ipv6-ext-chain",
        "gen:arp",
        "gen:other-ethertype",
        "gen:random-bytes",
        "gen:fragment",
        "ttl-0-or-1",
        "mut:flip-header-byte",
        "mut:ip-protocol",
        "mut:fragment-bits",
    ] {
        assert!(by_label.contains_key(l), "no {l} frame was generated");
    }
    for why in [
        "not for us",
        "malformed",
        "fragment",
        "other protocol",
        "VIP, no service",
        "no flow",
        "SNAT address, no flow",
        "existing flow",
        "new flow",
    ] {
        assert!(
            by_expectation.contains_key(why),
            "no frame was a case of {why}"
        );
    }
    for c in [
        Counter::DropMalformed,
        Counter::PassFragment,
        Counter::PassNoFlow,
        Counter::PassNoNeighbour,
        Counter::ForwardTx,
        Counter::ForwardRedirect,
    ] {
        assert!(counters[c.name()] > 0, "counter {} stayed 0", c.name());
    }
    assert_eq!(counters[Counter::DropSnatExhausted.name()], model.refused);
    assert_eq!(counters[Counter::DropFlowTableFull.name()], 0);
    assert_eq!(counters[Counter::NewFlow.name()], model.flows.len() as u64);
    // Random flags in both directions neither leak nor double-release a
    // backend's active count (service ids follow the configuration's order).
    let want = model.active();
    let got: BTreeMap<u32, u64> = want
        .keys()
        .map(|&i| (i, fx.dp.active_conns(BackendIndex(i)).unwrap()))
        .collect();
    eprintln!(
        "active connections per backend slot: {got:?}, {} TCP flows ended",
        model.ended.len()
    );
    assert_eq!(got, want, "active connections per backend slot");
}

/// Found by the randomized test's generator when its payloads went past the
/// MTU: a packet larger than the egress MTU must go to the stack (which
/// answers with ICMP "fragmentation needed" or fragments it), as the FIB
/// lookup says for a new flow's first packet, also when the flow's next hop is
/// cached; redirected, a veth (or NIC) would drop it silently. Matters where
/// the ingress MTU is larger than the egress one (jumbo frames on the client
/// side).
#[test]
fn oversized_packet_of_an_established_flow_is_not_redirected() {
    let Some(fx) = Fixture::new() else { return };
    let big = vec![0x55; 1600]; // IP total length 1640 > MTU 1500
    // A new flow's first packet of that size: the FIB says "fragmentation
    // needed" and the translated packet goes to the stack.
    let (action, out) = fx.run(&tcp_frame(CLIENT, VIP, 51001, 80, "S", &big), fx.front);
    assert_eq!(action, XDP_PASS, "oversized first packet");
    inspect(&out);
    assert_eq!(fx.dp.counter(Counter::PassFibOther).unwrap(), 1);
    // An established flow: a small SYN, then a data segment of the same size.
    let (action, _) = fx.run(&tcp_frame(CLIENT, VIP, 51000, 80, "S", b""), fx.front);
    assert_eq!(action, XDP_REDIRECT, "small SYN");
    let data = tcp_frame(CLIENT, VIP, 51000, 80, "A", &big);
    let (action, out) = fx.run(&data, fx.front);
    inspect(&out);
    assert_eq!(
        action,
        XDP_PASS,
        "a {}-byte IP packet for a 1500-byte MTU egress is redirected when its flow has a cached next hop",
        data.len() - 14
    );
}

// ---------------------------------------------------------------------------
// The SYN proxy's paths, randomized: with `syn_cookies = "always"`, SYNs with
// random (and broken) options, ACKs with valid, altered and random cookies,
// backends' SYN-ACKs with random options and their resets, data both ways
// with random SACK blocks, windows and payloads, early data, the backend's
// SYN-ACK sent again, in both families, and truncated copies of all of them:
// each frame judged against a model of the proxy.

/// What the program's option walk (`tcpopt`) finds in option bytes.
#[derive(Debug, Clone, Copy, Default)]
struct WalkedOpts {
    mss: u32,
    /// 15: none.
    wscale: u32,
    sack_perm: bool,
    /// The last complete SACK option: (offset in the options, length).
    sack: Option<(usize, usize)>,
}

fn walk_opts(b: &[u8]) -> WalkedOpts {
    let mut o = WalkedOpts {
        wscale: 15,
        ..WalkedOpts::default()
    };
    let len = b.len();
    let mut off = 0;
    for _ in 0..40 {
        if off >= len || b[off] == 0 {
            break;
        }
        if b[off] == 1 {
            off += 1;
            continue;
        }
        if off + 1 >= len {
            break;
        }
        let size = b[off + 1] as usize;
        if size < 2 || off + size > len {
            break;
        }
        match (b[off], size) {
            (2, 4) => o.mss = u32::from(u16::from_be_bytes([b[off + 2], b[off + 3]])),
            (3, 3) => o.wscale = u32::from(b[off + 2]),
            (4, 2) => o.sack_perm = true,
            (5, _) if size >= 10 && (size - 2).is_multiple_of(8) => o.sack = Some((off, size)),
            _ => {}
        }
        off += size;
    }
    o
}

/// Random options for a SYN or SYN-ACK: the usual ones in random order and
/// values, sometimes missing, repeated, malformed or after an end of list.
fn random_syn_opts(rng: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    for _ in 0..rng.between(0, 6) {
        let item: Vec<u8> = match rng.below(9) {
            0 | 1 => {
                let mss = rng.pick_or_any_u16(&[536, 1220, 1300, 1400, 1440, 1460, 8960]);
                let [a, b] = mss.to_be_bytes();
                vec![2, 4, a, b]
            }
            2 | 3 => vec![3, 3, rng.pick_or_any_u8(&[0, 1, 7, 9, 10, 14, 15, 16])],
            4 => vec![4, 2],
            5 => {
                let mut t = vec![8, 10];
                t.extend(rng.bytes(8));
                t
            }
            6 => vec![1],
            7 => {
                // An unknown option, or a known one of the wrong size.
                let kind = rng.pick_or_any_u8(&[2, 3, 4, 30]);
                let size = rng.between(2, 6);
                let mut t = vec![kind, size as u8];
                t.extend(rng.bytes(size - 2));
                t
            }
            _ => {
                if rng.pct(30) {
                    vec![0]
                } else {
                    vec![rng.u8(), rng.u8()]
                }
            }
        };
        if o.len() + item.len() <= 40 {
            o.extend(item);
        }
    }
    while !o.len().is_multiple_of(4) {
        o.push(1);
    }
    o
}

/// SACK blocks (edges near `base`) at an even or odd offset, with other
/// options around them, for a client's segment.
fn random_sack_opts(rng: &mut Rng, base: u32) -> Vec<u8> {
    let mut o = vec![1; rng.below(3)];
    let blocks = rng.between(1, 4);
    if o.len() + 2 + 8 * blocks <= 40 {
        o.extend([5, (2 + 8 * blocks) as u8]);
        for _ in 0..blocks * 2 {
            let edge = base.wrapping_add(rng.u64() as u32 % 100_000);
            o.extend(edge.to_be_bytes());
        }
    }
    if rng.pct(20) && o.len() + 10 <= 40 {
        o.extend([8, 10]);
        o.extend(rng.bytes(8));
    }
    while !o.len().is_multiple_of(4) {
        o.push(1);
    }
    o
}

#[derive(Debug, Clone, Copy)]
struct ProxyClient {
    v6: bool,
    addr: IpAddr,
    sport: u16,
    isn: u32,
}

/// A proxied flow the model follows.
#[derive(Debug, Clone)]
struct ProxyFlow {
    c: ProxyClient,
    cookie: u32,
    data: CookieData,
    /// The ACK's window, which the ACK to the backend carries.
    window: u16,
    /// The SYN as the backend got it: its source (SNAT address and port)
    /// and destination (the backend).
    syn: Tcp,
    /// The backend's ISN and window scale (`None` before its SYN-ACK).
    backend: Option<(u32, u8)>,
    /// The ISN of the SYN sent again past the backend's TIME_WAIT, if it was.
    isn2: Option<u32>,
}

impl ProxyFlow {
    fn delta(&self) -> u32 {
        self.backend.unwrap().0.wrapping_sub(self.cookie)
    }

    /// The ISN the backend knows the client by.
    fn isn_b(&self) -> u32 {
        self.isn2.unwrap_or(self.c.isn)
    }

    /// What the client's sequence numbers take on the way to the backend.
    fn isn_delta(&self) -> u32 {
        self.isn_b().wrapping_sub(self.c.isn)
    }
}

/// `opts` with every SACK edge moved by `by`.
fn shift_sack_edges(opts: &[u8], by: u32) -> Vec<u8> {
    let mut want = opts.to_vec();
    if let Some((at, size)) = walk_opts(opts).sack {
        for e in (at + 2..at + size).step_by(4) {
            let edge = u32::from_be_bytes(want[e..e + 4].try_into().unwrap());
            want[e..e + 4].copy_from_slice(&edge.wrapping_add(by).to_be_bytes());
        }
    }
    want
}

/// Judges what the program did with a frame: (action, frame out) -> what
/// it changes in the model, or what was wrong.
type Judge = Box<dyn FnMut(u32, &[u8]) -> Result<Effect, String>>;

/// What a frame the program handled as the model expected changes in it.
enum Effect {
    None,
    Issued(ProxyClient, u32, CookieData),
    Opened(Box<ProxyFlow>),
    /// The backend of flow `i` answered with its ISN and window scale, and
    /// announced an MSS (which clients of its family are told from then on).
    Answered(usize, u32, u8, u32),
    /// The SYN of flow `i` went again with this ISN (a TIME_WAIT's ACK).
    Resent(usize, u32),
    Closed(usize),
}

fn vip_of(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(VIP6)
    } else {
        IpAddr::from(VIP)
    }
}

#[test]
fn randomized_frames_through_the_syn_proxy() {
    let config = config_with_ipv6()
        .snat_port_range(SNAT_RANGE.0, SNAT_RANGE.1)
        .firewall(Firewall::default().syn_cookies(SynCookies::Always));
    let seed = env_u64("ROBUSTNESS_SEED").unwrap_or(DEFAULT_SEED) ^ 0x5ec0_0c1e;
    let frames = env_u64("ROBUSTNESS_PROXY_FRAMES").unwrap_or(40_000);
    let Some(fx) = Fixture::with_config(&config, 1 << 18) else {
        return;
    };
    eprintln!(
        "syn proxy robustness: seed {seed:#x} (ROBUSTNESS_SEED overrides), {frames} frames (ROBUSTNESS_PROXY_FRAMES)"
    );
    let mut rng = Rng::new(seed);
    let mut issued: Vec<(ProxyClient, u32, CookieData)> = Vec::new();
    let mut flows: Vec<ProxyFlow> = Vec::new();
    let mut announced = [1460u16, 1440u16];
    let mut next_port = 1024u16;
    let mut seen_cases: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut want = BTreeMap::<&'static str, u64>::new();
    let start = Instant::now();
    let backends4: Vec<IpAddr> = BACKENDS.iter().map(|b| IpAddr::from(*b)).collect();
    for index in 0..frames {
        if index % 4096 == 0 {
            assert!(
                start.elapsed() < TIME_LIMIT,
                "still running at frame {index}"
            );
        }
        let v6 = rng.pct(25);
        let fresh = |rng: &mut Rng, next_port: &mut u16| {
            *next_port = if *next_port >= 65000 {
                1024
            } else {
                *next_port + 1
            };
            let addr = if v6 {
                IpAddr::from(CLIENT6)
            } else {
                IpAddr::from(rng.pick(&FRONT_CLIENTS))
            };
            ProxyClient {
                v6,
                addr,
                sport: *next_port,
                isn: rng.u64() as u32,
            }
        };
        let pending: Vec<usize> = (0..flows.len())
            .filter(|&i| flows[i].backend.is_none())
            .collect();
        let established: Vec<usize> = (0..flows.len())
            .filter(|&i| flows[i].backend.is_some())
            .collect();
        // The case, its frame and ingress, and how to judge the outcome.
        let case = rng.below(100);
        let (name, frame, ingress): (&'static str, Vec<u8>, u32);
        let mut check: Judge;
        if case < 25 || issued.is_empty() && pending.is_empty() && established.is_empty() {
            // A SYN: a SYN-ACK with a cookie, no state.
            let c = fresh(&mut rng, &mut next_port);
            let opts = random_syn_opts(&mut rng);
            let w = walk_opts(&opts);
            let data = CookieData::of_syn(w.mss as u16, w.wscale as u8, w.sack_perm, v6);
            let syn = Tcp::new(c.addr, vip_of(v6), c.sport, 80, SYN)
                .seq(c.isn, 0)
                .window(rng.u16())
                .opts(&opts)
                .payload(&rng.bytes_of(&[0, 0, 0, 10]));
            name = "syn";
            frame = syn.client_frame();
            ingress = fx.front;
            let mss = announced[usize::from(v6)];
            check = Box::new(move |action, out| {
                if action != XDP_TX {
                    return Err(format!("SYN: action {action}, not TX"));
                }
                let (t, _, dst) = seen(out);
                let want_opts = proxy_opts(mss, (data.wscale != 15).then_some(7), data.sack);
                if (t.src, t.dst, t.sport, t.dport) != (vip_of(c.v6), c.addr, 80, c.sport)
                    || t.flags != SYN | ACK
                    || t.ack != c.isn.wrapping_add(1)
                    || t.opts != want_opts
                    || !t.payload.is_empty()
                    || dst != CLIENT_MAC
                {
                    return Err(format!("SYN-ACK {t:?}, options wanted {want_opts:?}"));
                }
                Ok(Effect::Issued(c, t.seq, data))
            });
        } else if case < 40 && !issued.is_empty() {
            // The ACK of a cookie: the SYN to a backend. (A cookie is used
            // once by the model, whether its ACK went whole or cut short.)
            let (c, cookie, data) = issued.swap_remove(rng.below(issued.len()));
            let window = rng.u16();
            let ack = Tcp::new(c.addr, vip_of(c.v6), c.sport, 80, ACK)
                .seq(c.isn.wrapping_add(1), cookie.wrapping_add(1))
                .window(window)
                .payload(&rng.bytes_of(&[0, 0, 1, 100]));
            name = "valid cookie";
            frame = ack.client_frame();
            ingress = fx.front;
            let backends = if c.v6 {
                vec![IpAddr::from(BACKENDS6[0])]
            } else {
                backends4.clone()
            };
            let snat = if c.v6 {
                IpAddr::from(SNAT6)
            } else {
                IpAddr::from(SNAT)
            };
            check = Box::new(move |action, out| {
                if action != XDP_REDIRECT {
                    return Err(format!("valid cookie's ACK: action {action}"));
                }
                let (t, _, _) = seen(out);
                let want_opts = proxy_opts(
                    data.mss(c.v6),
                    (data.wscale != 15).then_some(data.wscale),
                    data.sack,
                );
                if t.src != snat
                    || !backends.contains(&t.dst)
                    || t.dport != 8080
                    || !(SNAT_RANGE.0..=SNAT_RANGE.1).contains(&t.sport)
                    || t.flags != SYN
                    || t.seq != c.isn
                    || t.window != window
                    || t.opts != want_opts
                    || !t.payload.is_empty()
                {
                    return Err(format!("SYN {t:?}, options wanted {want_opts:?}"));
                }
                Ok(Effect::Opened(Box::new(ProxyFlow {
                    c,
                    cookie,
                    data,
                    window,
                    syn: t,
                    backend: None,
                    isn2: None,
                })))
            });
        } else if case < 48 {
            // An ACK whose cookie is not ours: altered, or random.
            let c = fresh(&mut rng, &mut next_port);
            let bad = match issued.last() {
                Some((_, cookie, _)) if rng.pct(50) => {
                    cookie.wrapping_add(1 + (rng.u64() as u32 % 1000))
                }
                _ => rng.u64() as u32,
            };
            let ack = Tcp::new(c.addr, vip_of(c.v6), c.sport, 80, ACK)
                .seq(c.isn.wrapping_add(1), bad.wrapping_add(1))
                .payload(&rng.bytes_of(&[0, 20]));
            name = "bad cookie";
            frame = ack.client_frame();
            ingress = fx.front;
            check = Box::new(|action, _| {
                (action == XDP_DROP)
                    .then_some(Effect::None)
                    .ok_or(format!("a bad cookie: action {action}"))
            });
        } else if case < 60 && !pending.is_empty() {
            let i = rng.pick(&pending);
            let f = flows[i].clone();
            let from_backend =
                |flags| Tcp::new(f.syn.dst, f.syn.src, f.syn.dport, f.syn.sport, flags);
            if rng.pct(12) {
                // The backend refuses: the client gets the reset.
                name = "backend reset";
                frame = from_backend(RST | ACK)
                    .seq(0, f.c.isn.wrapping_add(1))
                    .backend_frame();
                ingress = fx.back;
                check = Box::new(move |action, out| {
                    if action != XDP_REDIRECT {
                        return Err(format!("backend reset: action {action}"));
                    }
                    let (t, _, _) = seen(out);
                    if (t.src, t.dst, t.sport, t.dport) != (vip_of(f.c.v6), f.c.addr, 80, f.c.sport)
                        || t.flags & RST == 0
                        || t.seq != f.cookie.wrapping_add(1)
                    {
                        return Err(format!("reset to the client {t:?}"));
                    }
                    Ok(Effect::Closed(i))
                });
            } else if rng.pct(15) {
                // Early data: dropped; or, once the flow is old enough (the
                // model does not know the program's clock), the client's first
                // segment again is the SYN again, unless it went past a
                // TIME_WAIT already.
                name = "early data";
                let seg = Tcp::new(f.c.addr, vip_of(f.c.v6), f.c.sport, 80, ACK | PSH)
                    .seq(f.c.isn.wrapping_add(1), f.cookie.wrapping_add(1))
                    .window(rng.u16())
                    .payload(&{
                        let n = rng.between(1, 200);
                        rng.bytes(n)
                    });
                frame = seg.client_frame();
                ingress = fx.front;
                check = Box::new(move |action, out| {
                    if action == XDP_DROP {
                        return Ok(Effect::None);
                    }
                    if action != XDP_REDIRECT || f.isn2.is_some() {
                        return Err(format!("early data: action {action}"));
                    }
                    let (t, _, _) = seen(out);
                    if (t.src, t.dst, t.sport, t.dport)
                        != (f.syn.src, f.syn.dst, f.syn.sport, f.syn.dport)
                        || t.flags != SYN
                        || t.seq != f.c.isn
                        || t.window != seg.window
                        || t.opts != f.syn.opts
                        || !t.payload.is_empty()
                    {
                        return Err(format!("the SYN again {t:?}"));
                    }
                    Ok(Effect::None)
                });
            } else if rng.pct(12) {
                // A bare ACK from the backend: a TIME_WAIT of the tuple's last
                // connection. The SYN goes again past what it expects, once.
                let tw_next = rng.u64() as u32;
                frame = from_backend(ACK)
                    .seq(rng.u64() as u32, tw_next)
                    .backend_frame();
                ingress = fx.back;
                if f.isn2.is_some() {
                    name = "backend ack again";
                    check = Box::new(|action, _| {
                        (action == XDP_DROP)
                            .then_some(Effect::None)
                            .ok_or(format!("a second TIME_WAIT ACK: action {action}"))
                    });
                } else {
                    name = "backend time-wait";
                    let isn2 = tw_next.wrapping_add(1 << 16);
                    check = Box::new(move |action, out| {
                        if action != XDP_TX {
                            return Err(format!("TIME_WAIT ACK: action {action}"));
                        }
                        let (t, _, _) = seen(out);
                        if (t.src, t.dst, t.sport, t.dport)
                            != (f.syn.src, f.syn.dst, f.syn.sport, f.syn.dport)
                            || t.flags != SYN
                            || t.seq != isn2
                            || t.window != f.window
                            || t.opts != f.syn.opts
                            || !t.payload.is_empty()
                        {
                            return Err(format!("the SYN past the TIME_WAIT {t:?}"));
                        }
                        Ok(Effect::Resent(i, isn2))
                    });
                }
            } else {
                // The backend's SYN-ACK: an ACK back to it.
                let opts = random_syn_opts(&mut rng);
                let w = walk_opts(&opts);
                let bisn = rng.u64() as u32;
                name = "backend syn-ack";
                frame = from_backend(SYN | ACK)
                    .seq(bisn, f.isn_b().wrapping_add(1))
                    .opts(&opts)
                    .backend_frame();
                ingress = fx.back;
                let ws = if w.wscale == 15 {
                    0
                } else {
                    w.wscale.min(14) as u8
                };
                check = Box::new(move |action, out| {
                    if action != XDP_TX {
                        return Err(format!("backend SYN-ACK: action {action}"));
                    }
                    let (t, _, _) = seen(out);
                    if (t.src, t.dst, t.sport, t.dport)
                        != (f.syn.src, f.syn.dst, f.syn.sport, f.syn.dport)
                        || t.flags != ACK
                        || t.seq != f.isn_b().wrapping_add(1)
                        || t.ack != bisn.wrapping_add(1)
                        || t.window != f.window
                        || !t.opts.is_empty()
                    {
                        return Err(format!("ACK to the backend {t:?}"));
                    }
                    Ok(Effect::Answered(i, bisn, ws, w.mss))
                });
            }
        } else if !established.is_empty() {
            let f = flows[rng.pick(&established)].clone();
            let (bisn, bws) = f.backend.unwrap();
            let delta = f.delta();
            let isn_delta = f.isn_delta();
            if rng.pct(50) {
                // Client to backend: acknowledgements and SACK blocks translated.
                let flags = rng.pick(&[ACK, ACK | PSH, ACK | PSH, ACK | FIN, PSH]);
                let ack = f.cookie.wrapping_add(1 + rng.u64() as u32 % 100_000);
                let opts = if rng.pct(50) {
                    random_sack_opts(&mut rng, f.cookie)
                } else {
                    Vec::new()
                };
                let payload = rng.bytes_of(&[0, 1, 100, 1000]);
                let seg = Tcp::new(f.c.addr, vip_of(f.c.v6), f.c.sport, 80, flags)
                    .seq(f.c.isn.wrapping_add(1 + rng.u64() as u32 % 100_000), ack)
                    .window(rng.u16())
                    .opts(&opts)
                    .payload(&payload);
                name = "client data";
                frame = seg.client_frame();
                ingress = fx.front;
                let want_opts = shift_sack_edges(&opts, delta);
                check = Box::new(move |action, out| {
                    if action != XDP_REDIRECT {
                        return Err(format!("client data: action {action}"));
                    }
                    let (t, _, _) = seen(out);
                    // (Without the flag, the builder writes no acknowledgement.)
                    let want_ack = if flags & ACK != 0 {
                        ack.wrapping_add(delta)
                    } else {
                        0
                    };
                    if (t.src, t.dst, t.sport, t.dport)
                        != (f.syn.src, f.syn.dst, f.syn.sport, f.syn.dport)
                        || t.seq != seg.seq.wrapping_add(isn_delta)
                        || t.ack != want_ack
                        || t.window != seg.window
                        || t.opts != want_opts
                        || t.payload != payload
                    {
                        return Err(format!("client data {t:?}, options wanted {want_opts:?}"));
                    }
                    Ok(Effect::None)
                });
            } else if rng.pct(8) {
                // The backend's SYN-ACK again: ACKed again.
                name = "backend syn-ack again";
                frame = Tcp::new(f.syn.dst, f.syn.src, f.syn.dport, f.syn.sport, SYN | ACK)
                    .seq(bisn, f.isn_b().wrapping_add(1))
                    .backend_frame();
                ingress = fx.back;
                check = Box::new(move |action, out| {
                    if action != XDP_TX {
                        return Err(format!("SYN-ACK again: action {action}"));
                    }
                    let (t, _, _) = seen(out);
                    if t.flags != ACK
                        || t.seq != f.isn_b().wrapping_add(1)
                        || t.ack != bisn.wrapping_add(1)
                    {
                        return Err(format!("ACK again {t:?}"));
                    }
                    Ok(Effect::None)
                });
            } else {
                // Backend to client: sequence numbers translated, windows rescaled.
                let flags = rng.pick(&[ACK, ACK | PSH, ACK | FIN]);
                let window = rng.u16();
                let payload = rng.bytes_of(&[0, 1, 100, 1000]);
                // SACK blocks of what the client sent, in the backend's numbers.
                let opts = if rng.pct(30) {
                    random_sack_opts(&mut rng, f.isn_b())
                } else {
                    Vec::new()
                };
                let want_opts = shift_sack_edges(&opts, isn_delta.wrapping_neg());
                let seg = Tcp::new(f.syn.dst, f.syn.src, f.syn.dport, f.syn.sport, flags)
                    .seq(
                        bisn.wrapping_add(1 + rng.u64() as u32 % 100_000),
                        rng.u64() as u32,
                    )
                    .window(window)
                    .opts(&opts)
                    .payload(&payload);
                name = "backend data";
                frame = seg.backend_frame();
                ingress = fx.back;
                let scales = f.data.wscale != 15;
                let want_window = if scales && bws != 7 {
                    cookie::rescale_window(window, bws, 7)
                } else {
                    window
                };
                check = Box::new(move |action, out| {
                    if action != XDP_REDIRECT {
                        return Err(format!("backend data: action {action}"));
                    }
                    let (t, _, _) = seen(out);
                    if (t.src, t.dst, t.sport, t.dport) != (vip_of(f.c.v6), f.c.addr, 80, f.c.sport)
                        || t.seq != seg.seq.wrapping_sub(delta)
                        || t.ack != seg.ack.wrapping_sub(isn_delta)
                        || t.window != want_window
                        || t.opts != want_opts
                        || t.payload != payload
                    {
                        return Err(format!("backend data {t:?}, window wanted {want_window}"));
                    }
                    Ok(Effect::None)
                });
            }
        } else {
            continue;
        }
        // A truncated copy instead, now and then: dropped or passed as it came,
        // never sent on (and the model's state stays as it was).
        if rng.pct(8) && frame.len() > 14 {
            let cut = rng.between(14, frame.len() - 1);
            let short = frame[..cut].to_vec();
            drop(check);
            let (action, out) = fx.run(&short, ingress);
            let ok = action == XDP_DROP || action == XDP_PASS && out == short;
            assert!(
                ok,
                "{name} cut to {cut} bytes: action {action}\n  in  {}",
                hex(&short)
            );
            *seen_cases.entry("truncated").or_default() += 1;
            continue;
        }
        let (action, out) = fx.run(&frame, ingress);
        if std::env::var_os("ROBUSTNESS_TRACE").is_some() {
            eprintln!(
                "#{index} {name} action {action} in {}",
                hex(&frame[..frame.len().min(60)])
            );
        }
        let effect = check(action, &out).unwrap_or_else(|what| {
            let counters = fx.dp.counters().unwrap();
            let counters: Vec<_> = counters.iter().filter(|(_, v)| **v != 0).collect();
            panic!(
                "frame #{index} ({name}): {what}\n  in  {}\n  out {}\n  counters {counters:?}",
                hex(&frame),
                hex(&out)
            )
        });
        match effect {
            Effect::None => {}
            Effect::Issued(c, cookie, data) => issued.push((c, cookie, data)),
            Effect::Opened(f) => flows.push(*f),
            Effect::Answered(i, bisn, ws, mss) => {
                let fam = usize::from(flows[i].c.v6);
                flows[i].backend = Some((bisn, ws));
                if mss != 0 && (mss as u16) < announced[fam] {
                    announced[fam] = mss as u16;
                }
            }
            Effect::Resent(i, isn2) => flows[i].isn2 = Some(isn2),
            Effect::Closed(i) => {
                flows.swap_remove(i);
            }
        }
        *seen_cases.entry(name).or_default() += 1;
        let counter = match name {
            "syn" => "syn_cookie_sent",
            "valid cookie" => "syn_cookie_valid",
            "bad cookie" => "drop_syn_cookie_invalid",
            "backend syn-ack" => "syn_proxy_established",
            "backend reset" => "syn_proxy_refused",
            "early data" | "backend ack again" => "drop_syn_proxy_early_data",
            "backend time-wait" => "syn_proxy_time_wait",
            _ => continue,
        };
        *want.entry(counter).or_default() += 1;
    }
    eprintln!("{frames} frames in {:.1?}: {seen_cases:?}", start.elapsed());
    for case in [
        "syn",
        "valid cookie",
        "bad cookie",
        "backend syn-ack",
        "backend reset",
        "early data",
        "backend time-wait",
        "backend ack again",
        "client data",
        "backend data",
        "backend syn-ack again",
        "truncated",
    ] {
        assert!(
            seen_cases.get(case).copied().unwrap_or(0) > 0,
            "no {case} frame"
        );
    }
    let counters = fx.dp.counters().unwrap();
    for (c, n) in want {
        assert_eq!(counters[c], n, "counter {c}");
    }
}
