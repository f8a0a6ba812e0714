//! The task of one target: probes on its own schedule, hysteresis, events.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc::UnboundedSender},
    time::Instant,
};
use tracing::debug;

use super::{
    AgentReport, Event, Target, agent,
    probe::Probe,
    schedule::{Rng, first_delay, period},
    state::Hysteresis,
};

/// What a target's task shares with the checker: the verdict for
/// [`super::HealthChecker::states`] and the agent's last report, both carried
/// over when a changed check restarts the task.
#[derive(Debug, Default)]
pub struct Shared {
    state: AtomicU8,
    agent: Mutex<Option<AgentReport>>,
}

const UNKNOWN: u8 = 0;
const DOWN: u8 = 1;
const UP: u8 = 2;

impl Shared {
    pub fn new(state: Option<bool>, agent: Option<AgentReport>) -> Self {
        let shared = Self {
            state: AtomicU8::new(UNKNOWN),
            agent: Mutex::new(agent),
        };
        shared.set_state(state);
        shared
    }

    pub fn state(&self) -> Option<bool> {
        match self.state.load(Ordering::Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        }
    }

    fn set_state(&self, state: Option<bool>) {
        let value = match state {
            Some(true) => UP,
            Some(false) => DOWN,
            None => UNKNOWN,
        };
        self.state.store(value, Ordering::Relaxed);
    }

    pub fn agent(&self) -> Option<AgentReport> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stores `report`; whether it differs from the last one.
    fn replace_agent(&self, report: &AgentReport) -> bool {
        let mut last = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(report) {
            return false;
        }
        *last = Some(report.clone());
        true
    }
}

/// Everything one target's task needs.
pub struct Job {
    pub target: Target,
    pub probe: Probe,
    pub shared: Arc<Shared>,
    pub events: UnboundedSender<Event>,
    pub exec_slots: Arc<Semaphore>,
}

/// Runs until aborted, or until nobody receives events any more.
pub async fn run(job: Job) {
    let agent = job
        .target
        .health
        .agent_port
        .map(|port| SocketAddr::new(job.target.backend.ip(), port));
    match agent {
        Some(agent) => {
            // Either loop returns only when the receiver is gone.
            tokio::select! {
                () = check_loop(&job) => {}
                () = agent_loop(&job, agent) => {}
            }
        }
        None => check_loop(&job).await,
    }
}

fn timing(target: &Target) -> (Duration, Duration) {
    let ms = |v: u32| Duration::from_millis(v.max(1).into());
    (ms(target.health.interval_ms), ms(target.health.timeout_ms))
}

/// Sleeps until the first probe, then yields each later one's start time.
struct Ticks {
    rng: Rng,
    interval: Duration,
    next: Instant,
}

impl Ticks {
    fn new(mut rng: Rng, interval: Duration) -> Self {
        let next = Instant::now() + first_delay(interval, rng.unit());
        Self {
            rng,
            interval,
            next,
        }
    }

    /// Periods are counted from each start, not each end, so slow probes do
    /// not stretch the schedule; one that overruns is followed at once.
    async fn tick(&mut self) {
        tokio::time::sleep_until(self.next).await;
        let started = Instant::now();
        self.next = started + period(self.interval, self.rng.unit());
    }
}

async fn check_loop(job: &Job) {
    let Job {
        target,
        probe,
        shared,
        events,
        exec_slots,
    } = job;
    let (interval, timeout) = timing(target);
    let mut ticks = Ticks::new(Rng::seeded((&target.service, target.backend)), interval);
    let mut hysteresis = Hysteresis::new(shared.state(), target.health.rise, target.health.fall);
    loop {
        ticks.tick().await;
        let (result, duration) = probe.run(timeout, exec_slots).await;
        let checked = Event::Checked {
            service: target.service.clone(),
            backend: target.backend,
            ok: result.is_ok(),
            duration,
        };
        if events.send(checked).is_err() {
            return;
        }
        if let Err(reason) = &result {
            debug!(service = %target.service, backend = %target.backend, "check failed: {reason}");
        }
        let Some(flip) = hysteresis.observe(result.is_ok()) else {
            continue;
        };
        shared.set_state(Some(flip.healthy));
        let reason = match result {
            Ok(()) if flip.streak == 1 => "1 check passed".to_owned(),
            Ok(()) => format!("{} checks passed", flip.streak),
            Err(reason) => reason,
        };
        let transition = Event::Transition {
            service: target.service.clone(),
            backend: target.backend,
            healthy: flip.healthy,
            reason,
        };
        if events.send(transition).is_err() {
            return;
        }
    }
}

async fn agent_loop(job: &Job, agent: SocketAddr) {
    let Job {
        target,
        shared,
        events,
        ..
    } = job;
    let (interval, timeout) = timing(target);
    let mut ticks = Ticks::new(
        Rng::seeded(("agent", &target.service, target.backend)),
        interval,
    );
    loop {
        ticks.tick().await;
        let report = match agent::query(agent, timeout).await {
            Ok(report) => report,
            Err(reason) => {
                // The agent only refines a healthy backend's weight; its
                // absence is not a health verdict.
                debug!(service = %target.service, backend = %target.backend, "agent: {reason}");
                continue;
            }
        };
        if !shared.replace_agent(&report) {
            continue;
        }
        let event = Event::Agent {
            service: target.service.clone(),
            backend: target.backend,
            report,
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::AgentState;

    #[test]
    fn shared_state_round_trips() {
        for state in [None, Some(false), Some(true)] {
            assert_eq!(Shared::new(state, None).state(), state);
        }
    }

    #[test]
    fn agent_reports_count_only_when_they_change() {
        let shared = Shared::new(None, None);
        let drain = AgentReport {
            load_pct: None,
            state: Some(AgentState::Drain),
        };
        assert!(shared.replace_agent(&drain));
        assert!(!shared.replace_agent(&drain));
        let loaded = AgentReport {
            load_pct: Some(75),
            state: None,
        };
        assert!(shared.replace_agent(&loaded));
        assert_eq!(shared.agent(), Some(loaded));
    }
}
