//! Address and port translation with incremental checksum updates.

use aya_ebpf::programs::XdpContext;
use balancer_common::{FAMILY_V6, PROTO_TCP, PROTO_UDP, RawAddr, csum, flow::FlowValue};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::parse::{Packet, ptr_at};

/// Rewrites the packet's addresses and ports to the flow's. The parser has
/// already checked that the IP and L4 headers are within the frame.
#[inline(always)]
pub fn translate(ctx: &XdpContext, pkt: &Packet, flow: &FlowValue) {
    // Address words the L4 pseudo-header checksum covers.
    let words = if pkt.family == FAMILY_V6 {
        rewrite_ipv6(ctx, flow);
        4
    } else {
        rewrite_ipv4(ctx, flow);
        1
    };
    let l4_check = |check: u16| {
        let mut check = csum::replace_addr(check, &pkt.src, &flow.new_src, words);
        check = csum::replace_addr(check, &pkt.dst, &flow.new_dst, words);
        check = csum::replace_u16(check, pkt.sport_be, flow.new_sport_be);
        csum::replace_u16(check, pkt.dport_be, flow.new_dport_be)
    };
    match pkt.proto {
        PROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
                return;
            };
            // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
            let tcp = unsafe { &mut *tcp };
            tcp.check = l4_check(u16::from_ne_bytes(tcp.check)).to_ne_bytes();
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
                let mut check = l4_check(old);
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

#[inline(always)]
fn rewrite_ipv4(ctx: &XdpContext, flow: &FlowValue) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
    let ip = unsafe { &mut *ip };
    let old_src = u32::from_ne_bytes(ip.src_addr);
    let old_dst = u32::from_ne_bytes(ip.dst_addr);
    ip.src_addr = flow.new_src[0].to_ne_bytes();
    ip.dst_addr = flow.new_dst[0].to_ne_bytes();
    let mut check = u16::from_ne_bytes(ip.check);
    check = csum::replace_u32(check, old_src, flow.new_src[0]);
    check = csum::replace_u32(check, old_dst, flow.new_dst[0]);
    ip.check = check.to_ne_bytes();
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
