//! Reading the kernel's counters for metrics, `balancer stats` and the
//! tests: single values, and whole tables in a few system calls each (see
//! [`super::batch`]).

use std::{collections::BTreeMap, os::fd::AsFd};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, IterableMap, PerCpuArray};
use balancer_common::{
    expiry::{BackendSweep, SweepStats},
    flow::{FlowKey, FlowValue},
    global::SynFlood,
    maps::{
        ActiveConns, BackendStatsMap, Flows, HalfOpen, MapDef, ServiceDrops, Stats, SweepBackends,
        SweepStatsMap, SynFloodMap, kind,
    },
    service::{BackendIndex, ServiceId},
    stats::{BackendStats, COUNTER_COUNT, Counter, service_drop_index},
};

use super::{Dataplane, batch};

/// Folds one CPU's traffic of a backend into a sum.
fn add_backend_stats(sum: &mut BackendStats, s: &BackendStats) {
    sum.packets_to += s.packets_to;
    sum.bytes_to += s.bytes_to;
    sum.packets_from += s.packets_from;
    sum.bytes_from += s.bytes_from;
    sum.new_flows += s.new_flows;
}

impl Dataplane {
    /// Global counters summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>> {
        let stats = self.map::<Stats, PerCpuArray<_, _>>()?;
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            let per_cpu = stats.get(&(c as u32), 0)?;
            out.insert(c.name(), per_cpu.iter().sum());
        }
        Ok(out)
    }

    pub fn counter(&self, c: Counter) -> Result<u64> {
        let stats = self.map::<Stats, PerCpuArray<_, _>>()?;
        Ok(stats.get(&(c as u32), 0)?.iter().sum())
    }

    /// Drops of new flows to a service for `reason`, summed over CPUs.
    pub fn service_drops(&self, service: ServiceId, reason: Counter) -> Result<u64> {
        let drops = self.map::<ServiceDrops, PerCpuArray<_, _>>()?;
        Ok(drops
            .get(&service_drop_index(service, reason), 0)?
            .iter()
            .sum())
    }

    /// Active connections of a backend: opened minus ended (by a FIN or RST,
    /// or by expiry).
    pub fn active_conns(&self, index: BackendIndex) -> Result<u64> {
        let active = self.map::<ActiveConns, Array<_, _>>()?;
        Ok(active.get(&index.0, 0)?)
    }

    /// Traffic of a backend, summed over CPUs.
    pub fn backend_stats(&self, index: BackendIndex) -> Result<BackendStats> {
        let stats = self.map::<BackendStatsMap, PerCpuArray<_, _>>()?;
        let mut sum = BackendStats::default();
        for s in stats.get(&index.0, 0)?.iter() {
            add_backend_stats(&mut sum, s);
        }
        Ok(sum)
    }

    /// Traffic of backends `0..len`, summed over CPUs.
    pub fn all_backend_stats(&self, len: u32) -> Result<Vec<BackendStats>> {
        let map = self.map::<BackendStatsMap, PerCpuArray<_, _>>()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        batch::per_cpu_array(map.map().fd().as_fd(), len, cpus, add_backend_stats)
            .context("reading BACKEND_STATS")
    }

    /// Active connections of backends `0..len`.
    pub fn all_active_conns(&self, len: u32) -> Result<Vec<u64>> {
        let map = self.map::<ActiveConns, Array<_, _>>()?;
        batch::array(map.map().fd().as_fd(), len).context("reading ACTIVE_CONNS")
    }

    /// Drops of new flows of services `0..len`, by `Counter` index, summed
    /// over CPUs.
    pub fn all_service_drops(&self, len: u32) -> Result<Vec<[u64; COUNTER_COUNT as usize]>> {
        let map = self.map::<ServiceDrops, PerCpuArray<_, _>>()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let flat = batch::per_cpu_array(
            map.map().fd().as_fd(),
            len * COUNTER_COUNT,
            cpus,
            |sum: &mut u64, v| *sum += v,
        )
        .context("reading SERVICE_DROPS")?;
        Ok(flat
            .chunks_exact(COUNTER_COUNT as usize)
            .map(|c| c.try_into().expect("chunks of COUNTER_COUNT"))
            .collect())
    }

    /// Auto mode's state, as the program keeps it.
    pub fn syn_flood(&self) -> Result<SynFlood> {
        let map = self.map::<SynFloodMap, Array<_, _>>()?;
        Ok(map.get(&0, 0)?)
    }

    /// What the last sweep did (zero before the first).
    pub fn last_sweep(&self) -> Result<SweepStats> {
        let stats = self.map::<SweepStatsMap, Array<_, _>>()?;
        Ok(stats.get(&0, 0)?)
    }

    /// Reply entries the last sweep kept for backends `0..len` (in full NAT,
    /// the SNAT ports each holds); `generation` is the last sweep's.
    pub fn all_sweep_backends(&self, len: u32, generation: u32) -> Result<Vec<u64>> {
        let map = self.map::<SweepBackends, Array<_, _>>()?;
        let raw: Vec<BackendSweep> =
            batch::array(map.map().fd().as_fd(), len).context("reading SWEEP_BACKENDS")?;
        Ok(raw
            .iter()
            .map(|b| {
                if b.generation == generation && generation != 0 {
                    u64::from(b.reply_entries)
                } else {
                    0
                }
            })
            .collect())
    }

    /// `flows.capacity` as the kernel has it.
    pub fn flow_capacity(&self) -> Result<u32> {
        let flows = self.map::<Flows, HashMap<_, FlowKey, FlowValue>>()?;
        Ok(flows.map().info()?.max_entries())
    }

    /// Number of entries in the flow table (both directions), half-open
    /// flows included, read 4,096 per system call (it also runs when a
    /// restarted daemon takes over a full table).
    pub fn flow_entries(&self) -> Result<usize> {
        Ok(self.entries::<Flows>()? + self.entries::<HalfOpen>()?)
    }

    /// Entries of half-open TCP flows (both directions), in `HALF_OPEN`.
    pub fn half_open_entries(&self) -> Result<usize> {
        self.entries::<HalfOpen>()
    }

    fn entries<M: MapDef<Kind = kind::Hash, Key = FlowKey, Value = FlowValue>>(
        &self,
    ) -> Result<usize> {
        let flows = self.map::<M, HashMap<_, FlowKey, FlowValue>>()?;
        let mut count = 0;
        batch::for_each(
            flows.map().fd().as_fd(),
            std::mem::size_of::<FlowKey>(),
            std::mem::size_of::<FlowValue>(),
            4096,
            |_, _| {
                count += 1;
                std::ops::ControlFlow::Continue(())
            },
        )
        .with_context(|| format!("counting {}", M::NAME))?;
        Ok(count)
    }
}
