//! `balancer stats` on the wire: one reading of everything the metrics show,
//! the kernel's counters (per-CPU maps summed when read) beside the daemon's
//! own state. The daemon takes it in its loop; the metrics endpoint renders
//! it, the admin API sends it as it is.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use balancer_common::stats::Counter;
use serde::{Deserialize, Serialize};

use super::{ReloadOutcome, SynCookieStatus, ha::HaStatus};

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
    pub ha: Option<HaStatus>,
    /// The SYN proxy's mode and state.
    #[serde(default)]
    pub syn_cookies: SynCookieStatus,
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
    /// Of those, flows whose handshake had not completed (half-open).
    #[serde(default)]
    pub half_open_expired: u64,
    /// Of those, SYN-proxied flows whose backend never answered.
    #[serde(default)]
    pub syn_proxy_timed_out: u64,
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
    /// New flows of the service dropped, by reason label (see `metrics::reason`).
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

impl Snapshot {
    /// A global counter by what it counts.
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c.name()).copied().unwrap_or(0)
    }
}
