//! TCP flows whose handshake has not completed (`HALF_OPEN`): the backend's
//! SYN-ACK is recorded, the client's ACK of it moves the flow to `FLOWS`
//! (`promote`). Nothing a half-open flow sees makes it younger: the SYN-ACKs
//! a backend sends again to a spoofed client do not keep its flow, which
//! the sweep removes `flows.tcp_syn_timeout_s` after the SYN.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use balancer_common::{
    flow::{
        DIR_FORWARD, DIR_REPLY, FlowKey, FlowValue, STATE_CLOSING, STATE_ESTABLISHED, STATE_NEW,
        STATE_SYN_RECEIVED,
    },
    stats::Counter,
};

use crate::{
    clock, flood, flow, forward,
    maps::{self, FLOWS, HALF_OPEN, count},
    nat,
    parse::{self, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// A packet of a flow in `HALF_OPEN` opened without the SYN proxy (see
/// `synproxy::pending` for those opened with it). Not inlined: the
/// established path's frame stays as small as it was.
#[inline(never)]
pub fn half_open(ctx: &XdpContext, pkt: &Packet, flow: &mut FlowValue) -> u32 {
    let mut flow = flow;
    let flags = pkt.tcp_flags;
    let end = flags & (TCP_FIN | TCP_RST) != 0;
    if flow.direction == DIR_FORWARD {
        if end {
            flow::release(flow, pkt.key.proto, pkt.key.family, false);
        } else if flow.state == STATE_SYN_RECEIVED
            && flags & (TCP_SYN | TCP_ACK) == TCP_ACK
            && parse::read_tcp(ctx, pkt).is_some_and(|t| t.ack == flow.seq_delta)
        {
            if let Err(reason) = establish(pkt, flow) {
                count(reason);
                return xdp_action::XDP_DROP;
            }
            // The half-open entry may be reused by another CPU's new flow
            // from now on: this packet goes on with the established one.
            if let Some(moved) = FLOWS.get_ptr_mut(&pkt.key) {
                // SAFETY: as above.
                flow = unsafe { &mut *moved };
            }
        }
    } else if end || flow.state == STATE_NEW && flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
        answered(ctx, pkt, flow, end);
    }
    nat::translate(ctx, pkt, flow);
    maps::count_backend(flow.backend, flow.direction == DIR_FORWARD, pkt.ip_len);
    forward::forward(ctx, pkt, flow)
}

/// The backend's SYN-ACK (recorded on both entries, with the acknowledgement
/// the client's ACK must carry), or its reset or FIN (the flow released).
#[inline(always)]
fn answered(ctx: &XdpContext, pkt: &Packet, reply: &mut FlowValue, end: bool) {
    let forward_key = reply.peer_key(pkt.key.proto, pkt.key.family);
    let Some(forward) = HALF_OPEN.get_ptr_mut(&forward_key) else {
        return;
    };
    // SAFETY: a map value pointer is valid for the duration of the program.
    let forward = unsafe { &mut *forward };
    if end {
        flow::release(forward, pkt.key.proto, pkt.key.family, false);
        reply.state = STATE_CLOSING;
        return;
    }
    let Some(tcp) = parse::read_tcp(ctx, pkt) else {
        return;
    };
    forward.seq_delta = tcp.seq.wrapping_add(1);
    forward.state = STATE_SYN_RECEIVED;
    reply.state = STATE_SYN_RECEIVED;
}

/// The client acknowledged the backend's SYN-ACK: the handshake is complete.
/// A flow whose other half is gone (expired) or another flow's cannot be.
#[inline(always)]
fn establish(pkt: &Packet, forward: &mut FlowValue) -> Result<(), Counter> {
    let reply_key = forward.peer_key(pkt.key.proto, pkt.key.family);
    let Some(reply) = HALF_OPEN.get_ptr_mut(&reply_key) else {
        return Err(Counter::DropHalfOpenOrphan);
    };
    // SAFETY: a map value pointer is valid for the duration of the program.
    let reply = unsafe { &mut *reply };
    if !flow::is_half(reply, DIR_REPLY, &pkt.key) {
        return Err(Counter::DropHalfOpenOrphan);
    }
    let now = clock::now_ns();
    forward.state = STATE_ESTABLISHED;
    forward.seq_delta = 0;
    forward.last_seen_ns = now;
    reply.state = STATE_ESTABLISHED;
    reply.seq_delta = 0;
    reply.last_seen_ns = now;
    promote(&pkt.key, forward, &reply_key, reply)?;
    count(Counter::HandshakeCompleted);
    flood::completed();
    Ok(())
}

/// Moves a flow whose handshake completed from `HALF_OPEN` to `FLOWS`, both
/// entries as they are now (the reply entry first, so that its SNAT port is
/// in one of the tables throughout), and tells the HA peers of it. The
/// entries go in only if they are still each other's halves: another CPU
/// may have removed one meanwhile, and `HALF_OPEN` reuses a removed entry at
/// once (under a SYN flood, a reply entry once went into `FLOWS` under its
/// client's key, and the client's packets were sent back to it).
#[inline(never)]
pub fn promote(
    forward_key: &FlowKey,
    forward: &FlowValue,
    reply_key: &FlowKey,
    reply: &FlowValue,
) -> Result<(), Counter> {
    let (forward, reply) = flow::both_halves(forward_key, forward, reply_key, reply)
        .ok_or(Counter::DropHalfOpenOrphan)?;
    if FLOWS.insert(reply_key, reply, 0).is_err() {
        return Err(Counter::DropFlowTableFull);
    }
    if FLOWS.insert(forward_key, forward, 0).is_err() {
        let _ = FLOWS.remove(reply_key);
        return Err(Counter::DropFlowTableFull);
    }
    let _ = HALF_OPEN.remove(reply_key);
    let _ = HALF_OPEN.remove(forward_key);
    crate::sync::new_flow(forward_key, forward);
    Ok(())
}
