//! Flow-state sync between HA nodes. Each node's kernel puts every flow it
//! opens and every flow that ends in `FLOW_EVENTS` ([`source`]); a node that
//! serves sends its own flows to every peer over a reliable, ordered stream
//! ([`stream`], datagrams of [`wire`]) and, when a peer asks or its copy
//! has a hole that resending cannot fill, a bulk copy of its whole table
//! ([`bulk`]) at a bounded rate. A node that receives installs the peer's
//! flows in its own maps, owned by that peer ([`sink`]): they never expire
//! there by idleness, and a takeover adopts them.
//!
//! Active-standby: the active node sends, the others receive; a node keeps
//! asking the active one for a bulk copy until it holds a complete one.
//! Active-active: every node sends its own flows to every peer and receives
//! theirs, and asks each live peer for a bulk copy; a node that adopts a dead
//! peer's flows sends them all again as its own, so that the others learn
//! whose they are now.

pub mod bulk;
pub mod sink;
pub mod source;
pub mod stream;
pub mod thread;
pub mod wire;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use balancer_common::flow::node_id;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

pub use wire::PORT;

use self::{
    bulk::{Bulk, Owners},
    sink::{Applied, Sink},
    source::Source,
    stream::{Receiver, Sender},
    wire::{Codec, Envelope, Message, Record, Refused},
};
use super::advert::micros;
use crate::{api::SyncCopy as Copy, events::TARGET};

/// How often each peer hears where this node's stream is, and is asked
/// again for a bulk copy it still lacks.
const POSITION_EVERY: Duration = Duration::from_millis(100);
const BULK_REQUEST_EVERY: Duration = Duration::from_secs(1);
/// A bulk copy asked for again within this is not started over.
const BULK_RESTART_AFTER: Duration = Duration::from_secs(5);
/// Datagrams a peer may leave unacknowledged before the bulk copy to it
/// waits: a standby that cannot keep up slows the copy down instead of
/// overflowing its socket and losing what is then resent (or, past the
/// resend window, copied all over again).
const BULK_IN_FLIGHT: usize = stream::WINDOW / 4;
/// A peer heard from within this is alive to the sync: an overflow or an
/// adoption sends bulk copies only to such peers.
const PEER_HEARD: Duration = Duration::from_secs(3);
/// The sync socket's receive buffer: a burst of a bulk copy (a few thousand
/// datagrams) fits, so the first loss is not the buffer's.
const RECEIVE_BUFFER: usize = 16 << 20;

/// A data body as the sender keeps it: the encoded records and their count.
type Encoded = (Vec<u8>, u16);

/// Counters of the sync, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncCounters {
    /// Flow records sent (live and bulk).
    pub sent: u64,
    pub installed: u64,
    pub closed: u64,
    pub unmatched: u64,
    /// Datagrams sent again because a peer said it lacked them.
    pub retransmitted: u64,
    /// Bulk copies started for a peer, and the flows they carried.
    pub bulks_sent: u64,
    pub bulk_flows_sent: u64,
    /// Times this node's copy of a peer's table had a hole resending could
    /// not fill (a bulk copy then repairs it).
    pub copies_lost: u64,
    /// Datagrams refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Age of the last data datagram when it arrived, by the sender's clock.
    pub lag_ms: Option<f64>,
}

struct Peer {
    name: Option<String>,
    /// This node's stream to the peer.
    tx: Sender<Encoded>,
    last_position: Option<Instant>,
    bulk: Option<Bulk>,
    bulk_started: Option<Instant>,
    /// The peer's stream to this node, and the run of the peer it belongs to.
    rx: Receiver<Vec<Record>>,
    rx_session: Option<u64>,
    copy: Copy,
    copy_since: Option<Instant>,
    last_bulk_request: Option<Instant>,
    /// The last good datagram from it.
    last_heard: Option<Instant>,
}

