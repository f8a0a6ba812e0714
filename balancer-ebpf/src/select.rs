//! Backend choice for a new flow.

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use balancer_common::{
    sched::{capacity, less_busy},
    service::{MAX_BACKENDS_PER_SERVICE, ServiceValue},
};

use crate::maps::{ACTIVE_CONNS, BACKEND_LOAD, BACKENDS, EXPIRED_CONNS, SCAN_CURSOR};

/// The selectable backend slot of `service` with the fewest active connections
/// per unit of capacity (weight scaled by reported load). The scan starts at a
/// per-CPU rotating cursor so that ties go to each backend in turn.
#[inline(always)]
pub fn choose(service: &ServiceValue) -> Option<u32> {
    let n = service.backend_count;
    if n == 0 || n > MAX_BACKENDS_PER_SERVICE {
        return None;
    }
    let base = service.id * MAX_BACKENDS_PER_SERVICE;
    let cursor = SCAN_CURSOR.get_ptr_mut(service.id)?;
    // Offset by the CPU so that CPUs taking turns on sequential connections do
    // not all start with the same backend.
    // SAFETY: per-CPU value, no other writer on this CPU while we run.
    let start = (unsafe { *cursor }).wrapping_add(unsafe { bpf_get_smp_processor_id() }) % n;

    let mut best: Option<u32> = None;
    let mut best_slot = 0;
    let mut best_active = 0u64;
    let mut best_cap = 0u64;
    for i in 0..MAX_BACKENDS_PER_SERVICE {
        if i >= n {
            break;
        }
        let mut slot = start + i;
        if slot >= n {
            slot -= n;
        }
        let idx = base + slot;
        let Some(backend) = BACKENDS.get(idx) else {
            continue;
        };
        if !backend.selectable() {
            continue;
        }
        let load = BACKEND_LOAD.get(idx).copied().unwrap_or(0);
        let cap = capacity(backend.weight, load);
        if cap == 0 {
            continue;
        }
        let active = ACTIVE_CONNS
            .get(idx)
            .copied()
            .unwrap_or(0)
            .saturating_sub(EXPIRED_CONNS.get(idx).copied().unwrap_or(0));
        if best.is_none() || less_busy(active, cap, best_active, best_cap) {
            best = Some(idx);
            best_slot = slot;
            best_active = active;
            best_cap = cap;
        }
    }
    if best.is_some() {
        // The next scan on this CPU starts after the chosen backend.
        // SAFETY: as above.
        unsafe { *cursor = (best_slot + 1).wrapping_sub(bpf_get_smp_processor_id()) };
    }
    best
}
