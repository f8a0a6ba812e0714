//! Header parsing with every bound checked against the frame and the IP
//! length. What a packet's addresses mean to this node is `addr`'s to say;
//! the parser asks it early so that a packet that is not ours costs little.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use balancer_common::{
    FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, RawAddr, flow::FlowKey, stats::Counter,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::addr::{self, Addressed};

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
const ETH_P_ARP_BE: u16 = 0x0806u16.to_be();
const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;
/// Extension headers followed before the L4 header, and their total length.
const MAX_IPV6_EXT_HEADERS: usize = 4;
const MAX_IPV6_EXT_LEN: usize = 256;
/// The largest L4 offset the parser produces (Ethernet, IPv6 and the longest
/// extension headers it follows), for the verifier's sake where an offset
/// comes back through memory.
pub const MAX_L4_OFFSET: usize = 512;
/// TCP header flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
/// Byte 13 of the TCP header holds the flags.
const TCP_FLAGS_OFFSET: usize = 13;
const IP_MF_OR_OFFSET_BE: u16 = 0x3fffu16.to_be();

pub enum Parsed {
    Packet(Packet),
    /// An ARP packet or an IPv6 neighbour solicitation (see `neigh`).
    Neighbour(Neighbour),
    /// An ICMP error to a VIP or SNAT address, which may quote a tracked flow.
    IcmpError(IcmpError),
    Pass(Counter),
    /// Addressed to a VIP or SNAT address but its headers do not add up.
    Malformed,
}

/// Whose link-layer address a neighbour request asks for.
pub struct Neighbour {
    pub family: u8,
    pub target: RawAddr,
}

/// An ICMP or ICMPv6 error message and where its parts are in the frame.
pub struct IcmpError {
    pub family: u8,
    /// Offset of the ICMP header; the quoted packet starts 8 bytes after it.
    pub icmp_off: usize,
    /// Outer IP length (IPv6: header and payload), host order.
    pub ip_len: u16,
}

/// What the rest of the program needs of a TCP or UDP packet to one of our addresses.
pub struct Packet {
    /// Its flow's key, which the flow table is looked up with as it is.
    pub key: FlowKey,
    pub tcp_flags: u8,
    /// Offset of the L4 header in the frame.
    pub l4_off: usize,
    /// IP total length (IPv6: header and payload), host order.
    pub ip_len: u16,
}

impl Packet {
    /// UDP always; TCP only with a SYN that is not a SYN-ACK.
    #[inline(always)]
    pub fn may_open_flow(&self) -> bool {
        self.key.proto == PROTO_UDP
            || self.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
    }

    /// A TCP segment of an existing connection (not a reset, not a new one).
    #[inline(always)]
    pub fn may_resume_flow(&self) -> bool {
        self.key.proto == PROTO_TCP && self.tcp_flags & (TCP_SYN | TCP_RST) == 0
    }

    /// A TCP SYN (not a SYN-ACK, a reset or a FIN).
    #[inline(always)]
    pub fn is_tcp_syn(&self) -> bool {
        self.key.proto == PROTO_TCP
            && self.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
    }

    /// A TCP segment that acknowledges (and is not a SYN or a reset).
    #[inline(always)]
    pub fn is_tcp_ack(&self) -> bool {
        self.key.proto == PROTO_TCP && self.tcp_flags & (TCP_SYN | TCP_RST | TCP_ACK) == TCP_ACK
    }

    #[inline(always)]
    pub fn is_tcp_end(&self) -> bool {
        self.key.proto == PROTO_TCP && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

/// A pointer to a `T` at `offset`, if the frame holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Not inlined: its locals would otherwise share the entry function's stack
/// frame with a new flow's, past the 512-byte stack.
#[inline(never)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Pass(Counter::PassNotForUs);
    };
    // SAFETY: bounds checked by ptr_at.
    match unsafe { (*eth).ether_type } {
        ETH_P_IP_BE => parse_ipv4(ctx, EthHdr::LEN),
        ETH_P_IPV6_BE => parse_ipv6(ctx, EthHdr::LEN),
        ETH_P_ARP_BE => arp(ctx),
        _ => Parsed::Pass(Counter::PassNotForUs),
    }
}

