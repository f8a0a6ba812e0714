//! The SYN proxy (`firewall.syn_cookies`): a SYN to a VIP is answered here
//! with a SYN-ACK whose sequence number is a cookie (`balancer_common::cookie`),
//! with no state kept. The client's ACK, if its cookie is valid, opens the
//! flow as a SYN would (firewall, scheduler, SNAT port) and goes on to the
//! backend as that SYN, with the client's options; the backend's SYN-ACK is
//! answered here with the ACK the client already sent, and from then on the
//! sequence numbers of the two halves differ by the flow's `seq_delta`:
//! acknowledgement numbers and SACK blocks towards the backend, sequence
//! numbers towards the client, are translated, and the backend's windows
//! rescaled where its window scale is not the one the client was told.
//!
//! Segments the program makes (the SYN-ACK, the SYN, the ACK) are written
//! whole over the frame that prompted them (`write_segment`): Ethernet header
//! kept, IP header without options, TCP header with fixed options, payload
//! dropped.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::map, maps::PerCpuArray,
    programs::XdpContext,
};
use balancer_common::{
    FAMILY_V6, PROTO_TCP, RawAddr,
    cookie::{self, CookieData, NO_WSCALE, PROXY_WSCALE},
    csum,
    flow::{
        COOKIE_MARK_MASK, DIR_FORWARD, FlowKey, FlowValue, PROXIED, PROXY_DATA_SHIFT, PROXY_RESENT,
        STATE_CLOSING, STATE_ESTABLISHED, STATE_SYN_RECEIVED, WINDOW_RESCALE, cookie_mark,
        window_rescale,
    },
    global::Global,
    stats::Counter,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    clock, copy, flood, flow, forward, handshake,
    maps::{self, FLOWS, GLOBAL, HALF_OPEN, SYN_COOKIE_KEYS, count, global},
    nat,
    parse::{
        MAX_L4_OFFSET, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Tcp, TcpWire, ptr_at, read_tcp,
    },
    tcpopt,
};

const TTL: u8 = 64;
/// The window of the SYN-ACK (unscaled, as in every SYN).
const SYNACK_WINDOW: u16 = 65535;
/// The window of an ACK the proxy sends the backend again (its SYN-ACK came
/// again): the client's next segment says its own.
const REACK_WINDOW: u16 = 1024;
/// Default MSS announced to clients when `GLOBAL` has none.
const DEFAULT_MSS_V4: u16 = 1460;
const DEFAULT_MSS_V6: u16 = 1440;
/// How long after auto mode's cookies went off an invalid cookie is still
/// dropped as one (rather than passed to the host's stack for a reset): as
/// long as a cookie issued then can live.
pub const COOKIE_RECENT_NS: u64 = 2 * cookie::COOKIE_PERIOD_S * 1_000_000_000;
/// A SYN that a backend answers with an ACK of an older connection (its
/// TIME_WAIT, whose next expected sequence number that ACK carries) goes
/// again this far past it, so that the TIME_WAIT takes it as a new one.
const TIME_WAIT_GAP: u32 = 1 << 16;
/// A client's first segment again while the backend has not answered after
/// this long sends the backend the SYN again (the first may have been lost).
const SYN_AGAIN_NS: u64 = 150_000_000;

/// A validated cookie, packed for a BPF call's register: the cookie, the
/// client's window, and what the cookie carries. 0: none.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Proxy(u64);

impl Proxy {
    pub const NONE: Proxy = Proxy(0);
    const VALID: u64 = 1 << 15;

    #[inline(always)]
    fn new(cookie: u32, data: CookieData, window: u16) -> Self {
        Proxy((cookie as u64) << 32 | (window as u64) << 16 | Self::VALID | data.bits() as u64)
    }

    #[inline(always)]
    pub fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    #[inline(always)]
    pub fn cookie(self) -> u32 {
        (self.0 >> 32) as u32
    }

    #[inline(always)]
    fn window(self) -> u16 {
        (self.0 >> 16) as u16
    }

    #[inline(always)]
    fn data(self) -> CookieData {
        CookieData::from_bits((self.0 & 0x7f) as u32)
    }

