//! Configurations for the daemon under test, built as types and rendered as TOML.
//!
//! Every key of the daemon's file has a field here, spelled as in the file. A key
//! that is not set is not written, so the daemon's own default applies and a
//! test says only what it cares about. Tests build a configuration with
//! [`Config::new`] and the setters, change one through the public fields
//! (`cfg.service_mut("web").health = Some(Health::none())`), and hand it to
//! [`Balancer::start`](crate::Balancer::start), which fills `[control]` with the
//! daemon's own socket and pin directory. A change to a key that is not there
//! fails loudly ([`Config::service_mut`] panics on an unknown name), unlike a
//! text replacement that silently does nothing.
//!
//! Keys the daemon does not know, for tests of its refusals, are added to
//! [`Config::to_document`] (a structured TOML document).
//!
//! The keys are mirrored from balancer-user's `config/raw.rs` rather than
//! imported: this crate must not depend on balancer-user, whose build script
//! builds the eBPF object with tools that `cargo xtask setup` (which uses this
//! crate) installs. `tests/tests/config_builder.rs` parses a configuration that
//! sets every key with the daemon's own parser, so a key spelled differently
//! here fails there.
//!
//! ```
//! use balancer_tests::config::*;
//!
//! let cfg = Config::new("it")
//!     .snat(["203.0.113.9"])
//!     .metrics_off()
//!     .flows(Flows::default().udp_timeout_s(1))
//!     .service(
//!         Service::tcp("web", "198.51.100.10", 80)
//!             .health(Health::none())
//!             .backend("203.0.113.11:8080")
//!             .weighted_backend("203.0.113.12:8080", 200),
//!     );
//! let text = cfg.to_toml();
//! assert!(text.contains("udp_timeout_s = 1"));
//! assert!(text.contains("[[service]]"));
//! ```

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::{Serialize, Serializer};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Value};

// ---------------------------------------------------------------------------
// Arguments: addresses given as text or as values

/// An IP address given as text (`"198.51.100.10"`, panics if it does not
/// parse) or as a value.
pub trait IpArg {
    fn ip(&self) -> IpAddr;
}

impl IpArg for IpAddr {
    fn ip(&self) -> IpAddr {
        *self
    }
}

impl IpArg for Ipv4Addr {
    fn ip(&self) -> IpAddr {
        (*self).into()
    }
}

impl IpArg for Ipv6Addr {
    fn ip(&self) -> IpAddr {
        (*self).into()
    }
}

impl IpArg for [u8; 4] {
    fn ip(&self) -> IpAddr {
        (*self).into()
    }
}

impl IpArg for [u8; 16] {
    fn ip(&self) -> IpAddr {
        (*self).into()
    }
}

impl IpArg for str {
    fn ip(&self) -> IpAddr {
        self.parse()
            .unwrap_or_else(|e| panic!("{self:?} is not an IP address: {e}"))
    }
}

impl IpArg for String {
    fn ip(&self) -> IpAddr {
        self.as_str().ip()
    }
}

impl<T: IpArg + ?Sized> IpArg for &T {
    fn ip(&self) -> IpAddr {
        (**self).ip()
    }
}

/// A socket address given as text (`"203.0.113.11:8080"`,
/// `"[2001:db8:2::11]:8080"`, panics if it does not parse) or as a value.
pub trait SocketArg {
    fn socket(&self) -> SocketAddr;
}

impl SocketArg for SocketAddr {
    fn socket(&self) -> SocketAddr {
        *self
    }
}

impl SocketArg for str {
    fn socket(&self) -> SocketAddr {
        self.parse()
            .unwrap_or_else(|e| panic!("{self:?} is not a socket address: {e}"))
    }
}

impl SocketArg for String {
    fn socket(&self) -> SocketAddr {
        self.as_str().socket()
    }
}

impl<T: SocketArg + ?Sized> SocketArg for &T {
    fn socket(&self) -> SocketAddr {
        (**self).socket()
    }
}

/// A network given as text (`"198.51.100.0/25"`, panics if it does not
/// parse) or as a value.
pub trait NetArg {
    fn net(&self) -> IpNet;
}

impl NetArg for IpNet {
    fn net(&self) -> IpNet {
        *self
    }
}