/// The target of an Ethernet/IPv4 ARP packet: the last 4 of its 28 bytes.
#[inline(always)]
fn arp(ctx: &XdpContext) -> Parsed {
    let Some(arp) = ptr_at::<[u8; 28]>(ctx, EthHdr::LEN) else {
        return Parsed::Pass(Counter::PassNotForUs);
    };
    // SAFETY: bounds checked by ptr_at.
    let a = unsafe { &*arp };
    Parsed::Neighbour(Neighbour {
        family: FAMILY_V4,
        target: [u32::from_ne_bytes([a[24], a[25], a[26], a[27]]), 0, 0, 0],
    })
}

/// The target of a neighbour solicitation (no extension headers, as they are
/// sent), if the ICMPv6 message at `l3_off` is one.
#[inline(always)]
fn solicitation(ctx: &XdpContext, l3_off: usize) -> Option<Neighbour> {
    // ICMPv6 type, code, checksum, reserved, then the 16-byte target.
    let ns = ptr_at::<[u8; 24]>(ctx, l3_off + Ipv6Hdr::LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let ns = unsafe { &*ns };
    if ns[0] != ICMPV6_NEIGHBOUR_SOLICITATION {
        return None;
    }
    let w = |i: usize| u32::from_ne_bytes([ns[i], ns[i + 1], ns[i + 2], ns[i + 3]]);
    Some(Neighbour {
        family: FAMILY_V6,
        target: [w(8), w(12), w(16), w(20)],
    })
}

/// An IPv6 address as the map types hold it: four words in wire order.
#[inline(always)]
pub fn words(addr: &[u8; 16]) -> RawAddr {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// IPv6, with hop-by-hop, routing and destination options headers skipped; a
/// fragment header passes the packet to the stack like an IPv4 fragment.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3_off: usize) -> Parsed {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3_off) else {
        return Parsed::Pass(Counter::PassNotForUs);
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    if ip.next_hdr == PROTO_ICMPV6
        && let Some(ns) = solicitation(ctx, l3_off)
    {
        return Parsed::Neighbour(ns);
    }
    let src = words(&ip.src_addr);
    let dst = words(&ip.dst_addr);
    if !addr::maybe_ours(&src, &dst) {
        return Parsed::Pass(Counter::PassNotForUs);
    }
    match parse_ipv6_further(ctx, l3_off, ip, src, dst) {
        Parsed::Malformed if addr::classify(&src, &dst, FAMILY_V6) == Addressed::NotOurs => {
            Parsed::Pass(Counter::PassNotForUs)
        }
        parsed => parsed,
    }
}

/// An IPv6 packet that may be ours (see [`addr::maybe_ours`]).
#[inline(always)]
fn parse_ipv6_further(
    ctx: &XdpContext,
    l3_off: usize,
    ip: &Ipv6Hdr,
    src: RawAddr,
    dst: RawAddr,
) -> Parsed {
    if ip.vcf[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    let frame_ip_room = ctx.data_end() - ctx.data() - l3_off;
    if Ipv6Hdr::LEN + payload_len > frame_ip_room {
        return Parsed::Malformed;
    }
    let mut next = ip.next_hdr;
    let mut ext_len = 0usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let Some(ext) = ptr_at::<[u8; 2]>(ctx, l3_off + Ipv6Hdr::LEN + ext_len) else {
                    return Parsed::Malformed;
                };
                // SAFETY: bounds checked by ptr_at.
                let ext = unsafe { *ext };
                next = ext[0];
                ext_len += (ext[1] as usize + 1) * 8;
                if ext_len > payload_len {
                    return Parsed::Malformed;
                }
                if ext_len > MAX_IPV6_EXT_LEN {
                    // Longer chains than any real traffic carries: the stack's.
                    return Parsed::Pass(Counter::PassNotForUs);
                }
            }
            IPV6_FRAGMENT => return Parsed::Pass(Counter::PassFragment),
            _ => break,
        }
    }
    if matches!(next, IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS) {
        // A chain longer than this program follows: the stack gets it.
        return Parsed::Pass(Counter::PassNotForUs);
    }
    let l4_off = l3_off + Ipv6Hdr::LEN + ext_len;
    let l4_room = payload_len - ext_len;
    let total = Ipv6Hdr::LEN + payload_len;
    if next == PROTO_ICMPV6 {
        return icmp_error(ctx, FAMILY_V6, l4_off, l4_room, total, &[1, 2, 3]);
    }
    let (sport_be, dport_be, tcp_flags) = match parse_l4(ctx, next, l4_off, l4_room) {
        Ok(l4) => l4,
        Err(parsed) => return parsed,
    };
    Parsed::Packet(Packet {
        key: FlowKey {
            src,
            dst,
            sport_be,
            dport_be,
            proto: next,
            family: FAMILY_V6,
            _pad: [0; 2],
        },
        tcp_flags,
        l4_off,
        ip_len: if total > u16::MAX as usize {
            u16::MAX
        } else {
            total as u16
        },
    })
}

