//! The HA lease: whether this node answers for the floating addresses and
//! opens flows. The daemon's HA thread renews `HA_LEASE` while the node is
//! active; a daemon that died stops renewing it, so its program steps back on
//! its own.

use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::maps::HA_LEASE;

/// This node is in a high-availability pair and not the active one (or its
/// daemon stopped renewing the lease). 0 in the map: no high availability.
#[inline(always)]
pub fn expired() -> bool {
    let lease = HA_LEASE.get(0).copied().unwrap_or(0);
    // SAFETY: a helper without arguments.
    lease != 0 && unsafe { bpf_ktime_get_ns() } > lease
}