impl NetArg for str {
    fn net(&self) -> IpNet {
        self.parse()
            .unwrap_or_else(|e| panic!("{self:?} is not a network (address/length): {e}"))
    }
}

impl NetArg for String {
    fn net(&self) -> IpNet {
        self.as_str().net()
    }
}

impl<T: NetArg + ?Sized> NetArg for &T {
    fn net(&self) -> IpNet {
        (**self).net()
    }
}

fn ips<A: IpArg>(list: impl IntoIterator<Item = A>) -> Vec<IpAddr> {
    list.into_iter().map(|a| a.ip()).collect()
}

fn nets<A: NetArg>(list: impl IntoIterator<Item = A>) -> Vec<IpNet> {
    list.into_iter().map(|a| a.net()).collect()
}

fn strings<S: Into<String>>(list: impl IntoIterator<Item = S>) -> Vec<String> {
    list.into_iter().map(Into::into).collect()
}

// ---------------------------------------------------------------------------
// Keywords, as the file spells them

macro_rules! keyword {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }
    };
}

keyword!(
    /// `node.xdp_mode`.
    XdpMode {
        Auto = "auto",
        Native = "native",
        Generic = "generic",
    }
);

keyword!(
    /// `node.forwarding`.
    Forwarding {
        FullNat = "full-nat",
        Dnat = "dnat",
    }
);

keyword!(
    /// `firewall.default`.
    FirewallAction {
        Allow = "allow",
        Deny = "deny",
    }
);

keyword!(
    /// `firewall.syn_cookies`.
    SynCookies {
        Off = "off",
        Auto = "auto",
        Always = "always",
    }
);

keyword!(
    /// `ha.mode`.
    HaMode {
        ActiveStandby = "active-standby",
        ActiveActive = "active-active",
    }
);

keyword!(
    /// `service.protocol`.
    Protocol {
        Tcp = "tcp",
        Udp = "udp",
    }
);

keyword!(
    /// `service.scheduler`.
    Scheduler {
        LeastConn = "least-conn",
        P2c = "p2c",
        Maglev = "maglev",
        RoundRobin = "round-robin",
    }
);

keyword!(
    /// `service.health.kind`.
    HealthKind {
        Tcp = "tcp",
        Http = "http",
        Udp = "udp",
        Exec = "exec",
        None = "none",
    }
);

keyword!(
    /// `service.on_backend_down`.
    OnBackendDown {
        Keep = "keep",
        Reset = "reset",
    }
);

/// `node.snat_port_range`, inclusive, written `"FIRST-LAST"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}-{}", self.0, self.1))
    }
}

/// `control.metrics`: an address to serve on, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metrics {
    Off,
    At(SocketAddr),
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Metrics::Off => s.serialize_str("off"),
            Metrics::At(addr) => s.collect_str(addr),
        }
    }
}

// ---------------------------------------------------------------------------
// The file

/// A whole configuration file. Sections without a key set are not written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub node: Node,
    #[serde(skip_serializing_if = "is_default")]
    pub control: Control,
    #[serde(skip_serializing_if = "is_default")]
    pub flows: Flows,
    #[serde(skip_serializing_if = "is_default")]
    pub firewall: Firewall,
    #[serde(skip_serializing_if = "is_default")]
    pub ha: Ha,
    /// `[[service]]`, in file order.
    #[serde(rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<Forwarding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat_addresses: Option<Vec<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat_port_range: Option<PortRange>,
}

/// `[control]`. [`Home::write_config`](crate::Home::write_config) sets
/// `socket` and `pin_dir` to the daemon's own, whatever is here.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Control {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<PathBuf>,
}

/// `[flows]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flows {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_established_timeout_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_transitory_timeout_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_timeout_s: Option<u32>,
    /// Half-open flows (issue 12: a daemon without the key refuses it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_syn_timeout_s: Option<u32>,
}

impl Flows {
    pub fn capacity(mut self, entries: u32) -> Self {
        self.capacity = Some(entries);
        self
    }

    pub fn tcp_established_timeout_s(mut self, s: u32) -> Self {
        self.tcp_established_timeout_s = Some(s);
        self
    }

    pub fn tcp_transitory_timeout_s(mut self, s: u32) -> Self {
        self.tcp_transitory_timeout_s = Some(s);
        self
    }

    pub fn udp_timeout_s(mut self, s: u32) -> Self {
        self.udp_timeout_s = Some(s);
        self
    }

