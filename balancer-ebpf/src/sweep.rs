//! Flow expiry, in the kernel: the daemon runs `sweep_flows`, then
//! `sweep_half_open` (through BPF_PROG_TEST_RUN) every sweep interval. It walks `FLOWS` with
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
//! `HALF_OPEN` is walked too: a half-open TCP flow goes once it is
//! `SweepLimits::tcp_syn_ns` old, whatever it has seen since its SYN (its
//! `last_seen_ns` is never moved on), and is counted as such.
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
    flow::{DIR_REPLY, FlowKey, FlowValue, OWNER_SELF, RELEASED, STATE_PROXY_SYN},
    service::{BACKEND_F_PURGE, BackendIndex},
};

use core::mem::MaybeUninit;

use crate::{
    copy, flow,
    maps::{BACKENDS, FLOWS, HALF_OPEN, SWEEP_BACKENDS, SWEEP_LIMITS, SWEEP_STATS},
};

#[repr(C)]
struct Sweep {
    now: u64,
    limits: SweepLimits,
    stats: SweepStats,
}

/// The entry of `key` in the table being walked (`HALF_OPEN` when `HALF`).
#[inline(always)]
fn get<const HALF: bool>(key: &FlowKey) -> Option<*const FlowValue> {
    if HALF {
        HALF_OPEN.get_ptr(key)
    } else {
        FLOWS.get_ptr(key)
    }
}

/// Removes `key` from the table being walked.
#[inline(always)]
fn remove<const HALF: bool>(key: &FlowKey) -> bool {
    if HALF {
        HALF_OPEN.remove(key).is_ok()
    } else {
        FLOWS.remove(key).is_ok()
    }
}

/// Expires the idle flows of `FLOWS`, starting a new sweep's counts.
#[xdp]
pub fn sweep_flows(_ctx: XdpContext) -> u32 {
    run::<false>()
}

/// Expires the half-open flows of `HALF_OPEN`, adding to the counts of the
/// sweep of `FLOWS` just before it (the daemon runs the two one after the
/// other). Two programs rather than one walking both tables: the verifier
/// would check the second walk once for every state the first ends in.
#[xdp]
pub fn sweep_half_open(_ctx: XdpContext) -> u32 {
    run::<true>()
}

#[inline(always)]
fn run<const HALF: bool>() -> u32 {
    let Some(limits) = SWEEP_LIMITS.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(out) = SWEEP_STATS.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // Word by word, zeroed then filled: a struct literal and a copy of it
    // would be `memset` and `memmove` loops of a byte a turn, which the
    // verifier walks once for every state that reaches them.
    let mut sweep = MaybeUninit::<Sweep>::uninit();
    // SAFETY: all zeroes is a valid Sweep; the fields are then set.
    let sweep = unsafe {
        copy::zero_words(sweep.as_mut_ptr());
        sweep.assume_init_mut()
    };
    // The clock flow timestamps come from.
    // SAFETY: a helper without arguments.
    sweep.now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a map value and a local of the same type.
    unsafe { copy::words(&mut sweep.limits, limits) };
    if HALF {
        // SAFETY: as above.
        unsafe { copy::words(&mut sweep.stats, out) };
    } else {
        // SAFETY: a map value pointer is valid for the duration of the program.
        sweep.stats.generation = unsafe { (*out).next_generation() };
    }
    // SAFETY: FLOWS and HALF_OPEN are map definitions (their address is what
    // the helper takes), and the callbacks have the signature
    // bpf_for_each_map_elem expects.
    unsafe {
        if HALF {
            bpf_for_each_map_elem(
                &HALF_OPEN as *const _ as *mut c_void,
                sweep_half_open_one as *mut c_void,
                sweep as *mut Sweep as *mut c_void,
                0,
            )
        } else {
            bpf_for_each_map_elem(
                &FLOWS as *const _ as *mut c_void,
                sweep_flow as *mut c_void,
                sweep as *mut Sweep as *mut c_void,
                0,
            )
        }
    };
    // SAFETY: as above.
    unsafe { copy::words(out, &sweep.stats) };
    xdp_action::XDP_PASS
}

/// One entry of `FLOWS`.
#[inline(never)]
extern "C" fn sweep_flow(
    _map: *mut c_void,
    key: *mut FlowKey,
    value: *mut FlowValue,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: bpf_for_each_map_elem passes the entry's key and value and the
    // Sweep that sweep_flows gave it.
    unsafe { sweep_one::<false>(&*key, &mut *value, &mut *(ctx as *mut Sweep)) }
}

/// One entry of `HALF_OPEN`.
#[inline(never)]
extern "C" fn sweep_half_open_one(
    _map: *mut c_void,
    key: *mut FlowKey,
    value: *mut FlowValue,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: as above.
    unsafe { sweep_one::<true>(&*key, &mut *value, &mut *(ctx as *mut Sweep)) }
}

/// One entry of `FLOWS`, or of `HALF_OPEN` (`HALF`). Reply entries go with
/// their forward entry; one whose forward entry is gone (evicted) goes when
/// idle past every limit (in `HALF_OPEN`, past the half-open one).
#[inline(always)]
fn sweep_one<const HALF: bool>(key: &FlowKey, value: &mut FlowValue, s: &mut Sweep) -> i64 {
    s.stats.scanned += 1;
    let created = value.created_ns;
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
    let peer = get::<HALF>(&peer_key);
    if value.direction == DIR_REPLY {
        // One with its forward entry is counted (or removed) with it.
        if peer.is_none() {
            let longest = if HALF {
                s.limits.tcp_syn_ns
            } else {
                s.limits.longest_ns
            };
            if s.now.saturating_sub(value.last_seen_ns) >= longest {
                if remove::<HALF>(key) {
                    s.stats.removed_entries += 1;
                }
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
    let limit = if HALF {
        // Whatever its state (a reset may have closed it): half-open.
        if purged { 0 } else { s.limits.tcp_syn_ns }
    } else {
        s.limits.idle_limit_ns(key.proto, value.state, purged)
    };
    if s.now.saturating_sub(last) < limit {
        s.stats.kept_entries += 1;
        if peer.is_some() {
            s.stats.kept_entries += 1;
            count_reply(value.backend, s.stats.generation);
        }
        return 0;
    }
    // A preallocated map hands an entry's memory to the next insert as soon
    // as it is removed: if a packet removed this flow while we looked and a
    // new one took its place (a reused port, HALF_OPEN's churn), `key` and
    // `value` are the new flow's now, which must not be expired for the old
    // one's idleness. Only the flow we looked at is expired, and only its
    // own peer with it (both entries of a flow share `created_ns`).
    // SAFETY: a map value pointer is valid for the duration of the program.
    if !get::<HALF>(key).is_some_and(|p| unsafe { (*p).created_ns } == created) {
        s.stats.kept_entries += 1;
        return 0;
    }
    s.stats.expired += 1;
    if HALF {
        // Half-open when it expires (or reset before its handshake completed).
        s.stats.half_open_expired += 1;
        if value.state == STATE_PROXY_SYN {
            s.stats.proxy_expired += 1;
        }
    }
    if flow::release(value, key.proto, key.family, !HALF) {
        s.stats.released += 1;
    }
    // Either may be gone already (evicted from `FLOWS`, or a packet racing
    // us): fine.
    // SAFETY: as above.
    if peer.is_some_and(|p| unsafe { (*p).created_ns } == created) && remove::<HALF>(&peer_key) {
        s.stats.removed_entries += 1;
    }
    if remove::<HALF>(key) {
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
