//! Active/standby high availability. A thread of its own sends and receives
//! the adverts, runs the election and moves the floating addresses (VIPs and
//! SNAT addresses), so that a busy daemon loop (a long sweep, a reload) never
//! delays a heartbeat or a takeover. The daemon loop feeds it what the
//! tracked conditions say and a watchdog stamp; if the stamp goes stale the
//! node yields its role.

pub mod advert;
mod announce;
pub mod election;
mod lease;
pub mod sync;

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use tokio::{net::UdpSocket, sync::watch};
use tracing::{debug, info, warn};

use self::{
    advert::{Advert, Codec, Rejected, Role},
    election::{Election, Transition},
};
use crate::{
    api::{HaStatus, PeerStatus, TransitionStatus},
    config::Ha,
    netconf::NetChanges,
};

/// How often the flow-event ring is drained into datagrams: the standby lags
/// the active node by at most this (plus the network), and the daemon wakes
/// up 200 times a second instead of once per flow.
const SYNC_LINGER: Duration = Duration::from_millis(5);
/// Announcements after a takeover: at once and a few times after, in case the
/// first is lost.
const ANNOUNCE_REPEATS: u32 = 3;

/// What the daemon loop tells the HA thread.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Conditions that take the node out of the running (priority 0).
    pub faults: Vec<String>,
    /// Priority taken off for lesser conditions, with their reasons.
    pub penalty: u8,
    pub penalty_reasons: Vec<String>,
    /// The floating addresses the active node owns.
    pub addresses: Vec<IpAddr>,
    pub digest: [u8; 8],
}