    pub fn tcp_syn_timeout_s(mut self, s: u32) -> Self {
        self.tcp_syn_timeout_s = Some(s);
        self
    }
}

/// `[firewall]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Firewall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<FirewallAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<IpNet>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<IpNet>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_connections_per_source: Option<RateLimit>,
    /// SYN cookies in XDP, the SYN proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_cookies: Option<SynCookies>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_flood_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_flood_cooldown_s: Option<u32>,
}

/// `firewall.new_connections_per_source`, written inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Firewall {
    pub fn default_action(mut self, action: FirewallAction) -> Self {
        self.default = Some(action);
        self
    }

    pub fn allow<A: NetArg>(mut self, nets: impl IntoIterator<Item = A>) -> Self {
        self.allow = Some(self::nets(nets));
        self
    }

    pub fn deny<A: NetArg>(mut self, nets: impl IntoIterator<Item = A>) -> Self {
        self.deny = Some(self::nets(nets));
        self
    }

    /// `new_connections_per_source = { rate, burst }`.
    pub fn rate(mut self, rate: u32, burst: u32) -> Self {
        self.new_connections_per_source = Some(RateLimit {
            rate: Some(rate),
            burst: Some(burst),
        });
        self
    }

    pub fn syn_cookies(mut self, mode: SynCookies) -> Self {
        self.syn_cookies = Some(mode);
        self
    }

    /// Auto mode: half-open flows per second that turn cookies on.
    pub fn syn_flood_threshold(mut self, per_second: u32) -> Self {
        self.syn_flood_threshold = Some(per_second);
        self
    }

    /// Auto mode: how long cookies stay on after the flood.
    pub fn syn_flood_cooldown_s(mut self, s: u32) -> Self {
        self.syn_flood_cooldown_s = Some(s);
        self
    }
}

/// `[ha]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ha {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Active-standby or active-active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<HaMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advert_interval_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_after: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_flows: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_interfaces: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_xdp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_backends: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchdog_ms: Option<u32>,
    /// Kernel routing table for the VIP host routes of active-active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_sync_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt_sync_timeout_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takeover_grace_ms: Option<u32>,
    /// Active-active: how long new flows are still served after a drain
    /// withdrew the routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdraw_wait_ms: Option<u32>,
    /// Active-active: how long a draining node forwards the flows it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u32>,
}

impl Ha {
    /// `[ha]` with `enabled = true`.
    pub fn enabled() -> Self {
        Ha {
            enabled: Some(true),
            ..Ha::default()
        }
    }

    pub fn set_enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    pub fn mode(mut self, mode: HaMode) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn interface(mut self, name: &str) -> Self {
        self.interface = Some(name.into());
        self
    }

    pub fn peers<A: IpArg>(mut self, peers: impl IntoIterator<Item = A>) -> Self {
        self.peers = Some(ips(peers));
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    pub fn advert_interval_ms(mut self, ms: u32) -> Self {
        self.advert_interval_ms = Some(ms);
        self
    }

    pub fn dead_after(mut self, adverts: u32) -> Self {
        self.dead_after = Some(adverts);
        self
    }

    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = Some(preempt);
        self
    }

    pub fn auth_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth_key_file = Some(path.into());
        self
    }

    pub fn sync_flows(mut self, sync: bool) -> Self {
        self.sync_flows = Some(sync);
        self
    }

    pub fn track_interfaces<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.track_interfaces = Some(strings(names));
        self
    }

    pub fn track_xdp(mut self, track: bool) -> Self {
        self.track_xdp = Some(track);
        self
    }

    pub fn track_backends(mut self, track: bool) -> Self {
        self.track_backends = Some(track);
        self
    }

    pub fn watchdog_ms(mut self, ms: u32) -> Self {
        self.watchdog_ms = Some(ms);
        self
    }

    pub fn announce_table(mut self, table: u32) -> Self {
        self.announce_table = Some(table);
        self
    }

    pub fn bulk_sync_rate(mut self, flows_per_s: u32) -> Self {
        self.bulk_sync_rate = Some(flows_per_s);
        self
    }

    pub fn preempt_sync_timeout_ms(mut self, ms: u32) -> Self {
        self.preempt_sync_timeout_ms = Some(ms);
        self
    }

    pub fn takeover_grace_ms(mut self, ms: u32) -> Self {
        self.takeover_grace_ms = Some(ms);
        self
    }

    pub fn withdraw_wait_ms(mut self, ms: u32) -> Self {
        self.withdraw_wait_ms = Some(ms);
        self
    }

    pub fn drain_timeout_s(mut self, s: u32) -> Self {
        self.drain_timeout_s = Some(s);
        self
    }
}

