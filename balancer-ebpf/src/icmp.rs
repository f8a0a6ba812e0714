//! ICMP and ICMPv6 errors about a tracked flow (destination unreachable,
//! fragmentation needed / packet too big, time exceeded) are translated like
//! the flow's packets and sent on, so that path MTU discovery works through
//! the balancer in both directions.
//!
//! The quoted packet is one the balancer sent; the entry keyed by its reverse
//! is that of the other direction, which says where the error goes: its rewrite
//! gives the outer addresses, and reversed, the quoted packet's.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use balancer_common::{
    FAMILY_V6, PROTO_TCP, PROTO_UDP, RawAddr, csum,
    flow::{FlowKey, FlowValue},
    stats::Counter,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    forward,
    maps::{FLOWS, HALF_OPEN, count},
    parse::{IcmpError, Packet, ptr_at, words},
};

/// Largest header offset the parser produces (IPv6 with the longest extension
/// headers it follows), a bound the verifier needs on offsets read from memory.
const MAX_OFFSET: usize = 512;

/// What the quoted packet says, and where its fields are.
struct Quoted {
    family: u8,
    src: RawAddr,
    dst: RawAddr,
    sport_be: u16,
    dport_be: u16,
    proto: u8,
    /// Offset of the quoted IP header and of its L4 header.
    ip_off: usize,
    l4_off: usize,
}

#[inline(never)]
pub fn relay(ctx: &XdpContext, err: &IcmpError) -> u32 {
    let Some(quoted) = quoted(ctx, err) else {
        return pass(Counter::PassNotForUs);
    };
    let key = FlowKey {
        src: quoted.dst,
        dst: quoted.src,
        sport_be: quoted.dport_be,
        dport_be: quoted.sport_be,
        proto: quoted.proto,
        family: err.family,
        _pad: [0; 2],
    };
    // Not about one of our flows (the host's own traffic, say): the host's.
    let Some(entry) = FLOWS
        .get_ptr_mut(&key)
        .or_else(|| HALF_OPEN.get_ptr_mut(&key))
    else {
        return pass(Counter::PassNotForUs);
    };
    // SAFETY: a map value pointer is valid for the duration of the program.
    let entry = unsafe { &mut *entry };
    if !rewrite(ctx, err, &quoted, entry) {
        return pass(Counter::PassNotForUs);
    }
    count(Counter::IcmpRelayed);
    send(ctx, err, entry)
}

/// Sends the translated error where `entry`'s direction goes. Not inlined, for
/// the stack.
#[inline(never)]
fn send(ctx: &XdpContext, err: &IcmpError, entry: &mut FlowValue) -> u32 {
    let pkt = Packet {
        key: FlowKey {
            src: entry.new_src,
            dst: entry.new_dst,
            sport_be: 0,
            dport_be: 0,
            proto: if err.family == FAMILY_V6 { 58 } else { 1 },
            family: err.family,
            _pad: [0; 2],
        },
        tcp_flags: 0,
        l4_off: err.icmp_off,
        ip_len: err.ip_len,
    };
    forward::forward(ctx, &pkt, entry)
}

#[inline(always)]
fn pass(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_PASS
}

/// The quoted packet's addresses and ports, if it is TCP or UDP and its first
/// L4 bytes are in the frame. Not inlined, like `rewrite`, for the stack.
#[inline(never)]
fn quoted(ctx: &XdpContext, err: &IcmpError) -> Option<Quoted> {
    // Offsets come through memory here, unbounded as far as the verifier
    // knows; the parser never makes one this large.
    if err.icmp_off > MAX_OFFSET {
        return None;
    }
    let ip_off = err.icmp_off + 8;
    let (src, dst, proto, l4_off) = if err.family == FAMILY_V6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ip_off)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        (
            words(&ip.src_addr),
            words(&ip.dst_addr),
            ip.next_hdr,
            ip_off + Ipv6Hdr::LEN,
        )
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ip_off)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let ihl = (ip.vihl & 0x0f) as usize;
        if ihl < 5 {
            return None;
        }
        (
            [u32::from_ne_bytes(ip.src_addr), 0, 0, 0],
            [u32::from_ne_bytes(ip.dst_addr), 0, 0, 0],
            ip.proto,
            ip_off + ihl * 4,
        )
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports = ptr_at::<[u16; 2]>(ctx, l4_off)?;
    // SAFETY: bounds checked by ptr_at.
    let [sport_be, dport_be] = unsafe { *ports };
    Some(Quoted {
        family: err.family,
        src,
        dst,
        sport_be,
        dport_be,
        proto,
        ip_off,
        l4_off,
    })
}

