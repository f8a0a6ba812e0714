//! The validated configuration: what the daemon runs on once a file is accepted.
//!
//! Every value here has passed validation, so consumers need no further checks
//! (addresses parse, ports are non-zero, limits hold). Defaults live here so the
//! reader and the documentation of each key agree.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub node: Node,
    pub control: Control,
    pub flows: Flows,
    pub firewall: Firewall,
    pub ha: Ha,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub forwarding: Forwarding,
    pub snat_addresses: Vec<IpAddr>,
    /// Inclusive range of source ports used for full-NAT flows.
    pub snat_port_range: (u16, u16),
}

impl Node {
    pub const DEFAULT_SNAT_PORT_RANGE: (u16, u16) = (40_000, 59_999);
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Control {
    pub socket: PathBuf,
    /// `None` when the file says `metrics = "off"`.
    pub metrics: Option<SocketAddr>,
    pub pin_dir: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/balancer/balancer.sock"),
            metrics: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9108)),
            pin_dir: PathBuf::from("/sys/fs/bpf/balancer"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flows {
    pub capacity: u32,
    pub tcp_established_timeout_s: u32,
    pub tcp_transitory_timeout_s: u32,
    /// How long a TCP flow whose handshake has not completed (half-open) lives,
    /// in seconds from its SYN (nothing it sees makes it younger): 1 to
    /// [`Flows::MAX_TCP_SYN_TIMEOUT_S`], never above `tcp_established_timeout_s`.
    /// Default [`Flows::DEFAULT_TCP_SYN_TIMEOUT_S`], or `tcp_established_timeout_s`
    /// where that is shorter.
    pub tcp_syn_timeout_s: u32,
    pub udp_timeout_s: u32,
}

impl Flows {
    /// Short, so that a flood of spoofed SYNs holds little of the table for long.
    pub const DEFAULT_TCP_SYN_TIMEOUT_S: u32 = 5;
    /// Linux clients give up a handshake after about 127 s (`tcp_syn_retries` = 6);
    /// a half-open flow kept longer serves no client, only a flood.
    pub const MAX_TCP_SYN_TIMEOUT_S: u32 = 120;
}

impl Default for Flows {
    fn default() -> Self {
        Self {
            capacity: 1_048_576,
            tcp_established_timeout_s: 3600,
            tcp_transitory_timeout_s: 30,
            tcp_syn_timeout_s: Self::DEFAULT_TCP_SYN_TIMEOUT_S,
            udp_timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Firewall {
    pub default: FirewallAction,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub new_connections_per_source: RateLimit,
    /// Whether the XDP program answers SYNs to a VIP with cookies (the SYN
    /// proxy); default [`SynCookies::Auto`].
    pub syn_cookies: SynCookies,
    /// Auto mode: half-open flows per second (SYNs that opened a flow or got a
    /// cookie, less handshakes completed) above which SYNs are answered with
    /// cookies, per node. 1 to [`Firewall::MAX_SYN_FLOOD_THRESHOLD`]; default
    /// [`Firewall::DEFAULT_SYN_FLOOD_THRESHOLD`].
    pub syn_flood_threshold: u32,
    /// Auto mode: how long cookies stay on after half-open flows fell below
    /// half the threshold, in seconds. 1 to [`Firewall::MAX_SYN_FLOOD_COOLDOWN_S`];
    /// default [`Firewall::DEFAULT_SYN_FLOOD_COOLDOWN_S`].
    pub syn_flood_cooldown_s: u32,
}

impl Firewall {
    /// Far above what completes: clients whose handshakes complete add
    /// nothing, so only SYNs that nobody answers (a spoofed flood, a backend
    /// that does not answer) count towards it.
    pub const DEFAULT_SYN_FLOOD_THRESHOLD: u32 = 1000;
    pub const MAX_SYN_FLOOD_THRESHOLD: u32 = 100_000_000;
    /// Long enough that a flood in bursts does not turn cookies off between them.
    pub const DEFAULT_SYN_FLOOD_COOLDOWN_S: u32 = 10;
    pub const MAX_SYN_FLOOD_COOLDOWN_S: u32 = 3600;
}

impl Default for Firewall {
    fn default() -> Self {
        Self {
            default: FirewallAction::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            new_connections_per_source: RateLimit::default(),
            syn_cookies: SynCookies::default(),
            syn_flood_threshold: Self::DEFAULT_SYN_FLOOD_THRESHOLD,
            syn_flood_cooldown_s: Self::DEFAULT_SYN_FLOOD_COOLDOWN_S,
        }
    }
}

/// New connections per second with a burst allowance; `rate == 0` means unlimited.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RateLimit {
    pub rate: u32,
    pub burst: u32,
}

impl RateLimit {
    pub fn is_unlimited(&self) -> bool {
        self.rate == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ha {
    pub enabled: bool,
    /// Default [`HaMode::ActiveStandby`].
    pub mode: HaMode,
    pub interface: Option<String>,
    pub peers: Vec<IpAddr>,
    pub priority: u8,
    pub advert_interval_ms: u32,
    pub dead_after: u32,
    pub preempt: bool,
    pub auth_key_file: Option<PathBuf>,
    pub sync_flows: bool,
    pub track_interfaces: Vec<String>,
    /// The XDP program detached from an interface is a fault.
    pub track_xdp: bool,
    /// Every service whose backends are all down here takes priority off.
    pub track_backends: bool,
    /// A daemon loop silent this long is a fault; 0 turns the watchdog off.
    pub watchdog_ms: u32,
    /// Active-active only (ignored, with a warning, in active-standby): the kernel
    /// routing table in which this node keeps a host route to each VIP it can
    /// serve, for its BGP daemon to export. 1 to 4294967295 except the kernel's own
    /// tables ([`Ha::RESERVED_TABLES`]); default [`Ha::DEFAULT_ANNOUNCE_TABLE`].
    pub announce_table: u32,
    /// Active-active: after a drain (or a stop) withdrew this node's routes,
    /// how long it keeps opening new flows while the routers converge.
    pub withdraw_wait_ms: u32,
    /// Active-active: after that, how long a draining node keeps forwarding
    /// the flows it holds before it stops anyway.
    pub drain_timeout_s: u32,
    /// Flows per second a bulk copy of the flow table sends a peer at most
    /// (a node that starts, returns or is replaced asks for one).
    pub bulk_sync_rate: u32,
    /// How long a node of higher priority that returns (with `preempt`) waits
    /// for its copy of the active node's flow table to complete before it
    /// takes the role back anyway; 0 takes it back at once.
    pub preempt_sync_timeout_ms: u32,
    /// After a takeover, how long a TCP segment of no known flow is dropped
    /// (its state may still be arriving) rather than answered with a reset.
    pub takeover_grace_ms: u32,
}

impl Ha {
    pub const DEFAULT_ANNOUNCE_TABLE: u32 = 200;
    /// Bounds of `bulk_sync_rate` (flows per second) and `takeover_grace_ms`.
    pub const BULK_SYNC_RATES: std::ops::RangeInclusive<u32> = 100..=10_000_000;
    pub const MAX_TAKEOVER_GRACE_MS: u32 = 60_000;
    /// Bounds of `withdraw_wait_ms` and `drain_timeout_s`.
    pub const MAX_WITHDRAW_WAIT_MS: u32 = 60_000;
    pub const MAX_DRAIN_TIMEOUT_S: u32 = 86_400;
    /// The kernel's `default` (253), `main` (254) and `local` (255) tables: the
    /// host's own routes, never a table of the balancer's. (0 names no table.)
    pub const RESERVED_TABLES: [(u32, &'static str); 3] =
        [(253, "default"), (254, "main"), (255, "local")];
}

impl Default for Ha {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: HaMode::default(),
            interface: None,
            peers: Vec::new(),
            priority: 100,
            // 100 ms × 3 keeps a takeover within the one second that DESIGN.md promises.
            advert_interval_ms: 100,
            dead_after: 3,
            preempt: true,
            auth_key_file: None,
            sync_flows: true,
            track_interfaces: Vec::new(),
            track_xdp: true,
            track_backends: true,
            watchdog_ms: 3000,
            announce_table: Self::DEFAULT_ANNOUNCE_TABLE,
            // 100,000 flows of about 100 bytes: 80 Mbit/s, a million flows in 10 s.
            bulk_sync_rate: 100_000,
            preempt_sync_timeout_ms: 30_000,
            takeover_grace_ms: 1000,
            // BGP withdraws reach a router in well under a second; twice that
            // covers a route reflector.
            withdraw_wait_ms: 2000,
            drain_timeout_s: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub health: Health,
    pub on_backend_down: OnBackendDown,
    /// How long a drained backend keeps its established flows.
    pub drain_timeout_s: u32,
    pub backends: Vec<BackendConfig>,
}

impl Service {
    pub const DEFAULT_DRAIN_TIMEOUT_S: u32 = 300;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendConfig {
    pub address: SocketAddr,
    pub weight: u32,
}

impl BackendConfig {
    pub const DEFAULT_WEIGHT: u32 = 100;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub kind: HealthKind,
    /// Port to probe instead of the backend's own (e.g. a Patroni REST port).
    pub port: Option<u16>,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub expect_body: Option<String>,
    /// UDP probe payload; `None` lets the checker send its default.
    pub payload: Option<String>,
    pub command: Option<Vec<String>>,
    /// Port of a load-reporting agent on the backend.
    pub agent_port: Option<u16>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub rise: u32,
    pub fall: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            kind: HealthKind::Tcp,
            port: None,
            path: None,
            expect_status: None,
            expect_body: None,
            payload: None,
            command: None,
            agent_port: None,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 3,
        }
    }
}

/// Generates a kebab-case enum that (de)serializes as in the file and can name
/// itself in messages.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    #[derive(Default)]
    XdpMode {
        #[default]
        Auto = "auto",
        Native = "native",
        Generic = "generic",
    }
);

keyword_enum!(
    #[derive(Default)]
    Forwarding {
        #[default]
        FullNat = "full-nat",
        Dnat = "dnat",
    }
);

keyword_enum!(
    #[derive(Default)]
    FirewallAction {
        #[default]
        Allow = "allow",
        Deny = "deny",
    }
);

keyword_enum!(
    #[derive(Default)]
    Protocol {
        #[default]
        Tcp = "tcp",
        Udp = "udp",
    }
);

keyword_enum!(
    #[derive(Default)]
    Scheduler {
        #[default]
        LeastConn = "least-conn",
        P2c = "p2c",
        Maglev = "maglev",
        RoundRobin = "round-robin",
    }
);

keyword_enum!(
    #[derive(Default)]
    HealthKind {
        #[default]
        Tcp = "tcp",
        Http = "http",
        Udp = "udp",
        Exec = "exec",
        None = "none",
    }
);

keyword_enum!(
    #[derive(Default)]
    OnBackendDown {
        #[default]
        Keep = "keep",
        Reset = "reset",
    }
);

keyword_enum!(
    /// `firewall.syn_cookies`.
    #[derive(Default)]
    SynCookies {
        /// Never: every SYN to a VIP opens a flow.
        Off = "off",
        /// While a SYN flood is detected (`syn_flood_threshold`).
        #[default]
        Auto = "auto",
        /// For every SYN to a TCP service.
        Always = "always",
    }
);

keyword_enum!(
    /// `ha.mode`.
    #[derive(Default)]
    HaMode {
        /// The active node alone owns the VIPs and SNAT addresses (ARP/NA) and serves.
        #[default]
        ActiveStandby = "active-standby",
        /// Every node serves; each announces the VIPs it can serve by routing
        /// (`announce_table`).
        ActiveActive = "active-active",
    }
);
