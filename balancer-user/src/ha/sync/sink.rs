//! The receiving side's output: a peer's flows installed in this node's maps
//! (both entries, the SNAT port they hold, the backend's count), owned by
//! that peer, so that its connections keep working here after a takeover or
//! an ECMP move.
//!
//! Backends are named by address on the wire and found again under the
//! service the flow's VIP:port belongs to: indexes differ between nodes.

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::Result;
use aya::maps::{Array, HashMap, MapData};
use balancer_common::{
    RawAddr,
    flow::{DIR_FORWARD, DIR_REPLY, FlowKey, FlowValue, UNCOUNTED},
    maps::{ActiveConns, Backends, Flows, ServiceSlots, Services},
    service::{
        BACKEND_F_PRESENT, Backend, BackendIndex, MAX_BACKENDS_PER_SERVICE, ServiceKey,
        ServiceValue,
    },
};

use super::wire::{Flow, Record};
use crate::{
    dataplane::{PinnedMaps, batch},
    ktime,
};

pub struct Sink {
    /// Backend index by (service, backend address, port), checked against
    /// `BACKENDS` on use: a reload may move backends.
    known: StdHashMap<(ServiceKey, RawAddr, u16), BackendIndex>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: Array<MapData, BackendIndex>,
    backends: Array<MapData, Backend>,
    active: Array<MapData, u64>,
    /// Whether installed flows take a count in `ACTIVE_CONNS`: a standby's
    /// do (it forwards them after a takeover, and its program does not
    /// change the counts meanwhile); in active-active they do not (see
    /// [`UNCOUNTED`]).
    count: bool,
}

/// What applying records did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub installed: u64,
    pub closed: u64,
    /// Flows whose service or backend this node does not have.
    pub unmatched: u64,
}

impl Sink {
    pub fn open(pin_dir: &Path, count: bool) -> Result<Self> {
        let pinned = PinnedMaps::new(pin_dir);
        Ok(Self {
            known: StdHashMap::new(),
            flows: pinned.open::<Flows, _>()?,
            services: pinned.open::<Services, _>()?,
            slots: pinned.open::<ServiceSlots, _>()?,
            backends: pinned.open::<Backends, _>()?,
            active: pinned.open::<ActiveConns, _>()?,
            count,
        })
    }

