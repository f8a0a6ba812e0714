//! High availability in the kernel: the lease that says whether this node
//! answers for the floating addresses and opens flows (`HA_LEASE`).

/// Value of `HA_LEASE`, in `CLOCK_MONOTONIC` nanoseconds (what
/// `bpf_ktime_get_ns` reads).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Until when the floating addresses are this node's: the HA thread
    /// renews it while active. 0: no high availability, always ours.
    pub until_ns: u64,
    /// Until when, after a takeover, a TCP segment of no known flow is
    /// dropped (and counted) rather than left to the host, which would reset
    /// it: its flow's state may still be on its way from the old active node.
    pub takeover_grace_until_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Lease>() == 16);

crate::user_pod!(Lease);
