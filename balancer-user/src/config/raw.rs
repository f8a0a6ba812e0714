//! The file as written: serde shapes that accept any value of the right TOML type.
//!
//! Keys are optional here so that validation can report every missing one (serde
//! stops at the first). Addresses stay strings and numbers that have a range stay
//! wide, for the same reason and so that messages can say what is wrong with a
//! value rather than only that it did not fit a type. `Spanned` keeps the place of
//! each value for line numbers; tables are not `Spanned` because a table written
//! as `[a.b]` rather than inline has no span to give.

use serde::{Deserialize, de::IgnoredAny};
use toml::Spanned;

use super::types::{
    FirewallAction, Forwarding, HaMode, HealthKind, OnBackendDown, Protocol, Scheduler, SynCookies,
    XdpMode,
};

/// A table or list as found in the file.
pub(super) enum Part<T> {
    Absent,
    /// Present but not readable; the reason is already among the problems.
    Refused,
    Present(At<T>),
}

/// A table with its line, for problems about keys missing from it.
pub(super) struct At<T> {
    pub value: T,
    pub line: Option<usize>,
    /// Keys present but refused (already reported): not to be called missing.
    pub refused: Vec<String>,
}

impl<T> At<T> {
    pub fn new(value: T, line: Option<usize>, refused: Vec<String>) -> Self {
        Self {
            value,
            line,
            refused,
        }
    }
}

pub(super) struct RawConfig {
    pub node: Part<RawNode>,
    pub control: Part<RawControl>,
    pub flows: Part<RawFlows>,
    pub firewall: Part<RawFirewall>,
    pub ha: Part<RawHa>,
    /// Each element is `None` when that service was not a table.
    pub services: Part<Vec<Option<At<ServiceEntry>>>>,
}

pub(super) type Text = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub name: Option<Text>,
    pub interfaces: Option<Spanned<Vec<Text>>>,
    pub xdp_mode: Option<XdpMode>,
    pub forwarding: Option<Spanned<Forwarding>>,
    pub snat_addresses: Option<Vec<Text>>,
    pub snat_port_range: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub socket: Option<Text>,
    pub metrics: Option<Text>,
    pub pin_dir: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlows {
    pub capacity: Option<Spanned<u32>>,
    pub tcp_established_timeout_s: Option<Spanned<u32>>,
    pub tcp_transitory_timeout_s: Option<Spanned<u32>>,
    pub tcp_syn_timeout_s: Option<Spanned<u32>>,
    pub udp_timeout_s: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFirewall {
    pub default: Option<FirewallAction>,
    pub allow: Option<Vec<Text>>,
    pub deny: Option<Vec<Text>>,
    pub new_connections_per_source: Option<RawRateLimit>,
    pub syn_cookies: Option<SynCookies>,
    pub syn_flood_threshold: Option<Spanned<u32>>,
    pub syn_flood_cooldown_s: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub rate: Option<Spanned<u32>>,
    pub burst: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    pub enabled: Option<bool>,
    pub mode: Option<HaMode>,
    pub interface: Option<Text>,
    pub peers: Option<Vec<Text>>,
    pub priority: Option<Spanned<i64>>,
    pub advert_interval_ms: Option<Spanned<u32>>,
    pub dead_after: Option<Spanned<u32>>,
    pub preempt: Option<bool>,
    pub auth_key_file: Option<Text>,
    pub sync_flows: Option<bool>,
    pub track_interfaces: Option<Vec<Text>>,
    pub track_xdp: Option<bool>,
    pub track_backends: Option<bool>,
    pub watchdog_ms: Option<Spanned<u32>>,
    pub announce_table: Option<Spanned<i64>>,
    pub bulk_sync_rate: Option<Spanned<u32>>,
    pub preempt_sync_timeout_ms: Option<Spanned<u32>>,
    pub takeover_grace_ms: Option<Spanned<u32>>,
    pub withdraw_wait_ms: Option<Spanned<u32>>,
    pub drain_timeout_s: Option<Spanned<u32>>,
}

/// A `[[service]]` table, read in three parts so that a mistake in one backend
/// or in `health` does not hide the mistakes in the others.
pub(super) struct ServiceEntry {
    /// `None` when the service's own keys were refused.
    pub fields: Option<RawService>,
    pub health: Part<RawHealth>,
    /// Each element is `None` when that backend was refused.
    pub backends: Part<Vec<Option<At<RawBackend>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: Option<Text>,
    pub vip: Option<Text>,
    pub port: Option<Spanned<i64>>,
    pub protocol: Option<Protocol>,
    pub scheduler: Option<Scheduler>,
    pub allow: Option<Vec<Text>>,
    pub deny: Option<Vec<Text>>,
    pub on_backend_down: Option<OnBackendDown>,
    pub drain_timeout_s: Option<u32>,
    // Taken out and read on their own before this struct is; declared so that an
    // unknown key's message lists them among the valid ones.
    #[serde(rename = "health")]
    _health: Option<IgnoredAny>,
    #[serde(rename = "backends")]
    _backends: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub kind: Option<HealthKind>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Text>,
    pub expect_status: Option<Spanned<i64>>,
    pub expect_body: Option<Text>,
    pub payload: Option<Text>,
    pub command: Option<Spanned<Vec<String>>>,
    pub agent_port: Option<Spanned<i64>>,
    pub interval_ms: Option<Spanned<u32>>,
    pub timeout_ms: Option<Spanned<u32>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub address: Option<Text>,
    pub weight: Option<Spanned<i64>>,
}