    /// The flow table's file descriptor, for a bulk copy's own reads.
    pub fn flows_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        self.flows.map().fd().as_fd().try_clone_to_owned()
    }

    /// The flows a bulk copy would send (see `bulk::sent_in_bulk`), counted a
    /// batch of entries per system call.
    pub fn flows_in_bulk(&self, owners: &super::bulk::Owners) -> u64 {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        let mut count = 0;
        let counted = batch::for_each(
            self.flows.map().fd().as_fd(),
            size_of::<FlowKey>(),
            size_of::<FlowValue>(),
            4096,
            |k, v| {
                if super::bulk::sent_in_bulk(&batch::read(k), &batch::read(v), owners).is_some() {
                    count += 1;
                }
                std::ops::ControlFlow::Continue(())
            },
        );
        if let Err(e) = counted {
            tracing::debug!("counting the flow table: {e}");
        }
        count
    }

    /// Installs or ends the flows of `records`, which the peer `owner` (its
    /// node id) sent.
    pub fn apply(&mut self, owner: u32, records: &[Record], applied: &mut Applied) {
        for r in records {
            match r {
                Record::Flow(f) => {
                    if self.install(owner, f) {
                        applied.installed += 1;
                    } else {
                        applied.unmatched += 1;
                    }
                }
                Record::Closed {
                    family,
                    proto,
                    backend,
                    backend_port_be,
                    snat,
                    snat_port_be,
                } => {
                    let reply_key = FlowKey {
                        src: *backend,
                        dst: *snat,
                        sport_be: *backend_port_be,
                        dport_be: *snat_port_be,
                        proto: *proto,
                        family: *family,
                        _pad: [0; 2],
                    };
                    if self.close(&reply_key) {
                        applied.closed += 1;
                    }
                }
                Record::BulkBegin { .. } | Record::BulkEnd { .. } => {}
            }
        }
    }

    /// This node's index of the flow's backend, under the service of its VIP.
    fn backend_index(&mut self, f: &Flow) -> Option<BackendIndex> {
        let key = ServiceKey {
            vip: f.vip,
            port_be: f.vip_port_be,
            proto: f.proto,
            family: f.family,
        };
        let cache_key = (key, f.backend, f.backend_port_be);
        if let Some(&index) = self.known.get(&cache_key)
            && let Ok(b) = self.backends.get(&index.0, 0)
            && b.addr == f.backend
            && b.port_be == f.backend_port_be
            && b.flags & BACKEND_F_PRESENT != 0
        {
            return Some(index);
        }
        let svc = self.services.get(&key, 0).ok()?;
        let found = (0..svc.backend_count.min(MAX_BACKENDS_PER_SERVICE)).find_map(|slot| {
            let index = self.slots.get(&svc.id.slot(slot), 0).ok()?;
            let b = self.backends.get(&index.0, 0).ok()?;
            (b.addr == f.backend && b.port_be == f.backend_port_be).then_some(index)
        })?;
        self.known.insert(cache_key, found);
        Some(found)
    }

    /// Both entries of the flow, as its owner forwards it. An entry already
    /// there (the flow seen before, or a stale one of this node's under the
    /// same key) is overwritten: the owner's word is the one that counts.
    fn install(&mut self, owner: u32, f: &Flow) -> bool {
        let Some(index) = self.backend_index(f) else {
            return false;
        };
        let forward_key = FlowKey {
            src: f.client,
            dst: f.vip,
            sport_be: f.client_port_be,
            dport_be: f.vip_port_be,
            proto: f.proto,
            family: f.family,
            _pad: [0; 2],
        };
        // A count the entry holds already (this node's flow, or one synced
        // before) stays with it, given back at its release.
        let counted = self
            .flows
            .get(&forward_key, 0)
            .is_ok_and(|old| old.backend == index && old.released == 0);
        let released = if counted || self.count { 0 } else { UNCOUNTED };
        let now = ktime::coarse_ns();
        // Next hops are this node's to learn (nh_ifindex 0).
        let forward = FlowValue {
            new_src: f.snat,
            new_dst: f.backend,
            new_sport_be: f.snat_port_be,
            new_dport_be: f.backend_port_be,
            backend: index,
            created_ns: now,
            last_seen_ns: now,
            state: f.state,
            direction: DIR_FORWARD,
            released,
            owner,
            seq_delta: f.seq_delta,
            isn_delta: f.isn_delta,
            proxy: f.proxy,
            ..FlowValue::default()
        };
        let reply_key = forward.peer_key(f.proto, f.family);
        let reply = FlowValue {
            new_src: f.vip,
            new_dst: f.client,
            new_sport_be: f.vip_port_be,
            new_dport_be: f.client_port_be,
            backend: index,
            created_ns: now,
            last_seen_ns: now,
            state: f.state,
            direction: DIR_REPLY,
            owner,
            seq_delta: f.seq_delta,
            isn_delta: f.isn_delta,
            proxy: f.proxy,
            ..FlowValue::default()
        };
        if self.flows.insert(reply_key, reply, 0).is_err()
            || self.flows.insert(forward_key, forward, 0).is_err()
        {
            return false;
        }
        if !counted && self.count {
            let count = self.active.get(&index.0, 0).unwrap_or(0);
            let _ = self.active.set(index.0, count + 1, 0);
        }
        true
    }

    fn close(&mut self, reply_key: &FlowKey) -> bool {
        let Ok(reply) = self.flows.get(reply_key, 0) else {
            return false;
        };
        let forward_key = reply.peer_key(reply_key.proto, reply_key.family);
        if let Ok(forward) = self.flows.get(&forward_key, 0)
            && forward.released == 0
        {
            let count = self.active.get(&forward.backend.0, 0).unwrap_or(0);
            let _ = self
                .active
                .set(forward.backend.0, count.saturating_sub(1), 0);
        }
        let _ = self.flows.remove(&forward_key);
        let _ = self.flows.remove(reply_key);
        true
    }
}
