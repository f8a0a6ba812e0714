//! The flow table: one entry per direction of every tracked connection.
//!
//! A forward entry is keyed by the client's 5-tuple towards the VIP; the reply
//! entry by the backend's 5-tuple towards the SNAT address (or the client in
//! DNAT mode). Each entry says what to rewrite the packet's addresses and ports
//! to, so both directions take the same path; either key is derived from the
//! other entry's rewrite (see [`FlowValue::peer_key`]).

use crate::{RawAddr, service::BackendIndex};

/// Key of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Network byte order.
    pub src: RawAddr,
    /// Network byte order.
    pub dst: RawAddr,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

pub const DIR_FORWARD: u8 = 0;
pub const DIR_REPLY: u8 = 1;

/// Flow states. UDP flows stay `NEW` until the backend answers. A TCP flow
/// is half-open (in `HALF_OPEN`, not `FLOWS`) until its handshake completes:
/// `NEW`, `SYN_RECEIVED` or `PROXY_SYN`; then `ESTABLISHED` (in `FLOWS`).
///
/// TCP: the client's SYN was sent to the backend, which has not answered.
pub const STATE_NEW: u8 = 0;
pub const STATE_ESTABLISHED: u8 = 1;
/// A FIN or RST was seen; the backend's active count was released.
pub const STATE_CLOSING: u8 = 2;
/// TCP: the backend answered the SYN with a SYN-ACK; the client's ACK of it
/// (whose acknowledgement number the forward entry's `seq_delta` holds until
/// then) completes the handshake.
pub const STATE_SYN_RECEIVED: u8 = 3;
/// TCP, SYN proxy: the client's ACK carried a valid cookie and was sent on
/// to the backend as a SYN, which has not answered. Both entries' `seq_delta`
/// hold the cookie (the balancer's initial sequence number towards the
/// client) until it does.
pub const STATE_PROXY_SYN: u8 = 4;

/// Whether a TCP flow in `state` has not completed its handshake.
#[inline(always)]
pub const fn half_open(state: u8) -> bool {
    state == STATE_NEW || state == STATE_SYN_RECEIVED || state == STATE_PROXY_SYN
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// New source address, network byte order.
    pub new_src: RawAddr,
    /// New destination address, network byte order.
    pub new_dst: RawAddr,
    pub new_sport_be: u16,
    pub new_dport_be: u16,
    pub backend: BackendIndex,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub state: u8,
    pub direction: u8,
    /// MTU of `nh_ifindex` when the next hop was learned: larger packets take
    /// the FIB lookup, which hands them to the stack (fragmentation needed).
    pub nh_mtu: u16,
    /// Forward entries: [`RELEASED`] once the flow is closing (its backend's
    /// active count given back, if it held one), [`UNCOUNTED`] for a peer's
    /// flow that this node never counted. A u32 so that the program can swap
    /// it atomically.
    pub released: u32,
    /// Next hop of this direction, learned once so that established packets
    /// skip the FIB lookup: egress ifindex (0 = not known yet), and the
    /// Ethernet destination and source to write.
    pub nh_ifindex: u32,
    pub nh_dmac: [u8; 6],
    pub nh_smac: [u8; 6],
    /// Whose flow it is: [`OWNER_SELF`] for one this node opened, else the
    /// [`node_id`] of the HA peer that opened it and synced it here. A peer's
    /// flow is forwarded like any other but never expires here: the owner
    /// says when it ends, until this node adopts it (a takeover).
    pub owner: u32,
    /// The backend's initial sequence number less the cookie (the balancer's
    /// towards the client): added to acknowledgement numbers (and SACK blocks)
    /// towards the backend and taken from sequence numbers towards the client,
    /// for the life of the flow; 0 unless the SYN proxy opened the backend
    /// connection (where it may be 0 by chance). Half-open flows use it for
    /// the handshake (see the states).
    pub seq_delta: u32,
    /// SYN-proxied flows: the balancer's initial sequence number towards the
    /// backend less the client's, added to sequence numbers towards the
    /// backend and taken from acknowledgement numbers (and SACK blocks)
    /// towards the client. 0 unless the backend still had the 4-tuple in
    /// TIME_WAIT and refused the client's own ISN (see [`PROXY_RESENT`]).
    /// While `PROXY_SYN`: the client's initial sequence number.
    pub isn_delta: u32,
    /// 0 unless the SYN proxy opened the flow; then [`PROXIED`], and while
    /// `PROXY_SYN` the client's window (bits 0-15), what its cookie carries
    /// (bits 16-22, `cookie::CookieData::bits`) and [`PROXY_RESENT`]; once
    /// established, how the backend's windows are rescaled for the client
    /// ([`window_rescale`], bits 0-8) and part of the flow's cookie
    /// ([`cookie_mark`], bits 9-30). Both entries alike.
    pub proxy: u32,
}
const _: () = assert!(core::mem::size_of::<FlowValue>() == 96);

