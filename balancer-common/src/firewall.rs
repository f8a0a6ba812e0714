//! Source filtering of new flows: an LPM trie of (scope, source prefix) rules and
//! a token bucket per source address.
//!
//! Order for a new flow to a service (first that decides):
//! 1. the global block list (`firewall.deny`, scope [`SCOPE_BLOCK`]);
//! 2. the service's own rules (`allow` and `deny`, scope = service id; the
//!    longest prefix decides, deny on a tie);
//! 3. a service with an allow list admits nothing else;
//! 4. the global allow list (`firewall.allow`, scope [`SCOPE_ALLOW`]);
//! 5. `firewall.default`.

use crate::service::ServiceId;

/// Whose rule a firewall rule is: a service's (its id), or one of the global
/// lists. The key holds it as a big-endian `u32` ([`Scope::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The global block list (`firewall.deny`).
    Block,
    /// The global allow list (`firewall.allow`).
    Allow,
    Service(ServiceId),
}

impl Scope {
    /// The scope as the first 32 bits of a rule key.
    #[inline(always)]
    pub const fn key(self) -> u32 {
        match self {
            Scope::Block => u32::MAX.to_be(),
            Scope::Allow => (u32::MAX - 1).to_be(),
            Scope::Service(id) => id.0.to_be(),
        }
    }
}

/// `FIREWALL_V4` values.
pub const RULE_ALLOW: u32 = 1;
pub const RULE_DENY: u32 = 2;

/// LPM prefix length of a rule for a /`prefix` source prefix (either family):
/// the scope's 32 bits, then the prefix.
pub const fn rule_prefix_len(prefix: u32) -> u32 {
    32 + prefix
}

/// Data of a `FIREWALL_V4` LPM key: the scope ([`Scope::key`], big-endian so
/// that it is matched whole: the first 32 bits of every prefix), then the IPv4
/// source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKeyV4 {
    pub scope_be: u32,
    /// Network byte order.
    pub addr: u32,
}
const _: () = assert!(core::mem::size_of::<RuleKeyV4>() == 8);

/// Data of a `FIREWALL_V6` LPM key: the scope (big-endian), then the IPv6
/// source address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKeyV6 {
    pub scope_be: u32,
    pub addr: crate::RawAddr,
}
const _: () = assert!(core::mem::size_of::<RuleKeyV6>() == 20);

/// A source's token bucket, in thousandths of a token.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tokens_milli: u64,
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Bucket>() == 16);

const MILLI: u64 = 1000;

/// Refills `bucket` for the time since its last use and takes one token if it
/// holds one. Pure, so that user-space tests cover what the program does.
#[inline(always)]
pub fn take_token(bucket: &mut Bucket, now_ns: u64, rate: u32, burst: u32) -> bool {
    let cap = burst as u64 * MILLI;
    let elapsed = now_ns.saturating_sub(bucket.last_ns);
    // rate tokens per second = rate milli-tokens per millisecond; elapsed is
    // clamped so that the product cannot overflow (a full refill takes at most
    // burst/rate seconds anyway).
    let elapsed = if elapsed > 100_000_000_000 {
        100_000_000_000
    } else {
        elapsed
    };
    let refill = elapsed / 1_000_000 * rate as u64;
    let tokens = bucket.tokens_milli + refill;
    bucket.tokens_milli = if tokens > cap { cap } else { tokens };
    bucket.last_ns = now_ns;
    if bucket.tokens_milli >= MILLI {
        bucket.tokens_milli -= MILLI;
        true
    } else {
        false
    }
}

crate::user_pod!(RuleKeyV4, RuleKeyV6, Bucket);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn full(burst: u32, now: u64) -> Bucket {
        Bucket {
            tokens_milli: burst as u64 * MILLI,
            last_ns: now,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let mut b = full(5, 10 * S);
        let passed = (0..10).filter(|_| take_token(&mut b, 10 * S, 2, 5)).count();
        assert_eq!(passed, 5);
        // half a second at 2/s refills one token
        assert!(take_token(&mut b, 10 * S + S / 2, 2, 5));
        assert!(!take_token(&mut b, 10 * S + S / 2, 2, 5));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let mut b = full(3, S);
        let passed = (0..10)
            .filter(|_| take_token(&mut b, 1000 * S, 100, 3))
            .count();
        assert_eq!(passed, 3);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut b = Bucket {
            tokens_milli: 0,
            last_ns: 5 * S,
        };
        assert!(!take_token(&mut b, 4 * S, 1000, 10));
    }
}
