//! Flow creation (backend choice, SNAT port, both entries) and per-packet state.
//!
//! A new TCP flow's entries go to `HALF_OPEN`, not `FLOWS`: until its
//! handshake completes (`handshake`) it can be evicted only by another new
//! flow, never evict an established one, and it expires after
//! `flows.tcp_syn_timeout_s` whatever it sees. UDP flows go to `FLOWS` at once.

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd, atomic_xchg},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_loop},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use balancer_common::{
    FAMILY_V6, PROTO_TCP, RawAddr,
    flow::{
        DIR_FORWARD, DIR_REPLY, FlowKey, FlowValue, OWNER_SELF, RELEASED, STATE_CLOSING,
        STATE_ESTABLISHED, STATE_NEW, STATE_PROXY_SYN, UNCOUNTED,
    },
    global::Global,
    maps::{Flows, Value},
    service::{Backend, BackendIndex, MAX_BACKENDS, MAX_SNAT_ADDRS, SERVICE_F_DNAT, ServiceValue},
    stats::Counter,
};

use network_types::eth::EthHdr;

use crate::{
    clock, copy, forward,
    maps::{ACTIVE_CONNS, BACKENDS, FLOWS, GLOBAL, HALF_OPEN, SNAT_POOL},
    parse::{Packet, ptr_at},
    select,
};

/// Ports tried for a new flow's SNAT source before it is refused: random ones,
/// or every port of a range no larger than this.
const SNAT_PORT_TRIES: u32 = 64;

/// State of the SNAT port search, shared with its `bpf_loop` callback.
#[repr(C)]
pub struct PortProbe {
    reply_key: FlowKey,
    min: u32,
    span: u32,
    offset: u32,
    /// SNAT addresses to try, from `SNAT_POOL[pool_base + (first + k) % pool_len]`;
    /// a pool of 0 means the backend's own (already in `reply_key`).
    pool_base: u32,
    pool_len: u32,
    first: u32,
    found_be: u16,
    /// [`CLAIMED`] when a port was found, [`TABLE_FULL`] when the search
    /// stopped at a full `HALF_OPEN`, else 0.
    found: u16,
}

/// Per-CPU state of a new flow's SNAT port search (see `flow::try_port`).
#[map]
pub static PORT_PROBE: PerCpuArray<PortProbe> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU, per-backend offset of the next SNAT port to try: ports handed out
/// in turn are freed in about the order they were taken, so the first try
/// usually finds a free one however full the range is.
#[map]
pub static PORT_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per-CPU room for the two entries of a new flow while they are built: on the
/// 512-byte BPF stack they would crowd out everything else.
#[map]
pub static SCRATCH: PerCpuArray<Value<Flows>> = PerCpuArray::with_max_entries(2, 0);

/// One SNAT port try: claims the port by inserting the reply entry (in this
/// CPU's scratch slot) unless another flow holds it. Each SNAT address of the
/// pool gets `SNAT_PORT_TRIES` tries in turn, starting from a random one. Run by
/// `bpf_loop`, so the verifier checks it once rather than once per try and per
/// path to it.
#[inline(never)]
extern "C" fn try_port(i: u32, _ctx: *mut c_void) -> i64 {
    let Some(p) = PORT_PROBE.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value, filled by create before the search.
    let p = unsafe { &mut *p };
    let attempt = i % SNAT_PORT_TRIES;
    if attempt == 0 && p.pool_len > 0 {
        let k = (p.first + i / SNAT_PORT_TRIES) % p.pool_len;
        let Some(addr) = SNAT_POOL.get(p.pool_base + k) else {
            return 1;
        };
        copy::addr(&mut p.reply_key.dst, addr);
        if i > 0 {
            // The cursor's address was full around it: a random start on the next.
            p.offset = unsafe { bpf_get_prandom_u32() }
                .checked_rem(p.span)
                .unwrap_or(0);
        }
    }
    if attempt >= p.span {
        // A small range, walked whole for this address: the next one.
        return 0;
    }
    let Some(reply) = SCRATCH.get_ptr(SCRATCH_REPLY) else {
        return 1;
    };
    let port_be = ((p.min + p.offset) as u16).to_be();
    p.reply_key.dport_be = port_be;
    // SAFETY: a per-CPU map value, filled by create before the search.
    match claim(&p.reply_key, unsafe { &*reply }) {
        CLAIMED => {
            p.found_be = port_be;
            p.found = CLAIMED;
            return 1;
        }
        TABLE_FULL => {
            // No other port would find room either.
            p.found = TABLE_FULL;
            return 1;
        }
        _ => {}
    }
    p.offset = if p.span <= SNAT_PORT_TRIES {
        // A small range is walked whole, so a free port is always found.
        if p.offset + 1 >= p.span {
            0
        } else {
            p.offset + 1
        }
    } else {
        // A large one is probed at random: consecutive probes would run into
        // the clusters that taken ports form (at two thirds full, 64
        // neighbours are all taken often enough to refuse flows).
        let random = unsafe { bpf_get_prandom_u32() };
        random.checked_rem(p.span).unwrap_or(0)
    };
    0
}

