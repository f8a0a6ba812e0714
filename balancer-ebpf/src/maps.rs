//! The program's maps; their key and value types live in `balancer-common`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use balancer_common::{
    cookie::COOKIE_KEY_SLOTS,
    global::GLOBAL_ENTRIES,
    maps::{
        ActiveConns, AddrFilter, BackendLoad, BackendStatsMap, Backends, FirewallV4, FirewallV6,
        Flows, Globals, HaLease, HalfOpen, IfaceMtu, Key, LocalAddrs, MaglevTable, RateBuckets,
        RrTable, ScanCursor, ServiceDrops, ServiceSlots, Services, SnatPool, Stats, SweepBackends,
        SweepLimitsMap, SweepStatsMap, SynCookieKeys, SynFloodMap, Value,
    },
    service::{
        ADDR_FILTER_WORDS, BackendIndex, MAGLEV_M, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE,
        MAX_INTERFACES, MAX_SERVICES, MAX_SNAT_ADDRS, RR_TABLE_LEN, ServiceId,
    },
    stats::{COUNTER_COUNT, Counter, service_drop_index},
};

// Each map's name, key and value are those of its descriptor in
// `balancer_common::maps` (the daemon's test holds the object against that list).

/// VIP and SNAT addresses: the one lookup a packet that is not ours costs.
#[map]
pub static LOCAL_ADDRS: HashMap<Key<LocalAddrs>, Value<LocalAddrs>> =
    HashMap::with_max_entries(1024, 0);

/// A bit per address hash of every `LOCAL_ADDRS` key (`addr_filter_bit`).
#[map]
pub static ADDR_FILTER: Array<Value<AddrFilter>> = Array::with_max_entries(ADDR_FILTER_WORDS, 0);

/// Program-wide flags (`GLOBAL_F_*`) at index `GLOBAL_FLAGS`.
#[map]
pub static GLOBAL: Array<Value<Globals>> = Array::with_max_entries(GLOBAL_ENTRIES, 0);

/// The configured SNAT addresses (`MAX_SNAT_ADDRS` per family): each new flow
/// takes a port on one of them, so ports per backend grow with their number.
#[map]
pub static SNAT_POOL: Array<Value<SnatPool>> = Array::with_max_entries(2 * MAX_SNAT_ADDRS, 0);

/// Source rules of new flows, keyed by (scope, IPv4 source prefix).
#[map]
pub static FIREWALL_V4: LpmTrie<Key<FirewallV4>, Value<FirewallV4>> =
    LpmTrie::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Source rules of new flows, keyed by (scope, IPv6 source prefix).
#[map]
pub static FIREWALL_V6: LpmTrie<Key<FirewallV6>, Value<FirewallV6>> =
    LpmTrie::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// New-connection token buckets per source address.
#[map]
pub static RATE_BUCKETS: LruHashMap<Key<RateBuckets>, Value<RateBuckets>> =
    LruHashMap::with_max_entries(65536, 0);

/// Drops of new flows per service and reason: `service_drop_index`.
#[map]
pub static SERVICE_DROPS: PerCpuArray<Value<ServiceDrops>> =
    PerCpuArray::with_max_entries(MAX_SERVICES * COUNTER_COUNT, 0);

#[map]
pub static SERVICES: HashMap<Key<Services>, Value<Services>> =
    HashMap::with_max_entries(MAX_SERVICES, 0);

/// A service's backend slots: `service id * MAX_BACKENDS_PER_SERVICE + slot` →
/// backend index (into `BACKENDS` and the per-backend maps).
#[map]
pub static SERVICE_SLOTS: Array<Value<ServiceSlots>> =
    Array::with_max_entries(MAX_SERVICES * MAX_BACKENDS_PER_SERVICE, 0);

/// Indexed by backend index.
#[map]
pub static BACKENDS: Array<Value<Backends>> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Active connections per backend slot; the only value shared across CPUs on the
/// hot path, updated with atomic adds.
#[map]
pub static ACTIVE_CONNS: Array<Value<ActiveConns>> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Limits of the next in-kernel flow sweep, written by the daemon.
#[map]
pub static SWEEP_LIMITS: Array<Value<SweepLimitsMap>> = Array::with_max_entries(1, 0);

/// What the last sweep did, read by the daemon.
#[map]
pub static SWEEP_STATS: Array<Value<SweepStatsMap>> = Array::with_max_entries(1, 0);