/// A `[[service]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<IpNet>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<IpNet>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_backend_down: Option<OnBackendDown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
}

/// One of `service.backends`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    pub address: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Service {
    /// A service without backends yet; `protocol` is written.
    pub fn new(name: &str, vip: impl IpArg, port: u16, protocol: Protocol) -> Self {
        Service {
            name: name.into(),
            vip: vip.ip(),
            port,
            protocol: Some(protocol),
            scheduler: None,
            allow: None,
            deny: None,
            health: None,
            on_backend_down: None,
            drain_timeout_s: None,
            backends: Vec::new(),
        }
    }

    pub fn tcp(name: &str, vip: impl IpArg, port: u16) -> Self {
        Self::new(name, vip, port, Protocol::Tcp)
    }

    pub fn udp(name: &str, vip: impl IpArg, port: u16) -> Self {
        Self::new(name, vip, port, Protocol::Udp)
    }

    pub fn scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    pub fn allow<A: NetArg>(mut self, nets: impl IntoIterator<Item = A>) -> Self {
        self.allow = Some(self::nets(nets));
        self
    }

    pub fn deny<A: NetArg>(mut self, nets: impl IntoIterator<Item = A>) -> Self {
        self.deny = Some(self::nets(nets));
        self
    }

    pub fn health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    pub fn on_backend_down(mut self, what: OnBackendDown) -> Self {
        self.on_backend_down = Some(what);
        self
    }

    pub fn drain_timeout_s(mut self, s: u32) -> Self {
        self.drain_timeout_s = Some(s);
        self
    }

    /// A backend without a weight (the daemon's default).
    pub fn backend(mut self, address: impl SocketArg) -> Self {
        self.backends.push(Backend {
            address: address.socket(),
            weight: None,
        });
        self
    }

    pub fn weighted_backend(mut self, address: impl SocketArg, weight: u32) -> Self {
        self.backends.push(Backend {
            address: address.socket(),
            weight: Some(weight),
        });
        self
    }

    /// [`Service::backend`] for each of `addresses`.
    pub fn backends<A: SocketArg>(self, addresses: impl IntoIterator<Item = A>) -> Self {
        addresses.into_iter().fold(self, Service::backend)
    }

    /// The backend at `address`; panics if there is none.
    pub fn backend_mut(&mut self, address: impl SocketArg) -> &mut Backend {
        let address = address.socket();
        let name = self.name.clone();
        let list = format!("{:?}", self.backends);
        self.backends
            .iter_mut()
            .find(|b| b.address == address)
            .unwrap_or_else(|| panic!("service {name} has no backend {address}: {list}"))
    }

    /// Takes the backend at `address` out; panics if there is none.
    pub fn remove_backend(&mut self, address: impl SocketArg) -> Backend {
        let address = address.socket();
        let at = self
            .backends
            .iter()
            .position(|b| b.address == address)
            .unwrap_or_else(|| {
                panic!(
                    "service {} has no backend {address}: {:?}",
                    self.name, self.backends
                )
            });
        self.backends.remove(at)
    }
}

/// `service.health`, written inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<HealthKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
}

impl Health {
    pub fn kind(kind: HealthKind) -> Self {
        Health {
            kind: Some(kind),
            ..Health::default()
        }
    }

    /// `{ kind = "none" }`: every backend counts as up.
    pub fn none() -> Self {
        Self::kind(HealthKind::None)
    }

    pub fn tcp() -> Self {
        Self::kind(HealthKind::Tcp)
    }

    pub fn udp() -> Self {
        Self::kind(HealthKind::Udp)
    }

    pub fn http(path: &str) -> Self {
        Health {
            path: Some(path.into()),
            ..Self::kind(HealthKind::Http)
        }
    }

    pub fn exec<S: Into<String>>(command: impl IntoIterator<Item = S>) -> Self {
        Health {
            command: Some(strings(command)),
            ..Self::kind(HealthKind::Exec)
        }
    }

