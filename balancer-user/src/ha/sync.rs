//! Flow-state sync: the active node's kernel puts every new and ended flow in
//! `FLOW_EVENTS`; the HA thread batches them into authenticated datagrams to
//! the peers; the standby installs them in its own maps (both entries, the
//! SNAT port they hold, the backend's count), so that after a takeover the
//! packets of established connections find their flow.
//!
//! Backends are named by address on the wire and found again by the standby
//! under the service the flow's VIP:port belongs to: indexes differ between
//! nodes.
//!
//! Datagram: `"LBSY"` | version u8 | name length u8 | name | sequence u64 |
//! records u16 | records (76 bytes each) | HMAC-SHA256 [32].

use std::{collections::HashMap as StdHashMap, path::Path, time::SystemTime};

use anyhow::Result;
use aya::maps::{Array, HashMap, MapData, RingBuf};
use balancer_common::{
    RawAddr,
    flow::{DIR_FORWARD, DIR_REPLY, FlowKey, FlowValue, SYNC_CLOSED, SYNC_NEW, SyncEvent},
    maps::{ActiveConns, Backends, FlowEvents, Flows, ServiceSlots, Services},
    service::{
        BACKEND_F_PRESENT, Backend, BackendIndex, MAX_BACKENDS_PER_SERVICE, ServiceKey,
        ServiceValue,
    },
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::advert::micros;
use crate::{dataplane::PinnedMaps, ktime};

/// UDP port of the flow sync.
pub const PORT: u16 = super::advert::PORT + 1;
const MAGIC: &[u8; 4] = b"LBSY";
const VERSION: u8 = 1;
const RECORD: usize = 76;
const MAC_LEN: usize = 32;
/// Records per datagram: a datagram stays under 1,400 bytes.
pub const BATCH: usize = 16;

/// One flow change as it crosses the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub family: u8,
    pub proto: u8,
    pub state: u8,
    /// New: the forward key (client -> VIP). Closed: the reply key.
    pub src: RawAddr,
    pub dst: RawAddr,
    pub sport_be: u16,
    pub dport_be: u16,
    /// New: the SNAT address and port (or the client's, DNAT) and the backend.
    pub new_src: RawAddr,
    pub new_sport_be: u16,
    pub backend: RawAddr,
    pub backend_port_be: u16,
}

impl Record {
    pub fn from_event(e: &SyncEvent) -> Option<Self> {
        let kind = match e.kind {
            SYNC_NEW => 1,
            SYNC_CLOSED => 2,
            _ => return None,
        };
        Some(Self {
            kind,
            family: e.key.family,
            proto: e.key.proto,
            state: e.value.state,
            src: e.key.src,
            dst: e.key.dst,
            sport_be: e.key.sport_be,
            dport_be: e.key.dport_be,
            new_src: e.value.new_src,
            new_sport_be: e.value.new_sport_be,
            backend: e.value.new_dst,
            backend_port_be: e.value.new_dport_be,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.kind, self.family, self.proto, self.state]);
        for a in [self.src, self.dst] {
            for w in a {
                out.extend_from_slice(&w.to_ne_bytes());
            }
        }
        out.extend_from_slice(&self.sport_be.to_ne_bytes());
        out.extend_from_slice(&self.dport_be.to_ne_bytes());
        for w in self.new_src {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&self.new_sport_be.to_ne_bytes());
        for w in self.backend {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&self.backend_port_be.to_ne_bytes());
    }

