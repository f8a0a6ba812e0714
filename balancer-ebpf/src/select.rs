//! Backend choice for a new flow, by the service's scheduler. Each returns a
//! selectable slot (healthy, not draining, weight and capacity left) or falls
//! back to least-connections, which finds one if any exists.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_loop},
    macros::map,
    maps::PerCpuArray,
};
use balancer_common::{
    flow::FlowKey,
    sched::{capacity, flow_hash, less_busy},
    service::{
        BackendIndex, MAGLEV_M, MAX_BACKENDS_PER_SERVICE, P2C_TRIES, RR_TABLE_LEN, SCHED_MAGLEV,
        SCHED_P2C, SCHED_ROUND_ROBIN, ServiceId, ServiceValue,
    },
};

use crate::maps::{
    ACTIVE_CONNS, BACKEND_LOAD, BACKENDS, MAGLEV_TABLE, RR_TABLE, SCAN_CURSOR, SERVICE_SLOTS,
};

/// Tries of the round-robin sequence before falling back (entries of backends
/// that went down since the daemon built it).
const RR_TRIES: u32 = 4;

#[inline(always)]
pub fn choose(service: &ServiceValue, key: &FlowKey) -> Option<BackendIndex> {
    let n = service.backend_count;
    if n == 0 || n > MAX_BACKENDS_PER_SERVICE {
        return None;
    }
    let chosen = match service.scheduler {
        SCHED_ROUND_ROBIN => round_robin(service),
        SCHED_P2C => power_of_two(service, n),
        SCHED_MAGLEV => maglev(service, key),
        _ => None,
    };
    match chosen {
        Some(idx) => Some(idx),
        None => least_conn(service, n),
    }
}

/// A backend's active connections and capacity, if it may take a new flow.
#[inline(always)]
fn load_of(idx: BackendIndex) -> Option<(u64, u64)> {
    let backend = BACKENDS.get(idx.0)?;
    if !backend.selectable() {
        return None;
    }
    let cap = capacity(
        backend.weight,
        BACKEND_LOAD.get(idx.0).copied().unwrap_or(0),
    );
    if cap == 0 {
        return None;
    }
    let active = ACTIVE_CONNS.get(idx.0).copied().unwrap_or(0);
    Some((active, cap))
}

#[inline(always)]
fn random_below(n: u32) -> u32 {
    unsafe { bpf_get_prandom_u32() }.checked_rem(n).unwrap_or(0)
}

/// State of a least-connections scan, shared with its `bpf_loop` callback.
#[repr(C)]
pub struct Scan {
    service: ServiceId,
    n: u32,
    start: u32,
    /// 1 once a selectable backend was seen (then `best` is it).
    found: u32,
    best: BackendIndex,
    best_slot: u32,
    best_active: u64,
    best_cap: u64,
}

/// Per-CPU state of a least-connections scan (see `select::scan_one`).
#[map]
pub static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

/// One backend of a least-connections scan. Run by `bpf_loop`, so the verifier
/// checks it once rather than once per iteration of an unrolled loop (which,
/// times the paths that lead to a new flow, went past its million-instruction
/// budget).
#[inline(never)]
extern "C" fn scan_one(i: u32, _ctx: *mut c_void) -> i64 {
    let Some(s) = SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value, filled by least_conn before the scan.
    let s = unsafe { &mut *s };
    if i >= s.n {
        return 1;
    }
    let mut slot = s.start + i;
    if slot >= s.n {
        slot -= s.n;
    }
    let Some(&idx) = SERVICE_SLOTS.get(s.service.slot(slot)) else {
        return 0;
    };
    if let Some((active, cap)) = load_of(idx)
        && (s.found == 0 || less_busy(active, cap, s.best_active, s.best_cap))
    {
        s.found = 1;
        s.best = idx;
        s.best_slot = slot;
        s.best_active = active;
        s.best_cap = cap;
    }
    0
}