/// Rewrites the outer addresses to `entry`'s and the quoted packet's to their
/// reverse, with every checksum the changes touch. In separate BPF functions:
/// in one, their locals would not fit the 512-byte stack beside the callers'.
#[inline(always)]
fn rewrite(ctx: &XdpContext, err: &IcmpError, q: &Quoted, entry: &FlowValue) -> bool {
    if err.icmp_off > MAX_OFFSET {
        return false;
    }
    let Some(icmp_check) = ptr_at::<[u8; 2]>(ctx, err.icmp_off + 2) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    let icmp = u16::from_ne_bytes(unsafe { *icmp_check });
    let icmp = rewrite_quoted_l4(ctx, q, entry, icmp as u32);
    if icmp < 0 {
        return false;
    }
    let icmp = if q.family == FAMILY_V6 {
        rewrite_addresses_v6(ctx, q, entry, icmp as u32)
    } else {
        rewrite_addresses_v4(ctx, q, entry, icmp as u32)
    };
    if icmp < 0 {
        return false;
    }
    // SAFETY: bounds checked by ptr_at above.
    unsafe { *icmp_check = (icmp as u16).to_ne_bytes() };
    true
}

/// The quoted ports and, where the quote reaches it (it may be cut short), the
/// quoted L4 checksum; returns the ICMP checksum updated for both, or -1.
/// (Plain integers in and out: a BPF function takes at most five arguments,
/// and an Option result would be a sixth.)
#[inline(never)]
fn rewrite_quoted_l4(ctx: &XdpContext, q: &Quoted, entry: &FlowValue, icmp: u32) -> i64 {
    if q.l4_off > MAX_OFFSET {
        return -1;
    }
    let n_words = if q.family == FAMILY_V6 { 4 } else { 1 };
    let mut icmp = icmp as u16;
    let l4_check_off = q.l4_off + if q.proto == PROTO_TCP { 16 } else { 6 };
    if let Some(l4_check) = ptr_at::<[u8; 2]>(ctx, l4_check_off) {
        // SAFETY: bounds checked by ptr_at.
        let old = u16::from_ne_bytes(unsafe { *l4_check });
        if !(q.proto == PROTO_UDP && old == 0) {
            let mut new = csum::replace_addr(old, &q.src, &entry.new_dst, n_words);
            new = csum::replace_addr(new, &q.dst, &entry.new_src, n_words);
            new = csum::replace_u16(new, q.sport_be, entry.new_dport_be);
            new = csum::replace_u16(new, q.dport_be, entry.new_sport_be);
            icmp = csum::replace_u16(icmp, old, new);
            // SAFETY: as above.
            unsafe { *l4_check = new.to_ne_bytes() };
        }
    }
    let Some(ports) = ptr_at::<[u16; 2]>(ctx, q.l4_off) else {
        return -1;
    };
    icmp = csum::replace_u16(icmp, q.sport_be, entry.new_dport_be);
    icmp = csum::replace_u16(icmp, q.dport_be, entry.new_sport_be);
    // SAFETY: bounds checked by ptr_at.
    unsafe { *ports = [entry.new_dport_be, entry.new_sport_be] };
    icmp as i64
}

