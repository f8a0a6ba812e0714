//! The coarse monotonic clock, read once per tick per CPU.
//!
//! `bpf_ktime_get_coarse_ns` costs about a sixth of an established packet,
//! while reading `jiffies` costs almost nothing. The coarse clock only moves
//! on a tick, when `jiffies` does, so its value is kept per CPU with the tick
//! it was read in and reused until the next one: the same readings, at worst
//! one tick (1 to 10 ms) late.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use aya_ebpf::{macros::map, maps::PerCpuArray};

/// This CPU's reading: the tick, and the clock in it.
#[repr(C)]
pub struct Reading {
    jiffies: u64,
    ns: u64,
}

/// Per-CPU reading of the coarse clock and the tick it was read in (see `clock`).
#[map]
pub static CLOCK: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// Now, in `CLOCK_MONOTONIC_COARSE` nanoseconds (what the daemon reads).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helpers without arguments.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(r) = CLOCK.get_ptr_mut(0) else {
        // SAFETY: as above.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's slot; a program run is not interrupted by another on
    // the same CPU.
    let r = unsafe { &mut *r };
    if r.jiffies != jiffies || r.ns == 0 {
        r.jiffies = jiffies;
        // SAFETY: as above.
        r.ns = unsafe { bpf_ktime_get_coarse_ns() };
    }
    r.ns
}
