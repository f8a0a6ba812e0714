//! The flow-sync datagrams (UDP port [`PORT`]), authenticated with
//! HMAC-SHA256 under the HA key. Big-endian throughout:
//!
//! `"LBSY"` | version u8 | kind u8 | record layout u16 | name length u8 |
//! name | session u64 | sent µs u64 | body | HMAC-SHA256 of all before [32]
//!
//! - `session`: the sender's run (its start time in µs): sequence numbers
//!   start again at 1 in each, and a new one means the receiver's copy of the
//!   sender's table must be rebuilt.
//! - `sent`: the sender's clock; a datagram older than the replay window is
//!   refused (keep the nodes' clocks within it with NTP).
//! - record layout: [`RECORD_LAYOUT`]; a peer that writes records of another
//!   layout is refused, never misread.
//!
//! Bodies by kind:
//! - [`Kind::Data`]: sequence u64 | records u16 | records ([`Record`]).
//! - [`Kind::Ack`]: the session of the stream acknowledged u64 | every
//!   sequence up to u64 received | gaps u16 | gaps (first u64, last u64),
//!   each missing.
//! - [`Kind::Position`]: last sequence sent u64 | oldest still held u64, so
//!   that a receiver learns of a loss at the tail and of what cannot be
//!   repaired any more.
//! - [`Kind::BulkRequest`]: empty: "send me your whole table".

use std::{collections::HashMap, time::Duration};

use balancer_common::{FAMILY_V6, RawAddr, flow::SyncEvent};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ha::advert::MAX_NAME;

/// UDP port of the flow sync.
pub const PORT: u16 = super::super::advert::PORT + 1;
const MAGIC: &[u8; 4] = b"LBSY";
/// The datagram format. 1 was the unsequenced sync before reliable delivery.
pub const VERSION: u8 = 2;
/// The layout of [`Record`]s on the wire: bumped when a record carries more
/// (a field a flow's forwarding needs), so that nodes of different versions
/// refuse each other's records instead of installing half a flow.
pub const RECORD_LAYOUT: u16 = 2;
const MAC_LEN: usize = 32;
/// Datagrams stay under this, below any path MTU between balancer hosts.
pub const MAX_DATAGRAM: usize = 1400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data = 1,
    Ack = 2,
    Position = 3,
    BulkRequest = 4,
}

impl Kind {
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Position,
            4 => Kind::BulkRequest,
            _ => return None,
        })
    }
}

/// A message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Data {
        seq: u64,
        records: Vec<Record>,
    },
    Ack {
        stream: u64,
        upto: u64,
        gaps: Vec<(u64, u64)>,
    },
    Position {
        last: u64,
        oldest: u64,
    },
    BulkRequest,
}

/// A datagram's envelope, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub node: String,
    pub session: u64,
    pub sent_us: u64,
    pub message: Message,
}

/// A flow of the sender's own (it opened it, or adopted it), as it forwards
/// it: the receiver installs both directions of it exactly so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub family: u8,
    pub proto: u8,
    pub state: u8,
    pub client: RawAddr,
    pub client_port_be: u16,
    pub vip: RawAddr,
    pub vip_port_be: u16,
    /// The source towards the backend: the SNAT address and port (DNAT: the
    /// client's).
    pub snat: RawAddr,
    pub snat_port_be: u16,
    pub backend: RawAddr,
    pub backend_port_be: u16,
    /// Sequence translation of a SYN-proxied flow (0 otherwise): the
    /// flow entries' `seq_delta`, `isn_delta` and `proxy` words.
    pub seq_delta: u32,
    pub isn_delta: u32,
    pub proxy: u32,
}

/// One change of the sender's flow table, or a mark in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A flow to install (new, or part of a bulk copy).
    Flow(Flow),
    /// A flow ended: the reply key (backend to SNAT source).
    Closed {
        family: u8,
        proto: u8,
        backend: RawAddr,
        backend_port_be: u16,
        snat: RawAddr,
        snat_port_be: u16,
    },
    /// A bulk copy of the whole table starts: about `expected` flows follow.
    BulkBegin { id: u32, expected: u64 },
    /// It ended after `sent` flows.
    BulkEnd { id: u32, sent: u64 },
}

const REC_FLOW: u8 = 1;
const REC_CLOSED: u8 = 2;
const REC_BULK_BEGIN: u8 = 3;
const REC_BULK_END: u8 = 4;

