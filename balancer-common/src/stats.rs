//! Counters. `STATS` is a per-CPU array indexed by [`Counter`]; user space sums
//! the CPUs when it reads.

use crate::service::ServiceId;

/// Declares [`Counter`] once: each variant with its doc, in index order, and
/// its stable name. The enum, [`Counter::ALL`], [`Counter::name`] and
/// [`COUNTER_COUNT`] all come from this one list, so that a new counter is
/// counted, listed and named together.
macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// Global data-plane counters, by what happened to a packet.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$doc])* $variant,)+
        }

        impl Counter {
            pub const ALL: [Counter; COUNTER_COUNT as usize] = [$(Counter::$variant,)+];

            /// Stable name for output and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }
        }

        pub const COUNTER_COUNT: u32 = [$($name,)+].len() as u32;
    };
}

counters! {
    /// Not IPv4/IPv6, or not for a VIP or SNAT address: the host's stack gets it.
    PassNotForUs = "pass_not_for_us",
    /// For a VIP address but no configured port/protocol: the host's stack gets it.
    PassNoService = "pass_no_service",
    /// A fragment: cannot be matched by port, the host's stack gets it.
    PassFragment = "pass_fragment",
    /// Rewritten but the next hop's neighbour is unknown: the stack resolves it.
    PassNoNeighbour = "pass_no_neighbour",
    /// No route or another FIB result the program does not forward.
    PassFibOther = "pass_fib_other",
    ForwardTx = "forward_tx",
    ForwardRedirect = "forward_redirect",
    NewFlow = "new_flow",
    /// Headers cut short or lengths that do not add up, towards a VIP or SNAT address.
    DropMalformed = "drop_malformed",
    /// No backend of the service may take a new flow: not forwarded; the
    /// host's stack refuses it (a TCP reset, ICMP port unreachable for UDP).
    DropNoBackend = "drop_no_backend",
    DropSnatExhausted = "drop_snat_exhausted",
    /// A TCP segment other than a SYN for a VIP with no flow (ended by
    /// `on_backend_down = "reset"`, expired, or never seen): the host's stack
    /// answers it with a reset, so that the client learns at once.
    PassNoFlow = "pass_no_flow",
    DropFlowTableFull = "drop_flow_table_full",
    /// Refused by a firewall rule or default.
    DropFirewall = "drop_firewall",
    /// Over `new_connections_per_source`.
    DropRateLimit = "drop_rate_limit",
    /// An ICMP error about a tracked flow, translated and sent on.
    IcmpRelayed = "icmp_relayed",
    /// An ARP packet or IPv6 neighbour solicitation about a floating address
    /// while this node's HA lease has run out (its daemon stopped renewing it):
    /// the active node answers.
    DropArpNotActive = "drop_arp_not_active",
    /// A flow change the sync ring buffer had no room for (the daemon fell
    /// behind): the standby misses it.
    SyncLost = "sync_lost",
    /// A new flow's first packet on a high-availability node that is not
    /// active (a frame flooded by a switch, or a neighbour cache not moved over
    /// yet): the active node takes new flows.
    DropNotActive = "drop_not_active",
    /// A TCP segment of no known flow just after this node took over (see
    /// `ha::Lease::takeover_grace_until_ns`): dropped, so that the client
    /// retransmits, rather than reset.
    DropTakeoverGrace = "drop_takeover_grace",
    /// A SYN to a VIP answered with a cookie by the SYN proxy (a SYN-ACK sent
    /// back, XDP_TX): no state kept, no SNAT port taken.
    SynCookieSent = "syn_cookie_sent",
    /// An ACK with a valid cookie: the flow opened (firewall, scheduler, SNAT
    /// port) and the ACK sent on to the backend as a SYN.
    SynCookieValid = "syn_cookie_valid",
    /// An ACK of no flow to a service that answers with cookies (or did
    /// lately) whose cookie is not valid: a spoofed or stale ACK.
    DropSynCookieInvalid = "drop_syn_cookie_invalid",
    /// The backend answered a SYN-proxied flow's SYN: the balancer ACKed its
    /// SYN-ACK and the flow translates sequence numbers from now on.
    SynProxyEstablished = "syn_proxy_established",
    /// The backend refused a SYN-proxied flow's SYN (a reset): the client got
    /// a reset.
    SynProxyRefused = "syn_proxy_refused",
    /// A client segment of a SYN-proxied flow before its backend answered
    /// (early data, or an ACK repeated): dropped, the client retransmits.
    DropSynProxyEarly = "drop_syn_proxy_early_data",
    /// A segment the SYN proxy had to grow (a SYN-ACK or SYN with its options)
    /// whose buffer had no room: dropped, the client sends it again.
    DropNoRoom = "drop_no_room",
    /// A TCP handshake completed through the balancer without the SYN proxy
    /// (the client acknowledged the backend's SYN-ACK): the flow left the
    /// half-open table for the flow table.
    HandshakeCompleted = "tcp_handshake_completed",
    /// The backend answered a SYN-proxied flow's SYN with an ACK of an older
    /// connection (a TIME_WAIT on the same 4-tuple that the client's initial
    /// sequence number did not pass): the SYN went again with a later one.
    SynProxyTimeWait = "syn_proxy_time_wait",
    /// The backend had not answered a SYN-proxied flow's SYN when the client
    /// sent its first segment again: the SYN went again (the first was lost).
    SynProxySynAgain = "syn_proxy_syn_again",
    /// The packet that completes a half-open flow's handshake (the client's
    /// ACK, or the backend's SYN-ACK to the SYN proxy) found the flow's other
    /// half gone (expired) or another flow's (removed by another CPU at the
    /// same moment and its room reused): dropped, the flow not completed.
    DropHalfOpenOrphan = "drop_half_open_orphan",
}

/// `SERVICE_DROPS` index of a drop of a new flow to a service, by reason.
#[inline(always)]
pub const fn service_drop_index(service: ServiceId, reason: Counter) -> u32 {
    service.0 * COUNTER_COUNT + reason as u32
}

/// Per-backend traffic, a per-CPU array indexed like `BACKENDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Client-to-backend direction.
    pub packets_to: u64,
    pub bytes_to: u64,
    /// Backend-to-client direction.
    pub packets_from: u64,
    pub bytes_from: u64,
    pub new_flows: u64,
}
const _: () = assert!(core::mem::size_of::<BackendStats>() == 40);

crate::user_pod!(BackendStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_at_its_index_with_a_distinct_name() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(
                Counter::ALL[..i].iter().all(|o| o.name() != c.name()),
                "{}",
                c.name()
            );
        }
        assert_eq!(Counter::ALL.len(), COUNTER_COUNT as usize);
    }
}
