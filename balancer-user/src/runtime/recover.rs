//! Picking up where a previous daemon left off: the pinned maps say which
//! service sits at which id and which backend at which index, and what their
//! state was. The configuration is then applied on top as a change, so a
//! restart with the same file moves nothing.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use balancer_common::service::{BACKEND_F_DRAINING, BACKEND_F_HEALTHY};

use super::{BackendState, Health, Runtime, ServiceState};
use crate::{
    config::{Config, HealthKind, OnBackendDown},
    dataplane::Recovered,
};

impl Runtime {
    /// The state `recovered` from pinned maps, then `config` applied to it.
    /// Backends of the old state that `config` drops retire like removed ones.
    pub fn recover(
        config: Config,
        recovered: &Recovered,
        now: Instant,
    ) -> Result<(Self, super::Changes), String> {
        let mut rt = Self::empty(config.clone());
        // The previous daemon's view, expressed as a configuration whose services
        // are matched to the new one's by VIP, port and protocol (names are not
        // in the maps).
        let mut previous = config.clone();
        previous.services.clear();
        for old in &recovered.services {
            let matching = config
                .services
                .iter()
                .find(|s| s.vip == old.vip && s.port == old.port && s.protocol == old.protocol);
            let (name, checked, reset) = match matching {
                Some(s) => (
                    s.name.clone(),
                    s.health.kind != HealthKind::None,
                    s.on_backend_down == OnBackendDown::Reset,
                ),
                None => (
                    format!("{}:{}/{}", old.vip, old.port, old.protocol),
                    false,
                    false,
                ),
            };
            if rt.services.contains_key(&name) || !rt.free_ids.remove(&old.id) {
                continue;
            }
            let mut backends = BTreeMap::new();
            for b in &old.backends {
                if !rt.free_indexes.remove(&b.index) {
                    continue;
                }
                let mut state = BackendState::new(b.index, checked, reset);
                if checked {
                    // Continue from the verdict the kernel holds, so that a restart
                    // moves no flow and needs no fresh `rise`.
                    state.health = if b.flags & BACKEND_F_HEALTHY != 0 {
                        Health::Up
                    } else {
                        Health::Down
                    };
                    state.reason = "as before the restart".into();
                }
                if b.flags & BACKEND_F_DRAINING != 0 {
                    state.admin_drain = Some(now);
                }
                backends.insert(b.address, state);
            }
            let mut svc = matching.cloned().unwrap_or_else(|| crate::config::Service {
                name: name.clone(),
                vip: old.vip,
                port: old.port,
                protocol: old.protocol,
                scheduler: Default::default(),
                allow: Vec::new(),
                deny: Vec::new(),
                health: crate::config::Health {
                    kind: HealthKind::None,
                    ..Default::default()
                },
                on_backend_down: OnBackendDown::Keep,
                drain_timeout_s: crate::config::Service::DEFAULT_DRAIN_TIMEOUT_S,
                backends: Vec::new(),
            });
            svc.backends = backends
                .keys()
                .map(|a| crate::config::BackendConfig {
                    address: *a,
                    weight: crate::config::BackendConfig::DEFAULT_WEIGHT,
                })
                .collect();
            previous.services.push(svc);
            rt.services.insert(
                name,
                ServiceState {
                    id: old.id,
                    backends,
                },
            );
        }
        let orphan_timeout =
            Duration::from_secs(crate::config::Service::DEFAULT_DRAIN_TIMEOUT_S.into());
        for o in &recovered.orphans {
            if rt.free_indexes.remove(&o.index) {
                rt.retire(
                    "(retired before the restart)",
                    o.address,
                    o.index,
                    now,
                    orphan_timeout,
                );
            }
        }
        rt.config = previous;
        let changes = rt.apply_config(config, now)?;
        Ok((rt, changes))
    }
}