    /// Both entries' `proxy` word while the backend has not answered.
    #[inline(always)]
    pub fn proxy_word(self) -> u32 {
        PROXIED | self.window() as u32 | self.data().bits() << PROXY_DATA_SHIFT
    }

    /// The cookie of a flow that is `PROXY_SYN`, for its SYN again, with the
    /// client's `window`.
    #[inline(always)]
    fn of_flow(flow: &FlowValue, window: u16) -> Self {
        Proxy::new(
            flow.seq_delta,
            CookieData::from_bits((flow.proxy >> PROXY_DATA_SHIFT) & 0x7f),
            window,
        )
    }
}

/// The SipHash of a SYN's 4-tuple and ISN under the key of `period`, if the
/// daemon has written that key. Not inlined: issuing and checking share it.
#[inline(never)]
fn hash(key: &FlowKey, isn: u32, period: u32) -> Option<u32> {
    let k = SYN_COOKIE_KEYS.get(period & 3)?;
    if k.valid == 0 || k.period != period {
        return None;
    }
    let h = if key.family == FAMILY_V6 {
        cookie::siphash24(
            k.k0,
            k.k1,
            &cookie::words_v6(&key.src, &key.dst, key.sport_be, key.dport_be, isn),
        )
    } else {
        cookie::siphash24(
            k.k0,
            k.k1,
            &cookie::words_v4(key.src[0], key.dst[0], key.sport_be, key.dport_be, isn),
        )
    };
    Some(h as u32)
}

/// A segment without payload, as [`write_segment`] writes it.
#[repr(C)]
pub struct Segment {
    src: RawAddr,
    dst: RawAddr,
    sport_be: u16,
    dport_be: u16,
    seq: u32,
    ack: u32,
    window: u16,
    flags: u8,
    family: u8,
    /// The MSS option; 0: no options at all.
    mss: u16,
    /// The window scale option's, or `NO_WSCALE` for none.
    wscale: u8,
    /// 1: SACK permitted.
    sack: u8,
}

/// Per-CPU room for the segment being written: on the stack it would push
/// the deepest calls past the 512-byte BPF stack.
#[map]
pub static SEGMENT: PerCpuArray<Segment> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's [`Segment`], to fill and then write.
#[inline(always)]
fn segment() -> Option<&'static mut Segment> {
    // SAFETY: this CPU's slot, used by this program run only.
    SEGMENT.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// The one's-complement sum of a 32-bit value as its 16-bit halves.
#[inline(always)]
fn sum32(v: u32) -> u64 {
    (v >> 16) as u64 + (v & 0xffff) as u64
}

/// The sum of an address (wire-order words) as host-order 16-bit values.
#[inline(always)]
fn sum_addr(a: &RawAddr, words: usize) -> u64 {
    let mut s = 0;
    for (i, w) in a.iter().enumerate() {
        if i < words {
            s += sum32(u32::from_be(*w));
        }
    }
    s
}