impl Peer {
    fn new() -> Self {
        Self {
            name: None,
            tx: Sender::new(),
            last_position: None,
            bulk: None,
            bulk_started: None,
            rx: Receiver::new(),
            rx_session: None,
            copy: Copy::None,
            copy_since: None,
            last_bulk_request: None,
            last_heard: None,
        }
    }
}

pub struct FlowSync {
    socket: UdpSocket,
    codec: Codec,
    source: Source,
    sink: Sink,
    peers: BTreeMap<IpAddr, Peer>,
    /// Flow changes drained from the kernel, not sent yet.
    live: Vec<Record>,
    /// Flows per second a bulk copy sends at most, to each peer.
    bulk_rate: u32,
    /// Whose flows a bulk copy sends.
    owners: Owners,
    last_pump: Instant,
    next_bulk_id: u32,
    pub counters: SyncCounters,
    buf: Vec<u8>,
}

impl FlowSync {
    /// Binds the sync port and opens the pinned maps. `max_age`: how old a
    /// datagram may be by its sender's clock.
    pub fn open(
        name: &str,
        key: Vec<u8>,
        peers: &[IpAddr],
        pin_dir: &Path,
        bulk_rate: u32,
        max_age: Duration,
        owners: Owners,
    ) -> Result<Self> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            PORT,
        ))
        .map_err(|e| anyhow::anyhow!("binding the flow sync port {PORT}: {e}"))?;
        socket.set_nonblocking(true)?;
        receive_buffer(&socket, RECEIVE_BUFFER);
        let session = micros(SystemTime::now());
        Ok(Self {
            socket: UdpSocket::from_std(socket)?,
            codec: Codec::new(key, name, session, max_age),
            source: Source::open(pin_dir)?,
            sink: Sink::open(pin_dir, matches!(owners, Owners::All))?,
            peers: peers.iter().map(|p| (*p, Peer::new())).collect(),
            live: Vec::new(),
            bulk_rate: bulk_rate.max(1),
            owners,
            last_pump: Instant::now(),
            next_bulk_id: 1,
            counters: SyncCounters::default(),
            buf: vec![0u8; 65536],
        })
    }

    /// The next datagram for this node.
    pub async fn recv(&mut self) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(&mut self.buf).await
    }

    /// This node's copy of each peer's table, by peer name (or address
    /// until its name is known).
    pub fn copies(&self) -> BTreeMap<String, Copy> {
        self.peers
            .iter()
            .map(|(addr, p)| {
                (
                    p.name.clone().unwrap_or_else(|| addr.to_string()),
                    p.copy.clone(),
                )
            })
            .collect()
    }

    /// This node's copy of the table of `peer` (a name).
    pub fn copy_of(&self, peer: &str) -> Copy {
        self.peers
            .values()
            .find(|p| p.name.as_deref() == Some(peer))
            .map_or(Copy::None, |p| p.copy.clone())
    }

    /// Drains the kernel's flow changes and, when `sending`, sends them and
    /// the next part of any bulk copy; with nothing to send, the peers still
    /// hear where the stream is.
    pub async fn pump(&mut self, sending: bool) {
        self.source.drain(&mut self.live);
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_pump);
        self.last_pump = now;
        if !sending {
            self.live.clear();
            for p in self.peers.values_mut() {
                p.bulk = None;
            }
            return;
        }
        if self.source.overflowed() {
            // Changes were dropped before this thread saw them: only a new
            // copy of the table brings them to the peers.
            warn!(target: TARGET, event = "ha_sync_overflow", "the kernel's flow-change ring overflowed; every live peer gets a bulk copy");
            for addr in self.live_peers(now) {
                self.start_bulk(addr, "the flow-change ring overflowed");
            }
        }
        let live = std::mem::take(&mut self.live);
        let budget =
            (u128::from(self.bulk_rate) * elapsed.as_micros() / 1_000_000).clamp(1, 65536) as usize;
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            let mut records = live.clone();
            let peer = self.peers.get_mut(&addr).expect("listed");
            let in_flight = peer.tx.unacked();
            if let Some(bulk) = peer.bulk.as_mut().filter(|_| in_flight < BULK_IN_FLIGHT) {
                match bulk.next(budget) {
                    Ok(more) => {
                        let flows = more.iter().filter(|r| matches!(r, Record::Flow(_))).count();
                        self.counters.bulk_flows_sent += flows as u64;
                        records.extend(more);
                    }
                    Err(e) => {
                        warn!(peer = %addr, "reading the flow table for a bulk copy: {e:#}");
                        peer.bulk = None;
                    }
                }
                if peer.bulk.as_ref().is_some_and(Bulk::finished) {
                    let b = peer.bulk.take().expect("checked");
                    info!(target: TARGET, event = "ha_sync_bulk_sent", peer = %addr, flows = b.sent, "sent a bulk copy of the flow table");
                }
            }
            self.send_records(addr, &records).await;
        }
        self.positions(now).await;
    }

    /// Sends `records` to the peer at `addr` on its stream.
    async fn send_records(&mut self, addr: IpAddr, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        let flows = records
            .iter()
            .filter(|r| !matches!(r, Record::BulkBegin { .. } | Record::BulkEnd { .. }))
            .count();
        self.counters.sent += flows as u64;
        for (body, count) in wire::encode_records(records, self.codec.data_room()) {
            let peer = self.peers.get_mut(&addr).expect("listed");
            let seq = peer.tx.push((body.clone(), count));
            let datagram = self
                .codec
                .data(micros(SystemTime::now()), seq, &body, count);
            send(&self.socket, addr, &datagram).await;
        }
    }

    /// Tells each peer where this node's stream is, now and then, so that a
    /// lost tail shows.
    async fn positions(&mut self, now: Instant) {
        let due: Vec<(IpAddr, u64, u64)> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| {
                p.last_position
                    .is_none_or(|t| now.duration_since(t) >= POSITION_EVERY)
            })
            .map(|(addr, p)| {
                p.last_position = Some(now);
                (*addr, p.tx.last(), p.tx.oldest())
            })
            .collect();
        for (addr, last, oldest) in due {
            let datagram = self.codec.position(micros(SystemTime::now()), last, oldest);
            send(&self.socket, addr, &datagram).await;
        }
    }

    /// Reports what this node holds of each peer's stream, and asks the
    /// peers in `want_copies` (by name) for a bulk copy while it holds none.
    pub async fn report(&mut self, want_copies: &[String]) {
        let now = Instant::now();
        let mut out = Vec::new();
        for (addr, p) in &mut self.peers {
            if let (Some(stream), Some((upto, gaps))) = (p.rx_session, p.rx.report(now)) {
                let ack = self
                    .codec
                    .ack(micros(SystemTime::now()), stream, upto, &gaps);
                out.push((*addr, ack));
            }
            let wanted = p.name.as_ref().is_some_and(|n| want_copies.contains(n));
            if wanted
                && p.copy == Copy::None
                && p.last_bulk_request
                    .is_none_or(|t| now.duration_since(t) >= BULK_REQUEST_EVERY)
            {
                p.last_bulk_request = Some(now);
                debug!(peer = %addr, "asking for a bulk copy of the flow table");
                out.push((*addr, self.codec.bulk_request(micros(SystemTime::now()))));
            }
        }
        for (addr, datagram) in out {
            send(&self.socket, addr, &datagram).await;
        }
    }

    /// A datagram received into the buffer (`n` bytes from `from`). With
    /// `receiving`, a peer's flows are installed here.
    pub async fn receive(&mut self, n: usize, from: SocketAddr, sending: bool, receiving: bool) {
        let source = from.ip().to_canonical();
        if !self.peers.contains_key(&source) {
            *self
                .counters
                .rejected
                .entry("unknown_sender".into())
                .or_default() += 1;
            return;
        }
        let now_us = micros(SystemTime::now());
        let envelope = match self.codec.decode(&self.buf[..n], now_us) {
            Ok(e) => e,
            Err(why) => {
                *self
                    .counters
                    .rejected
                    .entry(why.reason().into())
                    .or_default() += 1;
                if matches!(why, Refused::Version(_) | Refused::Layout(_)) {
                    warn!(target: TARGET, event = "ha_sync_refused", peer = %source, reason = %why, "flow sync from a peer of another version refused: its flows are not installed here");
                } else {
                    debug!(peer = %source, reason = %why, "flow sync datagram ignored");
                }
                return;
            }
        };
        let Envelope {
            node,
            session,
            sent_us,
            message,
        } = envelope;
        let peer = self.peers.get_mut(&source).expect("checked");
        peer.name.get_or_insert_with(|| node.clone());
        peer.last_heard = Some(Instant::now());
        match message {
            Message::Data { seq, records } => {
                self.counters.lag_ms = Some(now_us.saturating_sub(sent_us) as f64 / 1000.0);
                if !receiving {
                    return;
                }
                self.new_session_of(source, &node, session);
                let peer = self.peers.get_mut(&source).expect("checked");
                let delivered = peer.rx.on_data(seq, records);
                self.deliver(source, &node, delivered);
            }
            Message::Position { last, oldest } => {
                if !receiving {
                    return;
                }
                self.new_session_of(source, &node, session);
                let peer = self.peers.get_mut(&source).expect("checked");
                let delivered = peer.rx.on_position(last, oldest);
                self.deliver(source, &node, delivered);
            }
            Message::Ack { stream, upto, gaps } => {
                if stream != self.codec.session() {
                    // About a stream of an earlier run of this node.
                    return;
                }
                let peer = self.peers.get_mut(&source).expect("checked");
                match peer.tx.on_ack(upto, &gaps) {
                    Ok(again) => {
                        let again: Vec<(u64, Encoded)> =
                            again.into_iter().map(|(s, b)| (s, b.clone())).collect();
                        self.counters.retransmitted += again.len() as u64;
                        for (seq, (body, count)) in again {
                            let datagram =
                                self.codec
                                    .data(micros(SystemTime::now()), seq, &body, count);
                            send(&self.socket, source, &datagram).await;
                        }
                    }
                    Err(stream::OutOfWindow) => {
                        // Once per copy: the acknowledgements that follow
                        // name the same old gap until the new copy repairs it.
                        let copying = peer.bulk.is_some()
                            && peer
                                .bulk_started
                                .is_some_and(|t| t.elapsed() < BULK_RESTART_AFTER);
                        if sending && !copying {
                            self.start_bulk(source, "what it lacks left the resend window");
                        }
                    }
                }
            }
            Message::BulkRequest => {
                if sending {
                    let recent = peer
                        .bulk_started
                        .is_some_and(|t| t.elapsed() < BULK_RESTART_AFTER && peer.bulk.is_some());
                    if !recent {
                        self.start_bulk(source, "it asked for one");
                    }
                }
            }
        }
    }

    /// A run of the peer this node has not seen yet: what it held of the
    /// previous one says nothing about this one.
    fn new_session_of(&mut self, addr: IpAddr, node: &str, session: u64) {
        let peer = self.peers.get_mut(&addr).expect("listed");
        if peer.rx_session == Some(session) {
            return;
        }
        if peer.rx_session.is_some() {
            info!(target: TARGET, event = "ha_sync_copy", peer = node, state = "none", reason = "the peer restarted", "the copy of the peer's flow table starts over");
        }
        peer.rx_session = Some(session);
        peer.rx = Receiver::new();
        peer.copy = Copy::None;
        peer.last_bulk_request = None;
    }

    /// Applies records now in order, and follows the bulk copy's marks.
    fn deliver(&mut self, addr: IpAddr, node: &str, delivered: stream::Delivered<Vec<Record>>) {
        let owner = node_id(node.as_bytes());
        let peer = self.peers.get_mut(&addr).expect("listed");
        if delivered.lost {
            self.counters.copies_lost += 1;
            warn!(target: TARGET, event = "ha_sync_copy", peer = node, state = "none", reason = "lost datagrams could not be resent", "the copy of the peer's flow table has a hole; asking for a bulk copy");
            peer.copy = Copy::None;
            peer.last_bulk_request = None;
        }
        let mut applied = Applied::default();
        for records in delivered.bodies {
            for r in &records {
                match *r {
                    Record::BulkBegin { expected, .. } => {
                        info!(target: TARGET, event = "ha_sync_copy", peer = node, state = "in_progress", expected, "a bulk copy of the peer's flow table begins");
                        peer.copy = Copy::InProgress {
                            expected,
                            received: 0,
                        };
                        peer.copy_since = Some(Instant::now());
                    }
                    Record::BulkEnd { sent, .. } => {
                        if matches!(peer.copy, Copy::InProgress { .. }) {
                            let took_ms = peer
                                .copy_since
                                .map_or(0, |t| t.elapsed().as_millis() as u64);
                            info!(target: TARGET, event = "ha_sync_copy", peer = node, state = "complete", flows = sent, took_ms, "the copy of the peer's flow table is complete");
                            peer.copy = Copy::Complete {
                                flows: sent,
                                took_ms,
                            };
                        }
                    }
                    Record::Flow(_) => {
                        if let Copy::InProgress { received, .. } = &mut peer.copy {
                            *received += 1;
                        }
                    }
                    Record::Closed { .. } => {}
                }
            }
            self.sink.apply(owner, &records, &mut applied);
        }
        self.counters.installed += applied.installed;
        self.counters.closed += applied.closed;
        self.counters.unmatched += applied.unmatched;
    }

    /// This node just became a standby (it started, or stepped down): what it
    /// holds of any peer's table is not known to be whole, and its own flows
    /// must become the new active node's. Every copy starts over with a bulk
    /// copy.
    pub fn forget_copies(&mut self) {
        for p in self.peers.values_mut() {
            p.copy = Copy::None;
            p.last_bulk_request = None;
        }
    }

    /// Active-active: this node adopted the flows of the peer whose node id
    /// is `owner` (it died or left). Every peer gets them again, now as this
    /// node's, in a bulk copy.
    pub fn adopted(&mut self, owner: u32, peer: &str) {
        if let Owners::Own { adopted } = &mut self.owners
            && !adopted.contains(&owner)
        {
            adopted.push(owner);
        }
        for addr in self.live_peers(Instant::now()) {
            self.start_bulk(addr, &format!("it adopted the flows of {peer}"));
        }
    }

    /// The peers heard from lately.
    fn live_peers(&self, now: Instant) -> Vec<IpAddr> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) < PEER_HEARD)
            })
            .map(|(addr, _)| *addr)
            .collect()
    }

    /// Starts (over) a bulk copy of this node's flows to the peer at `addr`.
    fn start_bulk(&mut self, addr: IpAddr, why: &str) {
        let fd = match self.sink.flows_fd() {
            Ok(fd) => fd,
            Err(e) => {
                warn!(peer = %addr, "a bulk copy needs the flow table: {e}");
                return;
            }
        };
        let expected = self.sink.flows_in_bulk(&self.owners);
        let id = self.next_bulk_id;
        self.next_bulk_id = self.next_bulk_id.wrapping_add(1);
        let peer = self.peers.get_mut(&addr).expect("listed");
        info!(target: TARGET, event = "ha_sync_bulk", peer = %addr, flows = expected, why, "starting a bulk copy of the flow table");
        peer.bulk = Some(Bulk::new(id, fd, expected, self.owners.clone()));
        peer.bulk_started = Some(Instant::now());
        self.counters.bulks_sent += 1;
    }
}

/// Asks for a receive buffer of `bytes`: past `net.core.rmem_max` with
/// CAP_NET_ADMIN (SO_RCVBUFFORCE), else as much as that allows.
fn receive_buffer(socket: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value of its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    debug!("the flow sync socket keeps its default receive buffer");
}

async fn send(socket: &UdpSocket, to: IpAddr, datagram: &[u8]) {
    if let Err(e) = socket.send_to(datagram, super::peer_socket(to, PORT)).await {
        debug!(peer = %to, "flow sync send: {e}");
    }
}