/// Ports and TCP flags of the TCP or UDP header at `l4_off`, which the IP
/// header says is followed by `l4_room` bytes of its payload.
#[inline(always)]
fn parse_l4(
    ctx: &XdpContext,
    proto: u8,
    l4_off: usize,
    l4_room: usize,
) -> Result<(u16, u16, u8), Parsed> {
    match proto {
        PROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4_off) else {
                return Err(Parsed::Malformed);
            };
            if l4_room < TcpHdr::LEN {
                return Err(Parsed::Malformed);
            }
            // Read through the checked pointer: a second ptr_at would be folded
            // into the first by the compiler in a form the verifier cannot follow.
            // SAFETY: bounds checked by ptr_at; the flags byte is inside the header.
            let flags = unsafe { *(tcp as *const u8).add(TCP_FLAGS_OFFSET) };
            // SAFETY: bounds checked by ptr_at.
            let tcp = unsafe { &*tcp };
            let doff = (tcp.doff() as usize) * 4;
            if doff < TcpHdr::LEN || doff > l4_room {
                return Err(Parsed::Malformed);
            }
            Ok((
                u16::from_ne_bytes(tcp.source),
                u16::from_ne_bytes(tcp.dest),
                flags,
            ))
        }
        PROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, l4_off) else {
                return Err(Parsed::Malformed);
            };
            // SAFETY: bounds checked by ptr_at.
            let udp = unsafe { &*udp };
            let udp_len = u16::from_be_bytes(udp.len) as usize;
            if l4_room < UdpHdr::LEN || udp_len < UdpHdr::LEN || udp_len > l4_room {
                return Err(Parsed::Malformed);
            }
            Ok((u16::from_ne_bytes(udp.src), u16::from_ne_bytes(udp.dst), 0))
        }
        // ICMP and the rest: the host answers for its addresses.
        _ => Err(Parsed::Pass(Counter::PassNotForUs)),
    }
}

