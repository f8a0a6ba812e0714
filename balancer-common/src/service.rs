//! Services (VIP, port, protocol) and their backends.

use crate::RawAddr;

/// Services the program knows.
pub const MAX_SERVICES: u32 = 256;
/// Backend slots per service: `SERVICE_SLOTS[service_id * MAX_BACKENDS_PER_SERVICE
/// + slot]` holds the slot's index into `BACKENDS` and the per-backend maps.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 1024;
/// Backends of all services together (the per-backend maps' size).
pub const MAX_BACKENDS: u32 = 16384;
/// SNAT addresses per family: `SNAT_POOL[0..]` IPv4, `SNAT_POOL[MAX_SNAT_ADDRS..]` IPv6.
pub const MAX_SNAT_ADDRS: u32 = 16;
/// Interfaces the program may redirect to (device map entries).
pub const MAX_INTERFACES: u32 = 64;

/// A service's place in the maps: the id its `SERVICES` entry holds, the
/// scope of its firewall rules, and its block of `SERVICE_SLOTS`,
/// `RR_TABLE`, `MAGLEV_TABLE`, `SCAN_CURSOR` and `SERVICE_DROPS`. The daemon
/// keeps it for as long as the service is configured, whatever its place in
/// the file.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u32);

impl ServiceId {
    /// `SERVICE_SLOTS` index of the service's `slot`.
    #[inline(always)]
    pub const fn slot(self, slot: u32) -> u32 {
        self.0 * MAX_BACKENDS_PER_SERVICE + slot
    }

    /// `RR_TABLE` index of the service's `pos`-th round-robin entry.
    #[inline(always)]
    pub const fn rr_entry(self, pos: u32) -> u32 {
        self.0 * RR_TABLE_LEN + pos
    }

    /// `MAGLEV_TABLE` index of the service's `entry`.
    #[inline(always)]
    pub const fn maglev_entry(self, entry: u32) -> u32 {
        self.0 * MAGLEV_M + entry
    }
}

/// A backend's place in `BACKENDS` and every per-backend map (`ACTIVE_CONNS`,
/// `BACKEND_LOAD`, `BACKEND_STATS`, ...). Flows refer to their backend by it,
/// so the daemon reuses an index only once no flow refers to it.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendIndex(pub u32);

/// Key of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP, network byte order.
    pub vip: RawAddr,
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);

pub const SCHED_LEAST_CONN: u32 = 0;
pub const SCHED_ROUND_ROBIN: u32 = 1;
pub const SCHED_P2C: u32 = 2;
pub const SCHED_MAGLEV: u32 = 3;

/// Entries per service in `RR_TABLE`: a weighted round-robin sequence of slots.
pub const RR_TABLE_LEN: u32 = 1024;
/// Entries per service in `MAGLEV_TABLE`: a prime well above the backend
/// counts Maglev is used with (it wants M >> N; at 1,024 backends the spread is
/// within a few percent, at 64 within a fraction of one).
pub const MAGLEV_M: u32 = 16381;
/// Tries of a random backend slot by p2c before it falls back to a scan.
pub const P2C_TRIES: u32 = 8;

/// Destination-only NAT: the client's source address is kept.
pub const SERVICE_F_DNAT: u32 = 1 << 0;
/// The service has an allow list: sources it does not match are refused.
pub const SERVICE_F_ALLOW_LIST: u32 = 1 << 1;
/// The service has source rules of its own (`allow` or `deny`): new flows
/// look their source up in them (without, the lookup is skipped).
pub const SERVICE_F_RULES: u32 = 1 << 2;

/// Value of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    pub id: ServiceId,
    /// Slots `0..backend_count` of this service are looked at by the scheduler.
    pub backend_count: u32,
    pub scheduler: u32,
    pub flags: u32,
    /// Inclusive SNAT source-port range, host byte order.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// Entries of the service's round-robin sequence in `RR_TABLE`.
    pub rr_len: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 24);

/// The slot holds a backend.
pub const BACKEND_F_PRESENT: u32 = 1 << 0;
/// Health checks pass (or the service does not check).
pub const BACKEND_F_HEALTHY: u32 = 1 << 1;
/// Keeps its flows but takes no new ones.
pub const BACKEND_F_DRAINING: u32 = 1 << 2;
/// Its flows are ended by the next sweep (`on_backend_down = "reset"`, or a
/// drain that timed out).
pub const BACKEND_F_PURGE: u32 = 1 << 3;

/// Value of `BACKENDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Backend address, network byte order.
    pub addr: RawAddr,
    /// Source address towards this backend in full-NAT mode, network byte order.
    pub snat_addr: RawAddr,
    pub port_be: u16,
    pub family: u8,
    pub _pad0: u8,
    pub flags: u32,
    /// Relative capacity; 0 takes no new flows.
    pub weight: u32,
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 48);

impl Backend {
    /// May take new flows.
    #[inline(always)]
    pub fn selectable(&self) -> bool {
        self.flags & (BACKEND_F_PRESENT | BACKEND_F_HEALTHY | BACKEND_F_DRAINING)
            == BACKEND_F_PRESENT | BACKEND_F_HEALTHY
            && self.weight > 0
    }
}

/// Key of `LOCAL_ADDRS`: addresses whose packets the program must look at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub addr: RawAddr,
    pub family: u8,
    // Two fields rather than `[u8; 3]`: the program zeroes an odd-sized array
    // with a call to a byte-by-byte `memset`.
    pub _pad0: u8,
    pub _pad1: u16,
}
const _: () = assert!(core::mem::size_of::<AddrKey>() == 20);

/// Words of `ADDR_FILTER`: one bit per hash of an address, set for every key
/// of `LOCAL_ADDRS`, so that a packet that is not ours (most of a host's) costs
/// an array read instead of a hash lookup. A set bit only says "look it up".
pub const ADDR_FILTER_WORDS: u32 = 1024;

/// The `ADDR_FILTER` bit of an address (wire-order words, as in `AddrKey`).
#[inline(always)]
pub fn addr_filter_bit(addr: &RawAddr) -> u32 {
    let x = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    let x = x ^ (x >> 16);
    x & (ADDR_FILTER_WORDS * 64 - 1)
}

/// `LOCAL_ADDRS` value bits.
pub const ADDR_F_VIP: u32 = 1 << 0;
pub const ADDR_F_SNAT: u32 = 1 << 1;
/// A backend of a DNAT service, looked up by source: its replies are addressed
/// to clients, not to an address of ours.
pub const ADDR_F_DNAT_BACKEND: u32 = 1 << 2;

crate::user_pod!(
    ServiceId,
    BackendIndex,
    ServiceKey,
    ServiceValue,
    Backend,
    AddrKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_bits_stay_in_the_map_and_spread() {
        let mut seen = [false; 16];
        for i in 0..4096u32 {
            let addr = [u32::from_be(0xc633_6400 | (i & 0xff)), 0, 0, i >> 8];
            let bit = addr_filter_bit(&addr);
            assert!(bit < ADDR_FILTER_WORDS * 64);
            seen[(bit % 16) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
