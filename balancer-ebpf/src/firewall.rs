//! Admission of a new flow: source rules (see `balancer_common::firewall` for
//! the order), then the per-source new-connection rate. Established flows never
//! come here.

use aya_ebpf::maps::lpm_trie::Key;
use balancer_common::{
    FAMILY_V6,
    firewall::{
        Bucket, RULE_ALLOW, RULE_DENY, RuleKeyV4, RuleKeyV6, Scope, rule_prefix_len, take_token,
    },
    global::{GLOBAL_F_ALLOW_LIST, GLOBAL_F_BLOCK_LIST, GLOBAL_F_DEFAULT_DENY, Global},
    service::{AddrKey, SERVICE_F_ALLOW_LIST, SERVICE_F_RULES, ServiceValue},
    stats::Counter,
};

use crate::{
    maps::{FIREWALL_V4, FIREWALL_V6, GLOBAL, RATE_BUCKETS},
    parse::Packet,
};

#[inline(always)]
pub fn admit(pkt: &Packet, service: &ServiceValue) -> Result<(), Counter> {
    if !sources_allow(pkt, service) {
        return Err(Counter::DropFirewall);
    }
    if !within_rate(pkt) {
        return Err(Counter::DropRateLimit);
    }
    Ok(())
}

/// The action of the longest rule of `scope` that matches the packet's
/// source, 0 for none. A plain number: an `Option<u32>` compiles to a read of
/// its payload when there is none, which the verifier refuses.
#[inline(always)]
fn rule(scope: Scope, pkt: &Packet) -> u32 {
    if pkt.key.family == FAMILY_V6 {
        let key = Key::new(
            rule_prefix_len(128),
            RuleKeyV6 {
                scope_be: scope.key(),
                addr: pkt.key.src,
            },
        );
        FIREWALL_V6.get(&key).copied().unwrap_or(0)
    } else {
        let key = Key::new(
            rule_prefix_len(32),
            RuleKeyV4 {
                scope_be: scope.key(),
                addr: pkt.key.src[0],
            },
        );
        FIREWALL_V4.get(&key).copied().unwrap_or(0)
    }
}

/// The source rules alone (without the rate of new connections). A list
/// the configuration leaves empty is not looked up (an LPM lookup costs
/// tens of nanoseconds, which a SYN answered with a cookie feels).
#[inline(always)]
pub fn sources_allow(pkt: &Packet, service: &ServiceValue) -> bool {
    let flags = GLOBAL.get(Global::Flags.index()).copied().unwrap_or(0);
    if flags & GLOBAL_F_BLOCK_LIST != 0 && rule(Scope::Block, pkt) == RULE_DENY {
        return false;
    }
    let own = if service.flags & SERVICE_F_RULES != 0 {
        rule(Scope::Service(service.id), pkt)
    } else {
        0
    };
    match own {
        RULE_ALLOW => return true,
        0 if service.flags & SERVICE_F_ALLOW_LIST != 0 => return false,
        0 => {}
        _ => return false,
    }
    if flags & GLOBAL_F_ALLOW_LIST != 0 && rule(Scope::Allow, pkt) == RULE_ALLOW {
        return true;
    }
    flags & GLOBAL_F_DEFAULT_DENY == 0
}

#[inline(always)]
fn within_rate(pkt: &Packet) -> bool {
    let rate = GLOBAL.get(Global::Rate.index()).copied().unwrap_or(0);
    if rate == 0 {
        return true;
    }
    let burst = GLOBAL.get(Global::Burst.index()).copied().unwrap_or(rate);
    let now = crate::clock::now_ns();
    let key = AddrKey {
        addr: pkt.key.src,
        family: pkt.key.family,
        _pad0: 0,
        _pad1: 0,
    };
    match RATE_BUCKETS.get_ptr_mut(&key) {
        // Concurrent updates from two CPUs may each take a token from the same
        // reading: the bound is exact per CPU, approximate across them.
        // SAFETY: a map value pointer is valid for the duration of the program.
        Some(bucket) => take_token(unsafe { &mut *bucket }, now, rate, burst),
        None => {
            let mut bucket = Bucket {
                tokens_milli: burst as u64 * 1000,
                last_ns: now,
            };
            let admitted = take_token(&mut bucket, now, rate, burst);
            // A source the table has no room for is admitted: the LRU evicts
            // the least recent sources instead of refusing new ones.
            let _ = RATE_BUCKETS.insert(&key, &bucket, 0);
            admitted
        }
    }
}
