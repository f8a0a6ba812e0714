//! The flow sync on a thread of its own, beside the HA thread: a bulk copy
//! of a million flows (batch reads of the table, thousands of datagrams, the
//! table counted when a copy starts) must never hold up an advert, a takeover
//! or the lease, which would make a standby take a live peer for dead. The
//! HA thread says what this node does (send, receive, which copies it wants)
//! and reads what the sync holds; nothing waits on the other.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use super::{FlowSync, SyncCounters, bulk::Owners};
use crate::api::SyncCopy;

/// How often the flow-event ring is drained into datagrams: a peer lags by
/// at most this (plus the network), and the thread wakes up 200 times a
/// second instead of once per flow.
const LINGER: Duration = Duration::from_millis(5);
/// How often a receiving node reports what it holds of its peers' streams.
const REPORT: Duration = Duration::from_millis(20);

/// What the node does with its flows now (the HA thread decides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// Sends its own flows to its peers.
    pub sending: bool,
    /// Installs its peers' flows.
    pub receiving: bool,
    /// The peers (by name) whose whole table it must hold.
    pub want_copies: Vec<String>,
}

enum Command {
    ForgetCopies,
    Adopted { owner: u32, peer: String },
}

/// What the sync holds, for the HA thread's decisions and the status.
#[derive(Debug, Clone, Default)]
struct Held {
    copies: BTreeMap<String, SyncCopy>,
    counters: SyncCounters,
}

/// How the sync is opened (see [`FlowSync::open`]).
pub struct Settings {
    pub name: String,
    pub key: Vec<u8>,
    pub peers: Vec<IpAddr>,
    pub pin_dir: PathBuf,
    pub bulk_rate: u32,
    pub max_age: Duration,
    pub owners: Owners,
}

pub struct SyncThread {
    role: watch::Sender<Role>,
    commands: mpsc::UnboundedSender<Command>,
    held: Arc<Mutex<Held>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SyncThread {
    /// Opens the sync on its thread; returns once it runs, or why it could
    /// not (the port taken, the maps not there).
    pub fn start(settings: Settings) -> Result<Self> {
        let (role_tx, role_rx) = watch::channel(Role::default());
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let held = Arc::new(Mutex::new(Held::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = held.clone();
        let thread = std::thread::Builder::new()
            .name("ha-sync".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(anyhow::anyhow!("a runtime for the flow sync: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let s = settings;
                    let sync = FlowSync::open(
                        &s.name,
                        s.key,
                        &s.peers,
                        &s.pin_dir,
                        s.bulk_rate,
                        s.max_age,
                        s.owners,
                    );
                    match sync {
                        Ok(sync) => {
                            let _ = ready_tx.send(Ok(()));
                            run(sync, role_rx, commands_rx, stop_rx, shared).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .context("the flow sync thread ended before it started")??;
        Ok(Self {
            role: role_tx,
            commands: commands_tx,
            held,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn set_role(&self, role: Role) {
        self.role.send_if_modified(|old| {
            let changed = *old != role;
            *old = role;
            changed
        });
    }

    /// This node's copy of each peer's table, by peer name (or address
    /// until its name is known).
    pub fn copies(&self) -> BTreeMap<String, SyncCopy> {
        self.held().copies.clone()
    }

    /// This node's copy of the table of `peer` (a name).
    pub fn copy_of(&self, peer: &str) -> SyncCopy {
        self.held()
            .copies
            .get(peer)
            .cloned()
            .unwrap_or(SyncCopy::None)
    }

    pub fn counters(&self) -> SyncCounters {
        self.held().counters.clone()
    }

    /// See [`FlowSync::forget_copies`]. What the HA thread reads next says
    /// so at once, not after the sync thread got to it.
    pub fn forget_copies(&self) {
        for copy in self.held().copies.values_mut() {
            *copy = SyncCopy::None;
        }
        let _ = self.commands.send(Command::ForgetCopies);
    }

    /// See [`FlowSync::adopted`].
    pub fn adopted(&self, owner: u32, peer: &str) {
        let _ = self.commands.send(Command::Adopted {
            owner,
            peer: peer.to_string(),
        });
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SyncThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    mut sync: FlowSync,
    mut role: watch::Receiver<Role>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: oneshot::Receiver<()>,
    held: Arc<Mutex<Held>>,
) {
    let mut pump = tokio::time::interval(LINGER);
    pump.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(REPORT);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = pump.tick() => {
                let sending = role.borrow().sending;
                sync.pump(sending).await;
            }
            _ = report.tick() => {
                let want = role.borrow().want_copies.clone();
                sync.report(&want).await;
            }
            received = sync.recv() => match received {
                Ok((n, from)) => {
                    let (sending, receiving) = {
                        let r = role.borrow();
                        (r.sending, r.receiving)
                    };
                    sync.receive(n, from, sending, receiving).await;
                }
                Err(e) => debug!("flow sync receive: {e}"),
            },
            Some(command) = commands.recv() => match command {
                Command::ForgetCopies => sync.forget_copies(),
                Command::Adopted { owner, peer } => sync.adopted(owner, &peer),
            },
            changed = role.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = &mut stop => break,
        }
        let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
        h.copies = sync.copies();
        h.counters.clone_from(&sync.counters);
    }
}
