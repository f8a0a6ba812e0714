//! High availability as `balancer status` and the metrics show it.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HaStatus {
    pub role: String,
    pub priority: u8,
    pub effective_priority: u8,
    pub conditions: Vec<String>,
    pub peers: Vec<PeerStatus>,
    pub last_transition: Option<TransitionStatus>,
    /// Role changes by `from|to|cause`.
    pub transitions: BTreeMap<String, u64>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub adverts_rejected: BTreeMap<String, u64>,
    pub split_brains: u64,
    /// Flow sync: records sent (active) and installed or ended (standby).
    pub sync_sent: u64,
    pub sync_installed: u64,
    pub sync_closed: u64,
    pub sync_unmatched: u64,
    pub sync_rejected: u64,
    /// Age of the last flow-sync datagram when it arrived, by the sender's clock.
    #[serde(default)]
    pub sync_lag_ms: Option<f64>,
    /// Flow-sync datagrams refused, by reason (`sync_rejected` is their sum).
    #[serde(default)]
    pub sync_rejected_by_reason: BTreeMap<String, u64>,
    /// Datagrams sent again because a peer lacked them.
    #[serde(default)]
    pub sync_retransmitted: u64,
    /// Bulk copies of this node's flow table sent to peers, and their flows.
    #[serde(default)]
    pub sync_bulks_sent: u64,
    #[serde(default)]
    pub sync_bulk_flows_sent: u64,
    /// Times this node's copy of a peer's table had a hole only a bulk copy
    /// could repair.
    #[serde(default)]
    pub sync_copies_lost: u64,
    /// This node's copy of each peer's flow table, by peer name.
    #[serde(default)]
    pub sync_copies: BTreeMap<String, SyncCopy>,
    /// `active-standby` or `active-active`.
    #[serde(default)]
    pub mode: String,
    /// Active-active: the VIPs this node announces (routes in
    /// `announce_table`).
    #[serde(default)]
    pub announced: Vec<IpAddr>,
    /// Active-active: the SNAT addresses this node holds, its own and those
    /// of the peers it adopted.
    #[serde(default)]
    pub snat_held: Vec<IpAddr>,
    /// Active-active: the peers whose SNAT addresses (and flows) this node
    /// holds for them.
    #[serde(default)]
    pub adopted: Vec<String>,
    /// Active-active: times this node adopted a peer's addresses and flows.
    #[serde(default)]
    pub adoptions: u64,
}

/// How much of a peer's flow table this node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncCopy {
    /// Nothing, or a copy with a hole: a bulk copy is asked for.
    None,
    /// A bulk copy is arriving.
    InProgress { expected: u64, received: u64 },
    /// Everything the peer had when its last bulk copy ended, and every
    /// change since.
    Complete { flows: u64, took_ms: u64 },
}

impl SyncCopy {
    /// The state's one word: `none`, `in_progress`, `complete`.
    pub fn state(&self) -> &'static str {
        match self {
            SyncCopy::None => "none",
            SyncCopy::InProgress { .. } => "in_progress",
            SyncCopy::Complete { .. } => "complete",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SyncCopy::None => "none".into(),
            SyncCopy::InProgress { expected, received } => {
                format!("in progress ({received} of about {expected} flows)")
            }
            SyncCopy::Complete { flows, took_ms } => {
                format!("complete ({flows} flows, copied in {took_ms} ms)")
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub node: String,
    /// Active-standby: its role. Active-active: joining, active, draining or
    /// leaving.
    pub role: String,
    pub priority: u8,
    pub alive: bool,
    pub last_heard_ms: u64,
    /// Active-active: its own SNAT addresses, as its adverts say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snat: Vec<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransitionStatus {
    pub at_unix: u64,
    pub from: String,
    pub to: String,
    pub reason: String,
}