impl Record {
    /// A change the kernel reported (`FLOW_EVENTS`).
    pub fn from_event(e: &SyncEvent) -> Option<Self> {
        use balancer_common::flow::{SYNC_CLOSED, SYNC_NEW};
        match e.kind {
            SYNC_NEW => Some(Record::Flow(Flow {
                family: e.key.family,
                proto: e.key.proto,
                state: e.value.state,
                client: e.key.src,
                client_port_be: e.key.sport_be,
                vip: e.key.dst,
                vip_port_be: e.key.dport_be,
                snat: e.value.new_src,
                snat_port_be: e.value.new_sport_be,
                backend: e.value.new_dst,
                backend_port_be: e.value.new_dport_be,
                seq_delta: e.value.seq_delta,
                isn_delta: e.value.isn_delta,
                proxy: e.value.proxy,
            })),
            SYNC_CLOSED => Some(Record::Closed {
                family: e.key.family,
                proto: e.key.proto,
                backend: e.key.src,
                backend_port_be: e.key.sport_be,
                snat: e.key.dst,
                snat_port_be: e.key.dport_be,
            }),
            _ => None,
        }
    }

    /// Bytes on the wire, its kind byte included.
    pub fn wire_len(&self) -> usize {
        1 + match self {
            Record::Flow(_) => 4 + 4 * 18 + 12,
            Record::Closed { .. } => 2 + 2 * 18,
            Record::BulkBegin { .. } | Record::BulkEnd { .. } => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let addr = |out: &mut Vec<u8>, a: &RawAddr, port_be: u16| {
            for w in a {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&port_be.to_ne_bytes());
        };
        match self {
            Record::Flow(f) => {
                out.extend_from_slice(&[REC_FLOW, f.family, f.proto, f.state, 0]);
                addr(out, &f.client, f.client_port_be);
                addr(out, &f.vip, f.vip_port_be);
                addr(out, &f.snat, f.snat_port_be);
                addr(out, &f.backend, f.backend_port_be);
                out.extend_from_slice(&f.seq_delta.to_be_bytes());
                out.extend_from_slice(&f.isn_delta.to_be_bytes());
                out.extend_from_slice(&f.proxy.to_be_bytes());
            }
            Record::Closed {
                family,
                proto,
                backend,
                backend_port_be,
                snat,
                snat_port_be,
            } => {
                out.extend_from_slice(&[REC_CLOSED, *family, *proto]);
                addr(out, backend, *backend_port_be);
                addr(out, snat, *snat_port_be);
            }
            Record::BulkBegin { id, expected } => {
                out.push(REC_BULK_BEGIN);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&expected.to_be_bytes());
            }
            Record::BulkEnd { id, sent } => {
                out.push(REC_BULK_END);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&sent.to_be_bytes());
            }
        }
    }

    /// One record from the front of `b`, and what follows it.
    fn read(b: &[u8]) -> Option<(Self, &[u8])> {
        let (&kind, rest) = b.split_first()?;
        let addr = |b: &[u8], o: usize| -> (RawAddr, u16) {
            let w = |i: usize| u32::from_ne_bytes(b[o + i * 4..o + i * 4 + 4].try_into().unwrap());
            (
                [w(0), w(1), w(2), w(3)],
                u16::from_ne_bytes([b[o + 16], b[o + 17]]),
            )
        };
        let family_ok = |f: u8| f == balancer_common::FAMILY_V4 || f == FAMILY_V6;
        let record = match kind {
            REC_FLOW => {
                let body = rest.get(..4 + 4 * 18 + 12)?;
                if !family_ok(body[0]) {
                    return None;
                }
                let (client, client_port_be) = addr(body, 4);
                let (vip, vip_port_be) = addr(body, 22);
                let (snat, snat_port_be) = addr(body, 40);
                let (backend, backend_port_be) = addr(body, 58);
                Record::Flow(Flow {
                    family: body[0],
                    proto: body[1],
                    state: body[2],
                    client,
                    client_port_be,
                    vip,
                    vip_port_be,
                    snat,
                    snat_port_be,
                    backend,
                    backend_port_be,
                    seq_delta: u32::from_be_bytes(body[76..80].try_into().unwrap()),
                    isn_delta: u32::from_be_bytes(body[80..84].try_into().unwrap()),
                    proxy: u32::from_be_bytes(body[84..88].try_into().unwrap()),
                })
            }
            REC_CLOSED => {
                let body = rest.get(..2 + 2 * 18)?;
                if !family_ok(body[0]) {
                    return None;
                }
                let (backend, backend_port_be) = addr(body, 2);
                let (snat, snat_port_be) = addr(body, 20);
                Record::Closed {
                    family: body[0],
                    proto: body[1],
                    backend,
                    backend_port_be,
                    snat,
                    snat_port_be,
                }
            }
            REC_BULK_BEGIN | REC_BULK_END => {
                let body = rest.get(..12)?;
                let id = u32::from_be_bytes(body[..4].try_into().unwrap());
                let n = u64::from_be_bytes(body[4..12].try_into().unwrap());
                if kind == REC_BULK_BEGIN {
                    Record::BulkBegin { id, expected: n }
                } else {
                    Record::BulkEnd { id, sent: n }
                }
            }
            _ => return None,
        };
        Some((record, &b[record.wire_len()..]))
    }
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a flow-sync datagram of a form this node reads")]
    Malformed,
    #[error("bad authentication code (forged, or another key)")]
    Forged,
    #[error("sync format {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("flow records of layout {0}, this node's are layout {RECORD_LAYOUT}")]
    Layout(u16),
    #[error("sent {age_ms} ms ago by its clock (stale or replayed)")]
    Stale { age_ms: u64 },
}

