//! A new configuration applied as a change to the running one: unchanged
//! backends keep their index and state, added ones get a free index, removed
//! ones retire (no new flows, established ones end or time out).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration, time::Instant};

use serde::Serialize;

use balancer_common::service::BackendIndex;

use super::{BackendState, Health, Retired, Runtime, ServiceState};
use crate::config::{Config, HealthKind, OnBackendDown};

/// What a configuration change did, for the event log and the caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Changes {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub backends_added: Vec<(String, SocketAddr)>,
    pub backends_removed: Vec<(String, SocketAddr)>,
    /// Weight, health check or other settings of a kept backend or service.
    pub services_changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut part = |n: usize, what: &str| {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        };
        part(self.services_added.len(), "services added");
        part(self.services_removed.len(), "services removed");
        part(self.services_changed.len(), "services changed");
        part(self.backends_added.len(), "backends added");
        part(self.backends_removed.len(), "backends removed");
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Runtime {
    /// Makes `new` the running configuration. Fails (changing nothing) only
    /// when the maps have no room for it.
    pub fn apply_config(&mut self, new: Config, now: Instant) -> Result<Changes, String> {
        let mut changes = Changes::default();
        let needed_ids = new
            .services
            .iter()
            .filter(|s| !self.services.contains_key(&s.name))
            .count();
        let needed_indexes: usize = new
            .services
            .iter()
            .map(|s| {
                let kept = self.services.get(&s.name);
                s.backends
                    .iter()
                    .filter(|b| kept.is_none_or(|k| !k.backends.contains_key(&b.address)))
                    .count()
            })
            .sum();
        if needed_ids > self.free_ids.len() {
            return Err(format!(
                "no room for {needed_ids} more services ({} free)",
                self.free_ids.len()
            ));
        }
        if needed_indexes > self.free_indexes.len() {
            return Err(format!(
                "no room for {needed_indexes} more backends: {} free while {} removed backends finish their flows",
                self.free_indexes.len(),
                self.retired.len()
            ));
        }

        let old_config = std::mem::replace(&mut self.config, new);
        let mut old_services = std::mem::take(&mut self.services);
        let mut to_retire = Vec::new();
        for svc in &self.config.services {
            let checked = svc.health.kind != HealthKind::None;
            let reset = svc.on_backend_down == OnBackendDown::Reset;
            let old_svc = old_config.services.iter().find(|s| s.name == svc.name);
            let mut state = match old_services.remove(&svc.name) {
                Some(state) => state,
                None => {
                    let id = self.free_ids.pop_first().expect("counted above");
                    changes.services_added.push(svc.name.clone());
                    ServiceState {
                        id,
                        backends: BTreeMap::new(),
                    }
                }
            };
            if old_svc.is_some_and(|o| o != svc) {
                changes.services_changed.push(svc.name.clone());
            }
            let mut old_backends = std::mem::take(&mut state.backends);
            for b in &svc.backends {
                let backend = match old_backends.remove(&b.address) {
                    Some(mut kept) => {
                        kept.reset_when_down = reset;
                        match (kept.health, checked) {
                            (Health::Unchecked, true) => {
                                // Assumed up until its checks say otherwise, so
                                // that starting to check moves no flow.
                                kept.health = Health::Up;
                                kept.reason = "assumed up until checked".into();
                            }
                            (_, false) => {
                                kept.health = Health::Unchecked;
                                kept.reason = "not checked".into();
                            }
                            _ => {}
                        }
                        kept
                    }
                    None => {
                        let index = self.free_indexes.pop_first().expect("counted above");
                        changes.backends_added.push((svc.name.clone(), b.address));
                        BackendState::new(index, checked, reset)
                    }
                };
                state.backends.insert(b.address, backend);
            }
            let timeout = Duration::from_secs(svc.drain_timeout_s.into());
            for (address, gone) in old_backends {
                changes.backends_removed.push((svc.name.clone(), address));
                to_retire.push((svc.name.clone(), address, gone.index, timeout));
            }
            self.services.insert(svc.name.clone(), state);
        }
        for (service, address, index, timeout) in to_retire {
            self.retire(&service, address, index, now, timeout);
        }
        for (name, gone) in old_services {
            let timeout = old_config
                .services
                .iter()
                .find(|s| s.name == name)
                .map_or(Duration::ZERO, |s| {
                    Duration::from_secs(s.drain_timeout_s.into())
                });
            for (address, b) in gone.backends {
                changes.backends_removed.push((name.clone(), address));
                self.retire(&name, address, b.index, now, timeout);
            }
            self.free_ids.insert(gone.id);
            changes.services_removed.push(name);
        }
        Ok(changes)
    }

    pub(super) fn retire(
        &mut self,
        service: &str,
        address: SocketAddr,
        index: BackendIndex,
        now: Instant,
        timeout: Duration,
    ) {
        self.retired.push(Retired {
            service: service.to_string(),
            address,
            index,
            since: now,
            deadline: now + timeout,
            purged: false,
        });
    }
}
