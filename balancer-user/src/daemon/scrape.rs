//! Scrapes of `[control].metrics` and `balancer stats`, answered in the
//! daemon's loop: the kernel's counters (per-CPU maps, summed as they are
//! read, a few batch reads for all backends) and the daemon's own state go
//! into one [`Snapshot`]. Also where the loop records what only it sees: each
//! flow sweep's result.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Instant, SystemTime},
};

use anyhow::Result;
use balancer_common::{
    LAYOUT_VERSION,
    expiry::{SweepLimits, SweepStats},
    stats::Counter,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::state::Daemon;
use crate::{
    api::Reply,
    config::{Control, Forwarding},
    metrics::{
        BackendSnapshot, ServiceSnapshot, Snapshot,
        http::{Endpoint, Scrape},
        outcome, render, unix,
    },
};

/// The metrics listener, if `[control].metrics` is on.
pub struct Listener {
    _endpoint: Option<Endpoint>,
    /// Keeps the channel open when there is no endpoint, so the loop's
    /// receiver waits instead of ending.
    _idle: Option<mpsc::Sender<Scrape>>,
}

/// Starts the metrics endpoint of `control`; scrapes arrive on the receiver.
pub fn listen(control: &Control) -> Result<(Listener, mpsc::Receiver<Scrape>)> {
    match control.metrics {
        Some(addr) => {
            let (endpoint, rx) = Endpoint::bind(addr)?;
            info!(addr = %endpoint.addr(), "metrics at http://{}/metrics", endpoint.addr());
            Ok((
                Listener {
                    _endpoint: Some(endpoint),
                    _idle: None,
                },
                rx,
            ))
        }
        None => {
            let (tx, rx) = mpsc::channel(1);
            Ok((
                Listener {
                    _endpoint: None,
                    _idle: Some(tx),
                },
                rx,
            ))
        }
    }
}

impl Daemon {
    pub fn answer_scrape(&mut self, scrape: Scrape) {
        let started = Instant::now();
        let snapshot = self.snapshot();
        let read = started.elapsed();
        let body = snapshot.map_err(|e| format!("{e:#}")).map(|s| {
            let keep = |svc: &str, addr| self.runtime.backend(svc, addr).is_some();
            let checks = self.metrics.check_figures(keep);
            if scrape.openmetrics {
                render::openmetrics(s, checks)
            } else {
                render::prometheus(s, checks)
            }
        });
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        match &body {
            Ok(text) => debug!(
                bytes = text.len(),
                read_ms = ms(read),
                took_ms = ms(started.elapsed()),
                "scrape"
            ),
            Err(e) => warn!("scrape: reading the counters: {e}"),
        }
        let _ = scrape.reply.send(body);
    }

    /// `balancer stats`.
    pub fn stats_reply(&mut self) -> Reply {
        match self.snapshot() {
            Ok(s) => {
                let mut reply = Reply::ok("ok");
                reply.stats = Some(Box::new(s));
                reply
            }
            Err(e) => Reply::refused(format!("reading the counters: {e:#}"), Vec::new()),
        }
    }

    /// Everything the metrics show, read now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let config = self.runtime.config();
        let dp = &self.dataplane;
        let backends_len = self.runtime.index_bound();
        let services_len = self
            .runtime
            .services()
            .map(|(_, svc)| svc.id.0 + 1)
            .max()
            .unwrap_or(0);
        let traffic = dp.all_backend_stats(backends_len)?;
        let active = dp.all_active_conns(backends_len)?;
        let drops = dp.all_service_drops(services_len)?;
        let full_nat = config.node.forwarding == Forwarding::FullNat;
        let sweep = dp.last_sweep()?;
        let ports = if full_nat && sweep.generation != 0 {
            Some(dp.all_sweep_backends(backends_len, sweep.generation)?)
        } else {
            None
        };

        let mut services = Vec::with_capacity(config.services.len());
        for svc in &config.services {
            let Some(state) = self.runtime.service(&svc.name) else {
                continue;
            };
            let service_drops = drops.get(state.id.0 as usize);
            let drops = outcome::drop_reasons()
                .map(|(c, reason)| {
                    let v = service_drops.map_or(0, |d| d[c as usize]);
                    (reason.to_string(), v)
                })
                .collect();
            let mut backends = Vec::with_capacity(svc.backends.len());
            for cfg in &svc.backends {
                let Some(b) = state.backends.get(&cfg.address) else {
                    continue;
                };
                let i = b.index.0 as usize;
                let t = traffic.get(i).copied().unwrap_or_default();
                backends.push(BackendSnapshot {
                    address: cfg.address,
                    weight: cfg.weight,
                    state: b.state_word().into(),
                    health: b.health.as_str().into(),
                    draining: b.draining(),
                    load_pct: b.load_pct,
                    active: active.get(i).copied().unwrap_or(0),
                    packets_to_backend: t.packets_to,
                    bytes_to_backend: t.bytes_to,
                    packets_to_client: t.packets_from,
                    bytes_to_client: t.bytes_from,
                    connections: t.new_flows,
                    snat_ports: ports.as_ref().map(|p| p.get(i).copied().unwrap_or(0)),
                });
            }
            services.push(ServiceSnapshot {
                name: svc.name.clone(),
                vip: svc.vip,
                port: svc.port,
                protocol: svc.protocol.to_string(),
                scheduler: svc.scheduler.to_string(),
                drops,
                backends,
            });
        }

        let mut snat_ports_per_backend = BTreeMap::new();
        if full_nat {
            let (min, max) = config.node.snat_port_range;
            let span = u64::from(max.saturating_sub(min)) + 1;
            for svc in &config.services {
                let v4 = svc.vip.is_ipv4();
                let addresses = config
                    .node
                    .snat_addresses
                    .iter()
                    .filter(|a: &&IpAddr| a.is_ipv4() == v4)
                    .count()
                    .max(1) as u64;
                let family = if v4 { "ipv4" } else { "ipv6" };
                snat_ports_per_backend.insert(family.to_string(), span * addresses);
            }
        }

        Ok(Snapshot {
            node: config.node.name.clone(),
            taken_unix_ms: unix(SystemTime::now()).as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            layout_version: LAYOUT_VERSION,
            started_unix: self.metrics.started_unix(),
            role: self.role(),
            ha: self.ha.as_ref().map(|h| h.status()),
            syn_cookies: self.syn_cookie_status(),
            generation: self.generation(),
            last_reload: self.last_reload().cloned(),
            reloads_accepted: self.metrics.reloads_accepted,
            reloads_refused: self.metrics.reloads_refused,
            counters: dp
                .counters()?
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            flow_table: self.metrics.flows.table(u64::from(config.flows.capacity)),
            snat_ports_per_backend,
            services,
        })
    }

    /// Runs the flow sweep and records what it found for the metrics.
    /// A sweep (adopting the flows of `adopt`, an HA peer's node id or
    /// `ADOPT_ALL`, if given), recorded for the metrics.
    /// Flows this node owns, counted by a sweep: two entries per flow; a
    /// peer's flows are held, not this node's.
    pub(super) fn own_flows(&mut self) -> Result<u64> {
        let s = self.sweep_recorded(None)?;
        Ok(s.kept_entries.saturating_sub(s.held_entries) / 2)
    }

    pub(super) fn sweep_recorded(&mut self, adopt: Option<u32>) -> Result<SweepStats> {
        let new_flows = |dp: &crate::dataplane::Dataplane| dp.counter(Counter::NewFlow).ok();
        let before = new_flows(&self.dataplane);
        let started = Instant::now();
        let limits = SweepLimits {
            adopt: adopt.unwrap_or(0),
            ..self.timeouts.limits()
        };
        let stats = self.dataplane.sweep_with(limits)?;
        let took = started.elapsed();
        if let (Some(before), Some(after)) = (before, new_flows(&self.dataplane)) {
            self.metrics
                .flows
                .swept(stats, before, after, SystemTime::now(), took);
        }
        Ok(stats)
    }
}
