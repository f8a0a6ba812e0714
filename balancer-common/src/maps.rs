//! Every map's identity: its name in the program object, the kind of map the
//! daemon opens it as, and its key and value types. The XDP program declares
//! its maps with these types (`balancer-ebpf/src/maps.rs`); the daemon opens
//! them, live or pinned, only through these descriptors
//! (`balancer_user::dataplane::maps`), so a map is named in one place. A test
//! of the daemon holds this list against the compiled object: every map
//! there is here, with the same name, kind and sizes.

use crate::{
    RawAddr,
    cookie::CookieKey,
    expiry::{BackendSweep, SweepLimits, SweepStats},
    firewall::{Bucket, RuleKeyV4, RuleKeyV6},
    flow::{FlowKey, FlowValue, SyncEvent},
    global::SynFlood,
    ha::Lease,
    service::{AddrKey, Backend, BackendIndex, ServiceKey, ServiceValue},
    stats::BackendStats,
};

/// How the daemon opens a map: aya's handle types, one per kind.
pub mod kind {
    /// `BPF_MAP_TYPE_ARRAY`.
    pub struct Array;
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    pub struct PerCpuArray;
    /// `BPF_MAP_TYPE_HASH` or `BPF_MAP_TYPE_LRU_HASH`: the same handle.
    pub struct Hash;
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    pub struct LpmTrie;
    /// `BPF_MAP_TYPE_RINGBUF` (no key or value: records).
    pub struct RingBuf;
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    pub struct DevMapHash;
}

/// A map of the program.
pub trait MapDef {
    /// The name in the object (the program's static) and under `pin_dir/maps`.
    const NAME: &'static str;
    /// One of [`kind`].
    type Kind;
    type Key;
    type Value;
}

pub type Key<M> = <M as MapDef>::Key;
pub type Value<M> = <M as MapDef>::Value;