/// Rewrites the frame into this CPU's [`SEGMENT`]: its length set
/// (`bpf_xdp_adjust_tail`), IP and TCP headers written with their checksums;
/// the Ethernet header is the caller's. Returns the new L4 offset, or `None`
/// when the frame could not be given the length.
#[inline(never)]
fn write_segment(ctx: &XdpContext) -> Option<usize> {
    let seg = segment()?;
    let opts = seg.mss != 0;
    let tcp_len: usize = if opts { 32 } else { 20 };
    let v6 = seg.family == FAMILY_V6;
    let ip_hlen = if v6 { Ipv6Hdr::LEN } else { Ipv4Hdr::LEN };
    let want = (EthHdr::LEN + ip_hlen + tcp_len) as i64;
    let have = (ctx.data_end() - ctx.data()) as i64;
    // A frame too short grows at its front: XDP guarantees headroom, not
    // tailroom (veth, for one, has none for what it copied). A longer one
    // keeps its tail, which the IP length leaves out (Ethernet padding).
    if want > have && !grow_front(ctx, (want - have) as i32) {
        return None;
    }
    let words = if v6 { 4 } else { 1 };
    let doff_flags = ((tcp_len as u32 / 4) << 12) | seg.flags as u32;
    let (ws1, ws2) = if seg.wscale == NO_WSCALE {
        (0x0101u16, 0x0101u16)
    } else {
        (0x0103, 0x0300 | seg.wscale as u16)
    };
    let sack = if seg.sack != 0 { 0x0402u16 } else { 0x0101 };
    let mut sum = sum_addr(&seg.src, words)
        + sum_addr(&seg.dst, words)
        + PROTO_TCP as u64
        + tcp_len as u64
        + u16::from_be(seg.sport_be) as u64
        + u16::from_be(seg.dport_be) as u64
        + sum32(seg.seq)
        + sum32(seg.ack)
        + doff_flags as u64
        + seg.window as u64;
    if opts {
        sum += 0x0204 + seg.mss as u64 + ws1 as u64 + ws2 as u64 + 0x0101 + sack as u64;
    }
    let check = !csum::fold(sum);
    let l4_off = if v6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)?;
        // SAFETY: bounds checked by ptr_at; the program has the frame to itself.
        let ip = unsafe { &mut *ip };
        ip.vcf = [0x60, 0, 0, 0];
        ip.payload_len = (tcp_len as u16).to_be_bytes();
        ip.next_hdr = PROTO_TCP;
        ip.hop_limit = TTL;
        ip.src_addr = nat::bytes(&seg.src);
        ip.dst_addr = nat::bytes(&seg.dst);
        EthHdr::LEN + Ipv6Hdr::LEN
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)?;
        // SAFETY: as above.
        let ip = unsafe { &mut *ip };
        let tot_len = (Ipv4Hdr::LEN + tcp_len) as u16;
        let ip_sum = 0x4500
            + tot_len as u64
            + 0x4000
            + ((TTL as u64) << 8 | PROTO_TCP as u64)
            + sum_addr(&seg.src, 1)
            + sum_addr(&seg.dst, 1);
        ip.vihl = 0x45;
        ip.tos = 0;
        ip.tot_len = tot_len.to_be_bytes();
        ip.id = [0, 0];
        ip.frags = [0x40, 0];
        ip.ttl = TTL;
        ip.proto = PROTO_TCP;
        ip.check = (!csum::fold(ip_sum)).to_be_bytes();
        ip.src_addr = seg.src[0].to_ne_bytes();
        ip.dst_addr = seg.dst[0].to_ne_bytes();
        EthHdr::LEN + Ipv4Hdr::LEN
    };
    let t = ptr_at::<TcpWire>(ctx, l4_off)?;
    // SAFETY: as above.
    let t = unsafe { &mut *t };
    t.sport = seg.sport_be.to_ne_bytes();
    t.dport = seg.dport_be.to_ne_bytes();
    t.seq = seg.seq.to_be_bytes();
    t.ack = seg.ack.to_be_bytes();
    t.doff = (doff_flags >> 8) as u8;
    t.flags = seg.flags;
    t.window = seg.window.to_be_bytes();
    t.check = check.to_be_bytes();
    t.urg = [0, 0];
    if opts {
        let o = ptr_at::<[u8; 12]>(ctx, l4_off + 20)?;
        let [m0, m1] = seg.mss.to_be_bytes();
        let [a0, a1] = ws1.to_be_bytes();
        let [b0, b1] = ws2.to_be_bytes();
        let [s0, s1] = sack.to_be_bytes();
        // SAFETY: as above.
        unsafe { *o = [2, 4, m0, m1, a0, a1, b0, b1, 1, 1, s0, s1] };
    }
    Some(l4_off)
}

/// Moves the frame's start `by` bytes back into the headroom, its Ethernet
/// header with it.
#[inline(always)]
fn grow_front(ctx: &XdpContext, by: i32) -> bool {
    let Some(eth) = ptr_at::<[u8; EthHdr::LEN]>(ctx, 0) else {
        return false;
    };
    let mut saved = [0u8; EthHdr::LEN];
    // SAFETY: bounds checked by ptr_at.
    copy::bytes(&mut saved, unsafe { &*eth });
    // SAFETY: the helper checks the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -by) } != 0 {
        return false;
    }
    let Some(eth) = ptr_at::<[u8; EthHdr::LEN]>(ctx, 0) else {
        return false;
    };
    copy::bytes(eth, &saved);
    true
}

