//! SYN flood detection for `syn_cookies = "auto"`, in the program so that
//! cookies come on within a fraction of a second, before a flood has taken
//! the SNAT ports.
//!
//! The node counts, in windows of `SYN_FLOOD_WINDOW_NS`, the half-open flows
//! it opened (and, while cookies are on, the cookies it sent) and the
//! handshakes that completed (and the cookies that came back valid), on all
//! CPUs together: a connection's SYN and its ACK need not come in on the same
//! CPU (a veth's or a single-queue NIC's packets are taken by whichever CPU
//! polls). When the difference passes the limit, SYNs are answered with
//! cookies until `SYN_FLOOD.active_until_ns`; a window that still sees more
//! than half the limit pushes that on by the cooldown (hysteresis). The daemon
//! only watches (events, status, metrics).

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    ptr::read_volatile,
};

use aya_ebpf::{macros::map, maps::Array};
use balancer_common::global::{Global, SYN_COOKIES_ALWAYS, SYN_COOKIES_AUTO, SYN_FLOOD_WINDOW_NS};

use crate::{
    clock,
    maps::{SYN_FLOOD, global},
};

/// The node's count in the current window.
#[repr(C)]
pub struct SynWindow {
    /// The window's number: the clock over `SYN_FLOOD_WINDOW_NS`.
    window: u64,
    opened: u32,
    completed: u32,
}

/// The half-open counts (see the module), shared by all CPUs.
#[map]
pub static SYN_WINDOW: Array<SynWindow> = Array::with_max_entries(1, 0);

/// The `firewall.syn_cookies` mode (`SYN_COOKIES_*`).
#[inline(always)]
pub fn mode() -> u32 {
    global(Global::SynCookies)
}

/// Whether auto mode's cookies are on at `now`.
#[inline(always)]
pub fn active(now: u64) -> bool {
    SYN_FLOOD.get(0).is_some_and(|f| f.active_until_ns > now)
}

/// Whether a SYN to a VIP is answered with a cookie now. (The clock is read
/// in auto mode only: a helper call that `always` need not pay.)
#[inline(always)]
pub fn cookies_on() -> bool {
    match mode() {
        SYN_COOKIES_ALWAYS => true,
        SYN_COOKIES_AUTO => active(clock::now_ns()),
        _ => false,
    }
}

/// Whether cookies were on lately (always, or in auto mode within
/// `recent_ns`): an ACK of no flow whose cookie is not valid is then a spoofed
/// or stale one, dropped, rather than a segment of an ended flow that the
/// host's stack answers with a reset.
#[inline(always)]
pub fn cookies_lately(recent_ns: u64) -> bool {
    match mode() {
        SYN_COOKIES_ALWAYS => true,
        SYN_COOKIES_AUTO => SYN_FLOOD
            .get(0)
            .is_some_and(|f| f.active_until_ns.saturating_add(recent_ns) > clock::now_ns()),
        _ => false,
    }
}

/// The window at `now`, a new one when the last has passed. (CPUs that
/// start one at the same time may lose a count or two: a flood is not
/// decided by so few.)
#[inline(always)]
fn window(now: u64) -> Option<&'static mut SynWindow> {
    let w = SYN_WINDOW.get_ptr_mut(0)?;
    // SAFETY: a map value pointer is valid for the duration of the program;
    // other CPUs' writes race only as described above.
    let w = unsafe { &mut *w };
    let number = now / SYN_FLOOD_WINDOW_NS;
    // SAFETY: a field of a valid value.
    if unsafe { read_volatile(&w.window) } != number {
        w.window = number;
        w.opened = 0;
        w.completed = 0;
    }
    Some(w)
}

/// A half-open flow was opened, or a cookie sent (`cookie`), in auto mode:
/// may turn cookies on, or keep them on.
#[inline(always)]
pub fn opened(cookie: bool) {
    if mode() != SYN_COOKIES_AUTO {
        return;
    }
    let now = clock::now_ns();
    let Some(w) = window(now) else {
        return;
    };
    // SAFETY: a 4-byte aligned field of a map value. (Its result is not used:
    // the fetching form's came out wrong with this toolchain, the limit never
    // passed; the count is read back instead.)
    unsafe { atomic_xadd::<u32, u32, { Relaxed }>(&mut w.opened, 1) };
    let limit = global(Global::SynFloodLimit);
    if limit == 0 {
        return;
    }
    // SAFETY: fields of a valid value.
    let pending = unsafe { read_volatile(&w.opened).saturating_sub(read_volatile(&w.completed)) };
    let threshold = if cookie { limit / 2 } else { limit };
    if pending > threshold {
        extend(now);
    }
}

/// A handshake completed, or a cookie came back valid, in auto mode.
#[inline(always)]
pub fn completed() {
    if mode() != SYN_COOKIES_AUTO {
        return;
    }
    let now = clock::now_ns();
    if let Some(w) = window(now) {
        // SAFETY: a 4-byte aligned field of a map value.
        unsafe { atomic_xadd::<u32, u32, { Relaxed }>(&mut w.completed, 1) };
    }
}

/// Cookies on until a cooldown from `now`. The shared value is written at
/// most about once per window by each CPU that sees the flood.
#[inline(never)]
fn extend(now: u64) {
    let Some(f) = SYN_FLOOD.get_ptr_mut(0) else {
        return;
    };
    let cooldown = global(Global::SynFloodCooldownMs) as u64 * 1_000_000;
    let until = now + cooldown.max(SYN_FLOOD_WINDOW_NS);
    // SAFETY: a map value pointer; racing CPUs write about the same time.
    let f = unsafe { &mut *f };
    let was = f.active_until_ns;
    if was >= until.saturating_sub(SYN_FLOOD_WINDOW_NS) {
        return;
    }
    f.active_until_ns = until;
    if was <= now {
        // SAFETY: 8-byte aligned field of a map value.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(&mut f.activations, 1) };
    }
}
