//! High availability. A thread of its own sends and receives the adverts and
//! moves addresses (through netlink), so that a busy daemon loop (a long
//! sweep, a reload) never delays a heartbeat or a takeover; the flow sync
//! runs on another ([`sync::thread`]), so that a bulk copy never does either. The daemon loop feeds it what the tracked conditions say and a
//! watchdog stamp; if the stamp goes stale the node yields its role.
//!
//! Active-standby: an election picks the active node, which owns the VIPs and
//! SNAT addresses. Active-active ([`active_active`]): every node serves the
//! VIPs it can, announcing them by routing, and holds its own SNAT addresses
//! and those of dead peers it adopts.

mod active_active;
pub mod advert;
mod announce;
pub mod election;
mod lease;
pub mod members;
mod routes;
pub mod sync;

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use balancer_common::{expiry::ADOPT_ALL, flow::node_id};
use tokio::{net::UdpSocket, sync::watch};
use tracing::{debug, info, warn};

use self::{
    advert::{Advert, Codec, Rejected, Role},
    election::{Election, Transition},
    members::Group,
    routes::Routes,
    sync::{
        bulk::Owners,
        thread::{Settings, SyncThread},
    },
};
use crate::{
    api::{HaStatus, PeerStatus, SyncCopy, TransitionStatus},
    config::{Ha, HaMode},
    netconf::NetChanges,
    netlink::Netlink,
};

/// Announcements after a takeover: at once and a few times after, in case the
/// first is lost.
pub(crate) const ANNOUNCE_REPEATS: u32 = 3;

/// What the daemon loop tells the HA thread.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Conditions that take the node out of the running (priority 0).
    pub faults: Vec<String>,
    /// Priority taken off for lesser conditions, with their reasons.
    pub penalty: u8,
    pub penalty_reasons: Vec<String>,
    /// Active-standby: the floating addresses the active node owns.
    pub addresses: Vec<IpAddr>,
    pub digest: [u8; 8],
    /// Active-active: the VIPs this node can serve (one of their services
    /// has a healthy backend here), and its own SNAT addresses.
    pub servable: Vec<IpAddr>,
    pub snat: Vec<IpAddr>,
    /// Active-active: the operator asked this node to drain.
    pub draining: bool,
}

pub struct HaHandle {
    inputs: watch::Sender<Inputs>,
    alive_ms: Arc<AtomicU64>,
    status: Arc<Mutex<HaStatus>>,
    adopt: Adoptions,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Whose synced flows the daemon's next sweeps are to adopt: node ids, or
/// [`ADOPT_ALL`].
type Adoptions = Arc<Mutex<Vec<u32>>>;

impl HaHandle {
    pub fn set_inputs(&self, inputs: Inputs) {
        self.inputs.send_if_modified(|old| {
            let changed = *old != inputs;
            *old = inputs;
            changed
        });
    }