/// The quoted and the outer IPv6 addresses; returns the ICMPv6 checksum
/// (which covers the outer ones as well) updated for them, or -1. Word by
/// word, in place: whole-address temporaries overflowed the BPF stack.
#[inline(never)]
fn rewrite_addresses_v6(ctx: &XdpContext, q: &Quoted, entry: &FlowValue, icmp: u32) -> i64 {
    if q.ip_off > MAX_OFFSET {
        return -1;
    }
    // Source and destination follow each other from byte 8 of the header.
    let (Some(inner), Some(outer)) = (
        ptr_at::<[u32; 8]>(ctx, q.ip_off + 8),
        ptr_at::<[u32; 8]>(ctx, EthHdr::LEN + 8),
    ) else {
        return -1;
    };
    let (inner, outer) = (inner as *mut u32, outer as *mut u32);
    let mut icmp = icmp as u16;
    let mut i = 0;
    while i < 4 {
        icmp = rewrite_word_v6(inner, outer, entry, i as u32, icmp as u32) as u16;
        i += 1;
    }
    icmp as i64
}

/// Word `i` of the four of each address: the quote's source becomes the
/// entry's destination and its destination the entry's source; the outer ones
/// the entry's own. A BPF function of its own: unrolled into its caller, the
/// sixteen updates' temporaries overflowed the stack.
#[inline(never)]
fn rewrite_word_v6(inner: *mut u32, outer: *mut u32, entry: &FlowValue, i: u32, icmp: u32) -> u32 {
    let i = (i & 3) as usize;
    // SAFETY: the caller checked 32 bytes at each pointer; i < 4.
    unsafe {
        let mut icmp = swap_word(inner.add(i), entry.new_dst[i], icmp as u16);
        icmp = swap_word(inner.add(4 + i), entry.new_src[i], icmp);
        icmp = swap_word(outer.add(i), entry.new_src[i], icmp);
        swap_word(outer.add(4 + i), entry.new_dst[i], icmp) as u32
    }
}

/// Writes `new` at `at` (packet data, maybe unaligned) and returns `check`
/// updated for the change.
///
/// # Safety
/// `at` must point to four writable bytes of the frame.
#[inline(always)]
unsafe fn swap_word(at: *mut u32, new: u32, check: u16) -> u16 {
    // SAFETY: as the caller promises.
    let old = unsafe { at.read_unaligned() };
    // SAFETY: as above.
    unsafe { at.write_unaligned(new) };
    csum::replace_u32(check, old, new)
}

/// The quoted and the outer IPv4 addresses and both header checksums; returns
/// the ICMP checksum (which covers the quote only) updated for them, or -1.
#[inline(never)]
fn rewrite_addresses_v4(ctx: &XdpContext, q: &Quoted, entry: &FlowValue, icmp: u32) -> i64 {
    if q.ip_off > MAX_OFFSET {
        return -1;
    }
    let (Some(inner), Some(outer)) = (
        ptr_at::<Ipv4Hdr>(ctx, q.ip_off),
        ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN),
    ) else {
        return -1;
    };
    // SAFETY: bounds checked by ptr_at.
    let (inner, outer) = unsafe { (&mut *inner, &mut *outer) };
    let mut icmp = csum::replace_u32(icmp as u16, q.src[0], entry.new_dst[0]);
    icmp = csum::replace_u32(icmp, q.dst[0], entry.new_src[0]);
    let old = u16::from_ne_bytes(inner.check);
    let mut new = csum::replace_u32(old, q.src[0], entry.new_dst[0]);
    new = csum::replace_u32(new, q.dst[0], entry.new_src[0]);
    icmp = csum::replace_u16(icmp, old, new);
    inner.check = new.to_ne_bytes();
    inner.src_addr = entry.new_dst[0].to_ne_bytes();
    inner.dst_addr = entry.new_src[0].to_ne_bytes();
    let mut check = u16::from_ne_bytes(outer.check);
    check = csum::replace_u32(check, u32::from_ne_bytes(outer.src_addr), entry.new_src[0]);
    check = csum::replace_u32(check, u32::from_ne_bytes(outer.dst_addr), entry.new_dst[0]);
    outer.check = check.to_ne_bytes();
    outer.src_addr = entry.new_src[0].to_ne_bytes();
    outer.dst_addr = entry.new_dst[0].to_ne_bytes();
    icmp as i64
}
