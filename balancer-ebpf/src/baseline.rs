//! Baselines for the per-packet benchmark (`cargo xtask bench packet`): the
//! cheapest XDP programs that pass a frame and that send it back out, measured
//! the same way as the balancer. Not part of the `balancer` binary.
#![no_std]
#![no_main]
// Map keys and values go by reference, as in the balancer.
#![allow(clippy::needless_borrows_for_generic_args)]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{LruHashMap, PerCpuArray},
    programs::XdpContext,
};

/// Shaped like the balancer's flow table (40-byte key, 80-byte value) and as
/// large as the benchmark's, so that one insert costs what one of its inserts does.
#[map]
static BASELINE_LRU: LruHashMap<[u64; 5], [u64; 10]> = LruHashMap::with_max_entries(1 << 21, 0);

#[map]
static BASELINE_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Swaps the Ethernet addresses and transmits: the least a forwarder does.
#[xdp]
pub fn baseline_mac_swap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let macs = start as *mut [u8; 12];
    // SAFETY: the 12 bytes are within the frame, checked above.
    unsafe {
        let m = *macs;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&m[6..]);
        swapped[6..].copy_from_slice(&m[..6]);
        *macs = swapped;
    }
    xdp_action::XDP_TX
}

/// Inserts one fresh key into an LRU hash map and passes: the floor under a
/// new flow, which inserts at least one entry.
#[xdp]
pub fn baseline_lru_insert(_ctx: XdpContext) -> u32 {
    let Some(seq) = BASELINE_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot, used by this run only.
    let n = unsafe {
        *seq += 1;
        *seq
    };
    let key = [n, 0, 0, 0, 0];
    let value = [n; 10];
    match BASELINE_LRU.insert(&key, &value, 0) {
        Ok(()) => xdp_action::XDP_PASS,
        Err(_) => xdp_action::XDP_ABORTED,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
