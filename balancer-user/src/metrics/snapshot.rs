//! One reading of everything the metrics and `balancer stats` show: the
//! kernel's counters (per-CPU maps summed when read) beside the daemon's own
//! state. The daemon takes it in its loop; the endpoint renders it, the admin
//! API sends it as it is.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use balancer_common::stats::Counter;
use serde::{Deserialize, Serialize};

use crate::api::ReloadOutcome;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: String,
    /// When it was taken (the daemon's clock), for rates.
    pub taken_unix_ms: u64,
    pub version: String,
    /// `balancer_common::LAYOUT_VERSION` of the running program.
    pub layout_version: u32,
    pub started_unix: u64,
    /// `standalone` without high availability; else `init`, `standby`, `active`.
    pub role: String,
    /// High availability: priorities, peers, transitions, adverts, flow sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<crate::ha::HaStatus>,
    /// Configurations accepted since the daemon started (1 = the first).
    pub generation: u64,
    pub last_reload: Option<ReloadOutcome>,
    pub reloads_accepted: u64,
    pub reloads_refused: u64,
    /// The global data-plane counters by [`Counter::name`].
    pub counters: BTreeMap<String, u64>,
    pub flow_table: FlowTable,
    /// SNAT ports each backend can hold at once, by family (`ipv4`, `ipv6`);
    /// empty with `forwarding = "dnat"`.
    pub snat_ports_per_backend: BTreeMap<String, u64>,
    pub services: Vec<ServiceSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowTable {
    /// Entries the table holds at most (`flows.capacity`); each flow takes two.
    pub capacity: u64,
    /// Entries when the last sweep ended; `None` before the first.
    pub entries: Option<u64>,
    /// Entries the LRU evicted since the daemon's first sweep: derived at each
    /// sweep (created minus removed minus still there), a lower bound.
    pub evictions: u64,
    /// Flows the sweeps removed as idle since the daemon started.
    pub expired: u64,
    pub last_sweep_unix_ms: Option<u64>,
    /// How long the last sweep took.
    pub last_sweep_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub scheduler: String,
    /// New flows of the service dropped, by [`reason`] label.
    pub drops: BTreeMap<String, u64>,
    pub backends: Vec<BackendSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendSnapshot {
    pub address: SocketAddr,
    pub weight: u32,
    /// `up`, `down` or `draining`, as `balancer status` says.
    pub state: String,
    /// The health checks' verdict: `up`, `down`, `unknown` or `unchecked`.
    pub health: String,
    pub draining: bool,
    pub load_pct: u32,
    pub active: u64,
    /// Client to backend.
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    /// Backend to client.
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    /// New connections (flows) sent to it.
    pub connections: u64,
    /// SNAT ports its flows held at the last sweep (full NAT only).
    pub snat_ports: Option<u64>,
}

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
        Counter::SyncLost => Outcome::SyncLost,
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

impl Snapshot {
    /// A global counter by what it counts.
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c.name()).copied().unwrap_or(0)
    }
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
