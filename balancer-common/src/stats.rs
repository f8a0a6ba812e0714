//! Counters. `STATS` is a per-CPU array indexed by [`Counter`]; user space sums
//! the CPUs when it reads.

/// Global data-plane counters, by what happened to a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not IPv4/IPv6, or not for a VIP or SNAT address: the host's stack gets it.
    PassNotForUs = 0,
    /// For a VIP address but no configured port/protocol: the host's stack gets it.
    PassNoService,
    /// A fragment: cannot be matched by port, the host's stack gets it.
    PassFragment,
    /// Rewritten but the next hop's neighbour is unknown: the stack resolves it.
    PassNoNeighbour,
    /// No route or another FIB result the program does not forward.
    PassFibOther,
    ForwardTx,
    ForwardRedirect,
    NewFlow,
    /// Headers cut short or lengths that do not add up, towards a VIP or SNAT address.
    DropMalformed,
    /// No backend of the service may take a new flow: not forwarded; the
    /// host's stack refuses it (a TCP reset, ICMP port unreachable for UDP).
    DropNoBackend,
    DropSnatExhausted,
    /// A TCP segment other than a SYN for a VIP with no flow (ended by
    /// `on_backend_down = "reset"`, expired, or never seen): the host's stack
    /// answers it with a reset, so that the client learns at once.
    PassNoFlow,
    DropFlowTableFull,
    /// Refused by a firewall rule or default.
    DropFirewall,
    /// Over `new_connections_per_source`.
    DropRateLimit,
    /// An ICMP error about a tracked flow, translated and sent on.
    IcmpRelayed,
    /// An ARP packet or IPv6 neighbour solicitation about a floating address
    /// while this node's HA lease has run out (its daemon stopped renewing it):
    /// the active node answers.
    DropArpNotActive,
    /// A flow change the sync ring buffer had no room for (the daemon fell
    /// behind): the standby misses it.
    SyncLost,
    /// A new flow's first packet on a high-availability node that is not
    /// active (a frame flooded by a switch, or a neighbour cache not moved over
    /// yet): the active node takes new flows.
    DropNotActive,
}

pub const COUNTER_COUNT: u32 = Counter::DropNotActive as u32 + 1;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::PassNotForUs,
        Counter::PassNoService,
        Counter::PassFragment,
        Counter::PassNoNeighbour,
        Counter::PassFibOther,
        Counter::ForwardTx,
        Counter::ForwardRedirect,
        Counter::NewFlow,
        Counter::DropMalformed,
        Counter::DropNoBackend,
        Counter::DropSnatExhausted,
        Counter::PassNoFlow,
        Counter::DropFlowTableFull,
        Counter::DropFirewall,
        Counter::DropRateLimit,
        Counter::IcmpRelayed,
        Counter::DropArpNotActive,
        Counter::SyncLost,
        Counter::DropNotActive,
    ];

    /// Stable name for output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassNotForUs => "pass_not_for_us",
            Counter::PassNoService => "pass_no_service",
            Counter::PassFragment => "pass_fragment",
            Counter::PassNoNeighbour => "pass_no_neighbour",
            Counter::PassFibOther => "pass_fib_other",
            Counter::ForwardTx => "forward_tx",
            Counter::ForwardRedirect => "forward_redirect",
            Counter::NewFlow => "new_flow",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropNoBackend => "drop_no_backend",
            Counter::DropSnatExhausted => "drop_snat_exhausted",
            Counter::PassNoFlow => "pass_no_flow",
            Counter::DropFlowTableFull => "drop_flow_table_full",
            Counter::DropFirewall => "drop_firewall",
            Counter::DropRateLimit => "drop_rate_limit",
            Counter::IcmpRelayed => "icmp_relayed",
            Counter::DropArpNotActive => "drop_arp_not_active",
            Counter::SyncLost => "sync_lost",
            Counter::DropNotActive => "drop_not_active",
        }
    }
}

/// `SERVICE_DROPS` index of a drop of a new flow to a service, by reason.
#[inline(always)]
pub const fn service_drop_index(service_id: u32, reason: Counter) -> u32 {
    service_id * COUNTER_COUNT + reason as u32
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
    fn all_lists_every_counter_at_its_index() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
