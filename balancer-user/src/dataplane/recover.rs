//! Reading back what a previous daemon wrote: which service sits at which id
//! and which backend at which index, with their flags. The runtime takes it
//! from there (`Runtime::recover`).

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use anyhow::Result;
use aya::maps::{Array, HashMap};
use balancer_common::{
    PROTO_TCP,
    maps::{Backends, ServiceSlots, Services},
    service::{
        BACKEND_F_PRESENT, Backend, BackendIndex, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE, ServiceId,
    },
};

use super::Dataplane;
use crate::{addr::from_raw, config::Protocol};

/// A `SERVICES` entry and the backends its slots point at.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredService {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub id: ServiceId,
    pub backends: Vec<RecoveredBackend>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredBackend {
    pub index: BackendIndex,
    pub address: SocketAddr,
    /// `BACKEND_F_*`.
    pub flags: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    pub services: Vec<RecoveredService>,
    /// `BACKENDS` entries in use that no service slot points at: backends a
    /// previous daemon retired.
    pub orphans: Vec<RecoveredBackend>,
}

impl RecoveredBackend {
    fn new(index: BackendIndex, b: &Backend) -> Self {
        Self {
            index,
            address: SocketAddr::new(from_raw(b.addr, b.family), u16::from_be(b.port_be)),
            flags: b.flags,
        }
    }
}

impl Dataplane {
    pub fn recover(&self) -> Result<Recovered> {
        let services = self.map::<Services, HashMap<_, _, _>>()?;
        let slots = self.map::<ServiceSlots, Array<_, _>>()?;
        let backends = self.map::<Backends, Array<_, _>>()?;
        let mut out = Recovered::default();
        let mut referenced = BTreeSet::new();
        for entry in services.iter() {
            let (key, value) = entry?;
            let mut list = Vec::new();
            for slot in 0..value.backend_count.min(MAX_BACKENDS_PER_SERVICE) {
                let index = slots.get(&value.id.slot(slot), 0)?;
                let b = backends.get(&index.0, 0)?;
                if b.flags & BACKEND_F_PRESENT == 0 || !referenced.insert(index) {
                    continue;
                }
                list.push(RecoveredBackend::new(index, &b));
            }
            out.services.push(RecoveredService {
                vip: from_raw(key.vip, key.family),
                port: u16::from_be(key.port_be),
                protocol: if key.proto == PROTO_TCP {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                },
                id: value.id,
                backends: list,
            });
        }
        for index in (0..MAX_BACKENDS).map(BackendIndex) {
            if referenced.contains(&index) {
                continue;
            }
            let b = backends.get(&index.0, 0)?;
            if b.flags & BACKEND_F_PRESENT != 0 {
                out.orphans.push(RecoveredBackend::new(index, &b));
            }
        }
        out.services.sort_by_key(|s| s.id);
        Ok(out)
    }
}
