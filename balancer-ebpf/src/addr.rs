//! What a packet's addresses are to this node: one of its VIPs, another
//! address of its own (an SNAT address, or the source of a DNAT backend's
//! reply), or none of its business.

use balancer_common::{
    RawAddr,
    global::{GLOBAL_F_DNAT, Global},
    service::{ADDR_F_DNAT_BACKEND, ADDR_F_VIP, AddrKey, addr_filter_bit},
};

use crate::maps::{ADDR_FILTER, GLOBAL, LOCAL_ADDRS};

/// What [`classify`] says of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Addressed {
    /// Neither its destination nor (with DNAT) its source is ours.
    NotOurs,
    /// To a VIP: a new flow may start here.
    Vip,
    /// To an SNAT address, or a reply of a DNAT backend: ours, but no flow
    /// starts here.
    Ours,
}

/// Whether the packet may be ours: its destination, or with DNAT its source,
/// passes the address filter. Exact only with [`classify`], which the packets
/// that have a flow (most of ours) never need.
#[inline(always)]
pub fn maybe_ours(src: &RawAddr, dst: &RawAddr) -> bool {
    maybe_local(dst) || dnat_enabled() && maybe_local(src)
}

/// The exact answer, by `LOCAL_ADDRS`. Not inlined: its key stays off the
/// entry function's stack.
#[inline(never)]
pub fn classify(src: &RawAddr, dst: &RawAddr, family: u8) -> Addressed {
    if maybe_local(dst) {
        let key = AddrKey {
            addr: *dst,
            family,
            _pad0: 0,
            _pad1: 0,
        };
        if let Some(flags) = LOCAL_ADDRS.get_ptr(&key) {
            // SAFETY: a map value pointer is valid for the duration of the program.
            return if unsafe { *flags } & ADDR_F_VIP != 0 {
                Addressed::Vip
            } else {
                Addressed::Ours
            };
        }
    }
    if from_dnat_backend(*src, family) {
        Addressed::Ours
    } else {
        Addressed::NotOurs
    }
}

/// `LOCAL_ADDRS` flags of `addr`, 0 when it is not there.
#[inline(always)]
pub fn flags_of(addr: RawAddr, family: u8) -> u32 {
    let key = AddrKey {
        addr,
        family,
        _pad0: 0,
        _pad1: 0,
    };
    // SAFETY: the value is read at once, not kept.
    unsafe { LOCAL_ADDRS.get(&key) }.copied().unwrap_or(0)
}

/// Whether `addr` may be a key of `LOCAL_ADDRS` (an inlined array read).
#[inline(always)]
fn maybe_local(addr: &RawAddr) -> bool {
    let bit = addr_filter_bit(addr);
    ADDR_FILTER
        .get(bit / 64)
        .is_some_and(|word| word & (1u64 << (bit % 64)) != 0)
}

#[inline(always)]
fn dnat_enabled() -> bool {
    GLOBAL
        .get(Global::Flags.index())
        .is_some_and(|flags| flags & GLOBAL_F_DNAT != 0)
}

/// Replies of DNAT backends go to the client's address; they are recognised by
/// their source, looked up only when some service uses DNAT.
#[inline(always)]
fn from_dnat_backend(src: RawAddr, family: u8) -> bool {
    if !dnat_enabled() || !maybe_local(&src) {
        return false;
    }
    let key = AddrKey {
        addr: src,
        family,
        _pad0: 0,
        _pad1: 0,
    };
    LOCAL_ADDRS
        .get_ptr(&key)
        // SAFETY: a map value pointer is valid for the duration of the program.
        .is_some_and(|flags| unsafe { *flags } & ADDR_F_DNAT_BACKEND != 0)
}
