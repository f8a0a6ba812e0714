//! The XDP program: parse, look up the flow or the service, choose a backend,
//! translate, forward. Everything that is not for a VIP or an SNAT address goes
//! to the host's stack untouched.
#![no_std]
#![no_main]
// Atomic add and exchange on map values: core's atomic types lack them on BPF.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map keys and values go by reference: by value they would be copied onto the
// 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod addr;
mod clock;
mod copy;
mod firewall;
mod flood;
mod flow;
mod forward;
mod handshake;
mod icmp;
mod lease;
mod maps;
mod nat;
mod neigh;
mod parse;
mod select;
mod sweep;
mod sync;
mod synproxy;
mod tcpopt;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer_common::{
    PROTO_TCP,
    flow::{DIR_FORWARD, STATE_CLOSING, STATE_PROXY_SYN},
    global::SYN_COOKIES_OFF,
    service::{SCHED_MAGLEV, ServiceKey, ServiceValue},
    stats::Counter,
};

use crate::{
    addr::Addressed,
    flow::{Created, Open},
    maps::{SERVICES, count},
    parse::{Packet, Parsed},
    synproxy::Proxy,
};

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    let mut pkt = match parse::parse(&ctx) {
        Parsed::Packet(pkt) => pkt,
        Parsed::IcmpError(err) => return icmp::relay(&ctx, &err),
        Parsed::Neighbour(n) => {
            return match neigh::admit(&n) {
                Ok(counter) => pass(counter),
                Err(counter) => drop(counter),
            };
        }
        Parsed::Pass(counter) => return pass(counter),
        Parsed::Malformed => return drop(Counter::DropMalformed),
    };
    process(&ctx, &mut pkt)
}

#[inline(always)]
fn process(ctx: &XdpContext, pkt: &mut Packet) -> u32 {
    let key = &pkt.key;
    // While SYNs are answered with cookies, a SYN skips the flow tables: on a
    // flood their two lookups, which miss in buckets nobody touched lately,
    // would cost most of a SYN-ACK. (A SYN for a tuple that has a flow is a
    // retransmission or a reused port; its cookie's ACK replaces that flow.)
    let cookie_syn = pkt.is_tcp_syn() && flood::cookies_on();
    'lookup: {
        if cookie_syn {
            break 'lookup;
        }
        if let Some(flow) = maps::FLOWS.get_ptr_mut(key) {
            // SAFETY: a map value pointer is valid for the duration of the program.
            let flow = unsafe { &mut *flow };
            if flow.state == STATE_CLOSING && synproxy::replaced_by_cookie(ctx, pkt, flow, false) {
                break 'lookup;
            }
            flow::on_packet(flow, pkt);
            if flow.proxy != 0 {
                // Opened by the SYN proxy: sequence numbers to translate.
                return synproxy::established(ctx, pkt, flow);
            }
            nat::translate(ctx, pkt, flow);
            maps::count_backend(flow.backend, flow.direction == DIR_FORWARD, pkt.ip_len);
            return forward::forward(ctx, pkt, flow);
        }
        if key.proto == PROTO_TCP
            && let Some(flow) = maps::HALF_OPEN.get_ptr_mut(key)
        {
            // SAFETY: a map value pointer is valid for the duration of the program.
            let flow = unsafe { &mut *flow };
            if flow.state == STATE_PROXY_SYN {
                // Called from here rather than from `half_open`: one call less
                // deep, for the stack.
                return synproxy::pending(ctx, pkt, flow);
            }
            if synproxy::replaced_by_cookie(ctx, pkt, flow, true) {
                break 'lookup;
            }
            return handshake::half_open(ctx, pkt, flow);
        }
    }

    // No flow: only a VIP:port can start one; anything else addressed to an SNAT
    // address is the host's own traffic (health checks, for one).
    // Only now, with no flow: most packets of ours have one and skip this.
    if addr::classify(&key.src, &key.dst, key.family) != Addressed::Vip {
        return pass(Counter::PassNotForUs);
    }
    let service_key = ServiceKey {
        vip: key.dst,
        port_be: key.dport_be,
        proto: key.proto,
        family: key.family,
    };
    let Some(service) = SERVICES.get_ptr(&service_key) else {
        return pass(Counter::PassNoService);
    };
    // SAFETY: as above.
    let service = unsafe { &*service };
    // Maglev sends a mid-stream packet whose flow state was lost (a restart, a
    // failover without sync) to the backend it had, so it may open the flow.
    if pkt.may_open_flow() {
        if cookie_syn
            && service.backend_count > 0
            && let Some(action) = syn_cookie(ctx, pkt, service)
        {
            return action;
        }
        return open_flow(ctx, pkt, service, Proxy::NONE);
    }
    if pkt.is_tcp_ack() && flood::mode() != SYN_COOKIES_OFF {
        // Perhaps the ACK of a SYN-ACK with a cookie.
        let proxy = synproxy::check_ack(ctx, pkt);
        if proxy.valid() {
            // The ACK becomes the SYN it answers, before the flow takes it
            // (here rather than in `open_flow`: one call less deep, for the
            // stack).
            if !synproxy::ack_into_syn(ctx, pkt, proxy) {
                return drop(Counter::DropNoRoom);
            }
            return open_flow(ctx, pkt, service, proxy);
        }
        let resumes = service.scheduler == SCHED_MAGLEV && pkt.may_resume_flow();
        if !resumes && flood::cookies_lately(synproxy::COOKIE_RECENT_NS) {
            maps::count_service_drop(service.id, Counter::DropSynCookieInvalid);
            return drop(Counter::DropSynCookieInvalid);
        }
    }
    let opens = service.scheduler == SCHED_MAGLEV && pkt.may_resume_flow();
    if !opens {
        if lease::in_takeover_grace() {
            // Its flow may still be arriving from the old active node: the
            // client retransmits what is dropped, but a reset ends it.
            return drop(Counter::DropTakeoverGrace);
        }
        // The VIP is a local address with no socket on this port: the stack
        // answers with a reset, which is what the client of an ended flow needs.
        return pass(Counter::PassNoFlow);
    }
    open_flow(ctx, pkt, service, Proxy::NONE)
}