/// What the last sweep kept per backend (reply entries: SNAT ports in use).
#[map]
pub static SWEEP_BACKENDS: Array<Value<SweepBackends>> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Load percentage per backend slot, written by the daemon (0 = idle).
#[map]
pub static BACKEND_LOAD: Array<Value<BackendLoad>> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Weighted round-robin sequences of backend slots, `RR_TABLE_LEN` per service.
#[map]
pub static RR_TABLE: Array<Value<RrTable>> =
    Array::with_max_entries(MAX_SERVICES * RR_TABLE_LEN, 0);

/// Maglev lookup tables (entry → backend slot), `MAGLEV_M` per service.
#[map]
pub static MAGLEV_TABLE: Array<Value<MaglevTable>> =
    Array::with_max_entries(MAX_SERVICES * MAGLEV_M, 0);

/// Per-CPU rotating start of each service's backend scan, so that equally busy
/// backends share new flows evenly.
#[map]
pub static SCAN_CURSOR: PerCpuArray<Value<ScanCursor>> =
    PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Both directions of every tracked connection. The daemon sets its size from
/// `flows.capacity` before loading.
#[map]
pub static FLOWS: LruHashMap<Key<Flows>, Value<Flows>> = LruHashMap::with_max_entries(65536, 0);

/// Both directions of TCP flows whose handshake has not completed, until it
/// does (`handshake::promote` moves them to `FLOWS`) or the sweep expires
/// them. A plain hash, not an LRU: a full table refuses new flows rather
/// than evict a half-open one, and the kernel's LRU evicts entries long
/// before it is full when its free nodes gather on one CPU (entries freed on
/// promotion go back to the CPU that inserted them), which here cost a
/// handshake in every ten thousand or so. The daemon sets its size from
/// `flows.capacity` too.
#[map]
pub static HALF_OPEN: HashMap<Key<HalfOpen>, Value<HalfOpen>> = HashMap::with_max_entries(16384, 0);

/// The SYN cookie key of each period, written by the daemon.
#[map]
pub static SYN_COOKIE_KEYS: Array<Value<SynCookieKeys>> =
    Array::with_max_entries(COOKIE_KEY_SLOTS, 0);

/// Whether auto mode answers SYNs with cookies now (see `flood`).
#[map]
pub static SYN_FLOOD: Array<Value<SynFloodMap>> = Array::with_max_entries(1, 0);

/// MTU of each interface in `TX_PORTS`, by ifindex, written by the daemon.
#[map]
pub static IFACE_MTU: HashMap<Key<IfaceMtu>, Value<IfaceMtu>> =
    HashMap::with_max_entries(MAX_INTERFACES, 0);

/// Interfaces the program redirects to, keyed by ifindex.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

/// Until when (`bpf_ktime_get_ns`) the floating addresses are this node's:
/// the HA thread renews it while active. 0: no high availability, always ours.
/// Once it runs out (the daemon died) ARP about them is dropped, so that only
/// the node that took over answers for them.
#[map]
pub static HA_LEASE: Array<Value<HaLease>> = Array::with_max_entries(1, 0);

/// Flow changes for the standby (`SyncEvent`s), when `GLOBAL_F_SYNC` is set.
#[map]
pub static FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[map]
pub static STATS: PerCpuArray<Value<Stats>> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<Value<BackendStatsMap>> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(c) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU value, no other writer on this CPU while we run.
        unsafe { *c += 1 };
    }
}

/// A `GLOBAL` setting (0 when unset).
#[inline(always)]
pub fn global(g: balancer_common::global::Global) -> u32 {
    GLOBAL.get(g.index()).copied().unwrap_or(0)
}

#[inline(always)]
pub fn count_service_drop(service: ServiceId, reason: Counter) {
    if let Some(c) = SERVICE_DROPS.get_ptr_mut(service_drop_index(service, reason)) {
        // SAFETY: per-CPU value, no other writer on this CPU while we run.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn count_backend(backend: BackendIndex, to_backend: bool, bytes: u16) {
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend.0) {
        // SAFETY: per-CPU value, no other writer on this CPU while we run.
        let s = unsafe { &mut *s };
        if to_backend {
            s.packets_to += 1;
            s.bytes_to += bytes as u64;
        } else {
            s.packets_from += 1;
            s.bytes_from += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn count_new_flow(backend: BackendIndex) {
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend.0) {
        // SAFETY: as above.
        unsafe { (*s).new_flows += 1 };
    }
}