/// Swaps the frame's Ethernet addresses: it goes back where it came from.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> bool {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let (dst, src) = ((*eth).dst_addr, (*eth).src_addr);
        copy::bytes(&raw mut (*eth).dst_addr, &src);
        copy::bytes(&raw mut (*eth).src_addr, &dst);
    }
    true
}

/// The MSS announced to clients of `family`: the one the daemon set, as
/// lowered by what backends announced.
#[inline(always)]
fn announced_mss(v6: bool) -> u16 {
    let (g, default) = if v6 {
        (Global::SynMssV6, DEFAULT_MSS_V6)
    } else {
        (Global::SynMssV4, DEFAULT_MSS_V4)
    };
    match global(g) {
        0 => default,
        mss => mss as u16,
    }
}

/// A backend announced `mss`: clients are told no more from now on.
#[inline(always)]
fn learn_mss(mss: u32, v6: bool) {
    if mss == 0 || mss as u16 >= announced_mss(v6) {
        return;
    }
    let g = if v6 {
        Global::SynMssV6
    } else {
        Global::SynMssV4
    };
    if let Some(v) = GLOBAL.get_ptr_mut(g.index()) {
        // SAFETY: a map value pointer; a racing write is of a backend's MSS too.
        unsafe { *v = mss };
    }
}

/// Addresses and ports of a segment back to where `key`'s came from.
#[inline(always)]
fn reply_to(seg: &mut Segment, key: &FlowKey) {
    copy::addr(&mut seg.src, &key.dst);
    copy::addr(&mut seg.dst, &key.src);
    seg.sport_be = key.dport_be;
    seg.dport_be = key.sport_be;
    seg.family = key.family;
}

/// Answers a SYN to a VIP with a SYN-ACK that carries a cookie, back out of
/// the interface it came in on. `None` when no cookie can be made (the
/// daemon has not written the period's key yet): the caller opens the flow
/// as without cookies. Inlined into its one caller: a call less.
#[inline(always)]
pub fn answer_syn(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let tcp = read_tcp(ctx, pkt)?;
    let v6 = pkt.key.family == FAMILY_V6;
    let opts = tcpopt::syn_opts(ctx, pkt.l4_off, tcp.doff)?;
    let data = CookieData::of_syn(opts.mss as u16, opts.wscale as u8, opts.sack_perm != 0, v6);
    let period = global(Global::SynCookiePeriod);
    let hash = hash(&pkt.key, tcp.seq, period)?;
    let seg = segment()?;
    reply_to(seg, &pkt.key);
    seg.seq = cookie::make(hash, period, data);
    seg.ack = tcp.seq.wrapping_add(1);
    seg.window = SYNACK_WINDOW;
    seg.flags = TCP_SYN | TCP_ACK;
    seg.mss = announced_mss(v6);
    seg.wscale = if data.wscale == NO_WSCALE {
        NO_WSCALE
    } else {
        PROXY_WSCALE
    };
    seg.sack = data.sack as u8;
    if write_segment(ctx).is_none() || !swap_macs(ctx) {
        count(Counter::DropNoRoom);
        return Some(xdp_action::XDP_DROP);
    }
    count(Counter::SynCookieSent);
    flood::opened(true);
    Some(xdp_action::XDP_TX)
}

/// The cookie an ACK of no flow acknowledges, if it is one of ours (made in
/// a period next to the current one, for this 4-tuple and the ISN before
/// the ACK's sequence number).
#[inline(never)]
pub fn check_ack(ctx: &XdpContext, pkt: &Packet) -> Proxy {
    let Some(tcp) = read_tcp(ctx, pkt) else {
        return Proxy::NONE;
    };
    let cookie = tcp.ack.wrapping_sub(1);
    let current = global(Global::SynCookiePeriod);
    let Some(period) = cookie::period_of(cookie::period_bits(cookie), current) else {
        return Proxy::NONE;
    };
    let Some(hash) = hash(&pkt.key, tcp.seq.wrapping_sub(1), period) else {
        return Proxy::NONE;
    };
    match cookie::check(cookie, hash) {
        Some(data) => Proxy::new(cookie, data, tcp.window),
        None => Proxy::NONE,
    }
}