/// [`claim`]: the key was free and is the new flow's now.
const CLAIMED: u16 = 1;
/// [`claim`]: `HALF_OPEN` is full (a plain hash: it refuses, never evicts).
const TABLE_FULL: u16 = 2;
/// [`claim`]: another flow has the key.
const TAKEN: u16 = 0;
/// What a full preallocated hash map answers an insert with.
const E2BIG: i32 = 7;
/// What an insert with `BPF_NOEXIST` of a key already there is answered with.
const EEXIST: i32 = 17;

/// Inserts a new flow's reply entry unless its key is taken: TCP into
/// `HALF_OPEN`, where it is taken if either table has it (inserted first, then
/// looked up in `FLOWS`, so that a flow moving from one to the other is
/// always seen in one of them); UDP into `FLOWS`.
#[inline(always)]
fn claim(reply_key: &FlowKey, reply: &FlowValue) -> u16 {
    if reply_key.proto != PROTO_TCP {
        return if FLOWS.insert(reply_key, reply, BPF_NOEXIST as u64).is_ok() {
            CLAIMED
        } else {
            TAKEN
        };
    }
    match HALF_OPEN.insert(reply_key, reply, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -E2BIG => return TABLE_FULL,
        Err(_) => return TAKEN,
    }
    if FLOWS.get_ptr(reply_key).is_some() {
        let _ = HALF_OPEN.remove(reply_key);
        return TAKEN;
    }
    CLAIMED
}

/// Where a family's SNAT addresses are in `SNAT_POOL`, and how many there are.
#[inline(always)]
fn snat_pool(family: u8) -> (u32, u32) {
    let (base, count_at) = if family == FAMILY_V6 {
        (MAX_SNAT_ADDRS, Global::SnatV6)
    } else {
        (0, Global::SnatV4)
    };
    let count = GLOBAL.get(count_at.index()).copied().unwrap_or(0);
    (
        base,
        if count > MAX_SNAT_ADDRS {
            MAX_SNAT_ADDRS
        } else {
            count
        },
    )
}

