//! What each global counter counts, for the metric family and label it goes
//! to. The snapshot itself is the admin API's (`api::stats`).

use balancer_common::stats::Counter;

/// Health states, in the order the metrics list them.
pub const HEALTH_STATES: [&str; 4] = ["up", "down", "unknown", "unchecked"];

/// What a global counter counts, for the metric it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent on by the program (`via`: `tx` or `redirect`).
    Forwarded(&'static str),
    /// Given to the host's stack, and why.
    Passed(&'static str),
    /// Dropped, and why (the `reason` label).
    Dropped(&'static str),
    /// A new flow.
    Connection,
    /// An ICMP error about a flow, translated and sent on.
    IcmpRelayed,
    /// A flow change the sync ring had no room for.
    SyncLost,
    /// A SYN cookie sent or found valid (the `result` label).
    SynCookie(&'static str),
    /// A TCP handshake completed, directly or through the SYN proxy (`via`).
    Handshake(&'static str),
    /// A backend refused a SYN-proxied handshake.
    SynProxyRefused,
    /// The SYN proxy sent a backend its SYN again, and why (`reason`).
    SynProxyResent(&'static str),
}

/// The metric and label of each global counter.
pub const fn outcome(c: Counter) -> Outcome {
    match c {
        Counter::PassNotForUs => Outcome::Passed("not_for_us"),
        Counter::PassNoService => Outcome::Passed("no_service"),
        Counter::PassFragment => Outcome::Passed("fragment"),
        Counter::PassNoNeighbour => Outcome::Passed("no_neighbour"),
        Counter::PassFibOther => Outcome::Passed("no_route"),
        Counter::PassNoFlow => Outcome::Passed("no_flow"),
        Counter::ForwardTx => Outcome::Forwarded("tx"),
        Counter::ForwardRedirect => Outcome::Forwarded("redirect"),
        Counter::NewFlow => Outcome::Connection,
        Counter::DropMalformed => Outcome::Dropped("malformed"),
        Counter::DropNoBackend => Outcome::Dropped("no_healthy_backend"),
        Counter::DropSnatExhausted => Outcome::Dropped("snat_exhausted"),
        Counter::DropFlowTableFull => Outcome::Dropped("flow_table_full"),
        Counter::DropFirewall => Outcome::Dropped("firewall"),
        Counter::DropRateLimit => Outcome::Dropped("rate_limit"),
        Counter::IcmpRelayed => Outcome::IcmpRelayed,
        Counter::DropArpNotActive => Outcome::Dropped("arp_not_active"),
        Counter::DropNotActive => Outcome::Dropped("not_active"),
        Counter::DropTakeoverGrace => Outcome::Dropped("takeover_grace"),
        Counter::SyncLost => Outcome::SyncLost,
        Counter::SynCookieSent => Outcome::SynCookie("sent"),
        Counter::SynCookieValid => Outcome::SynCookie("valid"),
        Counter::DropSynCookieInvalid => Outcome::Dropped("syn_cookie_invalid"),
        Counter::SynProxyEstablished => Outcome::Handshake("syn_proxy"),
        Counter::SynProxyRefused => Outcome::SynProxyRefused,
        Counter::DropSynProxyEarly => Outcome::Dropped("syn_proxy_early_data"),
        Counter::DropNoRoom => Outcome::Dropped("no_room"),
        Counter::HandshakeCompleted => Outcome::Handshake("direct"),
        Counter::SynProxyTimeWait => Outcome::SynProxyResent("time_wait"),
        Counter::SynProxySynAgain => Outcome::SynProxyResent("no_answer"),
        Counter::DropHalfOpenOrphan => Outcome::Dropped("half_open_orphan"),
    }
}

/// The drop reason of a counter, if it counts drops.
pub const fn reason(c: Counter) -> Option<&'static str> {
    match outcome(c) {
        Outcome::Dropped(reason) => Some(reason),
        _ => None,
    }
}

/// Every drop reason, in `Counter` order.
pub fn drop_reasons() -> impl Iterator<Item = (Counter, &'static str)> {
    Counter::ALL
        .into_iter()
        .filter_map(|c| reason(c).map(|r| (c, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_counter_has_a_reason_and_nothing_else_does() {
        for c in Counter::ALL {
            assert_eq!(
                reason(c).is_some(),
                c.name().starts_with("drop_"),
                "{}",
                c.name()
            );
        }
        let reasons: Vec<_> = drop_reasons().map(|(_, r)| r).collect();
        for wanted in [
            "firewall",
            "rate_limit",
            "snat_exhausted",
            "no_healthy_backend",
            "malformed",
        ] {
            assert!(reasons.contains(&wanted), "{wanted} in {reasons:?}");
        }
    }
}
