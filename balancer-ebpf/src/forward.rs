//! Next hop by FIB lookup, then XDP_TX out of the same interface or a redirect
//! through the device map.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use balancer_common::{flow::FlowValue, stats::Counter};
use network_types::eth::EthHdr;

use crate::{
    maps::{TX_PORTS, count},
    parse::{Packet, ptr_at},
};

const AF_INET: u8 = 2;

#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, flow: &FlowValue) -> u32 {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = pkt.proto;
    params.sport = flow.new_sport_be;
    params.dport = flow.new_dport_be;
    params.__bindgen_anon_1.tot_len = pkt.ip_len;
    // SAFETY: reading the xdp_md of the running program.
    params.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    params.__bindgen_anon_3.ipv4_src = flow.new_src[0];
    params.__bindgen_anon_4.ipv4_dst = flow.new_dst[0];

    // SAFETY: params is a valid, writable bpf_fib_lookup of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        // The packet is already translated: the host's stack forwards it and
        // resolves the neighbour, after which later packets take the fast path.
        count(Counter::PassNoNeighbour);
        return xdp_action::XDP_PASS;
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        count(Counter::PassFibOther);
        return xdp_action::XDP_PASS;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).dst_addr = params.dmac;
        (*eth).src_addr = params.smac;
    }
    // SAFETY: reading the xdp_md of the running program.
    if params.ifindex == unsafe { (*ctx.ctx).ingress_ifindex } {
        count(Counter::ForwardTx);
        return xdp_action::XDP_TX;
    }
    // An egress interface without the program (not in the map) gets the packet
    // through the host's stack.
    match TX_PORTS.redirect(params.ifindex, xdp_action::XDP_PASS as u64) {
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
