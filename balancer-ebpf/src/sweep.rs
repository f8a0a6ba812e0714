//! Flow expiry, in the kernel: the daemon runs `sweep_flows` (through
//! BPF_PROG_TEST_RUN) every sweep interval. It walks `FLOWS` with
//! `bpf_for_each_map_elem`, removes both entries of every flow idle past its
//! limit, and gives back its backend's active count (atomically, once, as a
//! FIN would) and so its SNAT port. Flows of a backend marked
//! `BACKEND_F_PURGE` go whatever their age. No system call per entry, and no race with
//! packets of the same flow on other CPUs.
//!
//! Flows an HA peer opened and synced here (`owner` not ours) are kept
//! whatever their age: their owner says when they end, unless they ended
//! here. A takeover adopts them (`SweepLimits::adopt`): they become this
//! node's, idle from now.
//!
//! On the way it counts what it keeps: entries in all (the table's fill level)
//! and, per backend, the reply entries (in full NAT, the SNAT ports held), for
//! the daemon's metrics.

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::{bpf_for_each_map_elem, bpf_ktime_get_coarse_ns},
    macros::xdp,
    programs::XdpContext,
};
use balancer_common::{
    expiry::{ADOPT_ALL, BackendSweep, SweepLimits, SweepStats},
    flow::{DIR_REPLY, FlowKey, FlowValue, OWNER_SELF, RELEASED},
    service::{BACKEND_F_PURGE, BackendIndex},
};

use crate::{
    flow,
    maps::{BACKENDS, FLOWS, SWEEP_BACKENDS, SWEEP_LIMITS, SWEEP_STATS},
};

#[repr(C)]
struct Sweep {
    now: u64,
    limits: SweepLimits,
    stats: SweepStats,
}

#[xdp]
pub fn sweep_flows(_ctx: XdpContext) -> u32 {
    let Some(limits) = SWEEP_LIMITS.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let generation = SWEEP_STATS.get(0).map_or(1, SweepStats::next_generation);
    let mut sweep = Sweep {
        // The clock flow timestamps come from.
        now: unsafe { bpf_ktime_get_coarse_ns() },
        limits: *limits,
        stats: SweepStats {
            generation,
            ..SweepStats::default()
        },
    };
    // SAFETY: FLOWS is a map definition (its address is what the helper takes),
    // and sweep_one has the callback signature bpf_for_each_map_elem expects.
    unsafe {
        bpf_for_each_map_elem(
            &FLOWS as *const _ as *mut c_void,
            sweep_one as *mut c_void,
            &mut sweep as *mut Sweep as *mut c_void,
            0,
        )
    };
    if let Some(out) = SWEEP_STATS.get_ptr_mut(0) {
        // SAFETY: a map value pointer is valid for the duration of the program.
        unsafe { *out = sweep.stats };
    }
    xdp_action::XDP_PASS
}

/// One entry of `FLOWS`. Reply entries go with their forward entry; one whose
/// forward entry is gone (evicted) goes when idle past every limit.
#[inline(never)]
extern "C" fn sweep_one(
    _map: *mut c_void,
    key: *mut FlowKey,
    value: *mut FlowValue,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: bpf_for_each_map_elem passes the entry's key and value and the
    // Sweep that sweep_flows gave it.
    let (key, value, s) = unsafe { (&*key, &mut *value, &mut *(ctx as *mut Sweep)) };
    s.stats.scanned += 1;
    // A peer's flow that ended here (in active-active its FIN may cross this
    // node) goes like a closing flow of ours: its owner heard of the end from
    // this node and says no more of it.
    let ended_here = value.direction != DIR_REPLY && value.released & RELEASED != 0;
    if value.owner != OWNER_SELF && !ended_here {
        let adopt = s.limits.adopt;
        if adopt != ADOPT_ALL && adopt != value.owner {
            // A peer's flow ends on its owner's word, never by idleness here.
            s.stats.kept_entries += 1;
            s.stats.held_entries += 1;
            if value.direction == DIR_REPLY {
                count_reply(value.backend, s.stats.generation);
            }
            return 0;
        }
        // Ours from now on, its idle time starting now: on the peer it may
        // have been busy all along.
        value.owner = OWNER_SELF;
        value.last_seen_ns = s.now;
        if value.direction != DIR_REPLY {
            s.stats.adopted += 1;
        }
    }
    let peer_key = value.peer_key(key.proto, key.family);
    let peer = FLOWS.get_ptr(&peer_key);
    if value.direction == DIR_REPLY {
        // One with its forward entry is counted (or removed) with it.
        if peer.is_none() {
            if s.now.saturating_sub(value.last_seen_ns) >= s.limits.longest_ns {
                let _ = FLOWS.remove(key);
                s.stats.removed_entries += 1;
            } else {
                s.stats.kept_entries += 1;
                count_reply(value.backend, s.stats.generation);
            }
        }
        return 0;
    }
    // SAFETY: a map value pointer is valid for the duration of the program.
    let peer_seen = peer.map_or(0, |p| unsafe { (*p).last_seen_ns });
    let last = if peer_seen > value.last_seen_ns {
        peer_seen
    } else {
        value.last_seen_ns
    };
    let purged = BACKENDS
        .get(value.backend.0)
        .is_some_and(|b| b.flags & BACKEND_F_PURGE != 0);
    let limit = s.limits.idle_limit_ns(key.proto, value.state, purged);
    if s.now.saturating_sub(last) < limit {
        s.stats.kept_entries += 1;
        if peer.is_some() {
            s.stats.kept_entries += 1;
            count_reply(value.backend, s.stats.generation);
        }
        return 0;
    }
    s.stats.expired += 1;
    if flow::release(value, key.proto, key.family) {
        s.stats.released += 1;
    }
    // Either may be gone already (the LRU, or a packet racing us): fine.
    if FLOWS.remove(&peer_key).is_ok() {
        s.stats.removed_entries += 1;
    }
    if FLOWS.remove(key).is_ok() {
        s.stats.removed_entries += 1;
    }
    0
}

/// One more kept reply entry of `backend` in this sweep's count.
#[inline(always)]
fn count_reply(backend: BackendIndex, generation: u32) {
    if let Some(b) = SWEEP_BACKENDS.get_ptr_mut(backend.0) {
        // SAFETY: a map value pointer; the sweep is the only writer.
        let b = unsafe { &mut *b };
        if b.generation != generation {
            *b = BackendSweep {
                generation,
                reply_entries: 0,
            };
        }
        b.reply_entries += 1;
    }
}
