//! The running configuration and everything the daemon learned since: where
//! each service and backend lives in the maps, health, drains, retired
//! backends whose flows are still ending. Pure (no kernel, no clock other than
//! what is passed in), so that every change is testable without root.
//!
//! Map places are stable: a backend keeps its index for as long as it is
//! configured, because its flows and active count refer to it by index, and a
//! removed backend's index is reused only once its flows are gone.

mod backend;
mod diff;
mod recover;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use balancer_common::service::{BackendIndex, MAX_BACKENDS, MAX_SERVICES, ServiceId};

pub use backend::{BackendState, Health};
pub use diff::Changes;

use crate::{config::Config, plan::Placement};

#[derive(Debug, Clone)]
pub struct ServiceState {
    pub id: ServiceId,
    pub backends: BTreeMap<SocketAddr, BackendState>,
}

/// A backend no longer configured whose flows may still be running.
#[derive(Debug, Clone)]
pub struct Retired {
    pub service: String,
    pub address: SocketAddr,
    pub index: BackendIndex,
    pub since: Instant,
    /// After this its remaining flows are ended.
    pub deadline: Instant,
    pub purged: bool,
}

/// What [`Runtime::housekeeping`] asks of the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chore {
    /// A retired backend has no flows left: clear its entry and counters.
    Free { index: BackendIndex },
    /// A retired backend's drain timed out: end its flows.
    Purge { index: BackendIndex },
    /// A drained backend's drain timed out: end its flows (it stays configured).
    DrainExpired {
        service: String,
        backend: SocketAddr,
    },
}

#[derive(Debug, Clone)]
pub struct Runtime {
    config: Config,
    services: BTreeMap<String, ServiceState>,
    retired: Vec<Retired>,
    free_ids: BTreeSet<ServiceId>,
    free_indexes: BTreeSet<BackendIndex>,
}

impl Runtime {
    /// A fresh start: nothing in the maps yet.
    pub fn new(config: Config) -> Result<Self, String> {
        let mut rt = Self::empty(config.clone());
        rt.apply_config(config, Instant::now())?;
        Ok(rt)
    }

    fn empty(config: Config) -> Self {
        Self {
            config,
            services: BTreeMap::new(),
            retired: Vec::new(),
            free_ids: (0..MAX_SERVICES).map(ServiceId).collect(),
            free_indexes: (0..MAX_BACKENDS).map(BackendIndex).collect(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        self.services.get(name)
    }

    pub fn services(&self) -> impl Iterator<Item = (&String, &ServiceState)> {
        self.services.iter()
    }

    pub fn retired(&self) -> &[Retired] {
        &self.retired
    }

    pub fn backend_mut(&mut self, service: &str, backend: SocketAddr) -> Option<&mut BackendState> {
        self.services.get_mut(service)?.backends.get_mut(&backend)
    }

    pub fn backend(&self, service: &str, backend: SocketAddr) -> Option<&BackendState> {
        self.services.get(service)?.backends.get(&backend)
    }

    /// One past the highest backend index in use (configured or retired):
    /// how much of the per-backend maps to read.
    pub fn index_bound(&self) -> u32 {
        let configured = self
            .services
            .values()
            .flat_map(|s| s.backends.values())
            .map(|b| b.index);
        let retired = self.retired.iter().map(|r| r.index);
        configured.chain(retired).max().map_or(0, |i| i.0 + 1)
    }

    /// Indexes of retired backends: their `BACKENDS` entries say draining
    /// until they are freed.
    pub fn retired_indexes(&self) -> impl Iterator<Item = (BackendIndex, bool)> + '_ {
        self.retired.iter().map(|r| (r.index, r.purged))
    }

    /// Retired backends whose flows are gone are freed; those past their
    /// deadline are purged; drains past `drain_timeout_s` expire.
    /// `active` gives a backend's active connections.
    pub fn housekeeping(
        &mut self,
        now: Instant,
        active: impl Fn(BackendIndex) -> u64,
    ) -> Vec<Chore> {
        let mut chores = Vec::new();
        let mut kept = Vec::with_capacity(self.retired.len());
        for mut r in std::mem::take(&mut self.retired) {
            if active(r.index) == 0 || (r.purged && now >= r.deadline + PURGE_GRACE) {
                chores.push(Chore::Free { index: r.index });
                self.free_indexes.insert(r.index);
            } else {
                if now >= r.deadline && !r.purged {
                    r.purged = true;
                    chores.push(Chore::Purge { index: r.index });
                }
                kept.push(r);
            }
        }
        self.retired = kept;
        for svc in &self.config.services {
            let timeout = Duration::from_secs(svc.drain_timeout_s.into());
            let Some(state) = self.services.get_mut(&svc.name) else {
                continue;
            };
            for (addr, b) in &mut state.backends {
                if let Some(since) = b.admin_drain
                    && !b.drain_expired
                    && now >= since + timeout
                    && active(b.index) > 0
                {
                    b.drain_expired = true;
                    chores.push(Chore::DrainExpired {
                        service: svc.name.clone(),
                        backend: *addr,
                    });
                }
            }
        }
        chores
    }
}

/// How long after a purge a retired backend is freed even if its count did
/// not reach 0 (a flow evicted from the LRU table leaves its count behind).
const PURGE_GRACE: Duration = Duration::from_secs(5);

impl Placement for Runtime {
    fn service_id(&self, service: &str) -> Option<ServiceId> {
        self.services.get(service).map(|s| s.id)
    }

    fn backend_index(&self, service: &str, backend: SocketAddr) -> Option<BackendIndex> {
        self.backend(service, backend).map(|b| b.index)
    }

    fn backend_flags(&self, service: &str, backend: SocketAddr) -> Option<u32> {
        self.backend(service, backend).map(BackendState::flags)
    }
}
