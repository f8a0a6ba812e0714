//! Metrics: Prometheus exposition at `[control].metrics` and the figures of
//! `balancer stats`.
//!
//! Counters live in the kernel, in per-CPU maps that the XDP program bumps
//! without sharing anything between CPUs; a scrape reads and sums them (see
//! [`crate::dataplane::Dataplane::all_backend_stats`]) beside the daemon's
//! own state into a [`Snapshot`], in the daemon's loop, and
//! [`render::openmetrics`] writes it out. What only the daemon sees (health
//! check durations, reloads, what each flow sweep found) is kept here, in
//! [`Metrics`].

pub mod http;
pub mod outcome;
pub mod render;
pub mod text;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use balancer_common::expiry::SweepStats;
use prometheus_client::metrics::histogram::Histogram;

pub use crate::api::{BackendSnapshot, FlowTable, ServiceSnapshot, Snapshot};
pub use render::CheckFigures;

/// Upper bounds of the health-check duration buckets, seconds.
pub const CHECK_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// What the daemon records for the metrics between scrapes.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    checks: BTreeMap<String, BTreeMap<SocketAddr, Checks>>,
    pub reloads_accepted: u64,
    pub reloads_refused: u64,
    pub flows: FlowAccounting,
}

#[derive(Debug)]
struct Checks {
    durations: Histogram,
    failures: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started: SystemTime::now(),
            checks: BTreeMap::new(),
            reloads_accepted: 0,
            reloads_refused: 0,
            flows: FlowAccounting::default(),
        }
    }

    pub fn started_unix(&self) -> u64 {
        unix(self.started).as_secs()
    }

    /// A completed health check.
    pub fn checked(&mut self, service: &str, backend: SocketAddr, ok: bool, took: Duration) {
        let by_backend = match self.checks.get_mut(service) {
            Some(b) => b,
            None => self.checks.entry(service.to_string()).or_default(),
        };
        let c = by_backend.entry(backend).or_insert_with(|| Checks {
            durations: Histogram::new(CHECK_BUCKETS),
            failures: 0,
        });
        c.durations.observe(took.as_secs_f64());
        if !ok {
            c.failures += 1;
        }
    }

    pub fn reloaded(&mut self, ok: bool) {
        if ok {
            self.reloads_accepted += 1;
        } else {
            self.reloads_refused += 1;
        }
    }

    /// The check figures of the backends `keep` says still exist; the others
    /// are forgotten.
    pub fn check_figures(&mut self, keep: impl Fn(&str, SocketAddr) -> bool) -> Vec<CheckFigures> {
        self.checks.retain(|service, backends| {
            backends.retain(|addr, _| keep(service, *addr));
            !backends.is_empty()
        });
        self.checks
            .iter()
            .flat_map(|(service, backends)| {
                backends.iter().map(move |(addr, c)| CheckFigures {
                    service: service.clone(),
                    backend: addr.to_string(),
                    durations: c.durations.clone(),
                    failures: c.failures,
                })
            })
            .collect()
    }
}

/// What the flow sweeps tell about the table: how full it is, and how many
/// entries the LRU evicted, which the kernel does not count.
///
/// Every new flow inserts two entries (the program counts new flows) and only
/// the sweeps remove entries (they count what they remove), so what is
/// neither still there nor removed was evicted:
///
/// ```text
/// evicted = 2 × new flows − removed by sweeps − (left now − left at the first sweep)
/// ```
///
/// counted from the daemon's first sweep. Packets race the sweep's walk: new
/// flows are read before each walk (after the first one), so entries made
/// during a walk can only lower the figure, never raise it: it is a lower
/// bound, exact when no flow starts during a sweep.
#[derive(Debug, Default, Clone)]
pub struct FlowAccounting {
    baseline: Option<Baseline>,
    removed: u64,
    evictions: u64,
    pub expired: u64,
    pub half_open_expired: u64,
    pub proxy_expired: u64,
    pub last: Option<LastSweep>,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    new_flows: u64,
    kept: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct LastSweep {
    pub at: SystemTime,
    pub took: Duration,
    pub stats: SweepStats,
}

impl FlowAccounting {
    /// A sweep's result: `new_flows_before` is the program's new-flow count
    /// read just before it, `new_flows_after` just after.
    pub fn swept(
        &mut self,
        stats: SweepStats,
        new_flows_before: u64,
        new_flows_after: u64,
        at: SystemTime,
        took: Duration,
    ) {
        self.expired += stats.expired;
        self.half_open_expired += stats.half_open_expired;
        self.proxy_expired += stats.proxy_expired;
        match self.baseline {
            None => {
                // Flows made during this walk are either in `kept` or not
                // counted at all: both lower later figures.
                self.baseline = Some(Baseline {
                    new_flows: new_flows_after,
                    kept: stats.kept_entries,
                });
            }
            Some(base) => {
                self.removed += stats.removed_entries;
                let made = 2 * new_flows_before.saturating_sub(base.new_flows);
                let gone = (self.removed + stats.kept_entries) as i128 - base.kept as i128;
                let evicted = (made as i128 - gone).max(0) as u64;
                self.evictions = self.evictions.max(evicted);
            }
        }
        self.last = Some(LastSweep { at, took, stats });
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn table(&self, capacity: u64) -> FlowTable {
        FlowTable {
            capacity,
            entries: self.last.map(|l| l.stats.kept_entries),
            evictions: self.evictions,
            expired: self.expired,
            half_open_expired: self.half_open_expired,
            syn_proxy_timed_out: self.proxy_expired,
            last_sweep_unix_ms: self.last.map(|l| unix(l.at).as_millis() as u64),
            last_sweep_s: self.last.map_or(0.0, |l| l.took.as_secs_f64()),
        }
    }
}

pub fn unix(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}
