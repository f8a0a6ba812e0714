//! Next hop by FIB lookup, then XDP_TX out of the same interface or a redirect
//! through the device map.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action,
    },
    helpers::bpf_fib_lookup,
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use balancer_common::{
    FAMILY_V6, RawAddr,
    flow::FlowValue,
    service::{BackendIndex, MAX_BACKENDS},
    stats::Counter,
};
use network_types::eth::EthHdr;

use crate::{
    copy,
    maps::{IFACE_MTU, TX_PORTS, count},
    parse::{Packet, ptr_at},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Per-CPU room for a FIB lookup's request and answer.
#[map]
pub static FIB_PARAMS: PerCpuArray<FibParams> = PerCpuArray::with_max_entries(1, 0);

/// Where a translated packet goes next.
pub struct NextHop {
    pub ifindex: u32,
    /// 0 when unknown: every packet then takes the lookup.
    pub mtu: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// Sends the translated packet on: to the flow's cached next hop, or to the one
/// the FIB gives, which is then cached in `flow` (for an entry of the flow
/// table, its later packets skip the lookup).
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, flow: &mut FlowValue) -> u32 {
    // A packet larger than the cached hop's MTU takes the lookup too, which
    // refuses it (the stack then fragments it or says it is too big).
    if flow.nh_ifindex == 0 || pkt.ip_len > flow.nh_mtu {
        match lookup(ctx, pkt, flow) {
            Ok(hop) => {
                flow.nh_ifindex = hop.ifindex;
                flow.nh_mtu = hop.mtu;
                flow.nh_dmac = hop.dmac;
                flow.nh_smac = hop.smac;
            }
            Err(counter) => {
                // The packet is already translated: the host's stack forwards
                // it (and resolves a missing neighbour, after which the next
                // packet finds the next hop).
                count(counter);
                return xdp_action::XDP_PASS;
            }
        }
    }
    transmit(ctx, flow)
}

/// How long a backend's next hop is reused for its new flows before the FIB
/// is asked again: a FIB lookup is about a sixth of a new flow's cost, and a
/// neighbour that changes its Ethernet address is followed within this time.
const HOP_CACHE_NS: u64 = 1_000_000_000;

/// A backend's next hop as the FIB gave it for one of its recent new flows.
#[repr(C)]
pub struct CachedHop {
    /// The backend it was learned for: indexes are reused for other backends.
    addr: RawAddr,
    learned_ns: u64,
    /// Where the flow came in, an input of the lookup.
    ingress: u32,
    /// 0: nothing cached.
    ifindex: u32,
    mtu: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// Per-CPU, per-backend next hop of recent new flows (see
/// `forward::learn_backend_hop`).
#[map]
pub static BACKEND_HOPS: PerCpuArray<CachedHop> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Learns a new forward entry's next hop: this CPU's cached one for its
/// backend while it is recent, else the FIB's, which is then cached. Flows of
/// one backend within `HOP_CACHE_NS` therefore share a path even where the FIB
/// would spread them over equal-cost routes. An unresolved neighbour leaves
/// the entry without a next hop, to be looked up by its next packet.
#[inline(always)]
pub fn learn_backend_hop(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: &mut FlowValue,
    backend_idx: BackendIndex,
    now: u64,
) {
    let Some(cached) = BACKEND_HOPS.get_ptr_mut(backend_idx.0) else {
        return;
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let cached = unsafe { &mut *cached };
    // SAFETY: reading the xdp_md of the running program.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if cached.ifindex != 0
        && cached.ingress == ingress
        && now.wrapping_sub(cached.learned_ns) < HOP_CACHE_NS
        && pkt.ip_len as u32 <= cached.mtu
        && cached.addr == flow.new_dst
    {
        flow.nh_ifindex = cached.ifindex;
        flow.nh_mtu = cached.mtu as u16;
        copy::bytes(&mut flow.nh_dmac, &cached.dmac);
        copy::bytes(&mut flow.nh_smac, &cached.smac);
        return;
    }
    let Ok(hop) = lookup(ctx, pkt, flow) else {
        return;
    };
    flow.nh_ifindex = hop.ifindex;
    flow.nh_mtu = hop.mtu;
    copy::bytes(&mut flow.nh_dmac, &hop.dmac);
    copy::bytes(&mut flow.nh_smac, &hop.smac);
    if hop.mtu == 0 {
        // No recorded MTU: every packet of the flow takes the lookup anyway.
        return;
    }
    copy::addr(&mut cached.addr, &flow.new_dst);
    cached.learned_ns = now;
    cached.ingress = ingress;
    cached.ifindex = hop.ifindex;
    cached.mtu = hop.mtu as u32;
    copy::bytes(&mut cached.dmac, &hop.dmac);
    copy::bytes(&mut cached.smac, &hop.smac);
}

/// The FIB's next hop for the packet as `flow` translates it, or the counter
/// that says why there is none. Not inlined, and its request kept in a per-CPU
/// map: on the 512-byte BPF stack it would crowd the callers' frames.
#[inline(never)]
pub fn lookup(ctx: &XdpContext, pkt: &Packet, flow: &FlowValue) -> Result<NextHop, Counter> {
    let Some(params) = FIB_PARAMS.get_ptr_mut(0) else {
        return Err(Counter::PassFibOther);
    };
    // SAFETY: per-CPU map value, used by this program run only; an all-zero
    // bpf_fib_lookup is a valid (empty) request.
    let params = unsafe {
        copy::zero_words(params);
        &mut *params
    };
    params.l4_protocol = pkt.key.proto;
    params.sport = flow.new_sport_be;
    params.dport = flow.new_dport_be;
    params.__bindgen_anon_1.tot_len = pkt.ip_len;
    // SAFETY: reading the xdp_md of the running program.
    params.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if pkt.key.family == FAMILY_V6 {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = flow.new_src;
        params.__bindgen_anon_4.ipv6_dst = flow.new_dst;
    } else {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = flow.new_src[0];
        params.__bindgen_anon_4.ipv4_dst = flow.new_dst[0];
    }

    // SAFETY: params is a valid, writable bpf_fib_lookup of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, params, size_of::<FibParams>() as i32, 0) };
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return Err(Counter::PassNoNeighbour);
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return Err(Counter::PassFibOther);
    }
    Ok(NextHop {
        ifindex: params.ifindex,
        mtu: mtu_of(params.ifindex),
        dmac: params.dmac,
        smac: params.smac,
    })
}

/// The MTU the daemon recorded for an interface it may redirect to.
#[inline(always)]
pub fn mtu_of(ifindex: u32) -> u16 {
    // SAFETY: a map value pointer is valid for the duration of the program.
    IFACE_MTU
        .get_ptr(&ifindex)
        .map_or(0, |mtu| unsafe { *mtu } as u16)
}

#[inline(always)]
fn transmit(ctx: &XdpContext, flow: &FlowValue) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        copy::bytes(&raw mut (*eth).dst_addr, &flow.nh_dmac);
        copy::bytes(&raw mut (*eth).src_addr, &flow.nh_smac);
    }
    // SAFETY: reading the xdp_md of the running program.
    if flow.nh_ifindex == unsafe { (*ctx.ctx).ingress_ifindex } {
        count(Counter::ForwardTx);
        return xdp_action::XDP_TX;
    }
    // An egress interface without the program (not in the map) gets the packet
    // through the host's stack.
    match TX_PORTS.redirect(flow.nh_ifindex, xdp_action::XDP_PASS as u64) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => {
            count(Counter::ForwardRedirect);
            action
        }
        Ok(action) | Err(action) => {
            count(Counter::PassFibOther);
            action
        }
    }
}
