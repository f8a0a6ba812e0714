//! The running daemon's state and every change to it: configuration
//! (reload, `balancer backend`), health verdicts, agent reports, drains and
//! retired backends. Each change goes to the kernel maps before it is
//! reported done.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use balancer_common::{
    cookie,
    service::{BACKEND_F_DRAINING, BACKEND_F_PRESENT, BACKEND_F_PURGE, BackendIndex},
};
use tracing::{debug, error, info, warn};

use crate::{
    api::{
        BackendAction, BackendStatus, ReloadOutcome, Reply, RetiredStatus, ServiceStatus, Status,
        SynCookieStatus,
    },
    config::{self, BackendConfig, Config, HealthKind, Scheduler, SynCookies},
    dataplane::Dataplane,
    events,
    expiry::Timeouts,
    ha,
    health::{self, AgentState, HealthChecker},
    ktime,
    metrics::Metrics,
    netconf::{self, NetChanges},
    plan::{self, Plan},
    runtime::{Chore, Health, Runtime},
    syncookie,
};

pub struct Daemon {
    pub config_path: PathBuf,
    pub runtime: Runtime,
    pub dataplane: Dataplane,
    pub net: NetChanges,
    pub checker: HealthChecker,
    pub ha: Option<ha::HaHandle>,
    pub timeouts: Timeouts,
    /// Source address towards each backend when no SNAT address of its family
    /// is configured: looked up once, not on every change.
    snat_sources: HashMap<IpAddr, IpAddr>,
    generation: u64,
    last_reload: Option<ReloadOutcome>,
    recovered: bool,
    /// What the metrics need beside the kernel's counters (daemon/scrape.rs).
    pub metrics: Metrics,
    /// The interfaces the program was last found detached from.
    xdp_faults: Vec<String>,
    /// What the HA thread was last told.
    last_ha_inputs: ha::Inputs,
    /// Active-active: a drain under way.
    pub drain: Option<super::drain::Drain>,
    /// Active-active: the peers' SNAT addresses, which the program looks at
    /// too (see `Plan::with_peer_snat`).
    peer_snat: Vec<IpAddr>,
    /// Where the SYN cookie keys come from, and what the daemon last saw of
    /// auto mode.
    cookie_secret: syncookie::Secret,
    syn_watch: syncookie::Watch,
    syn_since: Option<SystemTime>,
}

impl Daemon {
    pub fn new(
        config_path: PathBuf,
        runtime: Runtime,
        dataplane: Dataplane,
        net: NetChanges,
        checker: HealthChecker,
        recovered: bool,
    ) -> Self {
        let timeouts = Timeouts::from(&runtime.config().flows);
        Self {
            config_path,
            runtime,
            dataplane,
            net,
            checker,
            ha: None,
            timeouts,
            snat_sources: HashMap::new(),
            generation: 1,
            last_reload: None,
            recovered,
            metrics: Metrics::new(),
            xdp_faults: Vec::new(),
            last_ha_inputs: ha::Inputs::default(),
            drain: None,
            peer_snat: Vec::new(),
            cookie_secret: syncookie::Secret::Local,
            syn_watch: syncookie::Watch::default(),
            syn_since: None,
        }
    }

    /// The SYN proxy's set-up, before the program is attached: the cookie
    /// keys (derived from the HA key, so that the peers' cookies validate
    /// here, or this node's own) and the MSS announced to clients (the
    /// smallest interface MTU's).
    pub fn start_syn_proxy(&mut self) -> Result<()> {
        let config = self.runtime.config();
        self.cookie_secret = match (&config.ha.auth_key_file, config.ha.enabled) {
            (Some(path), true) => syncookie::Secret::Shared(ha::read_key(path)?),
            _ => syncookie::Secret::Local,
        };
        let mtu = config
            .node
            .interfaces
            .iter()
            .filter_map(|i| netconf::ifindex(i).and_then(netconf::mtu).ok())
            .min()
            .unwrap_or(1500);
        self.dataplane.set_syn_mss(
            mtu.saturating_sub(40).clamp(536, u16::MAX.into()) as u16,
            mtu.saturating_sub(60).clamp(1220, u16::MAX.into()) as u16,
        )?;
        self.rotate_cookie_keys()
    }

