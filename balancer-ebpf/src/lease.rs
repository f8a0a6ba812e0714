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
    let until = HA_LEASE.get(0).map_or(0, |l| l.until_ns);
    // SAFETY: a helper without arguments.
    until != 0 && unsafe { bpf_ktime_get_ns() } > until
}

/// This node took over moments ago: a segment of no known flow may belong to
/// one whose state is still on its way from the old active node.
#[inline(always)]
pub fn in_takeover_grace() -> bool {
    let until = HA_LEASE.get(0).map_or(0, |l| l.takeover_grace_until_ns);
    // SAFETY: a helper without arguments.
    until != 0 && unsafe { bpf_ktime_get_ns() } < until
}