impl Refused {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::Forged => "forged",
            Refused::Version(_) | Refused::Layout(_) => "version",
            Refused::Stale { .. } => "stale",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Encodes this node's datagrams and checks its peers'.
pub struct Codec {
    key: Vec<u8>,
    name: String,
    session: u64,
    /// The record layout written: this version's, but for a test's peer of
    /// another version ([`Codec::with_layout`]).
    layout: u16,
    max_age: Duration,
    /// The newest send time seen per (peer, session): control messages carry
    /// no sequence, so their freshness is what keeps a replay out.
    newest: HashMap<(String, u64), u64>,
}

impl Codec {
    pub fn new(key: Vec<u8>, name: &str, session: u64, max_age: Duration) -> Self {
        Self {
            key,
            name: name[..name.len().min(MAX_NAME)].to_string(),
            session,
            layout: RECORD_LAYOUT,
            max_age,
            newest: HashMap::new(),
        }
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// Writes records of layout `layout`, as a node of another version would
    /// (what the tests send to see such a peer refused).
    pub fn with_layout(mut self, layout: u16) -> Self {
        self.layout = layout;
        self
    }

    fn header(&self, kind: Kind, sent_us: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&self.layout.to_be_bytes());
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.session.to_be_bytes());
        out.extend_from_slice(&sent_us.to_be_bytes());
        out
    }

    fn seal(&self, mut out: Vec<u8>) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Room for records in a data datagram.
    pub fn data_room(&self) -> usize {
        MAX_DATAGRAM - (4 + 1 + 1 + 2 + 1 + self.name.len() + 8 + 8) - (8 + 2) - MAC_LEN
    }

    /// A data datagram of `records` (encoded by [`encode_records`]) under `seq`.
    pub fn data(&self, sent_us: u64, seq: u64, records: &[u8], count: u16) -> Vec<u8> {
        let mut out = self.header(Kind::Data, sent_us);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(records);
        self.seal(out)
    }

