//! The sending side's input: the flow changes the kernel puts in
//! `FLOW_EVENTS` (a new flow, an ended one), and whether it had to drop any.

use std::path::Path;

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use balancer_common::{
    flow::SyncEvent,
    maps::{FlowEvents, Stats},
    stats::Counter,
};

use super::wire::Record;
use crate::dataplane::PinnedMaps;

pub struct Source {
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    /// `Counter::SyncLost` when last looked at.
    lost: u64,
}

impl Source {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let pinned = PinnedMaps::new(pin_dir);
        let stats: PerCpuArray<MapData, u64> = pinned.open::<Stats, _>()?;
        let lost = lost(&stats);
        Ok(Self {
            ring: pinned.open::<FlowEvents, _>()?,
            stats,
            lost,
        })
    }

    /// Everything queued now.
    pub fn drain(&mut self, out: &mut Vec<Record>) {
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<SyncEvent>() {
                // SAFETY: the kernel wrote a SyncEvent; read unaligned.
                let e: SyncEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                if let Some(r) = Record::from_event(&e) {
                    out.push(r);
                }
            }
        }
    }

    /// Whether the ring overflowed since the last call (the program counts
    /// each change it had no room for): what was dropped reaches no peer
    /// until a bulk copy.
    pub fn overflowed(&mut self) -> bool {
        let now = lost(&self.stats);
        let grew = now > self.lost;
        self.lost = now;
        grew
    }
}

fn lost(stats: &PerCpuArray<MapData, u64>) -> u64 {
    stats
        .get(&(Counter::SyncLost as u32), 0)
        .map_or(0, |per_cpu| per_cpu.iter().sum())
}
