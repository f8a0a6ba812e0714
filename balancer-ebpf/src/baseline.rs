//! Baselines for the per-packet benchmark (`cargo xtask bench packet`): the
//! cheapest XDP programs that pass a frame and that send it back out, measured
//! the same way as the balancer. Not part of the `balancer` binary.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