pub enum Created {
    /// The forward entry as inserted, in this CPU's scratch slot.
    Flow(&'static mut FlowValue),
    Refused(Counter),
}

/// How a new flow starts: its state and handshake words (see the states in
/// `balancer_common::flow`).
pub struct Open {
    pub state: u8,
    /// Both entries' `seq_delta`, `isn_delta` and `proxy`.
    pub seq_delta: u32,
    pub isn_delta: u32,
    pub proxy: u32,
}

impl Open {
    /// A flow opened by its first packet.
    pub const NEW: Open = Open {
        state: STATE_NEW,
        seq_delta: 0,
        isn_delta: 0,
        proxy: 0,
    };
}

/// Per-CPU slots of `SCRATCH` for the two entries being built.
const SCRATCH_REPLY: u32 = 0;
const SCRATCH_FORWARD: u32 = 1;

/// Whether `value` is the `direction` half of the flow whose other half is
/// keyed `peer`: its translation leads to `peer` reversed. Word by word:
/// comparing the arrays whole would become a `bcmp` call.
#[inline(always)]
pub fn is_half(value: &FlowValue, direction: u8, peer: &FlowKey) -> bool {
    let same =
        |a: &RawAddr, b: &RawAddr| a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
    value.direction == direction
        && value.new_sport_be == peer.dport_be
        && value.new_dport_be == peer.sport_be
        && same(&value.new_src, &peer.dst)
        && same(&value.new_dst, &peer.src)
}

/// A flow's two entries as they are now, copied into this CPU's scratch
/// slots, if they are each other's halves: the forward entry under
/// `forward_key`, the reply entry under `reply_key`. Read through a pointer
/// into a preallocated hash map (`HALF_OPEN`), an entry that another CPU
/// removes meanwhile is reused at once for whatever that map takes next,
/// another flow's entry, which must not be copied under this flow's key.
#[inline(always)]
pub fn both_halves(
    forward_key: &FlowKey,
    forward: *const FlowValue,
    reply_key: &FlowKey,
    reply: *const FlowValue,
) -> Option<(&'static FlowValue, &'static FlowValue)> {
    let f = SCRATCH.get_ptr_mut(SCRATCH_FORWARD)?;
    let r = SCRATCH.get_ptr_mut(SCRATCH_REPLY)?;
    // SAFETY: this CPU's slots, used by this program run only; the sources
    // are map values, valid for the run (if perhaps another flow's now).
    let (f, r) = unsafe {
        copy::words(f, forward);
        copy::words(r, reply);
        (&*f, &*r)
    };
    let paired = is_half(f, DIR_FORWARD, reply_key) && is_half(r, DIR_REPLY, forward_key);
    paired.then_some((f, r))
}

/// Per-packet state of an existing flow: timestamps, TCP state, and the release
/// of the backend's active count when the connection ends.
#[inline(always)]
pub fn on_packet(flow: &mut FlowValue, pkt: &Packet) {
    flow.last_seen_ns = clock::now_ns();
    let tcp_end = pkt.is_tcp_end();
    if flow.direction == DIR_FORWARD {
        if tcp_end {
            release(flow, pkt.key.proto, pkt.key.family, true);
        }
        return;
    }
    // The backend's first answer establishes the flow and an end releases it.
    // Both are recorded on the forward entry too, whose state the daemon's
    // expiry reads; other reply packets cost no second lookup.
    if flow.state != STATE_NEW && !tcp_end {
        return;
    }
    flow.state = if tcp_end {
        STATE_CLOSING
    } else {
        STATE_ESTABLISHED
    };
    let forward_key = flow.peer_key(pkt.key.proto, pkt.key.family);
    if let Some(forward) = FLOWS.get_ptr_mut(&forward_key) {
        // SAFETY: a map value pointer is valid for the duration of the program.
        let forward = unsafe { &mut *forward };
        if tcp_end {
            release(forward, pkt.key.proto, pkt.key.family, true);
        } else if forward.state == STATE_NEW {
            forward.state = STATE_ESTABLISHED;
        }
    }
}

/// Marks a forward entry closing and gives its backend's active count back,
/// once: both ends may send their FIN at the same time on two CPUs, and the
/// sweep may expire the flow meanwhile. Returns whether this call did. The
/// standby hears of the end (`sync::closed`) from whichever call did, if it
/// heard of the flow (`synced`: a flow of `FLOWS`, not a half-open one).
#[inline(always)]
pub fn release(forward: &mut FlowValue, proto: u8, family: u8, synced: bool) -> bool {
    forward.state = STATE_CLOSING;
    // SAFETY: the field is 4-byte aligned inside a map value that outlives this call.
    let was = unsafe { atomic_xchg::<u32, { Relaxed }>(&mut forward.released, RELEASED) };
    if was & RELEASED != 0 {
        return false;
    }
    if was & UNCOUNTED == 0
        && let Some(active) = ACTIVE_CONNS.get_ptr_mut(forward.backend.0)
    {
        // SAFETY: 8-byte aligned map value; the count was raised at creation.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(active, u64::MAX) };
    }
    if synced {
        crate::sync::closed(forward, proto, family);
    }
    true
}

/// A new entry, field by field: a struct literal would be built on the stack
/// and copied into place with a byte-by-byte `memmove`. No next hop yet.
#[inline(always)]
fn fill(
    v: &mut FlowValue,
    new_src: &RawAddr,
    new_dst: &RawAddr,
    (new_sport_be, new_dport_be): (u16, u16),
    backend: BackendIndex,
    now: u64,
    direction: u8,
) {
    copy::addr(&mut v.new_src, new_src);
    copy::addr(&mut v.new_dst, new_dst);
    v.new_sport_be = new_sport_be;
    v.new_dport_be = new_dport_be;
    v.backend = backend;
    v.created_ns = now;
    v.last_seen_ns = now;
    // Volatile: adjacent zero stores would be merged into a `memset` call.
    // SAFETY: fields of a valid, exclusively borrowed value.
    unsafe {
        write_volatile(&mut v.state, STATE_NEW);
        write_volatile(&mut v.direction, direction);
        write_volatile(&mut v.nh_mtu, 0);
        write_volatile(&mut v.released, 0);
        write_volatile(&mut v.nh_ifindex, 0);
        write_volatile(&mut v.owner, OWNER_SELF);
        write_volatile(&mut v.seq_delta, 0);
        write_volatile(&mut v.isn_delta, 0);
        write_volatile(&mut v.proxy, 0);
    }
    copy::bytes(&mut v.nh_dmac, &[0; 6]);
    copy::bytes(&mut v.nh_smac, &[0; 6]);
}

/// A new flow: its backend by the service's scheduler, then a source port
/// on an SNAT address (which inserts the reply entry), then the forward entry.
#[inline(always)]
pub fn create(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    service: &ServiceValue,
    open: &Open,
) -> Created {
    let Some(backend_idx) = select::choose(service, key) else {
        return Created::Refused(Counter::DropNoBackend);
    };
    let Some(backend) = BACKENDS.get(backend_idx.0) else {
        return Created::Refused(Counter::DropNoBackend);
    };
    let now = clock::now_ns();
    let dnat = service.flags & SERVICE_F_DNAT != 0;
    // A raw pointer, not a reference, across the port search: `try_port`
    // changes the probe through the map while `bpf_loop` runs, which a
    // reference held here would tell the compiler cannot happen.
    let Some(probe) = PORT_PROBE.get_ptr_mut(0) else {
        return Created::Refused(Counter::DropSnatExhausted);
    };
    // SAFETY: per-CPU map value, used by this program run only; no other
    // reference to it is alive here.
    if let Err(reason) = prepare_reply(
        ctx,
        pkt,
        key,
        backend,
        backend_idx,
        dnat,
        now,
        // SAFETY: as above.
        unsafe { &mut *probe },
        open,
    ) {
        return Created::Refused(reason);
    }
    let snat_port_be = if dnat {
        // SAFETY: as above.
        claim_client_port(key, unsafe { &*probe })
    } else {
        reserve_snat_port(pkt, service, backend_idx, probe)
    };
    match snat_port_be {
        // SAFETY: as above; the search is over.
        Ok(port_be) => insert_forward(
            ctx,
            pkt,
            key,
            backend,
            backend_idx,
            port_be,
            now,
            // SAFETY: as above; the search is over.
            unsafe { &*probe },
            open,
        ),
        Err(reason) => Created::Refused(reason),
    }
}

/// Builds the reply entry (in this CPU's scratch slot) and its key (in the
/// probe, whose port search changes it): replies go back the way the client's
/// packet came, out of the interface it arrived on, to the Ethernet address it
/// came from. The key's destination port is the client's until a source port
/// is chosen.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn prepare_reply(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    backend: &Backend,
    backend_idx: BackendIndex,
    dnat: bool,
    now: u64,
    probe: &mut PortProbe,
    open: &Open,
) -> Result<(), Counter> {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Err(Counter::DropMalformed);
    };
    // SAFETY: bounds checked by ptr_at.
    let (came_from, arrived_at) = unsafe { ((*eth).src_addr, (*eth).dst_addr) };
    let Some(reply) = SCRATCH.get_ptr_mut(SCRATCH_REPLY) else {
        return Err(Counter::DropFlowTableFull);
    };
    // SAFETY: per-CPU map value, used by this program run only.
    let reply = unsafe { &mut *reply };
    fill(
        reply,
        &key.dst,
        &key.src,
        (key.dport_be, key.sport_be),
        backend_idx,
        now,
        DIR_REPLY,
    );
    reply.state = open.state;
    reply.seq_delta = open.seq_delta;
    reply.isn_delta = open.isn_delta;
    reply.proxy = open.proxy;
    // SAFETY: reading the xdp_md of the running program.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    reply.nh_ifindex = ingress;
    reply.nh_mtu = forward::mtu_of(ingress);
    copy::bytes(&mut reply.nh_dmac, &came_from);
    copy::bytes(&mut reply.nh_smac, &arrived_at);
    let new_src = if dnat { &key.src } else { &backend.snat_addr };
    // Built in place: the SNAT port search changes it, and a copy of it on the
    // stack would go through `memmove`.
    let reply_key = &mut probe.reply_key;
    copy::addr(&mut reply_key.src, &backend.addr);
    copy::addr(&mut reply_key.dst, new_src);
    reply_key.sport_be = backend.port_be;
    reply_key.dport_be = key.sport_be;
    reply_key.proto = pkt.key.proto;
    reply_key.family = pkt.key.family;
    reply_key._pad = [0; 2];
    Ok(())
}