/// A SYN while the SYN proxy answers SYNs: a SYN-ACK with a cookie, no state;
/// `None` when no cookie can be made yet (no key for this period), to open
/// the flow as without cookies. Not inlined, for the stack.
#[inline(never)]
fn syn_cookie(ctx: &XdpContext, pkt: &Packet, service: &ServiceValue) -> Option<u32> {
    if lease::expired() {
        return Some(drop(Counter::DropNotActive));
    }
    // Source rules now, so that a source refused gets nothing back; the
    // rate of new connections per source once its ACK proves its address.
    if !firewall::sources_allow(pkt, service) {
        maps::count_service_drop(service.id, Counter::DropFirewall);
        return Some(drop(Counter::DropFirewall));
    }
    synproxy::answer_syn(ctx, pkt)
}

/// A new flow's first packet (or the SYN an ACK with a cookie, `proxy`,
/// was turned into). Not inlined:
/// the flow's two entries would otherwise share one stack frame with the
/// established path, past the 512-byte BPF stack.
#[inline(never)]
fn open_flow(ctx: &XdpContext, pkt: &mut Packet, service: &ServiceValue, proxy: Proxy) -> u32 {
    if lease::expired() {
        return drop(Counter::DropNotActive);
    }
    if let Err(reason) = firewall::admit(pkt, service) {
        maps::count_service_drop(service.id, reason);
        return drop(reason);
    }
    let open = if proxy.valid() {
        // (The caller made the ACK the SYN it answers: its sequence number
        // is the client's ISN.)
        let Some(tcp) = parse::read_tcp(ctx, pkt) else {
            return drop(Counter::DropMalformed);
        };
        Open {
            state: STATE_PROXY_SYN,
            seq_delta: proxy.cookie(),
            isn_delta: tcp.seq,
            proxy: proxy.proxy_word(),
        }
    } else {
        Open::NEW
    };
    let key = &pkt.key;
    match flow::create(ctx, pkt, key, service, &open) {
        Created::Flow(flow) => {
            count(Counter::NewFlow);
            if key.proto == PROTO_TCP {
                if proxy.valid() {
                    count(Counter::SynCookieValid);
                    flood::completed();
                } else {
                    flood::opened(false);
                }
            }
            nat::translate(ctx, pkt, flow);
            maps::count_backend(flow.backend, true, pkt.ip_len);
            maps::count_new_flow(flow.backend);
            forward::forward(ctx, pkt, flow)
        }
        Created::Refused(reason) => {
            maps::count_service_drop(service.id, reason);
            if reason == Counter::DropNoBackend && !proxy.valid() {
                // The host has the VIP and no socket on the port: it answers
                // with a reset (ICMP port unreachable for UDP), so that clients
                // fail at once instead of retrying into silence.
                return pass(reason);
            }
            drop(reason)
        }
    }
}

#[inline(always)]
fn pass(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
