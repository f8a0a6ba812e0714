//! TCP flows whose handshake has not completed (`HALF_OPEN`): the backend's
//! SYN-ACK is recorded, the client's ACK of it moves the flow to `FLOWS`
//! (`promote`). Nothing a half-open flow sees makes it younger: the SYN-ACKs
//! a backend sends again to a spoofed client do not keep its flow, which
//! the sweep removes `flows.tcp_syn_timeout_s` after the SYN.

use aya_ebpf::programs::XdpContext;
use balancer_common::{
    flow::{
        DIR_FORWARD, FlowKey, FlowValue, STATE_CLOSING, STATE_ESTABLISHED, STATE_NEW,
        STATE_SYN_RECEIVED,
    },
    stats::Counter,
};

use crate::{
    clock, flood, flow, forward,
    maps::{self, FLOWS, HALF_OPEN, count},
    nat,
    parse::{self, Packet},
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

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
            && establish(pkt, flow)
            && let Some(moved) = FLOWS.get_ptr_mut(&pkt.key)
        {
            // The half-open entry may be reused by another CPU's new flow
            // from now on: this packet goes on with the established one.
            // SAFETY: as above.
            flow = unsafe { &mut *moved };
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
#[inline(always)]
fn establish(pkt: &Packet, forward: &mut FlowValue) -> bool {
    let reply_key = forward.peer_key(pkt.key.proto, pkt.key.family);
    let Some(reply) = HALF_OPEN.get_ptr_mut(&reply_key) else {
        // Its other half was evicted: it stays half-open until it expires.
        return false;
    };
    // SAFETY: a map value pointer is valid for the duration of the program.
    let reply = unsafe { &mut *reply };
    let now = clock::now_ns();
    forward.state = STATE_ESTABLISHED;
    forward.seq_delta = 0;
    forward.last_seen_ns = now;
    reply.state = STATE_ESTABLISHED;
    reply.seq_delta = 0;
    reply.last_seen_ns = now;
    if !promote(&pkt.key, forward, &reply_key, reply) {
        return false;
    }
    count(Counter::HandshakeCompleted);
    flood::completed();
    true
}

/// Moves a flow whose handshake completed from `HALF_OPEN` to `FLOWS`, both
/// entries as they are now (the reply entry first, so that its SNAT port is
/// in one of the tables throughout), and tells the HA peers of it. The
/// packet at hand goes on with the entries it has (freed only after the
/// program's run).
#[inline(never)]
pub fn promote(
    forward_key: &FlowKey,
    forward: &FlowValue,
    reply_key: &FlowKey,
    reply: &FlowValue,
) -> bool {
    if FLOWS.insert(reply_key, reply, 0).is_err() {
        return false;
    }
    if FLOWS.insert(forward_key, forward, 0).is_err() {
        let _ = FLOWS.remove(reply_key);
        return false;
    }
    let _ = HALF_OPEN.remove(reply_key);
    let _ = HALF_OPEN.remove(forward_key);
    crate::sync::new_flow(forward_key, forward);
    true
}
