//! Flow changes for the standby node: a new flow's forward entry, and the end
//! of a flow (FIN, RST, expiry), into the `FLOW_EVENTS` ring buffer that the
//! daemon's HA thread streams to its peer. Only with `GLOBAL_F_SYNC`: without
//! high availability the hot path pays one array lookup.

use balancer_common::{
    flow::{FlowKey, FlowValue, SYNC_CLOSED, SYNC_NEW, SyncEvent},
    global::{GLOBAL_F_SYNC, Global},
    stats::Counter,
};

use crate::maps::{FLOW_EVENTS, GLOBAL, count};

/// The daemon drains the ring on a timer: a wake-up per flow would cost it
/// more than the record.
const BPF_RB_NO_WAKEUP: u64 = 1;

#[inline(always)]
fn enabled() -> bool {
    GLOBAL
        .get(Global::Flags.index())
        .is_some_and(|f| f & GLOBAL_F_SYNC != 0)
}

/// A record of `kind` for the ring, filled by `fill` field by field (so that
/// no 128-byte value is built on the stack) and submitted; counted as lost
/// when the ring is full. Nothing without sync.
#[inline(always)]
fn record(kind: u32, fill: impl FnOnce(*mut SyncEvent)) {
    if !enabled() {
        return;
    }
    let Some(mut entry) = FLOW_EVENTS.reserve::<SyncEvent>(0) else {
        count(Counter::SyncLost);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: the reserved record is ours until submitted.
    unsafe {
        (*e).kind = kind;
        (*e)._pad = 0;
    }
    fill(e);
    entry.submit(BPF_RB_NO_WAKEUP);
}

/// A flow was created: `key` and `forward` are its forward entry.
#[inline(never)]
pub fn new_flow(key: &FlowKey, forward: &FlowValue) {
    // SAFETY: a reserved record, ours until submitted.
    record(SYNC_NEW, |e| unsafe {
        (*e).key = *key;
        (*e).value = *forward;
    });
}

/// A flow ended: `forward` is its forward entry, whose rewrite names the reply
/// entry's key.
#[inline(never)]
pub fn closed(forward: &FlowValue, proto: u8, family: u8) {
    // SAFETY: as above.
    record(SYNC_CLOSED, |e| unsafe {
        (*e).key.src = forward.new_dst;
        (*e).key.dst = forward.new_src;
        (*e).key.sport_be = forward.new_dport_be;
        (*e).key.dport_be = forward.new_sport_be;
        (*e).key.proto = proto;
        (*e).key.family = family;
        (*e).key._pad = [0; 2];
        (*e).value = *forward;
    });
}
