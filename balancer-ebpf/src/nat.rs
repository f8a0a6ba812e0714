//! Address and port translation with incremental checksum updates.

use aya_ebpf::programs::XdpContext;
use balancer_common::{FAMILY_V6, PROTO_TCP, PROTO_UDP, RawAddr, csum, flow::FlowValue};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::parse::{MAX_L4_OFFSET, Packet, ptr_at};

/// Rewrites the packet's addresses and ports to the flow's. The parser has
/// already checked that the IP and L4 headers are within the frame.
#[inline(always)]
pub fn translate(ctx: &XdpContext, pkt: &Packet, flow: &FlowValue) {
    translate_with(ctx, pkt, flow, 0);
}

/// [`translate`], with `l4_extra` more for the TCP or UDP checksum's sum:
/// changes the caller made elsewhere in the L4 header (the SYN proxy's
/// sequence numbers), folded in with the addresses' and ports'.
#[inline(always)]
pub fn translate_with(ctx: &XdpContext, pkt: &Packet, flow: &FlowValue, l4_extra: u64) {
    // The offset comes through the stack, where the verifier may lose its
    // bounds; the parser never makes one this large.
    if pkt.l4_off > MAX_L4_OFFSET {
        return;
    }
    // The addresses' change, which the L4 pseudo-header checksum covers (and
    // IPv4's header checksum too); each checksum is folded once.
    let addr_delta = if pkt.key.family == FAMILY_V6 {
        rewrite_ipv6(ctx, flow);
        csum::delta_addr(&pkt.key.src, &flow.new_src, 4)
            + csum::delta_addr(&pkt.key.dst, &flow.new_dst, 4)
    } else {
        let delta = csum::delta_u32(pkt.key.src[0], flow.new_src[0])
            + csum::delta_u32(pkt.key.dst[0], flow.new_dst[0]);
        rewrite_ipv4(ctx, flow, delta);
        delta
    };
    let l4_delta = addr_delta
        + csum::delta_u16(pkt.key.sport_be, flow.new_sport_be)
        + csum::delta_u16(pkt.key.dport_be, flow.new_dport_be)
        + l4_extra;
    match pkt.key.proto {
        PROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
                return;
            };
            // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
            let tcp = unsafe { &mut *tcp };
            tcp.check = csum::apply(u16::from_ne_bytes(tcp.check), l4_delta).to_ne_bytes();
            tcp.source = flow.new_sport_be.to_ne_bytes();
            tcp.dest = flow.new_dport_be.to_ne_bytes();
        }
        PROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, pkt.l4_off) else {
                return;
            };
            // SAFETY: as above.
            let udp = unsafe { &mut *udp };
            let old = u16::from_ne_bytes(udp.check);
            // A UDP checksum of 0 means "none" (IPv4) or is invalid (IPv6):
            // either way it is not made up here.
            if old != 0 {
                let mut check = csum::apply(old, l4_delta);
                if check == 0 {
                    check = 0xffff;
                }
                udp.check = check.to_ne_bytes();
            }
            udp.src = flow.new_sport_be.to_ne_bytes();
            udp.dst = flow.new_dport_be.to_ne_bytes();
        }
        _ => {}
    }
}

/// `addr_delta`: the addresses' change, as the parser read them (the same
/// words as the header's).
#[inline(always)]
fn rewrite_ipv4(ctx: &XdpContext, flow: &FlowValue, addr_delta: u64) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
    let ip = unsafe { &mut *ip };
    ip.src_addr = flow.new_src[0].to_ne_bytes();
    ip.dst_addr = flow.new_dst[0].to_ne_bytes();
    ip.check = csum::apply(u16::from_ne_bytes(ip.check), addr_delta).to_ne_bytes();
}

/// IPv6 has no header checksum: only the addresses change.
#[inline(always)]
fn rewrite_ipv6(ctx: &XdpContext, flow: &FlowValue) {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
    let ip = unsafe { &mut *ip };
    ip.src_addr = bytes(&flow.new_src);
    ip.dst_addr = bytes(&flow.new_dst);
}

/// The wire bytes of an IPv6 address held as four words (see `parse::words`).
#[inline(always)]
pub fn bytes(words: &RawAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = words[i].to_ne_bytes();
        out[i * 4] = w[0];
        out[i * 4 + 1] = w[1];
        out[i * 4 + 2] = w[2];
        out[i * 4 + 3] = w[3];
        i += 1;
    }
    out
}
