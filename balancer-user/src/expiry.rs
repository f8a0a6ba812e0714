//! Flow expiry: which flows have been idle for longer than their state allows.
//! The daemon sweeps the flow table with [`crate::dataplane::Dataplane::sweep`];
//! this module holds the pure rules.

use std::time::Duration;

use balancer_common::{
    PROTO_TCP,
    flow::{FlowValue, STATE_ESTABLISHED},
};

use crate::config::Flows;

/// Idle limits by protocol and state, from `[flows]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: Duration,
    /// Handshake not answered yet, or closing.
    pub tcp_transitory: Duration,
    pub udp: Duration,
}

impl From<&Flows> for Timeouts {
    fn from(f: &Flows) -> Self {
        Self {
            tcp_established: Duration::from_secs(f.tcp_established_timeout_s.into()),
            tcp_transitory: Duration::from_secs(f.tcp_transitory_timeout_s.into()),
            udp: Duration::from_secs(f.udp_timeout_s.into()),
        }
    }
}

impl Timeouts {
    /// How long a flow whose forward entry is `forward` may stay idle.
    pub fn idle_limit(&self, proto: u8, forward: &FlowValue) -> Duration {
        if proto != PROTO_TCP {
            self.udp
        } else if forward.state == STATE_ESTABLISHED {
            self.tcp_established
        } else {
            self.tcp_transitory
        }
    }

    /// The longest limit: a reply entry whose forward entry is gone (evicted)
    /// is removed after this much idleness.
    pub fn longest(&self) -> Duration {
        self.tcp_established.max(self.tcp_transitory).max(self.udp)
    }

    /// How often to sweep: often enough that a flow outlives its limit by at
    /// most about half of the shortest one, at most once a second.
    pub fn sweep_interval(&self) -> Duration {
        (self.tcp_transitory.min(self.udp).min(self.tcp_established) / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// Nanoseconds on CLOCK_MONOTONIC, the clock the program's flow timestamps
/// come from (`bpf_ktime_get_coarse_ns` reads its coarse variant, a tick behind
/// at most: a flow may expire a few milliseconds early).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether a flow last seen at `last_seen_ns` is idle past `limit` at `now_ns`.
pub fn is_expired(now_ns: u64, last_seen_ns: u64, limit: Duration) -> bool {
    now_ns.saturating_sub(last_seen_ns) >= limit.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use balancer_common::{
        PROTO_UDP,
        flow::{STATE_CLOSING, STATE_NEW},
    };

    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            tcp_established: Duration::from_secs(3600),
            tcp_transitory: Duration::from_secs(30),
            udp: Duration::from_secs(60),
        }
    }

    fn flow(state: u8) -> FlowValue {
        FlowValue {
            state,
            ..FlowValue::default()
        }
    }

    #[test]
    fn limits_follow_protocol_and_state() {
        let t = timeouts();
        assert_eq!(t.idle_limit(PROTO_TCP, &flow(STATE_NEW)), t.tcp_transitory);
        assert_eq!(
            t.idle_limit(PROTO_TCP, &flow(STATE_ESTABLISHED)),
            t.tcp_established
        );
        assert_eq!(
            t.idle_limit(PROTO_TCP, &flow(STATE_CLOSING)),
            t.tcp_transitory
        );
        assert_eq!(t.idle_limit(PROTO_UDP, &flow(STATE_ESTABLISHED)), t.udp);
        assert_eq!(t.longest(), t.tcp_established);
    }

    #[test]
    fn sweep_interval_is_half_the_shortest_limit_within_bounds() {
        assert_eq!(timeouts().sweep_interval(), Duration::from_secs(15));
        let short = Timeouts {
            tcp_transitory: Duration::from_secs(1),
            ..timeouts()
        };
        assert_eq!(short.sweep_interval(), Duration::from_secs(1));
    }

    #[test]
    fn expiry_is_measured_from_the_last_packet() {
        let s = 1_000_000_000;
        assert!(!is_expired(10 * s, 9 * s, Duration::from_secs(2)));
        assert!(is_expired(11 * s, 9 * s, Duration::from_secs(2)));
        // a packet seen after the sweep read the clock is not expired
        assert!(!is_expired(
            9 * s,
            10 * s,
            Duration::from_secs(0) + Duration::from_nanos(1)
        ));
    }
}