    fn read(b: &[u8]) -> Self {
        let addr = |o: usize| -> RawAddr {
            let w = |i: usize| u32::from_ne_bytes(b[o + i * 4..o + i * 4 + 4].try_into().unwrap());
            [w(0), w(1), w(2), w(3)]
        };
        let port = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        Self {
            kind: b[0],
            family: b[1],
            proto: b[2],
            state: b[3],
            src: addr(4),
            dst: addr(20),
            sport_be: port(36),
            dport_be: port(38),
            new_src: addr(40),
            new_sport_be: port(56),
            backend: addr(58),
            backend_port_be: port(74),
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

pub struct Wire {
    key: Vec<u8>,
    name: String,
    seq: u64,
    last_seq: StdHashMap<String, u64>,
}

impl Wire {
    pub fn new(key: Vec<u8>, name: &str) -> Self {
        Self {
            key,
            name: name.to_string(),
            // Above anything a previous run of this node sent.
            seq: micros(SystemTime::now()),
            last_seq: StdHashMap::new(),
        }
    }

    pub fn encode(&mut self, records: &[Record]) -> Vec<u8> {
        // The send time in µs, so that the standby can tell the lag; never
        // less than the last, so that it stays a replay guard.
        self.seq = micros(SystemTime::now()).max(self.seq + 1);
        let name = &self.name.as_bytes()[..self.name.len().min(64)];
        let mut out = Vec::with_capacity(16 + name.len() + records.len() * RECORD + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        for r in records {
            r.write(&mut out);
        }
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The send time (µs) and records of an authentic datagram not seen before.
    pub fn decode(&mut self, data: &[u8]) -> Result<(u64, Vec<Record>), &'static str> {
        if data.len() < 6 + 10 + MAC_LEN || &data[..4] != MAGIC || data[4] != VERSION {
            return Err("malformed");
        }
        let (body, tag) = data.split_at(data.len() - MAC_LEN);
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| "forged")?;
        let name_len = body[5] as usize;
        let rest = body.get(6 + name_len..).ok_or("malformed")?;
        let name = String::from_utf8_lossy(&body[6..6 + name_len]).into_owned();
        if rest.len() < 10 {
            return Err("malformed");
        }
        let seq = u64::from_be_bytes(rest[..8].try_into().unwrap());
        let count = u16::from_be_bytes([rest[8], rest[9]]) as usize;
        let records = &rest[10..];
        if records.len() != count * RECORD {
            return Err("malformed");
        }
        if self.last_seq.get(&name).is_some_and(|&last| seq <= last) {
            return Err("replayed");
        }
        self.last_seq.insert(name, seq);
        Ok((
            seq,
            records.chunks_exact(RECORD).map(Record::read).collect(),
        ))
    }
}

/// The active side: new records from the kernel.
pub struct Source {
    pub ring: RingBuf<MapData>,
}

impl Source {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            ring: PinnedMaps::new(pin_dir).open::<FlowEvents, _>()?,
        })
    }

    /// Everything queued now.
    pub fn drain(&mut self, out: &mut Vec<Record>) {
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<SyncEvent>() {
                // SAFETY: the kernel wrote a SyncEvent; read unaligned.
                let e: SyncEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                if let Some(r) = Record::from_event(&e) {
                    out.push(r);
                }
            }
        }
    }
}

/// The standby side: this node's maps.
pub struct Sink {
    /// Backend index by (service, backend address, port), checked against
    /// `BACKENDS` on use: a reload may move backends.
    known: StdHashMap<(ServiceKey, RawAddr, u16), BackendIndex>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: Array<MapData, BackendIndex>,
    backends: Array<MapData, Backend>,
    active: Array<MapData, u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub installed: u64,
    pub closed: u64,
    /// Records whose service or backend this node does not have.
    pub unmatched: u64,
}