    /// Whose flows the daemon's next sweeps are to adopt
    /// (`SweepLimits::adopt`): a takeover makes the peers' synced flows this
    /// node's, an active-active node adopts a dead peer's. Asked once.
    pub fn take_adoptions(&self) -> Vec<u32> {
        std::mem::take(&mut *self.adopt.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Active-active: the SNAT addresses of the peers, as their adverts say.
    pub fn peer_snat(&self) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = self
            .status()
            .peers
            .into_iter()
            .flat_map(|p| p.snat)
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// The daemon loop is alive.
    pub fn pet(&self) {
        self.alive_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn status(&self) -> HaStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Gives up the role (releasing the addresses, telling the peers with a
    /// priority-0 advert) and ends the thread.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the key, refusing one that others may read.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("ha.auth_key_file {}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        bail!(
            "ha.auth_key_file {} is readable by every user (mode {:o}): chmod o-rwx it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let key = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key = key.trim_ascii().to_vec();
    if key.len() < 16 {
        bail!(
            "ha.auth_key_file {}: the key is {} bytes; use at least 16 (e.g. openssl rand -hex 32)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}

/// Starts the HA thread for node `name`; returns once it runs (its sockets
/// bound, addresses a killed predecessor left removed), or why it could not.
pub fn start(
    name: &str,
    config: &Ha,
    key: Vec<u8>,
    interfaces: Vec<String>,
    pin_dir: &Path,
    inputs: Inputs,
) -> Result<HaHandle> {
    let interval = Duration::from_millis(config.advert_interval_ms.into());
    let mut lease = lease::Lease::open(pin_dir, interval * config.dead_after.max(1))?;
    lease.expire();
    let (inputs_tx, inputs_rx) = watch::channel(inputs);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let alive_ms = Arc::new(AtomicU64::new(now_ms()));
    let adopt = Adoptions::default();
    let status = Arc::new(Mutex::new(HaStatus {
        role: Role::Init.as_str().into(),
        priority: config.priority,
        ..HaStatus::default()
    }));
    let setup = Setup {
        name: name.to_string(),
        config: config.clone(),
        key,
        interfaces,
        pin_dir: pin_dir.to_path_buf(),
        lease,
        status: status.clone(),
        alive_ms: alive_ms.clone(),
        adopt: adopt.clone(),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ha".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("a runtime for the HA thread: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let inputs = inputs_rx.borrow().clone();
                match setup.node(&inputs).await {
                    Ok((node, socket)) => {
                        let _ = ready_tx.send(Ok(()));
                        node.run(socket, inputs_rx, stop_rx).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
    ready_rx
        .recv()
        .context("the HA thread ended before it started")??;
    Ok(HaHandle {
        inputs: inputs_tx,
        alive_ms,
        status,
        adopt,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// What the HA thread starts from.
struct Setup {
    name: String,
    config: Ha,
    key: Vec<u8>,
    interfaces: Vec<String>,
    pin_dir: PathBuf,
    lease: lease::Lease,
    status: Arc<Mutex<HaStatus>>,
    alive_ms: Arc<AtomicU64>,
    adopt: Adoptions,
}

impl Setup {
    /// On the HA thread's runtime: netlink, the sockets, the flow sync.
    async fn node(self, inputs: &Inputs) -> Result<(Node, UdpSocket)> {
        let netlink = Netlink::connect()?;
        let active_active = self.config.mode == HaMode::ActiveActive;
        // A node starts as no owner: addresses a killed predecessor left go, so
        // that only the active node answers for them (in active-active, the
        // node's own SNAT addresses, which a peer may hold now, and routes).
        let owned = if active_active {
            &inputs.snat
        } else {
            &inputs.addresses
        };
        crate::netconf::remove_addresses(&netlink, owned).await?;
        if let Some(interface) = &self.config.interface {
            announce_self(&netlink, interface).await;
        }
        let routes = if active_active {
            Some(Routes::open(&netlink, self.config.announce_table).await?)
        } else {
            None
        };
        let socket = std::net::UdpSocket::bind(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            advert::PORT,
        ))
        .with_context(|| format!("binding the HA port {}", advert::PORT))?;
        socket.set_nonblocking(true)?;
        let interval = Duration::from_millis(self.config.advert_interval_ms.into());
        // Adverts and sync datagrams older than this by their sender's clock
        // are refused: the nodes' clocks must agree within it.
        let max_age = (interval * 10).max(Duration::from_secs(1));
        let sync = if self.config.sync_flows {
            Some(SyncThread::start(Settings {
                name: self.name.clone(),
                key: self.key.clone(),
                peers: self.config.peers.clone(),
                pin_dir: self.pin_dir.clone(),
                bulk_rate: self.config.bulk_sync_rate,
                max_age,
                owners: if active_active {
                    Owners::Own {
                        adopted: Vec::new(),
                    }
                } else {
                    Owners::All
                },
            })?)
        } else {
            None
        };
        let mut election = Election::new(
            &self.name,
            self.config.priority,
            self.config.preempt,
            self.config.dead_after,
            interval,
            Instant::now(),
        );
        election.preempt_wait = Duration::from_millis(self.config.preempt_sync_timeout_ms.into());
        let group = active_active.then(|| {
            active_active::Membership::new(Group::new(&self.name, self.config.dead_after, interval))
        });
        let node = Node {
            name: self.name,
            codec: Codec::new(self.key, max_age),
            election,
            config: self.config,
            interfaces: self.interfaces,
            netlink,
            sync,
            floating: NetChanges::default(),
            owned: Vec::new(),
            lease: self.lease,
            status: self.status,
            alive_ms: self.alive_ms,
            adopt: self.adopt,
            announce_left: 0,
            group,
            routes,
        };
        Ok((node, UdpSocket::from_std(socket)?))
    }
}

struct Node {
    name: String,
    config: Ha,
    interfaces: Vec<String>,
    codec: Codec,
    election: Election,
    netlink: Netlink,
    sync: Option<SyncThread>,
    /// The floating addresses while active.
    floating: NetChanges,
    owned: Vec<IpAddr>,
    lease: lease::Lease,
    status: Arc<Mutex<HaStatus>>,
    alive_ms: Arc<AtomicU64>,
    adopt: Adoptions,
    announce_left: u32,
    /// Active-active: the group and this node's place in it, and its routes.
    group: Option<active_active::Membership>,
    routes: Option<Routes>,
}

impl Node {
    async fn run(
        mut self,
        socket: UdpSocket,
        mut inputs: watch::Receiver<Inputs>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let interval = Duration::from_millis(self.config.advert_interval_ms.into());
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let current = inputs.borrow().clone();
                    let priority = self.effective(&current);
                    if self.group.is_some() {
                        self.settle_group(priority, &current).await;
                    } else {
                        self.decide(priority, &current).await;
                        self.refresh_addresses(&current).await;
                        if self.election.role() == Role::Active {
                            self.lease.renew();
                        }
                    }
                    self.send(&socket, priority, &current).await;
                    self.update_status(priority, &current);
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let current = inputs.borrow().clone();
                        self.receive(&buf[..n], from, &current).await;
                    }
                    Err(e) => debug!("HA receive: {e}"),
                },
                _ = inputs.changed() => {
                    let current = inputs.borrow().clone();
                    let priority = self.effective(&current);
                    if self.group.is_some() {
                        self.settle_group(priority, &current).await;
                    } else {
                        self.decide(priority, &current).await;
                        self.refresh_addresses(&current).await;
                    }
                }
                _ = &mut stop => break,
            }
            self.tell_sync();
        }
        // Leaving: the peer hears priority 0 and takes over at once instead of
        // waiting for dead_after intervals.
        let current = inputs.borrow().clone();
        if self.group.is_some() {
            self.leave_group().await;
        } else if let Some(t) = self.election.step_down("stopping") {
            self.apply(t, &current).await;
        }
        self.send(&socket, 0, &current).await;
    }

    /// Tells the flow sync what this node does with flows now.
    fn tell_sync(&self) {
        if let Some(sync) = &self.sync {
            sync.set_role(sync::thread::Role {
                sending: self.sending(),
                receiving: self.receiving(),
                want_copies: self.copies_wanted(),
            });
        }
    }

    /// Whether this node sends its flows to its peers: while it serves (in
    /// active-active, always).
    fn sending(&self) -> bool {
        self.group.is_some() || self.election.role() == Role::Active
    }

    /// Whether this node installs its peers' flows: while another serves (in
    /// active-active, always).
    fn receiving(&self) -> bool {
        self.group.is_some() || self.election.role() != Role::Active
    }

    /// The peers whose whole table this node must hold: the active one (in
    /// active-active, every live peer).
    fn copies_wanted(&self) -> Vec<String> {
        if let Some(g) = &self.group {
            return g.group.live_peers(Instant::now());
        }
        if !self.receiving() {
            return Vec::new();
        }
        let now = Instant::now();
        self.election
            .peers()
            .iter()
            .filter(|(_, p)| p.role == Role::Active && self.election.alive(p, now))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether this node holds a complete copy of every table it must hold
    /// (true without flow sync: nothing to wait for).
    fn copies_ready(&self) -> bool {
        let Some(sync) = &self.sync else {
            return true;
        };
        self.copies_wanted()
            .iter()
            .all(|peer| matches!(sync.copy_of(peer), SyncCopy::Complete { .. }))
    }

    /// What this node holds of the tables it was copying, for the event of
    /// a takeover.
    fn table_held(&self) -> String {
        match &self.sync {
            None => "flow sync off".into(),
            Some(sync) => {
                let copies = sync.copies();
                if copies.is_empty() {
                    return "no peer".into();
                }
                copies
                    .iter()
                    .map(|(peer, copy)| format!("{peer}: {}", copy.describe()))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        }
    }

    /// Runs the election on the current priority and applies its verdict.
    async fn decide(&mut self, priority: u8, inputs: &Inputs) {
        let ready = self.copies_ready();
        self.election.set_copy_ready(ready);
        if let Some(t) = self.election.on_tick(priority, Instant::now()) {
            self.apply(t, inputs).await;
        }
    }

    fn effective(&self, inputs: &Inputs) -> u8 {
        if !inputs.faults.is_empty() || self.watchdog_expired() {
            0
        } else {
            self.config.priority.saturating_sub(inputs.penalty).max(1)
        }
    }

    /// The daemon loop has been silent past `watchdog_ms` (0: not watched).
    fn watchdog_expired(&self) -> bool {
        let limit = u64::from(self.config.watchdog_ms);
        limit > 0 && now_ms().saturating_sub(self.alive_ms.load(Ordering::Relaxed)) > limit
    }

    async fn send(&mut self, socket: &UdpSocket, priority: u8, inputs: &Inputs) {
        let advert = Advert {
            node: self.name.clone(),
            role: self.role(),
            priority,
            seq: advert::micros(SystemTime::now()),
            digest: inputs.digest,
            member: self.group.as_ref().map(|g| g.me.member.clone()),
        };
        let wire = self.codec.encode(&advert);
        for peer in &self.config.peers {
            let to = peer_socket(*peer, advert::PORT);
            match socket.send_to(&wire, to).await {
                Ok(_) => self.lock().adverts_sent += 1,
                Err(e) => debug!(peer = %peer, "HA send: {e}"),
            }
        }
    }

    async fn receive(&mut self, data: &[u8], from: SocketAddr, inputs: &Inputs) {
        let source = from.ip().to_canonical();
        let reject = |status: &Mutex<HaStatus>, why: &str| {
            *status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .adverts_rejected
                .entry(why.to_string())
                .or_default() += 1;
        };
        if !self.config.peers.contains(&source) {
            reject(&self.status, "unknown_sender");
            debug!(%source, "advert from an address that is not a peer");
            return;
        }
        let advert = match self.codec.decode(data, SystemTime::now()) {
            Ok(a) => a,
            Err(e) => {
                let why = match e {
                    Rejected::Malformed => "malformed",
                    Rejected::Forged => "forged",
                    Rejected::Replayed { .. } => "replayed",
                    Rejected::Stale { .. } => "stale",
                };
                reject(&self.status, why);
                warn!(target: crate::events::TARGET, event = "ha_advert_rejected", %source, reason = %e, "advert ignored");
                return;
            }
        };
        if advert.digest != inputs.digest {
            debug!(peer = %advert.node, "the peer runs another services configuration");
        }
        if advert.member.is_some() != self.group.is_some() {
            reject(&self.status, "other_mode");
            warn!(target: crate::events::TARGET, event = "ha_advert_rejected", %source, reason = "the peer runs the other ha.mode", "advert ignored");
            return;
        }
        self.lock().adverts_received += 1;
        if self.group.is_some() {
            self.heard_member(&advert, inputs).await;
            return;
        }
        let splits = self.election.split_brains;
        let priority = self.effective(inputs);
        let ready = self.copies_ready();
        self.election.set_copy_ready(ready);
        let changed = self.election.on_advert(&advert, priority, Instant::now());
        if self.election.split_brains > splits {
            self.lock().split_brains = self.election.split_brains;
            warn!(target: crate::events::TARGET, event = "ha_split_brain", peer = %advert.node, "both nodes active");
        }
        if let Some(t) = changed {
            self.apply(t, inputs).await;
        }
        if self.election.split_brains > splits && self.election.role() == Role::Active {
            // The peer was active too and announced the addresses as its own:
            // this node, which stays, takes the neighbours back.
            self.announce_left = ANNOUNCE_REPEATS;
        }
        self.update_status(priority, inputs);
    }

    async fn apply(&mut self, mut t: Transition, inputs: &Inputs) {
        if t.reason.starts_with("fault") {
            let mut why = inputs.faults.clone();
            if self.watchdog_expired() {
                why.push("the daemon loop is not responding".into());
            }
            if !why.is_empty() {
                t.reason = format!("{}: {}", t.reason, why.join("; "));
            }
        }
        // What this node holds of the flows it takes over: every connection
        // of a table it does not hold whole may break.
        let table = self.table_held();
        info!(
            target: crate::events::TARGET,
            event = "ha_transition",
            from = t.from.as_str(),
            to = t.to.as_str(),
            cause = t.cause,
            reason = %t.reason,
            table = %table,
            "HA role {} -> {}",
            t.from.as_str(),
            t.to.as_str()
        );
        if t.to == Role::Active {
            self.lease.renew();
            self.lease
                .start_takeover_grace(Duration::from_millis(self.config.takeover_grace_ms.into()));
            // The peers' flows synced here are this node's to expire now.
            self.adopt_flows(ADOPT_ALL);
            self.owned.clear();
            self.refresh_addresses(inputs).await;
            self.announce_left = ANNOUNCE_REPEATS;
            self.announce().await;
        } else {
            self.lease.expire();
            self.floating.undo(&self.netlink).await;
            self.owned.clear();
            if let Some(sync) = &self.sync {
                sync.forget_copies();
            }
        }
        // Published once the addresses moved: whoever reads "standby" finds
        // the addresses gone, "active" finds them here.
        let mut s = self.lock();
        *s.transitions
            .entry(format!("{}|{}|{}", t.from.as_str(), t.to.as_str(), t.cause))
            .or_default() += 1;
        s.role = t.to.as_str().into();
        s.last_transition = Some(TransitionStatus {
            at_unix: advert::micros(SystemTime::now()) / 1_000_000,
            from: t.from.as_str().into(),
            to: t.to.as_str().into(),
            reason: t.reason,
        });
    }

    /// While active: own exactly the addresses of the running configuration.
    async fn refresh_addresses(&mut self, inputs: &Inputs) {
        if self.election.role() != Role::Active {
            return;
        }
        if self.owned != inputs.addresses {
            if let Err(e) = self
                .floating
                .ensure_local(&self.netlink, &inputs.addresses, &self.interfaces)
                .await
            {
                warn!("taking the floating addresses: {e:#}");
            }
            let new: Vec<IpAddr> = inputs
                .addresses
                .iter()
                .filter(|a| !self.owned.contains(a))
                .copied()
                .collect();
            self.owned = inputs.addresses.clone();
            for ip in new {
                self.announce_one(ip).await;
            }
        }
        if self.announce_left > 0 {
            self.announce_left -= 1;
            self.announce().await;
        }
    }

    async fn announce(&self) {
        for ip in &self.owned {
            self.announce_one(*ip).await;
        }
    }

    async fn announce_one(&self, ip: IpAddr) {
        let found = self.netlink.interface_of(ip).await;
        match found.and_then(|i| i.map(crate::netconf::ifname).transpose()) {
            Ok(Some(interface)) => {
                if let Err(e) = announce::announce(&interface, ip) {
                    warn!(%ip, %interface, "announcing: {e:#}");
                }
            }
            Ok(None) => warn!(%ip, "no interface holds the address to announce"),
            Err(e) => warn!(%ip, "finding the address's interface: {e:#}"),
        }
    }

    /// Asks the daemon loop to adopt the flows of `owner` (a node id, or
    /// [`ADOPT_ALL`]) in its next sweep.
    fn adopt_flows(&self, owner: u32) {
        self.adopt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(owner);
    }

    /// The role adverts and status show: the election's, or in active-active
    /// whether this node serves.
    fn role(&self) -> Role {
        match &self.group {
            Some(g) if g.me.member.ready => Role::Active,
            Some(_) => Role::Init,
            None => self.election.role(),
        }
    }

    fn update_status(&self, priority: u8, inputs: &Inputs) {
        let now = Instant::now();
        let peers = match &self.group {
            Some(g) => g.peer_status(now),
            None => self
                .election
                .peers()
                .iter()
                .map(|(name, p)| PeerStatus {
                    node: name.clone(),
                    role: p.role.as_str().into(),
                    priority: p.priority,
                    alive: self.election.alive(p, now),
                    last_heard_ms: now.saturating_duration_since(p.last_heard).as_millis() as u64,
                    ..PeerStatus::default()
                })
                .collect(),
        };
        let mut conditions = inputs.faults.clone();
        conditions.extend(inputs.penalty_reasons.iter().cloned());
        if self.watchdog_expired() {
            conditions.push("the daemon loop is not responding".into());
        }
        let mut s = self.lock();
        s.effective_priority = priority;
        s.peers = peers;
        s.conditions = conditions;
        s.role = match &self.group {
            Some(g) => g.state_word().into(),
            None => self.election.role().as_str().into(),
        };
        if let Some(g) = &self.group {
            s.mode = HaMode::ActiveActive.to_string();
            s.announced = self
                .routes
                .as_ref()
                .map(Routes::announced)
                .unwrap_or_default();
            s.snat_held = g.held.clone();
            s.adopted = g.adopted.clone();
            s.adoptions = g.adoptions;
        } else {
            s.mode = HaMode::ActiveStandby.to_string();
        }
        if let Some(sync) = &self.sync {
            let c = sync.counters();
            s.sync_sent = c.sent;
            s.sync_installed = c.installed;
            s.sync_closed = c.closed;
            s.sync_unmatched = c.unmatched;
            s.sync_rejected = c.rejected.values().sum();
            s.sync_rejected_by_reason = c.rejected.clone();
            s.sync_lag_ms = c.lag_ms;
            s.sync_retransmitted = c.retransmitted;
            s.sync_bulks_sent = c.bulks_sent;
            s.sync_bulk_flows_sent = c.bulk_flows_sent;
            s.sync_copies_lost = c.copies_lost;
            s.sync_copies = sync.copies();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HaStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Announces this host's own addresses on the HA interface (gratuitous ARP,
/// unsolicited NA): a host that replaced a dead one at the same address has
/// another MAC, and its peers' neighbour entries would point at the dead one
/// for seconds (a stale entry is probed only after `delay_first_probe_time`),
/// so that the peers would not hear this node and it would not hear them.
async fn announce_self(netlink: &Netlink, interface: &str) {
    let Ok(ifindex) = crate::netconf::ifindex(interface) else {
        return;
    };
    match netlink.addresses().await {
        Ok(addresses) => {
            for a in addresses.iter().filter(|a| a.ifindex == ifindex) {
                if let Err(e) = announce::announce(interface, a.net.addr()) {
                    debug!(address = %a.net, "announcing this host's address: {e:#}");
                }
            }
        }
        Err(e) => debug!("listing this host's addresses: {e:#}"),
    }
}

fn now_ms() -> u64 {
    advert::micros(SystemTime::now()) / 1000
}

/// Where a peer is reached from the dual-stack HA sockets: an IPv4 peer as
/// its IPv4-mapped IPv6 address.
fn peer_socket(peer: IpAddr, port: u16) -> SocketAddr {
    let ip = match peer {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    SocketAddr::new(ip, port)
}