    /// `interval_ms`, `timeout_ms`, `rise` and `fall` at once.
    pub fn timing(mut self, interval_ms: u32, timeout_ms: u32, rise: u32, fall: u32) -> Self {
        self.interval_ms = Some(interval_ms);
        self.timeout_ms = Some(timeout_ms);
        self.rise = Some(rise);
        self.fall = Some(fall);
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect_status = Some(status);
        self
    }

    pub fn expect_body(mut self, text: &str) -> Self {
        self.expect_body = Some(text.into());
        self
    }

    pub fn payload(mut self, text: &str) -> Self {
        self.payload = Some(text.into());
        self
    }

    pub fn agent_port(mut self, port: u16) -> Self {
        self.agent_port = Some(port);
        self
    }

    pub fn interval_ms(mut self, ms: u32) -> Self {
        self.interval_ms = Some(ms);
        self
    }

    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    pub fn rise(mut self, checks: u32) -> Self {
        self.rise = Some(checks);
        self
    }

    pub fn fall(mut self, checks: u32) -> Self {
        self.fall = Some(checks);
        self
    }
}

impl Config {
    /// `[node]` named `name` on the harness topology's balancer interfaces
    /// (`front` and `back`); nothing else set.
    pub fn new(name: &str) -> Self {
        Config {
            node: Node {
                name: name.into(),
                interfaces: strings(["front", "back"]),
                xdp_mode: None,
                forwarding: None,
                snat_addresses: None,
                snat_port_range: None,
            },
            control: Control::default(),
            flows: Flows::default(),
            firewall: Firewall::default(),
            ha: Ha::default(),
            services: Vec::new(),
        }
    }

