//! Flow expiry limits. The sweep itself runs in the kernel
//! ([`crate::dataplane::Dataplane::sweep`]) and chooses each flow's limit
//! (`SweepLimits::idle_limit_ns`); this module turns `[flows]` into the
//! limits and picks how often to run it.

use std::time::Duration;

use balancer_common::expiry::SweepLimits;

use crate::config::Flows;

/// Idle limits by protocol and state, from `[flows]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: Duration,
    /// Closing.
    pub tcp_transitory: Duration,
    /// Handshake not completed (half-open), from the SYN.
    pub tcp_syn: Duration,
    pub udp: Duration,
}

impl From<&Flows> for Timeouts {
    fn from(f: &Flows) -> Self {
        Self {
            tcp_established: Duration::from_secs(f.tcp_established_timeout_s.into()),
            tcp_transitory: Duration::from_secs(f.tcp_transitory_timeout_s.into()),
            tcp_syn: Duration::from_secs(f.tcp_syn_timeout_s.into()),
            udp: Duration::from_secs(f.udp_timeout_s.into()),
        }
    }
}

impl Timeouts {
    /// The longest limit: a reply entry whose forward entry is gone (evicted)
    /// is removed after this much idleness.
    pub fn longest(&self) -> Duration {
        self.tcp_established.max(self.tcp_transitory).max(self.udp)
    }

    /// The limits as the kernel's sweep takes them.
    pub fn limits(&self) -> SweepLimits {
        let ns = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        SweepLimits {
            tcp_established_ns: ns(self.tcp_established),
            tcp_transitory_ns: ns(self.tcp_transitory),
            tcp_syn_ns: ns(self.tcp_syn),
            udp_ns: ns(self.udp),
            longest_ns: ns(self.longest()),
            ..SweepLimits::default()
        }
    }

    /// How often to sweep: often enough that a flow outlives its limit by at
    /// most about half of the shortest one, at most once a second.
    pub fn sweep_interval(&self) -> Duration {
        (self
            .tcp_transitory
            .min(self.tcp_syn)
            .min(self.udp)
            .min(self.tcp_established)
            / 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            tcp_established: Duration::from_secs(3600),
            tcp_transitory: Duration::from_secs(30),
            tcp_syn: Duration::from_secs(30),
            udp: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_longest_limit_is_for_reply_entries_without_their_forward_entry() {
        assert_eq!(timeouts().longest(), timeouts().tcp_established);
    }

    #[test]
    fn sweep_interval_is_half_the_shortest_limit_within_bounds() {
        assert_eq!(timeouts().sweep_interval(), Duration::from_secs(15));
        let short = Timeouts {
            tcp_transitory: Duration::from_secs(1),
            ..timeouts()
        };
        assert_eq!(short.sweep_interval(), Duration::from_secs(1));
        let syn = Timeouts {
            tcp_syn: Duration::from_secs(5),
            ..timeouts()
        };
        assert_eq!(syn.sweep_interval(), Duration::from_millis(2500));
    }

    #[test]
    fn limits_are_in_nanoseconds() {
        let l = timeouts().limits();
        assert_eq!(l.tcp_established_ns, 3_600_000_000_000);
        assert_eq!(l.tcp_transitory_ns, 30_000_000_000);
        assert_eq!(l.tcp_syn_ns, 30_000_000_000);
        assert_eq!(l.udp_ns, 60_000_000_000);
        assert_eq!(l.longest_ns, l.tcp_established_ns);
    }
}