pub struct HaHandle {
    inputs: watch::Sender<Inputs>,
    alive_ms: Arc<AtomicU64>,
    status: Arc<Mutex<HaStatus>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HaHandle {
    pub fn set_inputs(&self, inputs: Inputs) {
        self.inputs.send_if_modified(|old| {
            let changed = *old != inputs;
            *old = inputs;
            changed
        });
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

/// Starts the HA thread for node `name`. The socket is bound here, so that a
/// port in use is an error at start.
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
    // A node starts as no owner: addresses a killed predecessor left go, so
    // that only the active node answers for them.
    crate::netconf::remove_addresses(&inputs.addresses)?;
    let socket = std::net::UdpSocket::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        advert::PORT,
    ))
    .with_context(|| format!("binding the HA port {}", advert::PORT))?;
    socket.set_nonblocking(true)?;
    let flow_sync = if config.sync_flows {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            sync::PORT,
        ))
        .with_context(|| format!("binding the flow sync port {}", sync::PORT))?;
        socket.set_nonblocking(true)?;
        Some(FlowSync {
            socket,
            source: sync::Source::open(pin_dir)?,
            sink: sync::Sink::open(pin_dir)?,
            wire: sync::Wire::new(key.clone(), name),
        })
    } else {
        None
    };
    let (inputs_tx, inputs_rx) = watch::channel(inputs);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let alive_ms = Arc::new(AtomicU64::new(now_ms()));
    let status = Arc::new(Mutex::new(HaStatus {
        role: Role::Init.as_str().into(),
        priority: config.priority,
        ..HaStatus::default()
    }));
    let node = Node {
        name: name.to_string(),
        config: config.clone(),
        interfaces,
        codec: Codec::new(
            key,
            (Duration::from_millis(config.advert_interval_ms.into()) * 10)
                .max(Duration::from_secs(1)),
        ),
        election: Election::new(
            name,
            config.priority,
            config.preempt,
            config.dead_after,
            Duration::from_millis(config.advert_interval_ms.into()),
            Instant::now(),
        ),
        floating: NetChanges::default(),
        owned: Vec::new(),
        lease,
        status: status.clone(),
        alive_ms: alive_ms.clone(),
        announce_left: 0,
    };
    let thread = std::thread::Builder::new()
        .name("ha".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the HA thread");
            rt.block_on(node.run(socket, flow_sync, inputs_rx, stop_rx));
        })?;
    Ok(HaHandle {
        inputs: inputs_tx,
        alive_ms,
        status,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

struct FlowSync {
    socket: std::net::UdpSocket,
    source: sync::Source,
    sink: sync::Sink,
    wire: sync::Wire,
}

struct Node {
    name: String,
    config: Ha,
    interfaces: Vec<String>,
    codec: Codec,
    election: Election,
    /// The floating addresses while active.
    floating: NetChanges,
    owned: Vec<IpAddr>,
    lease: lease::Lease,
    status: Arc<Mutex<HaStatus>>,
    alive_ms: Arc<AtomicU64>,
    announce_left: u32,
}

impl Node {
    async fn run(
        mut self,
        socket: std::net::UdpSocket,
        flow_sync: Option<FlowSync>,
        mut inputs: watch::Receiver<Inputs>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let socket = match UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                warn!("HA socket: {e}");
                return;
            }
        };
        let (sync_socket, mut source, mut sink, mut wire) = match flow_sync {
            Some(f) => match UdpSocket::from_std(f.socket) {
                Ok(s) => (Some(s), Some(f.source), Some(f.sink), Some(f.wire)),
                Err(e) => {
                    warn!("flow sync disabled: {e}");
                    (None, None, None, None)
                }
            },
            None => (None, None, None, None),
        };
        let mut sync_drain = source.as_ref().map(|_| {
            let mut t = tokio::time::interval(SYNC_LINGER);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut sync_buf = vec![0u8; 2048];
        let mut records = Vec::new();
        let interval = Duration::from_millis(self.config.advert_interval_ms.into());
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let current = inputs.borrow().clone();
                    let priority = self.effective(&current);
                    if let Some(t) = self.election.on_tick(priority, Instant::now()) {
                        self.apply(t, &current);
                    }
                    self.refresh_addresses(&current);
                    if self.election.role() == Role::Active {
                        self.lease.renew();
                    }
                    self.send(&socket, priority, &current).await;
                    self.update_status(priority, &current);
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let current = inputs.borrow().clone();
                        self.receive(&buf[..n], from, &current);
                    }
                    Err(e) => debug!("HA receive: {e}"),
                },
                _ = inputs.changed() => {
                    let current = inputs.borrow().clone();
                    let priority = self.effective(&current);
                    if let Some(t) = self.election.on_tick(priority, Instant::now()) {
                        self.apply(t, &current);
                    }
                    self.refresh_addresses(&current);
                }
                _ = drain_tick(sync_drain.as_mut()) => {
                    if let Some(source) = source.as_mut() {
                        source.drain(&mut records);
                    }
                    if self.election.role() != Role::Active {
                        records.clear();
                    } else if !records.is_empty()
                        && let (Some(s), Some(w)) = (&sync_socket, wire.as_mut())
                    {
                        self.send_sync(s, w, &records).await;
                        records.clear();
                    }
                }
                received = recv(sync_socket.as_ref(), &mut sync_buf) => {
                    if let (Ok((n, from)), Some(w), Some(sink)) = (received, wire.as_mut(), sink.as_mut()) {
                        self.receive_sync(&sync_buf[..n], from, w, sink);
                    }
                }
                _ = &mut stop => break,
            }
        }
        // Leaving: the peer hears priority 0 and takes over at once instead of
        // waiting for dead_after intervals.
        let current = inputs.borrow().clone();
        if let Some(t) = self.election.step_down("stopping") {
            self.apply(t, &current);
        }
        self.send(&socket, 0, &current).await;
    }

    async fn send_sync(&self, socket: &UdpSocket, wire: &mut sync::Wire, records: &[sync::Record]) {
        for batch in records.chunks(sync::BATCH) {
            let datagram = wire.encode(batch);
            for peer in &self.config.peers {
                let to = peer_socket(*peer, sync::PORT);
                if let Err(e) = socket.send_to(&datagram, to).await {
                    debug!(peer = %peer, "flow sync send: {e}");
                }
            }
            self.lock().sync_sent += batch.len() as u64;
        }
    }

    fn receive_sync(
        &self,
        data: &[u8],
        from: SocketAddr,
        wire: &mut sync::Wire,
        sink: &mut sync::Sink,
    ) {
        let source = from.ip().to_canonical();
        if !self.config.peers.contains(&source) {
            self.lock().sync_rejected += 1;
            return;
        }
        let records = match wire.decode(data) {
            Ok((sent_us, r)) => {
                let lag = advert::micros(SystemTime::now()).saturating_sub(sent_us);
                self.lock().sync_lag_ms = Some(lag as f64 / 1000.0);
                r
            }
            Err(why) => {
                self.lock().sync_rejected += 1;
                debug!(%source, why, "flow sync datagram ignored");
                return;
            }
        };
        // An active node keeps its own table (two active nodes resolve soon).
        if self.election.role() == Role::Active {
            return;
        }
        let mut applied = sync::Applied::default();
        sink.apply(&records, &mut applied);
        let mut s = self.lock();
        s.sync_installed += applied.installed;
        s.sync_closed += applied.closed;
        s.sync_unmatched += applied.unmatched;
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
            role: self.election.role(),
            priority,
            seq: advert::micros(SystemTime::now()),
            digest: inputs.digest,
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

    fn receive(&mut self, data: &[u8], from: SocketAddr, inputs: &Inputs) {
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
        self.lock().adverts_received += 1;
        let splits = self.election.split_brains;
        let priority = self.effective(inputs);
        let changed = self.election.on_advert(&advert, priority, Instant::now());
        if self.election.split_brains > splits {
            self.lock().split_brains = self.election.split_brains;
            warn!(target: crate::events::TARGET, event = "ha_split_brain", peer = %advert.node, "both nodes active");
        }
        if let Some(t) = changed {
            self.apply(t, inputs);
        }
        self.update_status(priority, inputs);
    }

    fn apply(&mut self, mut t: Transition, inputs: &Inputs) {
        if t.reason.starts_with("fault") {
            let mut why = inputs.faults.clone();
            if self.watchdog_expired() {
                why.push("the daemon loop is not responding".into());
            }
            if !why.is_empty() {
                t.reason = format!("{}: {}", t.reason, why.join("; "));
            }
        }
        info!(
            target: crate::events::TARGET,
            event = "ha_transition",
            from = t.from.as_str(),
            to = t.to.as_str(),
            cause = t.cause,
            reason = %t.reason,
            "HA role {} -> {}",
            t.from.as_str(),
            t.to.as_str()
        );
        {
            let mut s = self.lock();
            *s.transitions
                .entry(format!("{}|{}|{}", t.from.as_str(), t.to.as_str(), t.cause))
                .or_default() += 1;
            s.role = t.to.as_str().into();
            s.last_transition = Some(TransitionStatus {
                at_unix: advert::micros(SystemTime::now()) / 1_000_000,
                from: t.from.as_str().into(),
                to: t.to.as_str().into(),
                reason: t.reason.clone(),
            });
        }
        if t.to == Role::Active {
            self.lease.renew();
            self.owned.clear();
            self.refresh_addresses(inputs);
            self.announce_left = ANNOUNCE_REPEATS;
            self.announce();
        } else {
            self.lease.expire();
            self.floating.undo();
            self.owned.clear();
        }
    }

    /// While active: own exactly the addresses of the running configuration.
    fn refresh_addresses(&mut self, inputs: &Inputs) {
        if self.election.role() != Role::Active {
            return;
        }
        if self.owned != inputs.addresses {
            if let Err(e) = self
                .floating
                .ensure_local(&inputs.addresses, &self.interfaces)
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
                self.announce_one(ip);
            }
        }
        if self.announce_left > 0 {
            self.announce_left -= 1;
            self.announce();
        }
    }

    fn announce(&self) {
        for ip in &self.owned {
            self.announce_one(*ip);
        }
    }

    fn announce_one(&self, ip: IpAddr) {
        match crate::netconf::interface_of(ip) {
            Ok(Some(interface)) => {
                if let Err(e) = announce::announce(&interface, ip) {
                    warn!(%ip, %interface, "announcing: {e:#}");
                }
            }
            Ok(None) => warn!(%ip, "no interface holds the address to announce"),
            Err(e) => warn!(%ip, "finding the address's interface: {e:#}"),
        }
    }

    fn update_status(&self, priority: u8, inputs: &Inputs) {
        let now = Instant::now();
        let peers = self
            .election
            .peers()
            .iter()
            .map(|(name, p)| PeerStatus {
                node: name.clone(),
                role: p.role.as_str().into(),
                priority: p.priority,
                alive: self.election.alive(p, now),
                last_heard_ms: now.saturating_duration_since(p.last_heard).as_millis() as u64,
            })
            .collect();
        let mut conditions = inputs.faults.clone();
        conditions.extend(inputs.penalty_reasons.iter().cloned());
        if self.watchdog_expired() {
            conditions.push("the daemon loop is not responding".into());
        }
        let mut s = self.lock();
        s.effective_priority = priority;
        s.peers = peers;
        s.conditions = conditions;
        s.role = self.election.role().as_str().into();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HaStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ms() -> u64 {
    advert::micros(SystemTime::now()) / 1000
}

/// The next drain of the flow-event ring, or never without sync.
async fn drain_tick(t: Option<&mut tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
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