impl Sink {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let pinned = PinnedMaps::new(pin_dir);
        Ok(Self {
            known: StdHashMap::new(),
            flows: pinned.open::<Flows, _>()?,
            services: pinned.open::<Services, _>()?,
            slots: pinned.open::<ServiceSlots, _>()?,
            backends: pinned.open::<Backends, _>()?,
            active: pinned.open::<ActiveConns, _>()?,
        })
    }

    pub fn apply(&mut self, records: &[Record], applied: &mut Applied) {
        for r in records {
            let ok = match r.kind {
                1 => self.install(r),
                2 => self.close(r),
                _ => false,
            };
            match (ok, r.kind) {
                (true, 1) => applied.installed += 1,
                (true, _) => applied.closed += 1,
                (false, _) => applied.unmatched += 1,
            }
        }
    }

    /// This node's index of the record's backend, under the service of its VIP.
    fn backend_index(&mut self, r: &Record) -> Option<BackendIndex> {
        let key = ServiceKey {
            vip: r.dst,
            port_be: r.dport_be,
            proto: r.proto,
            family: r.family,
        };
        let cache_key = (key, r.backend, r.backend_port_be);
        if let Some(&index) = self.known.get(&cache_key)
            && let Ok(b) = self.backends.get(&index.0, 0)
            && b.addr == r.backend
            && b.port_be == r.backend_port_be
            && b.flags & BACKEND_F_PRESENT != 0
        {
            return Some(index);
        }
        let svc = self.services.get(&key, 0).ok()?;
        let found = (0..svc.backend_count.min(MAX_BACKENDS_PER_SERVICE)).find_map(|slot| {
            let index = self.slots.get(&svc.id.slot(slot), 0).ok()?;
            let b = self.backends.get(&index.0, 0).ok()?;
            (b.addr == r.backend && b.port_be == r.backend_port_be).then_some(index)
        })?;
        self.known.insert(cache_key, found);
        Some(found)
    }

    fn install(&mut self, r: &Record) -> bool {
        let Some(index) = self.backend_index(r) else {
            return false;
        };
        let forward_key = FlowKey {
            src: r.src,
            dst: r.dst,
            sport_be: r.sport_be,
            dport_be: r.dport_be,
            proto: r.proto,
            family: r.family,
            _pad: [0; 2],
        };
        if self.flows.get(&forward_key, 0).is_ok() {
            return true;
        }
        let now = ktime::coarse_ns();
        // Next hops are this node's to learn (nh_ifindex 0).
        let forward = FlowValue {
            new_src: r.new_src,
            new_dst: r.backend,
            new_sport_be: r.new_sport_be,
            new_dport_be: r.backend_port_be,
            backend: index,
            created_ns: now,
            last_seen_ns: now,
            state: r.state,
            direction: DIR_FORWARD,
            ..FlowValue::default()
        };
        let reply_key = forward.peer_key(r.proto, r.family);
        let reply = FlowValue {
            new_src: r.dst,
            new_dst: r.src,
            new_sport_be: r.dport_be,
            new_dport_be: r.sport_be,
            backend: index,
            created_ns: now,
            last_seen_ns: now,
            state: r.state,
            direction: DIR_REPLY,
            ..FlowValue::default()
        };
        if self.flows.insert(reply_key, reply, 0).is_err()
            || self.flows.insert(forward_key, forward, 0).is_err()
        {
            return false;
        }
        let count = self.active.get(&index.0, 0).unwrap_or(0);
        let _ = self.active.set(index.0, count + 1, 0);
        true
    }

    fn close(&mut self, r: &Record) -> bool {
        let reply_key = FlowKey {
            src: r.src,
            dst: r.dst,
            sport_be: r.sport_be,
            dport_be: r.dport_be,
            proto: r.proto,
            family: r.family,
            _pad: [0; 2],
        };
        let Ok(reply) = self.flows.get(&reply_key, 0) else {
            return false;
        };
        let forward_key = reply.peer_key(r.proto, r.family);
        if let Ok(forward) = self.flows.get(&forward_key, 0)
            && forward.released == 0
        {
            let count = self.active.get(&forward.backend.0, 0).unwrap_or(0);
            let _ = self
                .active
                .set(forward.backend.0, count.saturating_sub(1), 0);
        }
        let _ = self.flows.remove(&forward_key);
        let _ = self.flows.remove(&reply_key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8) -> Record {
        Record {
            kind,
            family: 4,
            proto: 6,
            state: 1,
            src: [1, 0, 0, 0],
            dst: [2, 0, 0, 0],
            sport_be: 3,
            dport_be: 4,
            new_src: [5, 0, 0, 0],
            new_sport_be: 6,
            backend: [7, 0, 0, 0],
            backend_port_be: 8,
        }
    }

    #[test]
    fn records_round_trip_authenticated_once() {
        let mut tx = Wire::new(b"k".repeat(32), "lb-a");
        let mut rx = Wire::new(b"k".repeat(32), "lb-b");
        let batch = vec![record(1), record(2)];
        let wire = tx.encode(&batch);
        assert!(wire.len() < 1400 || batch.len() > BATCH);
        assert_eq!(rx.decode(&wire).map(|(_, r)| r), Ok(batch));
        assert_eq!(rx.decode(&wire), Err("replayed"));
        let mut forged = tx.encode(&[record(1)]);
        forged[20] ^= 1;
        assert_eq!(rx.decode(&forged), Err("forged"));
        let full = tx.encode(&vec![record(1); BATCH]);
        assert!(full.len() <= 1400, "{}", full.len());
    }
}
