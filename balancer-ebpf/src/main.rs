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
mod flow;
mod forward;
mod icmp;
mod lease;
mod maps;
mod nat;
mod neigh;
mod parse;
mod select;
mod sweep;
mod sync;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer_common::{
    flow::{DIR_FORWARD, FlowKey},
    service::{SCHED_MAGLEV, ServiceKey, ServiceValue},
    stats::Counter,
};

use crate::{
    addr::Addressed,
    flow::Created,
    maps::{SERVICES, count},
    parse::{Packet, Parsed},
};

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    let pkt = match parse::parse(&ctx) {
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
    process(&ctx, &pkt)
}

#[inline(always)]
fn process(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let key = &pkt.key;
    if let Some(flow) = maps::FLOWS.get_ptr_mut(key) {
        // SAFETY: a map value pointer is valid for the duration of the program.
        let flow = unsafe { &mut *flow };
        flow::on_packet(flow, pkt);
        nat::translate(ctx, pkt, flow);
        maps::count_backend(flow.backend, flow.direction == DIR_FORWARD, pkt.ip_len);
        return forward::forward(ctx, pkt, flow);
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
    let opens = pkt.may_open_flow() || service.scheduler == SCHED_MAGLEV && pkt.may_resume_flow();
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
    open_flow(ctx, pkt, key, service)
}

/// A new flow's first packet. Not inlined: the flow's two entries would
/// otherwise share one stack frame with the established path, past the 512-byte
/// BPF stack.
#[inline(never)]
fn open_flow(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, service: &ServiceValue) -> u32 {
    if lease::expired() {
        return drop(Counter::DropNotActive);
    }
    if let Err(reason) = firewall::admit(pkt, service) {
        maps::count_service_drop(service.id, reason);
        return drop(reason);
    }
    match flow::create(ctx, pkt, key, service) {
        Created::Flow(flow) => {
            count(Counter::NewFlow);
            nat::translate(ctx, pkt, flow);
            maps::count_backend(flow.backend, true, pkt.ip_len);
            maps::count_new_flow(flow.backend);
            forward::forward(ctx, pkt, flow)
        }
        Created::Refused(reason) => {
            maps::count_service_drop(service.id, reason);
            if reason == Counter::DropNoBackend {
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
