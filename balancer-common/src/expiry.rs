//! The in-kernel flow sweep's input and output (`SWEEP_LIMITS`, `SWEEP_STATS`).

/// Idle limits, in nanoseconds, that the daemon writes before each sweep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepLimits {
    pub tcp_established_ns: u64,
    /// Handshake not answered yet, or closing.
    pub tcp_transitory_ns: u64,
    pub udp_ns: u64,
    /// For reply entries whose forward entry was evicted.
    pub longest_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SweepLimits>() == 32);

/// What the last sweep did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Entries looked at, both directions.
    pub scanned: u64,
    /// Flows (forward entries) idle past their limit.
    pub expired: u64,
    /// Entries removed, both directions.
    pub removed_entries: u64,
    /// Active counts given back (flows that ended without a FIN or RST).
    pub released: u64,
}
const _: () = assert!(core::mem::size_of::<SweepStats>() == 32);

crate::user_pod!(SweepLimits, SweepStats);
