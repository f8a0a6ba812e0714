//! Whole-table reads of the kernel's counters for metrics and `balancer
//! stats`: every backend's traffic, active count and sweep figures, every
//! service's drops, each in a few system calls (see [`super::batch`]).

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use aya::maps::{Array, IterableMap, MapData, PerCpuArray};
use balancer_common::{
    expiry::{BackendSweep, SweepStats},
    stats::{BackendStats, COUNTER_COUNT},
};

use super::{Dataplane, batch};

impl Dataplane {
    /// Traffic of backends `0..len`, summed over CPUs.
    pub fn all_backend_stats(&self, len: u32) -> Result<Vec<BackendStats>> {
        let map: PerCpuArray<&MapData, BackendStats> = self.map("BACKEND_STATS")?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        batch::per_cpu_array(
            map.map().fd().as_fd(),
            len,
            cpus,
            |sum: &mut BackendStats, s| {
                sum.packets_to += s.packets_to;
                sum.bytes_to += s.bytes_to;
                sum.packets_from += s.packets_from;
                sum.bytes_from += s.bytes_from;
                sum.new_flows += s.new_flows;
            },
        )
        .context("reading BACKEND_STATS")
    }

    /// Active connections of backends `0..len`.
    pub fn all_active_conns(&self, len: u32) -> Result<Vec<u64>> {
        let map: Array<&MapData, u64> = self.map("ACTIVE_CONNS")?;
        batch::array(map.map().fd().as_fd(), len).context("reading ACTIVE_CONNS")
    }

    /// Drops of new flows of services `0..len`, by `Counter` index, summed
    /// over CPUs.
    pub fn all_service_drops(&self, len: u32) -> Result<Vec<[u64; COUNTER_COUNT as usize]>> {
        let map: PerCpuArray<&MapData, u64> = self.map("SERVICE_DROPS")?;
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

    /// What the last sweep did (zero before the first).
    pub fn last_sweep(&self) -> Result<SweepStats> {
        let stats: Array<&MapData, SweepStats> = self.map("SWEEP_STATS")?;
        Ok(stats.get(&0, 0)?)
    }

    /// Reply entries the last sweep kept for backends `0..len` (in full NAT,
    /// the SNAT ports each holds); `generation` is the last sweep's.
    pub fn all_sweep_backends(&self, len: u32, generation: u32) -> Result<Vec<u64>> {
        let map: Array<&MapData, BackendSweep> = self.map("SWEEP_BACKENDS")?;
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
        let flows: aya::maps::HashMap<
            &MapData,
            balancer_common::flow::FlowKey,
            balancer_common::flow::FlowValue,
        > = self.map("FLOWS")?;
        Ok(flows.map().info()?.max_entries())
    }
}