/// Declares a descriptor type per map, and [`ALL`] with the names.
macro_rules! maps {
    ($($(#[$doc:meta])* $ty:ident = $name:literal: $kind:ident<$key:ty, $value:ty>;)+) => {
        $(
            $(#[$doc])*
            pub struct $ty;
            impl MapDef for $ty {
                const NAME: &'static str = $name;
                type Kind = kind::$kind;
                type Key = $key;
                type Value = $value;
            }
        )+

        /// Every map the daemon reads or writes: (name, kind, key and value
        /// sizes; 0 for a ring buffer's).
        pub const ALL: &[(&str, &str, usize, usize)] = &[
            $(($name, stringify!($kind), size_of::<$key>(), size_of::<$value>()),)+
        ];
    };
}

maps! {
    /// VIP and SNAT addresses (`ADDR_F_*` flags): the one lookup a packet
    /// that is not ours costs, behind `ADDR_FILTER`.
    LocalAddrs = "LOCAL_ADDRS": Hash<AddrKey, u32>;
    /// A bit per address hash of every `LOCAL_ADDRS` key (`addr_filter_bit`).
    AddrFilter = "ADDR_FILTER": Array<u32, u64>;
    /// Program-wide settings, by `global::Global` index.
    Globals = "GLOBAL": Array<u32, u32>;
    /// The configured SNAT addresses, `MAX_SNAT_ADDRS` per family (IPv4 first).
    SnatPool = "SNAT_POOL": Array<u32, RawAddr>;
    /// Source rules of new flows by (scope, IPv4 prefix): `RULE_*`.
    FirewallV4 = "FIREWALL_V4": LpmTrie<RuleKeyV4, u32>;
    /// Source rules of new flows by (scope, IPv6 prefix): `RULE_*`.
    FirewallV6 = "FIREWALL_V6": LpmTrie<RuleKeyV6, u32>;
    /// New-connection token buckets per source address.
    RateBuckets = "RATE_BUCKETS": Hash<AddrKey, Bucket>;
    /// Drops of new flows per service and reason (`service_drop_index`).
    ServiceDrops = "SERVICE_DROPS": PerCpuArray<u32, u64>;
    Services = "SERVICES": Hash<ServiceKey, ServiceValue>;
    /// A service's backend slots (`ServiceId::slot`) -> backend index.
    ServiceSlots = "SERVICE_SLOTS": Array<u32, BackendIndex>;
    /// By backend index.
    Backends = "BACKENDS": Array<u32, Backend>;
    /// Active connections per backend index: the one value the hot path
    /// shares across CPUs (atomic adds).
    ActiveConns = "ACTIVE_CONNS": Array<u32, u64>;
    /// Limits of the next in-kernel sweep, written by the daemon.
    SweepLimitsMap = "SWEEP_LIMITS": Array<u32, SweepLimits>;
    /// What the last sweep did.
    SweepStatsMap = "SWEEP_STATS": Array<u32, SweepStats>;
    /// What the last sweep kept per backend index.
    SweepBackends = "SWEEP_BACKENDS": Array<u32, BackendSweep>;
    /// Load percentage per backend index, written by the daemon.
    BackendLoad = "BACKEND_LOAD": Array<u32, u32>;
    /// Weighted round-robin sequences of slots (`ServiceId::rr_entry`).
    RrTable = "RR_TABLE": Array<u32, u32>;
    /// Maglev tables, entry -> slot (`ServiceId::maglev_entry`).
    MaglevTable = "MAGLEV_TABLE": Array<u32, u32>;
    /// Per-CPU rotating start of each service's scan or round-robin sequence.
    ScanCursor = "SCAN_CURSOR": PerCpuArray<u32, u32>;
    /// Both directions of every tracked connection (sized by `flows.capacity`)
    /// but TCP ones whose handshake has not completed.
    Flows = "FLOWS": Hash<FlowKey, FlowValue>;
    /// Both directions of TCP flows whose handshake has not completed (sized
    /// by [`half_open_capacity`]): a table of their own, so that a flood of
    /// SYNs never takes an established flow's place; when it is full, new
    /// flows are refused until the sweep expires half-open ones.
    HalfOpen = "HALF_OPEN": Hash<FlowKey, FlowValue>;
    /// The SYN cookie key of each period, at `period % COOKIE_KEY_SLOTS`.
    SynCookieKeys = "SYN_COOKIE_KEYS": Array<u32, CookieKey>;
    /// Whether auto mode answers SYNs with cookies now (the program's).
    SynFloodMap = "SYN_FLOOD": Array<u32, SynFlood>;
    /// MTU of each interface the program may redirect to, by ifindex.
    IfaceMtu = "IFACE_MTU": Hash<u32, u32>;
    /// Interfaces the program redirects to, by ifindex.
    TxPorts = "TX_PORTS": DevMapHash<u32, u32>;
    /// Whether this node answers for the floating addresses, and the
    /// grace after a takeover.
    HaLease = "HA_LEASE": Array<u32, Lease>;
    /// Flow changes for the HA peers ([`SyncEvent`] records).
    FlowEvents = "FLOW_EVENTS": RingBuf<(), SyncEvent>;
    /// Global counters by `Counter` index, per CPU.
    Stats = "STATS": PerCpuArray<u32, u64>;
    /// Traffic per backend index, per CPU.
    BackendStatsMap = "BACKEND_STATS": PerCpuArray<u32, BackendStats>;
}

/// The program's own per-CPU scratch and cache maps: pinned with the rest,
/// never read or written by the daemon, their values private to the program.
pub const PROGRAM_PRIVATE: &[&str] = &[
    "SCRATCH",
    "FIB_PARAMS",
    "SCAN",
    "PORT_PROBE",
    "PORT_CURSOR",
    "BACKEND_HOPS",
    "CLOCK",
    "SYN_WINDOW",
    "TCP_OPTS",
    "SEGMENT",
];

/// Entries of `HALF_OPEN` for a flow table of `capacity` entries: a quarter,
/// at least 4,096.
pub const fn half_open_capacity(capacity: u32) -> u32 {
    let q = capacity / 4;
    if q < 4096 { 4096 } else { q }
}