/// [`FlowValue::proxy`] of every flow the SYN proxy opened: its packets take
/// the sequence translation.
pub const PROXIED: u32 = 1 << 31;
/// [`FlowValue::proxy`] while `PROXY_SYN`: the backend answered the SYN with
/// an ACK of an older connection on the same 4-tuple (a TIME_WAIT that the
/// client's ISN did not pass), and the SYN went again with a later one.
pub const PROXY_RESENT: u32 = 1 << 24;
/// Where the cookie's data sits in [`FlowValue::proxy`] while `PROXY_SYN`.
pub const PROXY_DATA_SHIFT: u32 = 16;

/// Where an established proxied flow's `proxy` word keeps [`cookie_mark`].
pub const COOKIE_MARK_SHIFT: u32 = 9;
/// The bits of [`cookie_mark`] in an established proxied flow's `proxy` word.
pub const COOKIE_MARK_MASK: u32 = ((1 << 22) - 1) << COOKIE_MARK_SHIFT;

/// 22 bits of the cookie a proxied flow was opened with, as its established
/// `proxy` word keeps them: a segment of that connection that still
/// acknowledges the cookie (a late copy of the client's handshake ACK, a
/// request sent before the backend answered) is told from the cookie ACK of
/// a new connection on the same 4-tuple, whose cookie differs.
#[inline(always)]
pub const fn cookie_mark(cookie: u32) -> u32 {
    (cookie << COOKIE_MARK_SHIFT) & COOKIE_MARK_MASK
}

/// The rescale bits of an established SYN-proxied flow's `proxy` word whose
/// backend scales its windows by `backend` while the client was told
/// `announced`.
#[inline(always)]
pub const fn window_rescale(backend: u8, announced: u8) -> u32 {
    if backend == announced {
        0
    } else {
        WINDOW_RESCALE | (backend as u32 & 15) << 4 | (announced as u32 & 15)
    }
}

/// Set in a proxied flow's `proxy` word by [`window_rescale`].
pub const WINDOW_RESCALE: u32 = 1 << 8;

/// [`FlowValue::released`]: the flow is closing; its release happened.
pub const RELEASED: u32 = 1;
/// [`FlowValue::released`]: a peer's flow installed by active-active sync,
/// not counted in this node's `ACTIVE_CONNS` (least-connections counts the
/// connections each node opened), so its release gives nothing back. The
/// count is the program's to change, with atomic adds; the daemon could only
/// read and write it, and lost the program's updates in between.
pub const UNCOUNTED: u32 = 2;

/// [`FlowValue::owner`] of this node's own flows.
pub const OWNER_SELF: u32 = 0;

/// The owner id of the HA node called `name`, the same on every node: FNV-1a
/// of the name, never [`OWNER_SELF`].
pub const fn node_id(name: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        h ^= name[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    if h == OWNER_SELF { 1 } else { h }
}

impl FlowValue {
    /// Key of the other direction's entry: packets of the other direction are sent
    /// from where this entry rewrites to, towards where it rewrites from.
    #[inline(always)]
    pub fn peer_key(&self, proto: u8, family: u8) -> FlowKey {
        FlowKey {
            src: self.new_dst,
            dst: self.new_src,
            sport_be: self.new_dport_be,
            dport_be: self.new_sport_be,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

crate::user_pod!(FlowKey, FlowValue);

/// `FLOW_EVENTS` record kinds.
pub const SYNC_NEW: u32 = 1;
pub const SYNC_CLOSED: u32 = 2;

/// A flow-table change the active node streams to the standby (`FLOW_EVENTS`
/// ring buffer, with `GLOBAL_F_SYNC`). `SYNC_NEW`: the forward entry's key and
/// value. `SYNC_CLOSED`: the reply entry's key (which the forward value names)
/// and the forward value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    pub kind: u32,
    pub _pad: u32,
    pub key: FlowKey,
    pub value: FlowValue,
}
const _: () = assert!(core::mem::size_of::<SyncEvent>() == 144);

crate::user_pod!(SyncEvent);