    pub fn interfaces<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.node.interfaces = strings(names);
        self
    }

    pub fn xdp_mode(mut self, mode: XdpMode) -> Self {
        self.node.xdp_mode = Some(mode);
        self
    }

    pub fn forwarding(mut self, forwarding: Forwarding) -> Self {
        self.node.forwarding = Some(forwarding);
        self
    }

    /// `node.snat_addresses`.
    pub fn snat<A: IpArg>(mut self, addresses: impl IntoIterator<Item = A>) -> Self {
        self.node.snat_addresses = Some(ips(addresses));
        self
    }

    /// `node.snat_port_range = "FIRST-LAST"`.
    pub fn snat_port_range(mut self, first: u16, last: u16) -> Self {
        self.node.snat_port_range = Some(PortRange(first, last));
        self
    }

    /// `control.metrics = "off"`.
    pub fn metrics_off(mut self) -> Self {
        self.control.metrics = Some(Metrics::Off);
        self
    }

    /// `control.metrics = "ADDRESS"`.
    pub fn metrics(mut self, at: impl SocketArg) -> Self {
        self.control.metrics = Some(Metrics::At(at.socket()));
        self
    }

    pub fn flows(mut self, flows: Flows) -> Self {
        self.flows = flows;
        self
    }

    pub fn firewall(mut self, firewall: Firewall) -> Self {
        self.firewall = firewall;
        self
    }

    pub fn ha(mut self, ha: Ha) -> Self {
        self.ha = ha;
        self
    }

    /// Appends a `[[service]]`.
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// The service named `name`; panics if there is none.
    pub fn service_mut(&mut self, name: &str) -> &mut Service {
        let names: Vec<String> = self.services.iter().map(|s| s.name.clone()).collect();
        self.services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service named {name:?}; there are {names:?}"))
    }

    /// The service named `name` passed through `edit` (the service's setters);
    /// panics if there is none.
    pub fn edit_service(mut self, name: &str, edit: impl FnOnce(Service) -> Service) -> Self {
        let service = self.service_mut(name);
        *service = edit(service.clone());
        self
    }

    /// The file as a TOML document: sections as `[tables]`, services as
    /// `[[service]]` with their health check and backends inline, one backend
    /// a line, as people write them.
    pub fn to_document(&self) -> DocumentMut {
        // Everything comes out inline; the sections are turned into tables here.
        let mut doc = toml_edit::ser::to_document(self).expect("a configuration always serializes");
        let root = doc.as_table_mut();
        for (i, (_, item)) in root.iter_mut().enumerate() {
            match item {
                Item::Value(Value::InlineTable(t)) => {
                    let mut table = t.clone().into_table();
                    // A blank line between sections.
                    if i > 0 {
                        table.decor_mut().set_prefix("\n");
                    }
                    *item = Item::Table(table);
                }
                Item::Value(Value::Array(services)) => {
                    let mut tables = ArrayOfTables::new();
                    for service in services.iter() {
                        let mut table = service
                            .as_inline_table()
                            .expect("a service is a table")
                            .clone()
                            .into_table();
                        table.decor_mut().set_prefix("\n");
                        if let Some(backends) =
                            table.get_mut("backends").and_then(Item::as_array_mut)
                        {
                            for b in backends.iter_mut() {
                                b.decor_mut().set_prefix("\n  ");
                            }
                            backends.set_trailing_comma(true);
                            backends.set_trailing("\n");
                        }
                        tables.push(table);
                    }
                    *item = Item::ArrayOfTables(tables);
                }
                _ => {}
            }
        }
        doc
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        self.to_document().to_string()
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

/// What [`Home::write_config`](crate::Home::write_config) and
/// [`Balancer::start`](crate::Balancer::start) take: a [`Config`] (what tests
/// build), a document from [`Config::to_document`] with structured edits, or
/// the text of a configuration kept as a file (the demo's, the examples'),
/// which must be TOML.
pub trait ConfigSource {
    fn document(&self) -> Result<DocumentMut>;
}

impl ConfigSource for Config {
    fn document(&self) -> Result<DocumentMut> {
        Ok(self.to_document())
    }
}

impl ConfigSource for DocumentMut {
    fn document(&self) -> Result<DocumentMut> {
        Ok(self.clone())
    }
}

impl ConfigSource for str {
    fn document(&self) -> Result<DocumentMut> {
        self.parse().context("the configuration is not valid TOML")
    }
}

impl ConfigSource for String {
    fn document(&self) -> Result<DocumentMut> {
        self.as_str().document()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_keys_and_sections_are_not_written() {
        let text = Config::new("n")
            .service(Service::tcp("web", "198.51.100.10", 80).backend("203.0.113.11:8080"))
            .to_toml();
        assert_eq!(
            text,
            "[node]\nname = \"n\"\ninterfaces = [\"front\", \"back\"]\n\n\
             [[service]]\nname = \"web\"\nvip = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
             backends = [\n  { address = \"203.0.113.11:8080\" },\n]\n"
        );
    }

    #[test]
    fn values_are_written_as_the_file_spells_them() {
        let text = Config::new("n")
            .snat(["203.0.113.9", "2001:db8:2::9"])
            .snat_port_range(40000, 40031)
            .forwarding(Forwarding::FullNat)
            .metrics_off()
            .firewall(Firewall::default().rate(1, 3).allow(["198.51.100.0/24"]))
            .service(
                Service::udp("dns", "2001:db8:1::10", 53)
                    .scheduler(Scheduler::RoundRobin)
                    .health(Health::none())
                    .weighted_backend("[2001:db8:2::11]:5353", 2),
            )
            .to_toml();
        for line in [
            "snat_addresses = [\"203.0.113.9\", \"2001:db8:2::9\"]",
            "snat_port_range = \"40000-40031\"",
            "forwarding = \"full-nat\"",
            "[control]\nmetrics = \"off\"",
            "new_connections_per_source = { rate = 1, burst = 3 }",
            "allow = [\"198.51.100.0/24\"]",
            "scheduler = \"round-robin\"",
            "health = { kind = \"none\" }",
            "{ address = \"[2001:db8:2::11]:5353\", weight = 2 }",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_missing_service_is_a_panic_not_a_silent_no_op() {
        let mut cfg = Config::new("n").service(Service::tcp("web", "198.51.100.10", 80));
        cfg.service_mut("web").port = 81;
        assert_eq!(cfg.services[0].port, 81);
        let missing = std::panic::catch_unwind(move || {
            cfg.service_mut("wbe");
        });
        assert!(missing.is_err());
    }

    #[test]
    fn text_sources_must_be_toml() {
        assert!("[node\n".document().is_err());
        let doc = "[node]\nname = \"x\"\n".document().unwrap();
        assert_eq!(doc["node"]["name"].as_str(), Some("x"));
    }
}