/// The fewest active connections per unit of capacity. The scan starts at a
/// per-CPU rotating cursor so that ties go to each backend in turn.
#[inline(always)]
fn least_conn(service: &ServiceValue, n: u32) -> Option<BackendIndex> {
    let cursor = SCAN_CURSOR.get_ptr_mut(service.id.0)?;
    // Offset by the CPU so that CPUs taking turns on sequential connections do
    // not all start with the same backend.
    // SAFETY: per-CPU value, no other writer on this CPU while we run.
    let start = (unsafe { *cursor })
        .wrapping_add(unsafe { bpf_get_smp_processor_id() })
        .checked_rem(n)?;
    // A raw pointer, not a reference: `scan_one` changes the scan through the
    // map while `bpf_loop` runs, which a reference held here would tell the
    // compiler cannot happen.
    let scan = SCAN.get_ptr_mut(0)?;
    // Field by field: a struct literal would be built on the stack first.
    // Volatile: adjacent zero stores would be merged into a `memset` call.
    // SAFETY: per-CPU map value, used by this program run only.
    unsafe {
        (*scan).service = service.id;
        (*scan).n = n;
        (*scan).start = start;
        write_volatile(&mut (*scan).found, 0);
        write_volatile(&mut (*scan).best, BackendIndex(0));
        write_volatile(&mut (*scan).best_slot, 0);
        write_volatile(&mut (*scan).best_active, 0);
        write_volatile(&mut (*scan).best_cap, 0);
    }
    // SAFETY: scan_one has bpf_loop's callback signature; it finds the scan in
    // SCAN (kept off the stack, which is full at this depth).
    unsafe { bpf_loop(n, scan_one as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above; read after the scan, which wrote them.
    let (found, best, best_slot) = unsafe {
        (
            read_volatile(&(*scan).found),
            read_volatile(&(*scan).best),
            read_volatile(&(*scan).best_slot),
        )
    };
    if found == 0 {
        return None;
    }
    // The next scan on this CPU starts after the chosen backend.
    // SAFETY: as above.
    unsafe { *cursor = (best_slot + 1).wrapping_sub(bpf_get_smp_processor_id()) };
    Some(best)
}

/// The next entry of the service's weighted sequence (built by the daemon),
/// from a per-CPU cursor.
#[inline(always)]
fn round_robin(service: &ServiceValue) -> Option<BackendIndex> {
    let len = service.rr_len;
    if len == 0 || len > RR_TABLE_LEN {
        return None;
    }
    let cursor = SCAN_CURSOR.get_ptr_mut(service.id.0)?;
    for _ in 0..RR_TRIES {
        // SAFETY: per-CPU value, no other writer on this CPU while we run.
        let pos = unsafe {
            let pos = (*cursor).checked_rem(len).unwrap_or(0);
            *cursor = pos + 1;
            pos
        };
        let slot = *RR_TABLE.get(service.id.rr_entry(pos))?;
        let idx = *SERVICE_SLOTS.get(service.id.slot(slot))?;
        if load_of(idx).is_some() {
            return Some(idx);
        }
    }
    None
}

/// The less busy of two random selectable backends: O(1) however large the pool.
#[inline(always)]
fn power_of_two(service: &ServiceValue, n: u32) -> Option<BackendIndex> {
    // Plain values rather than an Option of a tuple: LLVM spills the unset
    // fields of a None, which the verifier refuses to read.
    let mut have_first = false;
    let mut first = BackendIndex(0);
    let mut first_active = 0u64;
    let mut first_cap = 0u64;
    for _ in 0..P2C_TRIES {
        let Some(&idx) = SERVICE_SLOTS.get(service.id.slot(random_below(n))) else {
            continue;
        };
        let Some((active, cap)) = load_of(idx) else {
            continue;
        };
        if !have_first {
            have_first = true;
            first = idx;
            first_active = active;
            first_cap = cap;
        } else if idx != first || n == 1 {
            return Some(if less_busy(active, cap, first_active, first_cap) {
                idx
            } else {
                first
            });
        }
    }
    have_first.then_some(first)
}

/// The backend the service's Maglev table gives the flow's hash: the same on
/// every node and after the flow's state is lost.
#[inline(always)]
fn maglev(service: &ServiceValue, key: &FlowKey) -> Option<BackendIndex> {
    let entry = flow_hash(key) % MAGLEV_M;
    let slot = *MAGLEV_TABLE.get(service.id.maglev_entry(entry))?;
    if slot >= MAX_BACKENDS_PER_SERVICE {
        return None;
    }
    let idx = *SERVICE_SLOTS.get(service.id.slot(slot))?;
    load_of(idx).map(|_| idx)
}
