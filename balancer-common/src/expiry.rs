//! The in-kernel flow sweep's input and output (`SWEEP_LIMITS`, `SWEEP_STATS`),
//! and its one decision: how long a flow may stay idle.

use crate::{
    PROTO_TCP,
    flow::{STATE_ESTABLISHED, half_open},
};

/// Idle limits, in nanoseconds, that the daemon writes before each sweep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepLimits {
    pub tcp_established_ns: u64,
    /// Closing.
    pub tcp_transitory_ns: u64,
    /// Handshake not completed (half-open), from the first SYN: nothing a
    /// half-open flow sees makes it younger.
    pub tcp_syn_ns: u64,
    pub udp_ns: u64,
    /// For reply entries whose forward entry was evicted.
    pub longest_ns: u64,
    /// Flows of this owner (an HA peer's node id, or [`ADOPT_ALL`] peers') are
    /// this node's from this sweep on: their owner becomes `OWNER_SELF` and
    /// their idle time starts now. 0: none.
    pub adopt: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SweepLimits>() == 48);

/// [`SweepLimits::adopt`]: every peer's flows (an active-standby takeover).
pub const ADOPT_ALL: u32 = u32::MAX;

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
    /// Entries left in the table when the sweep ended, both directions (as
    /// far as a walk that packets race can tell).
    pub kept_entries: u64,
    /// Flows (forward entries) of a peer that this sweep made this node's
    /// ([`SweepLimits::adopt`]).
    pub adopted: u64,
    /// Entries of peers' flows kept as they are (never expired here).
    pub held_entries: u64,
    /// Of `expired`, flows whose handshake had not completed (half-open).
    pub half_open_expired: u64,
    /// Of those, SYN-proxied flows whose backend never answered the SYN.
    pub proxy_expired: u64,
    /// Numbers the sweeps: the [`BackendSweep`] entries this sweep wrote carry it.
    pub generation: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SweepStats>() == 80);

/// What the last sweep found per backend (`SWEEP_BACKENDS`, indexed like
/// `BACKENDS`). An entry whose `generation` is not the last sweep's was not
/// written by it: its backend had no reply entries then.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSweep {
    pub generation: u32,
    /// Reply entries of the backend's flows that the sweep kept: in full NAT,
    /// the SNAT ports the backend's flows hold.
    pub reply_entries: u32,
}
const _: () = assert!(core::mem::size_of::<BackendSweep>() == 8);

impl SweepLimits {
    /// How long a flow of `proto` whose forward entry is in `state` may stay
    /// idle, in nanoseconds; 0 for a flow of a purged backend (it goes now).
    #[inline(always)]
    pub fn idle_limit_ns(&self, proto: u8, state: u8, purged: bool) -> u64 {
        if purged {
            0
        } else if proto != PROTO_TCP {
            self.udp_ns
        } else if state == STATE_ESTABLISHED {
            self.tcp_established_ns
        } else if half_open(state) {
            self.tcp_syn_ns
        } else {
            self.tcp_transitory_ns
        }
    }
}

impl SweepStats {
    /// The generation that follows `self`'s (never 0, which the map starts with).
    pub const fn next_generation(&self) -> u32 {
        match self.generation.wrapping_add(1) {
            0 => 1,
            g => g,
        }
    }
}

crate::user_pod!(SweepLimits, SweepStats, BackendSweep);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        PROTO_UDP,
        flow::{STATE_CLOSING, STATE_NEW, STATE_PROXY_SYN, STATE_SYN_RECEIVED},
    };

    #[test]
    fn idle_limits_follow_protocol_and_state() {
        let l = SweepLimits {
            tcp_established_ns: 3600,
            tcp_transitory_ns: 30,
            tcp_syn_ns: 5,
            udp_ns: 60,
            longest_ns: 3600,
            ..SweepLimits::default()
        };
        assert_eq!(l.idle_limit_ns(PROTO_TCP, STATE_NEW, false), 5);
        assert_eq!(l.idle_limit_ns(PROTO_TCP, STATE_SYN_RECEIVED, false), 5);
        assert_eq!(l.idle_limit_ns(PROTO_TCP, STATE_PROXY_SYN, false), 5);
        assert_eq!(l.idle_limit_ns(PROTO_TCP, STATE_ESTABLISHED, false), 3600);
        assert_eq!(l.idle_limit_ns(PROTO_TCP, STATE_CLOSING, false), 30);
        assert_eq!(l.idle_limit_ns(PROTO_UDP, STATE_ESTABLISHED, false), 60);
        assert_eq!(l.idle_limit_ns(PROTO_TCP, STATE_ESTABLISHED, true), 0);
        assert_eq!(l.idle_limit_ns(PROTO_UDP, STATE_NEW, true), 0);
    }
}