    pub fn ack(&self, sent_us: u64, stream: u64, upto: u64, gaps: &[(u64, u64)]) -> Vec<u8> {
        let mut out = self.header(Kind::Ack, sent_us);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&upto.to_be_bytes());
        // As many gaps as fit; the rest are asked for next time.
        let room = (MAX_DATAGRAM - out.len() - 2 - MAC_LEN) / 16;
        let gaps = &gaps[..gaps.len().min(room)];
        out.extend_from_slice(&(gaps.len() as u16).to_be_bytes());
        for (first, last) in gaps {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&last.to_be_bytes());
        }
        self.seal(out)
    }

    pub fn position(&self, sent_us: u64, last: u64, oldest: u64) -> Vec<u8> {
        let mut out = self.header(Kind::Position, sent_us);
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&oldest.to_be_bytes());
        self.seal(out)
    }

    pub fn bulk_request(&self, sent_us: u64) -> Vec<u8> {
        self.seal(self.header(Kind::BulkRequest, sent_us))
    }

    /// Checks and decodes a datagram received at `now_us`.
    pub fn decode(&mut self, data: &[u8], now_us: u64) -> Result<Envelope, Refused> {
        if data.len() < 9 + MAC_LEN || &data[..4] != MAGIC {
            return Err(Refused::Malformed);
        }
        let (body, tag) = data.split_at(data.len() - MAC_LEN);
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| Refused::Forged)?;
        if body[4] != VERSION {
            return Err(Refused::Version(body[4]));
        }
        let layout = u16::from_be_bytes([body[6], body[7]]);
        if layout != RECORD_LAYOUT {
            return Err(Refused::Layout(layout));
        }
        let kind = Kind::from_code(body[5]).ok_or(Refused::Malformed)?;
        let name_len = body[8] as usize;
        let rest = body.get(9..).ok_or(Refused::Malformed)?;
        let name = rest.get(..name_len).ok_or(Refused::Malformed)?;
        let node = String::from_utf8(name.to_vec()).map_err(|_| Refused::Malformed)?;
        let rest = &rest[name_len..];
        let fixed = rest.get(..16).ok_or(Refused::Malformed)?;
        let session = u64::from_be_bytes(fixed[..8].try_into().unwrap());
        let sent_us = u64::from_be_bytes(fixed[8..16].try_into().unwrap());
        let rest = &rest[16..];
        let age = now_us.saturating_sub(sent_us);
        if age > self.max_age.as_micros() as u64 {
            return Err(Refused::Stale { age_ms: age / 1000 });
        }
        let message = match kind {
            Kind::Data => {
                let seq = u64::from_be_bytes(
                    rest.get(..8).ok_or(Refused::Malformed)?.try_into().unwrap(),
                );
                let count = u16::from_be_bytes(
                    rest.get(8..10)
                        .ok_or(Refused::Malformed)?
                        .try_into()
                        .unwrap(),
                );
                let mut b = &rest[10..];
                let mut records = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (r, next) = Record::read(b).ok_or(Refused::Malformed)?;
                    records.push(r);
                    b = next;
                }
                if !b.is_empty() {
                    return Err(Refused::Malformed);
                }
                Message::Data { seq, records }
            }
            Kind::Ack => {
                let fixed = rest.get(..18).ok_or(Refused::Malformed)?;
                let stream = u64::from_be_bytes(fixed[..8].try_into().unwrap());
                let upto = u64::from_be_bytes(fixed[8..16].try_into().unwrap());
                let n = u16::from_be_bytes([fixed[16], fixed[17]]) as usize;
                let list = &rest[18..];
                if list.len() != n * 16 {
                    return Err(Refused::Malformed);
                }
                let gaps = list
                    .chunks_exact(16)
                    .map(|g| {
                        (
                            u64::from_be_bytes(g[..8].try_into().unwrap()),
                            u64::from_be_bytes(g[8..].try_into().unwrap()),
                        )
                    })
                    .collect();
                Message::Ack { stream, upto, gaps }
            }
            Kind::Position => {
                let b = rest.get(..16).ok_or(Refused::Malformed)?;
                if rest.len() != 16 {
                    return Err(Refused::Malformed);
                }
                Message::Position {
                    last: u64::from_be_bytes(b[..8].try_into().unwrap()),
                    oldest: u64::from_be_bytes(b[8..].try_into().unwrap()),
                }
            }
            Kind::BulkRequest => {
                if !rest.is_empty() {
                    return Err(Refused::Malformed);
                }
                Message::BulkRequest
            }
        };
        // Data is sequenced (the stream drops what it has); control messages
        // must be newer than the last one from the same run of the peer.
        if kind != Kind::Data {
            let newest = self.newest.entry((node.clone(), session)).or_insert(0);
            if sent_us <= *newest {
                return Err(Refused::Stale { age_ms: age / 1000 });
            }
            *newest = sent_us;
        }
        Ok(Envelope {
            node,
            session,
            sent_us,
            message,
        })
    }
}