/// An error of one of `types` (which quote the packet that caused them) goes
/// to the ICMP translation; other ICMP messages (echo, for one) are the host's.
#[inline(always)]
fn icmp_error(
    ctx: &XdpContext,
    family: u8,
    icmp_off: usize,
    icmp_room: usize,
    ip_len: usize,
    types: &[u8],
) -> Parsed {
    let Some(header) = ptr_at::<[u8; 8]>(ctx, icmp_off) else {
        return Parsed::Malformed;
    };
    if icmp_room < 8 {
        return Parsed::Malformed;
    }
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*header)[0] };
    if !types.contains(&kind) {
        return Parsed::Pass(Counter::PassNotForUs);
    }
    Parsed::IcmpError(IcmpError {
        family,
        icmp_off,
        ip_len: if ip_len > u16::MAX as usize {
            u16::MAX
        } else {
            ip_len as u16
        },
    })
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3_off: usize) -> Parsed {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3_off) else {
        return Parsed::Pass(Counter::PassNotForUs);
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let dst = [u32::from_ne_bytes(ip.dst_addr), 0, 0, 0];
    let src = [u32::from_ne_bytes(ip.src_addr), 0, 0, 0];
    if !addr::maybe_ours(&src, &dst) {
        return Parsed::Pass(Counter::PassNotForUs);
    }
    match parse_ipv4_further(ctx, l3_off, ip, src, dst) {
        Parsed::Malformed if addr::classify(&src, &dst, FAMILY_V4) == Addressed::NotOurs => {
            Parsed::Pass(Counter::PassNotForUs)
        }
        parsed => parsed,
    }
}

/// An IPv4 packet that may be ours (see [`addr::maybe_ours`]). Anything inconsistent
/// in one that is ours is dropped, never forwarded; the caller makes sure that
/// a malformed packet is ours before it is dropped.
#[inline(always)]
fn parse_ipv4_further(
    ctx: &XdpContext,
    l3_off: usize,
    ip: &Ipv4Hdr,
    src: RawAddr,
    dst: RawAddr,
) -> Parsed {
    let ihl = (ip.vihl & 0x0f) as usize;
    if ip.vihl >> 4 != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    let ip_len = u16::from_be_bytes(ip.tot_len);
    let frame_ip_room = ctx.data_end() - ctx.data() - l3_off;
    let hdr_len = ihl * 4;
    if (ip_len as usize) > frame_ip_room || (ip_len as usize) < hdr_len {
        return Parsed::Malformed;
    }
    if u16::from_ne_bytes(ip.frags) & IP_MF_OR_OFFSET_BE != 0 {
        return Parsed::Pass(Counter::PassFragment);
    }
    let proto = ip.proto;
    let l4_off = l3_off + hdr_len;
    let l4_room = ip_len as usize - hdr_len;
    if proto == PROTO_ICMP {
        return icmp_error(ctx, FAMILY_V4, l4_off, l4_room, ip_len as usize, &[3, 11]);
    }
    let (sport_be, dport_be, tcp_flags) = match parse_l4(ctx, proto, l4_off, l4_room) {
        Ok(l4) => l4,
        Err(parsed) => return parsed,
    };
    Parsed::Packet(Packet {
        key: FlowKey {
            src,
            dst,
            sport_be,
            dport_be,
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        },
        tcp_flags,
        l4_off,
        ip_len,
    })
}

/// The TCP header as the wire has it, for writing.
#[repr(C)]
pub struct TcpWire {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub doff: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urg: [u8; 2],
}

/// What the SYN proxy and the handshake read of a TCP header.
pub struct Tcp {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// The header's length in bytes.
    pub doff: usize,
}

/// The TCP header of `pkt` (which the parser has checked is in the frame).
#[inline(always)]
pub fn read_tcp(ctx: &XdpContext, pkt: &Packet) -> Option<Tcp> {
    // The offset comes through the stack (see nat.rs).
    if pkt.l4_off > MAX_L4_OFFSET {
        return None;
    }
    let t = ptr_at::<TcpWire>(ctx, pkt.l4_off)?;
    // SAFETY: bounds checked by ptr_at.
    let t = unsafe { &*t };
    Some(Tcp {
        seq: u32::from_be_bytes(t.seq),
        ack: u32::from_be_bytes(t.ack),
        window: u16::from_be_bytes(t.window),
        doff: ((t.doff >> 4) as usize) * 4,
    })
}