    /// The keys of the periods around now in place (see `crate::syncookie`).
    fn rotate_cookie_keys(&mut self) -> Result<()> {
        let period = cookie::period_at(unix_now());
        self.dataplane
            .rotate_cookie_keys(&self.cookie_secret, period)
    }

    /// Once a second: the cookie keys rotated, and auto mode watched.
    fn syn_proxy_tick(&mut self) {
        if let Err(e) = self.rotate_cookie_keys() {
            error!("rotating the SYN cookie keys: {e:#}");
        }
        if self.runtime.config().firewall.syn_cookies != SynCookies::Auto {
            return;
        }
        match self.dataplane.syn_flood() {
            Ok(flood) => {
                if let Some(on) = self.syn_watch.observe(flood, ktime::coarse_ns()) {
                    self.syn_since = on.then(SystemTime::now);
                    events::syn_cookies(on, flood.activations);
                }
            }
            Err(e) => warn!("reading the SYN flood state: {e:#}"),
        }
    }

    /// The SYN proxy's mode and state, for `balancer status` and the metrics.
    pub fn syn_cookie_status(&self) -> SynCookieStatus {
        let mode = self.runtime.config().firewall.syn_cookies;
        SynCookieStatus {
            mode: mode.to_string(),
            active: match mode {
                SynCookies::Always => true,
                SynCookies::Off => false,
                SynCookies::Auto => self.syn_watch.active,
            },
            since_unix: self
                .syn_since
                .filter(|_| mode == SynCookies::Auto && self.syn_watch.active)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            activations: self.syn_watch.activations,
        }
    }

    pub fn config(&self) -> &Config {
        self.runtime.config()
    }

    /// Writes the whole running state to the maps.
    pub fn sync(&mut self) -> Result<()> {
        let plan = plan_for(&mut self.snat_sources, &self.runtime)?.with_peer_snat(&self.peer_snat);
        self.dataplane.apply(&plan)?;
        for (index, purged) in self.runtime.retired_indexes().collect::<Vec<_>>() {
            let purge = if purged { BACKEND_F_PURGE } else { 0 };
            self.dataplane
                .set_backend_flags(index, BACKEND_F_PRESENT | BACKEND_F_DRAINING | purge)?;
        }
        self.dataplane.remove_stale(&plan)?;
        for (_, svc) in self.runtime.services() {
            for b in svc.backends.values() {
                self.dataplane.set_load(b.index, b.load_pct)?;
            }
        }
        Ok(())
    }

    /// The health checks of the running configuration, continuing from what
    /// is known.
    pub fn update_checks(&mut self) {
        let mut targets = Vec::new();
        for svc in &self.runtime.config().services {
            if svc.health.kind == HealthKind::None && svc.health.agent_port.is_none() {
                continue;
            }
            for b in &svc.backends {
                let initial = match self.runtime.backend(&svc.name, b.address).map(|b| b.health) {
                    Some(Health::Up) => Some(true),
                    Some(Health::Down) => Some(false),
                    _ => None,
                };
                targets.push((
                    health::Target {
                        service: svc.name.clone(),
                        backend: b.address,
                        health: svc.health.clone(),
                    },
                    initial,
                ));
            }
        }
        self.checker.set_targets(targets);
    }