/// Whether a client's ACK to `flow` (a forward entry closing in `FLOWS`, or a
/// half-open one opened without the proxy in `HALF_OPEN`: `half_open`)
/// acknowledges one of our cookies instead: the client opened a new
/// connection on the same 4-tuple (a reused port, or a SYN sent again after
/// cookies came on), whose SYN skipped the flow tables. The old flow's
/// entries are then removed (its count given back), and the caller opens
/// the new one. Only while cookies are on or were lately.
#[inline(never)]
pub fn replaced_by_cookie(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: &mut FlowValue,
    half_open: bool,
) -> bool {
    // (Not a FIN: that of a connection that sent and received nothing
    // carries the numbers of its cookie's ACK too.)
    if flow.direction != DIR_FORWARD
        || !pkt.is_tcp_ack()
        || pkt.is_tcp_end()
        || !flood::cookies_lately(COOKIE_RECENT_NS)
    {
        return false;
    }
    if half_open {
        // The client's ACK of the backend's SYN-ACK is the flow's own.
        if flow.state == STATE_SYN_RECEIVED
            && read_tcp(ctx, pkt).is_some_and(|t| t.ack == flow.seq_delta)
        {
            return false;
        }
    }
    if !half_open
        && flow.proxy & PROXIED != 0
        && read_tcp(ctx, pkt)
            .is_some_and(|t| cookie_mark(t.ack.wrapping_sub(1)) == flow.proxy & COOKIE_MARK_MASK)
    {
        // The flow's own cookie: a late segment of this very connection
        // (a copy of the client's handshake ACK handled after its connection
        // has come and gone, for one), not a new connection. Replacing the
        // flow for it would open a second backend connection and cut this
        // one's end off.
        return false;
    }
    if !check_ack(ctx, pkt).valid() {
        return false;
    }
    let reply_key = flow.peer_key(pkt.key.proto, pkt.key.family);
    flow::release(flow, pkt.key.proto, pkt.key.family, !half_open);
    if half_open {
        let _ = HALF_OPEN.remove(&reply_key);
        let _ = HALF_OPEN.remove(&pkt.key);
    } else {
        let _ = FLOWS.remove(&reply_key);
        let _ = FLOWS.remove(&pkt.key);
    }
    true
}

/// Rewrites the client's ACK that carried a valid cookie into the SYN it
/// stands for: the client's ISN and window, the options the cookie kept. The
/// packet's offsets follow.
#[inline(never)]
pub fn ack_into_syn(ctx: &XdpContext, pkt: &mut Packet, proxy: Proxy) -> bool {
    let Some(tcp) = read_tcp(ctx, pkt) else {
        return false;
    };
    let data = proxy.data();
    let v6 = pkt.key.family == FAMILY_V6;
    let Some(seg) = segment() else {
        return false;
    };
    copy::addr(&mut seg.src, &pkt.key.src);
    copy::addr(&mut seg.dst, &pkt.key.dst);
    seg.sport_be = pkt.key.sport_be;
    seg.dport_be = pkt.key.dport_be;
    seg.family = pkt.key.family;
    seg.seq = tcp.seq.wrapping_sub(1);
    seg.ack = 0;
    seg.window = proxy.window();
    seg.flags = TCP_SYN;
    seg.mss = data.mss(v6);
    seg.wscale = data.wscale;
    seg.sack = data.sack as u8;
    let Some(l4_off) = write_segment(ctx) else {
        return false;
    };
    pkt.l4_off = l4_off;
    pkt.ip_len = (l4_off - EthHdr::LEN + 32) as u16;
    pkt.tcp_flags = TCP_SYN;
    true
}

