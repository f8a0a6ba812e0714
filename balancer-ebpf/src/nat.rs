//! Address and port translation with incremental checksum updates.

use aya_ebpf::programs::XdpContext;
use balancer_common::{PROTO_TCP, PROTO_UDP, csum, flow::FlowValue};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use crate::parse::{Packet, ptr_at};

/// Rewrites the packet's addresses and ports to the flow's. The parser has
/// already checked that the IP and L4 headers are within the frame.
#[inline(always)]
pub fn translate(ctx: &XdpContext, pkt: &Packet, flow: &FlowValue) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
    let ip = unsafe { &mut *ip };
    let old_src = u32::from_ne_bytes(ip.src_addr);
    let old_dst = u32::from_ne_bytes(ip.dst_addr);
    let new_src = flow.new_src[0];
    let new_dst = flow.new_dst[0];
    ip.src_addr = new_src.to_ne_bytes();
    ip.dst_addr = new_dst.to_ne_bytes();
    let mut check = u16::from_ne_bytes(ip.check);
    check = csum::replace_u32(check, old_src, new_src);
    check = csum::replace_u32(check, old_dst, new_dst);
    ip.check = check.to_ne_bytes();

    match pkt.proto {
        PROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
                return;
            };
            // SAFETY: as above.
            let tcp = unsafe { &mut *tcp };
            let mut check = u16::from_ne_bytes(tcp.check);
            check = csum::replace_u32(check, old_src, new_src);
            check = csum::replace_u32(check, old_dst, new_dst);
            check = csum::replace_u16(check, pkt.sport_be, flow.new_sport_be);
            check = csum::replace_u16(check, pkt.dport_be, flow.new_dport_be);
            tcp.check = check.to_ne_bytes();
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
            // An IPv4 UDP checksum of 0 means "none": keep it so.
            if old != 0 {
                let mut check = old;
                check = csum::replace_u32(check, old_src, new_src);
                check = csum::replace_u32(check, old_dst, new_dst);
                check = csum::replace_u16(check, pkt.sport_be, flow.new_sport_be);
                check = csum::replace_u16(check, pkt.dport_be, flow.new_dport_be);
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
