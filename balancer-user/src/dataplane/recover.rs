//! Reading back what a previous daemon wrote, for [`Runtime::recover`].
//!
//! [`Runtime::recover`]: crate::runtime::Runtime::recover

use std::{collections::BTreeSet, net::SocketAddr};

use anyhow::Result;
use aya::maps::{Array, HashMap, MapData};
use balancer_common::{
    PROTO_TCP,
    service::{
        BACKEND_F_PRESENT, Backend, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE, ServiceKey,
        ServiceValue,
    },
};

use super::Dataplane;
use crate::{
    addr::from_raw,
    config::Protocol,
    runtime::{Recovered, RecoveredBackend, RecoveredService},
};

impl Dataplane {
    pub fn recover(&self) -> Result<Recovered> {
        let services: HashMap<&MapData, ServiceKey, ServiceValue> = self.map("SERVICES")?;
        let slots: Array<&MapData, u32> = self.map("SERVICE_SLOTS")?;
        let backends: Array<&MapData, Backend> = self.map("BACKENDS")?;
        let mut out = Recovered::default();
        let mut referenced = BTreeSet::new();
        for entry in services.iter() {
            let (key, value) = entry?;
            let mut list = Vec::new();
            for slot in 0..value.backend_count.min(MAX_BACKENDS_PER_SERVICE) {
                let index = slots.get(&(value.id * MAX_BACKENDS_PER_SERVICE + slot), 0)?;
                let b = backends.get(&index, 0)?;
                if b.flags & BACKEND_F_PRESENT == 0 || !referenced.insert(index) {
                    continue;
                }
                list.push(RecoveredBackend {
                    index,
                    address: SocketAddr::new(from_raw(b.addr, b.family), u16::from_be(b.port_be)),
                    flags: b.flags,
                });
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
        for index in 0..MAX_BACKENDS {
            if referenced.contains(&index) {
                continue;
            }
            let b = backends.get(&index, 0)?;
            if b.flags & BACKEND_F_PRESENT != 0 {
                out.orphans.push(RecoveredBackend {
                    index,
                    address: SocketAddr::new(from_raw(b.addr, b.family), u16::from_be(b.port_be)),
                    flags: b.flags,
                });
            }
        }
        out.services.sort_by_key(|s| s.id);
        Ok(out)
    }
}
