//! The admin API on `[control].socket`: one JSON request per connection, one
//! JSON reply, shared by the daemon and the CLI. Its types are the wire's:
//! the daemon's parts (metrics, HA) fill them, and import them from here.

pub mod ha;
pub mod stats;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use ha::{HaStatus, PeerStatus, SyncCopy, TransitionStatus};
pub use stats::{BackendSnapshot, FlowTable, ServiceSnapshot, Snapshot};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Counters per service and backend (`balancer stats`).
    Stats,
    /// Re-read the configuration file.
    Reload,
    Backend {
        action: BackendAction,
        service: String,
        address: SocketAddr,
        /// For `add`; the default weight otherwise.
        #[serde(default)]
        weight: Option<u32>,
    },
    /// Stop the daemon. `keep_dataplane` leaves the program attached and its
    /// state pinned for the next daemon (an upgrade).
    Stop {
        #[serde(default)]
        keep_dataplane: bool,
    },
    /// Active-active: withdraw this node's routes, keep forwarding its flows
    /// until they end or `ha.drain_timeout_s`, then stop.
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendAction {
    /// Add a backend to a service (until the next reload or restart).
    Add,
    /// Remove a backend: no new flows, established ones end or time out.
    Remove,
    /// Keep a backend's flows but give it no new ones.
    Drain,
    /// Undo a drain.
    Enable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// One line for a person.
    pub message: String,
    /// Every reason a change was refused (a configuration's problems).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Box<Snapshot>>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            problems: Vec::new(),
            status: None,
            stats: None,
        }
    }

    pub fn refused(message: impl Into<String>, problems: Vec<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            problems,
            status: None,
            stats: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    /// `standalone` until high availability is configured.
    pub role: String,
    pub config: String,
    pub pid: u32,
    /// Configurations accepted since the daemon started (1 = the first).
    pub generation: u64,
    pub last_reload: Option<ReloadOutcome>,
    /// The daemon took over a previous daemon's pinned state.
    pub recovered: bool,
    pub services: Vec<ServiceStatus>,
    /// Removed backends whose established flows are still running.
    pub retired: Vec<RetiredStatus>,
    /// High availability: role, peers, last transition (absent when standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
    /// Whether SYNs are answered with cookies (the SYN proxy).
    #[serde(default)]
    pub syn_cookies: SynCookieStatus,
}

/// The SYN proxy's mode and, in auto mode, whether a flood has it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynCookieStatus {
    /// `firewall.syn_cookies`: `off`, `auto` or `always`.
    pub mode: String,
    /// SYNs to a VIP are answered with cookies now (always, or auto during a flood).
    pub active: bool,
    /// Auto mode: since when cookies are on, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix: Option<u64>,
    /// Auto mode: times a flood turned cookies on since the program was loaded.
    pub activations: u64,
}

impl SynCookieStatus {
    /// One line for a person: `auto (on since ...)`.
    pub fn describe(&self, now_unix: u64) -> String {
        match (self.mode.as_str(), self.active, self.since_unix) {
            ("auto", true, Some(since)) => format!(
                "auto: ON (a SYN flood), for {} s",
                now_unix.saturating_sub(since)
            ),
            ("auto", true, None) => "auto: ON (a SYN flood)".into(),
            ("auto", false, _) => "auto: off (no SYN flood)".into(),
            (mode, _, _) => mode.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub at_unix: u64,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub scheduler: String,
    pub health_check: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: SocketAddr,
    pub weight: u32,
    /// `up`, `down` or `draining`: whether it takes new flows, and why not.
    pub state: String,
    /// The health checks' verdict: `up`, `down`, `unknown` or `unchecked`.
    pub health: String,
    pub reason: String,
    /// When the health last changed.
    pub since_unix: u64,
    pub draining: bool,
    pub load_pct: u32,
    pub active: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredStatus {
    pub service: String,
    pub address: SocketAddr,
    pub active: u64,
    /// Seconds until remaining flows are ended.
    pub ends_in_s: u64,
}