/// A packet of a SYN-proxied flow whose backend has not answered the SYN
/// (`STATE_PROXY_SYN`, in `HALF_OPEN`).
#[inline(always)]
pub fn pending(ctx: &XdpContext, pkt: &mut Packet, flow: &mut FlowValue) -> u32 {
    if flow.direction == DIR_FORWARD {
        // The client thinks the connection open: what it sends now is early.
        return early(ctx, pkt, flow);
    }
    let flags = pkt.tcp_flags;
    if flags & TCP_RST != 0 {
        return refused(ctx, pkt, flow);
    }
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
        return answered(ctx, pkt, flow);
    }
    if flags & (TCP_SYN | TCP_ACK | TCP_FIN) == TCP_ACK && flow.proxy & PROXY_RESENT == 0 {
        return time_wait(ctx, pkt, flow);
    }
    drop(Counter::DropSynProxyEarly)
}

/// A client's segment before the backend answered: dropped (the client sends
/// it again). If it is the client's first again (the sequence number after
/// its ISN) a while after the SYN went, the SYN goes again in its place: the
/// first may have been lost. Not inlined, for the stack.
#[inline(never)]
fn early(ctx: &XdpContext, pkt: &mut Packet, flow: &mut FlowValue) -> u32 {
    count(Counter::DropSynProxyEarly);
    let Some(tcp) = read_tcp(ctx, pkt) else {
        return xdp_action::XDP_DROP;
    };
    if flow.proxy & PROXY_RESENT != 0
        || tcp.seq.wrapping_sub(1) != flow.isn_delta
        || clock::now_ns().wrapping_sub(flow.created_ns) < SYN_AGAIN_NS
    {
        return xdp_action::XDP_DROP;
    }
    if !ack_into_syn(ctx, pkt, Proxy::of_flow(flow, tcp.window)) {
        return drop(Counter::DropNoRoom);
    }
    count(Counter::SynProxySynAgain);
    nat::translate(ctx, pkt, flow);
    forward::forward(ctx, pkt, flow)
}

/// The backend answered the proxied SYN with a bare ACK: the 4-tuple is in
/// its TIME_WAIT (an older connection's, on the same SNAT port), which took
/// the SYN for an old duplicate because the client's ISN is not past the
/// sequence number it expects next (the ACK's). The SYN goes again, back
/// where the ACK came from, with an ISN past that; the flow's `isn_delta`
/// follows from the backend's SYN-ACK. Once per flow. Not inlined, for the
/// stack.
#[inline(never)]
fn time_wait(ctx: &XdpContext, pkt: &Packet, reply: &mut FlowValue) -> u32 {
    let Some(tcp) = read_tcp(ctx, pkt) else {
        return drop(Counter::DropMalformed);
    };
    let Some(seg) = segment() else {
        return drop(Counter::DropNoRoom);
    };
    let word = reply.proxy;
    let data = CookieData::from_bits((word >> PROXY_DATA_SHIFT) & 0x7f);
    reply_to(seg, &pkt.key);
    seg.seq = tcp.ack.wrapping_add(TIME_WAIT_GAP);
    seg.ack = 0;
    seg.window = word as u16;
    seg.flags = TCP_SYN;
    seg.mss = data.mss(pkt.key.family == FAMILY_V6);
    seg.wscale = data.wscale;
    seg.sack = data.sack as u8;
    if write_segment(ctx).is_none() || !swap_macs(ctx) {
        return drop(Counter::DropNoRoom);
    }
    reply.proxy = word | PROXY_RESENT;
    let forward_key = reply.peer_key(pkt.key.proto, pkt.key.family);
    if let Some(forward) = HALF_OPEN.get_ptr_mut(&forward_key) {
        // SAFETY: a map value pointer is valid for the duration of the program.
        unsafe { (*forward).proxy = word | PROXY_RESENT };
    }
    count(Counter::SynProxyTimeWait);
    xdp_action::XDP_TX
}