/// DNAT keeps the client's address and port: the reply entry is keyed by them.
#[inline(always)]
fn claim_client_port(key: &FlowKey, probe: &PortProbe) -> Result<u16, Counter> {
    let Some(reply) = SCRATCH.get_ptr(SCRATCH_REPLY) else {
        return Err(Counter::DropFlowTableFull);
    };
    // SAFETY: this CPU's slot, filled by prepare_reply.
    match claim(&probe.reply_key, unsafe { &*reply }) {
        CLAIMED => Ok(key.sport_be),
        TABLE_FULL => Err(Counter::DropFlowTableFull),
        _ => Err(Counter::DropSnatExhausted),
    }
}

/// Full NAT: a free source port towards the backend on one of the family's
/// SNAT addresses, claimed by inserting the reply entry under it. Each CPU
/// hands a backend's ports out in turn from its cursor (see `PORT_CURSOR`).
#[inline(always)]
fn reserve_snat_port(
    pkt: &Packet,
    service: &ServiceValue,
    backend_idx: BackendIndex,
    probe: *mut PortProbe,
) -> Result<u16, Counter> {
    let min = service.snat_port_min as u32;
    let max = service.snat_port_max as u32;
    if max < min {
        return Err(Counter::DropSnatExhausted);
    }
    let span = max - min + 1;
    let Some(cursor) = PORT_CURSOR.get_ptr_mut(backend_idx.0) else {
        return Err(Counter::DropSnatExhausted);
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let cursor = unsafe { &mut *cursor };
    // A random start the first time, so that CPUs take turns in different places.
    let start = if *cursor == 0 {
        unsafe { bpf_get_prandom_u32() }
    } else {
        *cursor
    };
    let Some(offset) = start.checked_rem(span) else {
        return Err(Counter::DropSnatExhausted);
    };
    let (pool_base, pool_len) = snat_pool(pkt.key.family);
    let first = unsafe { bpf_get_prandom_u32() }
        .checked_rem(pool_len)
        .unwrap_or(0);
    // Field by field: a struct literal would be built on the stack first.
    // SAFETY: the per-CPU probe, ours for this run (see `create`).
    unsafe {
        (*probe).min = min;
        (*probe).span = span;
        (*probe).offset = offset;
        (*probe).pool_base = pool_base;
        (*probe).pool_len = pool_len;
        (*probe).first = first;
        (*probe).found_be = 0;
        (*probe).found = 0;
    }
    let addresses = if pool_len == 0 { 1 } else { pool_len };
    // SAFETY: try_port has bpf_loop's callback signature; it finds the probe
    // in PORT_PROBE (kept off the stack, which is full at this depth).
    unsafe {
        bpf_loop(
            SNAT_PORT_TRIES * addresses,
            try_port as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: as above; read after the search, which wrote them.
    let (found, found_be, last) = unsafe {
        (
            read_volatile(&(*probe).found),
            read_volatile(&(*probe).found_be),
            read_volatile(&(*probe).offset),
        )
    };
    if found == TABLE_FULL {
        return Err(Counter::DropFlowTableFull);
    }
    if found != CLAIMED {
        return Err(Counter::DropSnatExhausted);
    }
    *cursor = last + 1;
    Ok(found_be)
}

/// Records the forward entry towards the backend from the source the reply
/// entry was claimed under (the probe's key), and counts the flow.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn insert_forward(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    backend: &Backend,
    backend_idx: BackendIndex,
    snat_port_be: u16,
    now: u64,
    probe: &PortProbe,
    open: &Open,
) -> Created {
    let Some(forward) = SCRATCH.get_ptr_mut(SCRATCH_FORWARD) else {
        return Created::Refused(Counter::DropFlowTableFull);
    };
    // SAFETY: per-CPU map value, used by this program run only.
    let forward = unsafe { &mut *forward };
    // The SNAT address the port was found on (the reply key's destination).
    fill(
        forward,
        &probe.reply_key.dst,
        &backend.addr,
        (snat_port_be, backend.port_be),
        backend_idx,
        now,
        DIR_FORWARD,
    );
    forward.state = open.state;
    forward.seq_delta = open.seq_delta;
    forward.isn_delta = open.isn_delta;
    forward.proxy = open.proxy;
    // Learned before the insert, so that the entry holds it from the start.
    forward::learn_backend_hop(ctx, pkt, forward, backend_idx, now);
    let tcp = key.proto == PROTO_TCP;
    // A proxied flow's entry must be new: the client's cookie ACK and its
    // first data segment both carry the cookie, and with generic XDP each is
    // run on the CPU that sent it, so two CPUs can open the same flow at once
    // (on two SNAT ports, the second entry replacing the first and its
    // handshake left without a forward half: about one in ten thousand
    // connections of wrk here). The loser leaves it to the winner.
    let proxied = open.state == STATE_PROXY_SYN;
    let flags = if proxied { BPF_NOEXIST as u64 } else { 0 };
    let inserted = if tcp {
        HALF_OPEN.insert(key, &*forward, flags)
    } else {
        FLOWS.insert(key, &*forward, 0)
    };
    if let Err(e) = inserted {
        // Best effort: an orphaned reply entry only ages out (the LRU, or the
        // sweep of `HALF_OPEN`).
        let _ = if tcp {
            HALF_OPEN.remove(&probe.reply_key)
        } else {
            FLOWS.remove(&probe.reply_key)
        };
        if proxied && e == -EEXIST {
            return Created::Refused(Counter::DropSynProxyEarly);
        }
        return Created::Refused(Counter::DropFlowTableFull);
    }
    if proxied && FLOWS.get_ptr(key).is_some() {
        // The winner of that race may have been established and moved to
        // `FLOWS` between this packet's lookups (it is inserted there before
        // it leaves `HALF_OPEN`): this flow would be a second one, whose
        // backend's answer would replace the first under the client's key.
        let _ = HALF_OPEN.remove(key);
        let _ = HALF_OPEN.remove(&probe.reply_key);
        return Created::Refused(Counter::DropSynProxyEarly);
    }
    if let Some(active) = ACTIVE_CONNS.get_ptr_mut(backend_idx.0) {
        // SAFETY: 8-byte aligned map value.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(active, 1) };
    }
    if !tcp {
        // TCP flows go to the peers once established (`handshake::promote`).
        crate::sync::new_flow(key, forward);
    }
    Created::Flow(forward)
}