/// Records packed into data bodies of at most `room` bytes each, in order:
/// (bytes, count) per datagram.
pub fn encode_records(records: &[Record], room: usize) -> Vec<(Vec<u8>, u16)> {
    let mut out = Vec::new();
    let mut body = Vec::with_capacity(room);
    let mut count = 0u16;
    for r in records {
        if body.len() + r.wire_len() > room && count > 0 {
            out.push((std::mem::take(&mut body), count));
            count = 0;
        }
        r.write(&mut body);
        count += 1;
    }
    if count > 0 {
        out.push((body, count));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000;

    fn flow(i: u32) -> Record {
        Record::Flow(Flow {
            family: 4,
            proto: 6,
            state: 1,
            client: [i, 0, 0, 0],
            client_port_be: 40000u16.to_be(),
            vip: [2, 0, 0, 0],
            vip_port_be: 80u16.to_be(),
            snat: [3, 0, 0, 0],
            snat_port_be: 50000u16.to_be(),
            backend: [4, 0, 0, 0],
            backend_port_be: 8080u16.to_be(),
            seq_delta: 0xdead_beef,
            isn_delta: 0x0102_0304,
            proxy: 0x8000_0120,
        })
    }

    fn codec(name: &str) -> Codec {
        Codec::new(b"k".repeat(32), name, 7, Duration::from_secs(2))
    }

    #[test]
    fn data_round_trips_with_every_record_kind() {
        let tx = codec("lb-a");
        let mut rx = codec("lb-b");
        let records = vec![
            flow(1),
            Record::Closed {
                family: 6,
                proto: 17,
                backend: [1, 2, 3, 4],
                backend_port_be: 53,
                snat: [5, 6, 7, 8],
                snat_port_be: 4242,
            },
            Record::BulkBegin {
                id: 3,
                expected: 1_000_000,
            },
            Record::BulkEnd {
                id: 3,
                sent: 999_999,
            },
        ];
        let bodies = encode_records(&records, tx.data_room());
        assert_eq!(bodies.len(), 1);
        let wire = tx.data(NOW, 42, &bodies[0].0, bodies[0].1);
        assert!(wire.len() <= MAX_DATAGRAM);
        let got = rx.decode(&wire, NOW + 5).unwrap();
        assert_eq!((got.node.as_str(), got.session), ("lb-a", 7));
        assert_eq!(got.message, Message::Data { seq: 42, records });
    }

    #[test]
    fn full_datagrams_stay_under_the_limit_and_keep_every_record() {
        let tx = codec(&"n".repeat(MAX_NAME));
        let mut rx = codec("lb-b");
        let records: Vec<Record> = (0..1000).map(flow).collect();
        let bodies = encode_records(&records, tx.data_room());
        let mut back = Vec::new();
        for (i, (body, count)) in bodies.iter().enumerate() {
            let wire = tx.data(NOW, i as u64 + 1, body, *count);
            assert!(wire.len() <= MAX_DATAGRAM, "{}", wire.len());
            match rx.decode(&wire, NOW).unwrap().message {
                Message::Data { records, .. } => back.extend(records),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, records);
        assert!(bodies.len() <= 1000 / 14 + 1, "{} datagrams", bodies.len());
    }

    #[test]
    fn control_messages_round_trip_once() {
        let tx = codec("lb-a");
        let mut rx = codec("lb-b");
        let ack = tx.ack(NOW, 99, 10, &[(12, 14), (20, 20)]);
        assert_eq!(
            rx.decode(&ack, NOW).unwrap().message,
            Message::Ack {
                stream: 99,
                upto: 10,
                gaps: vec![(12, 14), (20, 20)]
            }
        );
        assert!(
            matches!(rx.decode(&ack, NOW), Err(Refused::Stale { .. })),
            "replayed"
        );
        let pos = tx.position(NOW + 1, 99, 50);
        assert_eq!(
            rx.decode(&pos, NOW + 1).unwrap().message,
            Message::Position {
                last: 99,
                oldest: 50
            }
        );
        let req = tx.bulk_request(NOW + 2);
        assert_eq!(
            rx.decode(&req, NOW + 2).unwrap().message,
            Message::BulkRequest
        );
    }

    #[test]
    fn another_key_version_or_layout_is_refused_and_garbage_is_not_a_panic() {
        let mut rx = codec("lb-b");
        let other = Codec::new(b"x".repeat(32), "lb-a", 1, Duration::from_secs(2));
        assert_eq!(
            rx.decode(&other.bulk_request(NOW), NOW),
            Err(Refused::Forged)
        );
        let tx = codec("lb-a");
        for (offset, value, want) in [
            (4usize, 9u8, Refused::Version(9)),
            (7, 7, Refused::Layout(RECORD_LAYOUT & 0xff00 | 7)),
        ] {
            let mut wire = tx.bulk_request(NOW);
            wire.truncate(wire.len() - MAC_LEN);
            wire[offset] = value;
            let wire = tx.seal(wire);
            assert_eq!(rx.decode(&wire, NOW), Err(want));
        }
        let old = tx.bulk_request(NOW - 3_000_000);
        assert!(matches!(rx.decode(&old, NOW), Err(Refused::Stale { .. })));
        let good = tx.data(NOW, 1, &encode_records(&[flow(1)], 1000)[0].0, 1);
        for len in 0..good.len() {
            assert!(rx.decode(&good[..len], NOW).is_err());
        }
    }
}
