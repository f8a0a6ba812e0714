//! A bulk copy of this node's flows for one peer: the pinned flow table read
//! a batch at a time, at a bounded rate, so that forwarding never waits on
//! it. Flows that change meanwhile also go out as live records; the peer's
//! install is idempotent, so seeing one twice is harmless.

use std::{mem::size_of, os::fd::OwnedFd};

use anyhow::Result;
use balancer_common::flow::{DIR_FORWARD, FlowKey, FlowValue, OWNER_SELF, RELEASED};

use super::wire::{Flow, Record};
use crate::dataplane::batch::{self, Reader};

/// Entries read per system call.
const CHUNK: u32 = 512;

/// One bulk copy in progress.
pub struct Bulk {
    pub id: u32,
    /// Forward entries in the table when it began (what the peer expects).
    pub expected: u64,
    /// Flows sent so far.
    pub sent: u64,
    reader: Reader<OwnedFd>,
    /// Read but not sent yet (the rate allowed less than a batch).
    ready: Vec<Record>,
    began: bool,
    ended: bool,
    /// Whose flows go (see [`sent_in_bulk`]).
    owners: Owners,
}

/// Whose flows a bulk copy sends, the sender's own always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owners {
    /// Every flow it forwards (active-standby: the active node's table is
    /// all its own once it adopts the peers' flows, which may not have
    /// happened yet just after a takeover).
    All,
    /// Its own, and those of the dead peers it adopted (active-active: each
    /// peer sends the others its own; adopted flows may still carry their old
    /// owner until the next sweep).
    Own { adopted: Vec<u32> },
}

impl Owners {
    fn include(&self, owner: u32) -> bool {
        owner == OWNER_SELF
            || match self {
                Owners::All => true,
                Owners::Own { adopted } => adopted.contains(&owner),
            }
    }
}

impl Bulk {
    /// Starts a copy of the flow table open as `flows`.
    pub fn new(id: u32, flows: OwnedFd, expected: u64, owners: Owners) -> Self {
        Self {
            id,
            expected,
            sent: 0,
            reader: Reader::new(flows, size_of::<FlowKey>(), size_of::<FlowValue>()),
            ready: Vec::new(),
            began: false,
            ended: false,
            owners,
        }
    }

    /// The begin mark, up to `budget` more flows, and once the table is
    /// read, the end mark.
    pub fn next(&mut self, budget: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        if !self.began {
            self.began = true;
            out.push(Record::BulkBegin {
                id: self.id,
                expected: self.expected,
            });
        }
        while self.ready.len() < budget && !self.reader.done() {
            let (ready, owners) = (&mut self.ready, &self.owners);
            self.reader.next_batch(CHUNK, |k, v| {
                let (key, value): (FlowKey, FlowValue) = (batch::read(k), batch::read(v));
                if let Some(record) = sent_in_bulk(&key, &value, owners) {
                    ready.push(record);
                }
            })?;
        }
        let n = budget.min(self.ready.len());
        self.sent += n as u64;
        out.extend(self.ready.drain(..n));
        if self.reader.done() && self.ready.is_empty() && !self.ended {
            self.ended = true;
            out.push(Record::BulkEnd {
                id: self.id,
                sent: self.sent,
            });
        }
        Ok(out)
    }

    /// The end mark was handed out.
    pub fn finished(&self) -> bool {
        self.ended
    }
}

/// A live flow (not ending) as a bulk copy sends it, if it is one of
/// `owners`'.
pub fn sent_in_bulk(key: &FlowKey, value: &FlowValue, owners: &Owners) -> Option<Record> {
    if value.direction != DIR_FORWARD
        || value.released & RELEASED != 0
        || !owners.include(value.owner)
    {
        return None;
    }
    Some(Record::Flow(Flow {
        family: key.family,
        proto: key.proto,
        state: value.state,
        client: key.src,
        client_port_be: key.sport_be,
        vip: key.dst,
        vip_port_be: key.dport_be,
        snat: value.new_src,
        snat_port_be: value.new_sport_be,
        backend: value.new_dst,
        backend_port_be: value.new_dport_be,
        seq_delta: value.seq_delta,
        isn_delta: value.isn_delta,
        proxy: value.proxy,
    }))
}