/// The backend answered the proxied SYN: the flow is established, in
/// `FLOWS`, with its sequence offset, and the backend gets the ACK of its
/// SYN-ACK that the client's handshake owes it. Not inlined, for the stack.
#[inline(never)]
fn answered(ctx: &XdpContext, pkt: &Packet, reply: &mut FlowValue) -> u32 {
    let Some(tcp) = read_tcp(ctx, pkt) else {
        return drop(Counter::DropMalformed);
    };
    let now = clock::now_ns();
    let v6 = pkt.key.family == FAMILY_V6;
    let (backend_ws, backend_mss) = match tcpopt::syn_opts(ctx, pkt.l4_off, tcp.doff) {
        Some(o) => (o.wscale, o.mss),
        None => (NO_WSCALE as u32, 0),
    };
    learn_mss(backend_mss, v6);
    let word = reply.proxy;
    let data = CookieData::from_bits((word >> PROXY_DATA_SHIFT) & 0x7f);
    let rescale = if data.wscale == NO_WSCALE {
        0
    } else if backend_ws == NO_WSCALE as u32 {
        // The backend does not scale (nor, then, read the client's scaled).
        window_rescale(0, PROXY_WSCALE)
    } else {
        window_rescale(backend_ws.min(14) as u8, PROXY_WSCALE)
    };
    let delta = tcp.seq.wrapping_sub(reply.seq_delta);
    // (While PROXY_SYN, seq_delta is the cookie.)
    let established = PROXIED | rescale | cookie_mark(reply.seq_delta);
    // The SYN's ISN (the client's, or past a TIME_WAIT's) less the client's.
    let isn_delta = tcp.ack.wrapping_sub(1).wrapping_sub(reply.isn_delta);
    let forward_key = reply.peer_key(pkt.key.proto, pkt.key.family);
    let Some(forward) = HALF_OPEN.get_ptr_mut(&forward_key) else {
        // Its other half is gone (expired): the flow cannot be completed.
        return drop(Counter::DropHalfOpenOrphan);
    };
    // SAFETY: a map value pointer is valid for the duration of the program.
    let forward = unsafe { &mut *forward };
    if !flow::is_half(forward, DIR_FORWARD, &pkt.key) {
        // The client's key is another flow's now (this one's forward half
        // was removed, and the client's next cookie opened a new flow).
        return drop(Counter::DropHalfOpenOrphan);
    }
    forward.state = STATE_ESTABLISHED;
    forward.seq_delta = delta;
    forward.isn_delta = isn_delta;
    forward.proxy = established;
    forward.last_seen_ns = now;
    reply.state = STATE_ESTABLISHED;
    reply.seq_delta = delta;
    reply.isn_delta = isn_delta;
    reply.proxy = established;
    reply.last_seen_ns = now;
    if let Err(reason) = handshake::promote(&forward_key, forward, &pkt.key, reply) {
        return drop(reason);
    }
    count(Counter::SynProxyEstablished);
    ack_back(ctx, &pkt.key, &tcp, word as u16)
}

/// Answers the backend's SYN-ACK (of `key`, read as `tcp`) with an ACK of
/// `window`, sent back where it came from.
#[inline(always)]
fn ack_back(ctx: &XdpContext, key: &FlowKey, tcp: &Tcp, window: u16) -> u32 {
    let Some(seg) = segment() else {
        return drop(Counter::DropNoRoom);
    };
    reply_to(seg, key);
    seg.seq = tcp.ack;
    seg.ack = tcp.seq.wrapping_add(1);
    seg.window = window;
    seg.flags = TCP_ACK;
    seg.mss = 0;
    seg.wscale = NO_WSCALE;
    seg.sack = 0;
    if write_segment(ctx).is_none() || !swap_macs(ctx) {
        return drop(Counter::DropNoRoom);
    }
    xdp_action::XDP_TX
}