    /// `balancer reload` and SIGHUP.
    pub fn reload(&mut self, by: &str) -> Reply {
        let reply = match config::load(&self.config_path) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    warn!("{}: {}", w.path, w.message);
                }
                self.change(loaded.config, by)
            }
            Err(e) => {
                let problems: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
                events::reload_refused(by, &problems);
                Reply::refused(
                    format!(
                        "{}: refused ({} problems); the running configuration stays",
                        self.config_path.display(),
                        problems.len()
                    ),
                    problems,
                )
            }
        };
        self.last_reload = Some(ReloadOutcome {
            at_unix: unix_now(),
            ok: reply.ok,
            message: reply.message.clone(),
        });
        self.metrics.reloaded(reply.ok);
        reply
    }

    /// Makes `new` the running configuration, as a change: all of it or none.
    fn change(&mut self, new: Config, by: &str) -> Reply {
        let restart = needs_restart(self.runtime.config(), &new);
        if !restart.is_empty() {
            events::reload_refused(by, &restart);
            return Reply::refused(
                "refused: these settings take effect only when the daemon starts; the running configuration stays",
                restart,
            );
        }
        let mut next = self.runtime.clone();
        let changes = match next.apply_config(new, Instant::now()) {
            Ok(c) => c,
            Err(e) => {
                events::reload_refused(by, std::slice::from_ref(&e));
                return Reply::refused(format!("refused: {e}"), vec![e]);
            }
        };
        if let Err(e) = plan_for(&mut self.snat_sources, &next) {
            let problem = format!("{e:#}");
            events::reload_refused(by, std::slice::from_ref(&problem));
            return Reply::refused(format!("refused: {problem}"), vec![problem]);
        }
        if let Err(e) = self.own_addresses(next.config()) {
            let problem = format!("{e:#}");
            events::reload_refused(by, std::slice::from_ref(&problem));
            return Reply::refused(format!("refused: {problem}"), vec![problem]);
        }
        let previous = std::mem::replace(&mut self.runtime, next);
        if let Err(e) = self.sync() {
            error!("applying the new configuration failed: {e:#}; restoring the previous one");
            self.runtime = previous;
            if let Err(e) = self.sync() {
                error!("restoring the previous configuration failed too: {e:#}");
            }
            let problem = format!("{e:#}");
            events::reload_refused(by, std::slice::from_ref(&problem));
            return Reply::refused(format!("failed: {problem}"), vec![problem]);
        }
        self.update_checks();
        self.timeouts = Timeouts::from(&self.runtime.config().flows);
        self.generation += 1;
        for (svc, addr) in &changes.backends_added {
            events::backend_added(svc, *addr, by);
        }
        for (svc, addr) in &changes.backends_removed {
            events::backend_removed(svc, *addr, by);
        }
        let summary = changes.summary();
        events::reload_accepted(self.generation, by, &summary);
        Reply::ok(format!(
            "configuration generation {} running: {summary}",
            self.generation
        ))
    }

    /// VIPs and SNAT addresses of `config` that are not local yet (with high
    /// availability, the HA thread's job when active).
    fn own_addresses(&mut self, config: &Config) -> Result<()> {
        if config.ha.enabled {
            return Ok(());
        }
        let addresses = super::host::floating_addresses(config);
        let interfaces = config.node.interfaces.clone();
        let net = &mut self.net;
        // A reload is handled in a loop that does not wait: the netlink
        // exchange runs on a connection of its own.
        crate::netlink::blocking(|netlink| async move {
            net.ensure_local(&netlink, &addresses, &interfaces).await
        })
    }

    /// Asks the kernel (netlink) whether the program is still attached to
    /// every interface, for the next HA ticks: those it is not are faults
    /// (none unless `ha.track_xdp`).
    pub async fn check_xdp(&mut self, netlink: &crate::netlink::Netlink) {
        let config = self.runtime.config();
        let mut faults = Vec::new();
        for interface in config
            .node
            .interfaces
            .iter()
            .filter(|_| config.ha.track_xdp)
        {
            let attached = match netconf::ifindex(interface) {
                Ok(index) => netlink.xdp_attached(index).await.unwrap_or(false),
                Err(_) => false,
            };
            if !attached {
                faults.push(format!("the XDP program is not attached to {interface}"));
            }
        }
        self.xdp_faults = faults;
    }

    /// Tells the HA thread what the tracked conditions say (logging a change
    /// of them) and that this loop is alive; adopts the synced flows after
    /// a takeover.
    pub fn tick_ha(&mut self) {
        let next = self.ha_inputs(&self.xdp_faults);
        if next.faults != self.last_ha_inputs.faults
            || next.penalty_reasons != self.last_ha_inputs.penalty_reasons
        {
            events::ha_conditions(&next.faults, &next.penalty_reasons, next.penalty);
        }
        if let Some(h) = &self.ha {
            h.set_inputs(next.clone());
            h.pet();
        }
        self.last_ha_inputs = next;
        let adoptions = self.ha.as_ref().map(|h| h.take_adoptions());
        for owner in adoptions.unwrap_or_default() {
            self.adopt_flows(owner);
        }
        let peer_snat = self.ha.as_ref().map(|h| h.peer_snat()).unwrap_or_default();
        if peer_snat != self.peer_snat {
            info!(addresses = ?peer_snat, "the peers' SNAT addresses");
            self.peer_snat = peer_snat;
            if let Err(e) = self.sync() {
                error!("writing the peers' SNAT addresses to the maps: {e:#}");
            }
        }
    }

    /// What the HA thread needs to know: tracked conditions (with the last
    /// [`Daemon::xdp_faults`]), the floating addresses.
    pub fn ha_inputs(&self, xdp_faults: &[String]) -> ha::Inputs {
        let config = self.runtime.config();
        let mut faults = Vec::new();
        for interface in &config.ha.track_interfaces {
            if !netconf::interface_up(interface) {
                faults.push(format!("tracked interface {interface} is down"));
            }
        }
        faults.extend_from_slice(xdp_faults);
        let mut penalty_reasons = Vec::new();
        for svc in config.services.iter().filter(|_| config.ha.track_backends) {
            let Some(state) = self.runtime.service(&svc.name) else {
                continue;
            };
            // Unknown (not checked yet) is not down: a starting node must not
            // look worse than it is.
            let down = |b: &crate::runtime::BackendState| {
                b.health == crate::runtime::Health::Down || b.agent_down
            };
            if !state.backends.is_empty() && state.backends.values().all(down) {
                penalty_reasons.push(format!("every backend of {} is down here", svc.name));
            }
        }
        let penalty = (penalty_reasons.len() as u32 * HA_PENALTY_PER_SERVICE).min(255) as u8;
        ha::Inputs {
            faults,
            penalty,
            penalty_reasons,
            addresses: super::host::floating_addresses(config),
            digest: ha::advert::digest(
                &serde_json::to_string(&config.services).unwrap_or_default(),
            ),
            servable: self.servable_vips(),
            snat: config.node.snat_addresses.clone(),
            draining: self.drain.is_some(),
        }
    }

    /// The VIPs one of whose services has a backend that takes new flows
    /// here: what an active-active node announces.
    fn servable_vips(&self) -> Vec<IpAddr> {
        let mut vips: Vec<IpAddr> = self
            .runtime
            .config()
            .services
            .iter()
            .filter(|svc| {
                self.runtime.service(&svc.name).is_some_and(|state| {
                    state
                        .backends
                        .values()
                        .any(|b| b.healthy() && !b.draining())
                })
            })
            .map(|svc| svc.vip)
            .collect();
        vips.sort();
        vips.dedup();
        vips
    }

    /// `balancer backend ACTION SERVICE ADDRESS`.
    pub fn backend(
        &mut self,
        action: BackendAction,
        service: &str,
        address: SocketAddr,
        weight: Option<u32>,
    ) -> Reply {
        let Some(svc) = self
            .runtime
            .config()
            .services
            .iter()
            .find(|s| s.name == service)
        else {
            return Reply::refused(format!("no service named {service:?}"), Vec::new());
        };
        let present = svc.backends.iter().any(|b| b.address == address);
        match action {
            BackendAction::Add => {
                if present {
                    return Reply::refused(
                        format!("{address} is already a backend of {service}"),
                        Vec::new(),
                    );
                }
                if address.is_ipv4() != svc.vip.is_ipv4() {
                    return Reply::refused(
                        format!(
                            "{address} is not of the family of {service}'s VIP {}",
                            svc.vip
                        ),
                        Vec::new(),
                    );
                }
                if address.port() == 0 {
                    return Reply::refused("the backend's port must not be 0", Vec::new());
                }
                let weight = weight.unwrap_or(BackendConfig::DEFAULT_WEIGHT);
                if weight > config::MAX_WEIGHT {
                    return Reply::refused(
                        format!("weight {weight} is above {}", config::MAX_WEIGHT),
                        Vec::new(),
                    );
                }
                if svc.backends.len() >= config::MAX_BACKENDS_PER_SERVICE {
                    return Reply::refused(
                        format!(
                            "{service} has {} backends already",
                            config::MAX_BACKENDS_PER_SERVICE
                        ),
                        Vec::new(),
                    );
                }
                let mut new = self.runtime.config().clone();
                let svc = new.services.iter_mut().find(|s| s.name == service);
                svc.expect("found above")
                    .backends
                    .push(BackendConfig { address, weight });
                self.change(new, "backend add")
            }
            BackendAction::Remove => {
                if !present {
                    return Reply::refused(
                        format!("{address} is not a backend of {service}"),
                        Vec::new(),
                    );
                }
                let mut new = self.runtime.config().clone();
                let svc = new.services.iter_mut().find(|s| s.name == service);
                svc.expect("found above")
                    .backends
                    .retain(|b| b.address != address);
                self.change(new, "backend remove")
            }
            BackendAction::Drain | BackendAction::Enable => {
                let Some(b) = self.runtime.backend_mut(service, address) else {
                    return Reply::refused(
                        format!("{address} is not a backend of {service}"),
                        Vec::new(),
                    );
                };
                let drain = action == BackendAction::Drain;
                if drain == b.admin_drain.is_some() {
                    return Reply::ok(format!(
                        "{address} of {service} is already {}",
                        if drain { "draining" } else { "enabled" }
                    ));
                }
                b.admin_drain = drain.then(Instant::now);
                b.drain_expired = false;
                if let Err(e) = self.refresh(service, address) {
                    return Reply::refused(format!("failed: {e:#}"), Vec::new());
                }
                if drain {
                    events::backend_drain(service, address, "admin");
                } else {
                    events::backend_enable(service, address, "admin");
                }
                Reply::ok(format!(
                    "{address} of {service} {}",
                    if drain {
                        "draining: no new flows, established ones continue"
                    } else {
                        "enabled"
                    }
                ))
            }
        }
    }

    /// Writes one backend's changed state: its flags, or the service's tables
    /// when its scheduler spreads over eligible backends only. Ends its flows
    /// at once when it is to be purged.
    fn refresh(&mut self, service: &str, address: SocketAddr) -> Result<()> {
        let Some(b) = self.runtime.backend(service, address) else {
            return Ok(());
        };
        let (index, flags) = (b.index, b.flags());
        let scheduler = self
            .runtime
            .config()
            .services
            .iter()
            .find(|s| s.name == service)
            .map(|s| s.scheduler);
        match scheduler {
            Some(Scheduler::Maglev | Scheduler::RoundRobin) => self.sync()?,
            _ => self.dataplane.set_backend_flags(index, flags)?,
        }
        if flags & BACKEND_F_PURGE != 0 {
            let before = self.dataplane.active_conns(index).unwrap_or(0);
            if before > 0 {
                self.sweep_now();
                events::flows_reset(service, address, "backend down or drain timed out", before);
            }
        }
        Ok(())
    }

    pub fn on_health(&mut self, event: health::Event) {
        match event {
            health::Event::Transition {
                service,
                backend,
                healthy,
                reason,
            } => {
                let Some(b) = self.runtime.backend_mut(&service, backend) else {
                    return;
                };
                let new = if healthy { Health::Up } else { Health::Down };
                if b.health == Health::Unchecked || b.health == new {
                    return;
                }
                b.health = new;
                b.reason = reason.clone();
                b.since = SystemTime::now();
                if healthy {
                    events::backend_up(&service, backend, &reason);
                } else {
                    events::backend_down(&service, backend, &reason);
                }
                if let Err(e) = self.refresh(&service, backend) {
                    error!(%service, %backend, "writing the backend's health: {e:#}");
                }
            }
            health::Event::Checked {
                service,
                backend,
                ok,
                duration,
            } => self.metrics.checked(&service, backend, ok, duration),
            health::Event::Agent {
                service,
                backend,
                report,
            } => {
                let Some(b) = self.runtime.backend_mut(&service, backend) else {
                    return;
                };
                let (was_drain, was_down) = (b.agent_drain, b.agent_down);
                if let Some(load) = report.load_pct {
                    b.load_pct = load.min(100);
                }
                if let Some(state) = report.state {
                    b.agent_drain = state == AgentState::Drain;
                    b.agent_down = state == AgentState::Down;
                }
                let (index, load) = (b.index, b.load_pct);
                let (drain, down) = (b.agent_drain, b.agent_down);
                if let Err(e) = self.dataplane.set_load(index, load) {
                    error!(%service, %backend, "writing the backend's load: {e:#}");
                }
                events::backend_load(&service, backend, load);
                if drain != was_drain {
                    if drain {
                        events::backend_drain(&service, backend, "agent");
                    } else {
                        events::backend_enable(&service, backend, "agent");
                    }
                }
                if down != was_down {
                    if down {
                        events::backend_down(&service, backend, "its agent said down");
                    } else {
                        events::backend_up(&service, backend, "its agent said up");
                    }
                }
                if (drain, down) != (was_drain, was_down)
                    && let Err(e) = self.refresh(&service, backend)
                {
                    error!(%service, %backend, "writing the backend's state: {e:#}");
                }
            }
        }
    }

    /// Expiry of idle flows.
    pub fn sweep(&mut self) {
        self.sweep_now();
    }

    /// Retired backends and drains: cheap (one count per backend), so more
    /// often than the sweep, and an operator sees a drain end soon after its
    /// last connection. And the SYN proxy's keys and auto mode.
    pub fn housekeep(&mut self) {
        self.syn_proxy_tick();
        let chores = {
            let dp = &self.dataplane;
            self.runtime
                .housekeeping(Instant::now(), |i| dp.active_conns(i).unwrap_or(0))
        };
        let mut purge = false;
        for chore in chores {
            match chore {
                Chore::Free { index } => {
                    if let Err(e) = self.dataplane.clear_backend(index) {
                        error!(index = index.0, "clearing a freed backend: {e:#}");
                    }
                    events::backend_freed(index);
                }
                Chore::Purge { index } => {
                    let flags = BACKEND_F_PRESENT | BACKEND_F_DRAINING | BACKEND_F_PURGE;
                    if let Err(e) = self.dataplane.set_backend_flags(index, flags) {
                        error!(index = index.0, "purging a retired backend: {e:#}");
                    }
                    purge = true;
                }
                Chore::DrainExpired { service, backend } => {
                    if let Err(e) = self.refresh(&service, backend) {
                        error!(%service, %backend, "ending a drained backend's flows: {e:#}");
                    }
                }
            }
        }
        if purge {
            self.sweep_now();
        }
    }

    fn sweep_now(&mut self) {
        match self.sweep_recorded(None) {
            Ok(s) if s.expired > 0 => debug!(
                scanned = s.scanned,
                expired = s.expired,
                released = s.released,
                "expired flows"
            ),
            Ok(_) => {}
            Err(e) => warn!("flow sweep failed: {e:#}"),
        }
    }

    /// After a takeover: the peers' synced flows become this node's (their
    /// idle time starting now), so that its sweeps expire them from now on.
    pub fn adopt_flows(&mut self, owner: u32) {
        match self.sweep_recorded(Some(owner)) {
            Ok(s) => info!(
                target: events::TARGET,
                event = "ha_flows_adopted",
                flows = s.adopted,
                "took over the flows synced from the peers"
            ),
            Err(e) => warn!("adopting the synced flows failed: {e:#}"),
        }
    }

    /// `standalone` without high availability, else the HA thread's role.
    pub fn role(&self) -> String {
        self.ha
            .as_ref()
            .map_or_else(|| "standalone".into(), |h| h.status().role)
    }

    pub fn status(&self) -> Status {
        // One batch read for every backend's count.
        let counts = self
            .dataplane
            .all_active_conns(self.runtime.index_bound())
            .unwrap_or_default();
        let active = |index: BackendIndex| counts.get(index.0 as usize).copied().unwrap_or(0);
        let mut services = Vec::new();
        for svc in &self.runtime.config().services {
            let mut backends = Vec::new();
            for cfg in &svc.backends {
                let Some(b) = self.runtime.backend(&svc.name, cfg.address) else {
                    continue;
                };
                backends.push(BackendStatus {
                    address: cfg.address,
                    weight: cfg.weight,
                    state: b.state_word().into(),
                    health: b.health.as_str().into(),
                    reason: b.reason.clone(),
                    since_unix: b
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    draining: b.draining(),
                    load_pct: b.load_pct,
                    active: active(b.index),
                });
            }
            services.push(ServiceStatus {
                name: svc.name.clone(),
                vip: svc.vip,
                port: svc.port,
                protocol: svc.protocol.to_string(),
                scheduler: svc.scheduler.to_string(),
                health_check: svc.health.kind.to_string(),
                backends,
            });
        }
        let now = Instant::now();
        let retired = self
            .runtime
            .retired()
            .iter()
            .map(|r| RetiredStatus {
                service: r.service.clone(),
                address: r.address,
                active: active(r.index),
                ends_in_s: r.deadline.saturating_duration_since(now).as_secs(),
            })
            .collect();
        Status {
            node: self.runtime.config().node.name.clone(),
            role: self.role(),
            ha: self.ha.as_ref().map(|h| h.status()),
            config: self.config_path.display().to_string(),
            pid: std::process::id(),
            generation: self.generation,
            last_reload: self.last_reload.clone(),
            recovered: self.recovered,
            services,
            retired,
            syn_cookies: self.syn_cookie_status(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn last_reload(&self) -> Option<&ReloadOutcome> {
        self.last_reload.as_ref()
    }

    /// Flows in the table, for the restart event.
    pub fn flow_entries(&self) -> usize {
        self.dataplane.flow_entries().unwrap_or(0)
    }
}

fn plan_for(snat_sources: &mut HashMap<IpAddr, IpAddr>, runtime: &Runtime) -> Result<Plan> {
    plan::plan_with(runtime.config(), runtime, |dst| {
        if let Some(src) = snat_sources.get(&dst) {
            return Ok(*src);
        }
        let src = netconf::route_source(dst)?;
        snat_sources.insert(dst, src);
        Ok(src)
    })
}

/// Priority a node gives up for each service whose backends are all down on
/// it, so that a peer that still reaches them outranks it.
const HA_PENALTY_PER_SERVICE: u32 = 50;

/// Settings the daemon reads only when it starts.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &str| {
        if changed {
            out.push(format!("{key} changed: restart the daemon to apply it"));
        }
    };
    check(
        old.node.interfaces != new.node.interfaces,
        "node.interfaces",
    );
    check(old.node.xdp_mode != new.node.xdp_mode, "node.xdp_mode");
    check(
        old.node.forwarding != new.node.forwarding,
        "node.forwarding",
    );
    check(
        old.node.snat_port_range != new.node.snat_port_range,
        "node.snat_port_range",
    );
    check(old.flows.capacity != new.flows.capacity, "flows.capacity");
    check(old.control != new.control, "control");
    check(old.ha != new.ha, "ha");
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Daemon {
    /// After a restart: what was taken over, for the event log.
    pub fn report_recovery(&self) {
        let backends = self.runtime.services().map(|(_, s)| s.backends.len()).sum();
        events::restart_recovered(
            self.runtime.services().count(),
            backends,
            self.flow_entries(),
        );
    }
}
