//! Health checks of the backends: one task per (service, backend) pair, each
//! probing on its own jittered schedule, so that a slow backend never delays
//! the verdict on another. Results go out as [`Event`]s on a channel; the
//! daemon turns transitions into map writes and log lines.
//!
//! The checker spawns on the tokio runtime it was created in and needs only a
//! current-thread one (with I/O and time enabled).

mod agent;
mod http;
mod probe;
mod reason;
mod schedule;
mod state;
mod task;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    runtime::Handle,
    sync::{Semaphore, mpsc::UnboundedSender},
    task::JoinHandle,
};

pub use self::{
    agent::{AgentReport, AgentState},
    probe::DEFAULT_UDP_PAYLOAD,
};
use self::{probe::Probe, task::Shared};
use crate::config::Health;

/// At most this many check commands run at once, so that a burst of exec
/// probes cannot exhaust the host's processes.
pub const MAX_CONCURRENT_EXEC: usize = 64;

/// One backend of one service, and how to check it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub service: String,
    pub backend: SocketAddr,
    pub health: Health,
}

/// Known state to continue from (after a daemon restart the kernel's flag is known); None = unknown.
pub type Initial = Option<bool>;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The backend's state changed (also the first verdict after Unknown).
    /// `reason` is human text: "connect to 203.0.113.11:8080: connection
    /// refused", "HTTP 503 from /primary (expected 200)", "3 checks passed", ...
    Transition {
        service: String,
        backend: SocketAddr,
        healthy: bool,
        reason: String,
    },
    /// Every completed probe, for metrics (histogram of durations).
    Checked {
        service: String,
        backend: SocketAddr,
        ok: bool,
        duration: Duration,
    },
    /// The backend's agent said something new (sent only on change).
    Agent {
        service: String,
        backend: SocketAddr,
        report: AgentReport,
    },
}

type Key = (String, SocketAddr);

/// Runs the checks of a set of targets; dropping it stops them all.
#[derive(Debug)]
pub struct HealthChecker {
    events: UnboundedSender<Event>,
    runtime: Handle,
    exec_slots: Arc<Semaphore>,
    targets: BTreeMap<Key, Running>,
}

/// A target being checked; dropping it aborts its task.
#[derive(Debug)]
struct Running {
    health: Health,
    shared: Arc<Shared>,
    /// `None` for `kind = "none"`.
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl HealthChecker {
    /// The checks run on the tokio runtime this is called in.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(events: UnboundedSender<Event>) -> Self {
        Self {
            events,
            runtime: Handle::current(),
            exec_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXEC)),
            targets: BTreeMap::new(),
        }
    }

    /// Reconciles: starts checks of new (service, backend) pairs, stops those no longer listed,
    /// restarts a pair whose `health` changed (keeping its current state), leaves unchanged pairs running untouched.
    ///
    /// A pair listed twice takes its last entry. A pair already checked keeps
    /// its own state: `Initial` counts for a new pair, and for a restarted one
    /// only while its state is still unknown. A restarted pair also keeps its
    /// agent's last report, so an unchanged report is not sent again.
    pub fn set_targets(&mut self, targets: Vec<(Target, Initial)>) {
        let mut wanted = BTreeMap::new();
        for (target, initial) in targets {
            wanted.insert((target.service.clone(), target.backend), (target, initial));
        }
        self.targets.retain(|key, _| wanted.contains_key(key));
        for (key, (target, initial)) in wanted {
            let (state, agent) = match self.targets.get(&key) {
                Some(running) if running.health == target.health => continue,
                Some(running) => (
                    running.shared.state().or(initial),
                    running
                        .shared
                        .agent()
                        .filter(|_| target.health.agent_port.is_some()),
                ),
                None => (initial, None),
            };
            // Replacing the entry drops, and so aborts, the task of the old check.
            self.targets.insert(key, self.start(target, state, agent));
        }
    }

    fn start(&self, target: Target, state: Initial, agent: Option<AgentReport>) -> Running {
        let health = target.health.clone();
        let Some(probe) = Probe::new(&target) else {
            // Unchecked backends count as healthy, as the daemon treats them.
            return Running {
                health,
                shared: Arc::new(Shared::new(Some(true), None)),
                task: None,
            };
        };
        let shared = Arc::new(Shared::new(state, agent));
        let job = task::Job {
            target,
            probe,
            shared: Arc::clone(&shared),
            events: self.events.clone(),
            exec_slots: Arc::clone(&self.exec_slots),
        };
        Running {
            health,
            shared,
            task: Some(self.runtime.spawn(task::run(job))),
        }
    }

    /// Current verdicts (None = unknown yet) of all targets, for `balancer status`.
    ///
    /// Sorted by service and backend. Targets with `kind = "none"` read as healthy.
    pub fn states(&self) -> Vec<(String, SocketAddr, Option<bool>)> {
        self.targets
            .iter()
            .map(|((service, backend), running)| {
                (service.clone(), *backend, running.shared.state())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthKind;

    fn target(service: &str, backend: &str, health: Health) -> Target {
        Target {
            service: service.to_owned(),
            backend: backend.parse().unwrap(),
            health,
        }
    }

    fn none() -> Health {
        Health {
            kind: HealthKind::None,
            ..Health::default()
        }
    }

    /// Reconciliation on kind "none" targets, which start no task and so need no network.
    #[tokio::test(flavor = "current_thread")]
    async fn none_targets_are_listed_as_healthy_and_emit_nothing() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut checker = HealthChecker::new(tx);
        checker.set_targets(vec![
            (target("dns", "203.0.113.32:53", none()), None),
            (target("dns", "203.0.113.31:53", none()), Some(false)),
            (target("api", "203.0.113.11:8080", none()), None),
        ]);
        let states = checker.states();
        assert_eq!(
            states,
            [
                (
                    "api".to_owned(),
                    "203.0.113.11:8080".parse().unwrap(),
                    Some(true)
                ),
                (
                    "dns".to_owned(),
                    "203.0.113.31:53".parse().unwrap(),
                    Some(true)
                ),
                (
                    "dns".to_owned(),
                    "203.0.113.32:53".parse().unwrap(),
                    Some(true)
                ),
            ]
        );
        checker.set_targets(vec![(target("dns", "203.0.113.31:53", none()), None)]);
        assert_eq!(checker.states().len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_listed_pair_takes_its_last_entry() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut checker = HealthChecker::new(tx);
        let mut slow = none();
        slow.interval_ms = 5000;
        checker.set_targets(vec![
            (target("dns", "203.0.113.31:53", none()), None),
            (target("dns", "203.0.113.31:53", slow.clone()), None),
        ]);
        assert_eq!(checker.states().len(), 1);
        assert_eq!(checker.targets.values().next().unwrap().health, slow);
    }
}