/// The backend refused the proxied SYN: the client, which thinks the
/// connection open, gets the reset, its sequence number in the client's
/// window (the cookie's next). Not inlined, for the stack.
#[inline(never)]
fn refused(ctx: &XdpContext, pkt: &Packet, reply: &mut FlowValue) -> u32 {
    if pkt.l4_off > MAX_L4_OFFSET {
        return drop(Counter::DropMalformed);
    }
    let Some(t) = ptr_at::<TcpWire>(ctx, pkt.l4_off) else {
        return drop(Counter::DropMalformed);
    };
    // SAFETY: bounds checked by ptr_at.
    let t = unsafe { &mut *t };
    let new = reply.seq_delta.wrapping_add(1).to_be_bytes();
    let check = csum::replace_u32(
        u16::from_ne_bytes(t.check),
        u32::from_ne_bytes(t.seq),
        u32::from_ne_bytes(new),
    );
    t.seq = new;
    t.check = check.to_ne_bytes();
    let forward_key = reply.peer_key(pkt.key.proto, pkt.key.family);
    if let Some(forward) = HALF_OPEN.get_ptr_mut(&forward_key) {
        // SAFETY: a map value pointer is valid for the duration of the program.
        flow::release(
            unsafe { &mut *forward },
            pkt.key.proto,
            pkt.key.family,
            false,
        );
    }
    reply.state = STATE_CLOSING;
    count(Counter::SynProxyRefused);
    nat::translate(ctx, pkt, reply);
    maps::count_backend(reply.backend, false, pkt.ip_len);
    forward::forward(ctx, pkt, reply)
}

/// A packet of an established SYN-proxied flow (`proxy` not 0): its
/// sequence numbers translated, then as any other.
#[inline(never)]
pub fn established(ctx: &XdpContext, pkt: &Packet, flow: &mut FlowValue) -> u32 {
    let Some(tcp) = read_tcp(ctx, pkt) else {
        return drop(Counter::DropMalformed);
    };
    // Again for the verifier: the offset is read from memory anew below.
    if pkt.l4_off > MAX_L4_OFFSET {
        return drop(Counter::DropMalformed);
    }
    let flags = pkt.tcp_flags;
    let forward = flow.direction == DIR_FORWARD;
    if !forward && flags & (TCP_SYN | TCP_RST | TCP_FIN) == TCP_SYN {
        // The backend sent its SYN-ACK again: our ACK was lost.
        return ack_back(ctx, &pkt.key, &tcp, REACK_WINDOW);
    }
    // Towards the backend, sequence numbers go from the client's space to
    // the one the backend was given (`isn_delta`, mostly 0), acknowledgements
    // from the cookie's to the backend's (`seq_delta`); back, the reverse.
    let (delta, isn) = (flow.seq_delta, flow.isn_delta);
    let (seq_add, ack_add) = if forward {
        (isn, delta)
    } else {
        (delta.wrapping_neg(), isn.wrapping_neg())
    };
    let mut sum = 0u64;
    if tcp.doff > 20
        && ack_add != 0
        && let Some(opts) = tcpopt::parse(ctx, pkt.l4_off, tcp.doff)
    {
        sum += opts.shift_sack(ctx, pkt.l4_off, ack_add);
    }
    let Some(t) = ptr_at::<TcpWire>(ctx, pkt.l4_off) else {
        return drop(Counter::DropMalformed);
    };
    // SAFETY: bounds checked by ptr_at.
    let t = unsafe { &mut *t };
    if seq_add != 0 {
        let new = tcp.seq.wrapping_add(seq_add).to_be_bytes();
        sum += csum::delta_u32(u32::from_ne_bytes(t.seq), u32::from_ne_bytes(new));
        t.seq = new;
    }
    if flags & TCP_ACK != 0 && ack_add != 0 {
        let new = tcp.ack.wrapping_add(ack_add).to_be_bytes();
        sum += csum::delta_u32(u32::from_ne_bytes(t.ack), u32::from_ne_bytes(new));
        t.ack = new;
    }
    let rescale = flow.proxy;
    if !forward && rescale & WINDOW_RESCALE != 0 {
        let window = cookie::rescale_window(
            tcp.window,
            ((rescale >> 4) & 15) as u8,
            (rescale & 15) as u8,
        )
        .to_be_bytes();
        sum += csum::delta_u16(u16::from_ne_bytes(t.window), u16::from_ne_bytes(window));
        t.window = window;
    }
    // The checksum takes these changes with the addresses' and ports'.
    nat::translate_with(ctx, pkt, flow, sum);
    maps::count_backend(flow.backend, flow.direction == DIR_FORWARD, pkt.ip_len);
    forward::forward(ctx, pkt, flow)
}

#[inline(always)]
fn drop(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_DROP
}
