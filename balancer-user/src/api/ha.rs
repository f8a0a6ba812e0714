//! High availability as `balancer status` and the metrics show it.

use std::collections::BTreeMap;

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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub node: String,
    pub role: String,
    pub priority: u8,
    pub alive: bool,
    pub last_heard_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransitionStatus {
    pub at_unix: u64,
    pub from: String,
    pub to: String,
    pub reason: String,
}
