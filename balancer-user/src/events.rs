//! The event log: every change of state is one structured record with the
//! target `event` and a field `event` naming it, so that a collector can pick
//! them out of the log (`balancer run --log-format json`) and a person can
//! read them in the default format.

use std::net::SocketAddr;

use balancer_common::service::BackendIndex;
use tracing::{info, warn};

pub const TARGET: &str = "event";

pub fn backend_up(service: &str, backend: SocketAddr, reason: &str) {
    info!(target: TARGET, event = "backend_up", service, %backend, reason, "backend up");
}

pub fn backend_down(service: &str, backend: SocketAddr, reason: &str) {
    warn!(target: TARGET, event = "backend_down", service, %backend, reason, "backend down");
}

pub fn backend_drain(service: &str, backend: SocketAddr, by: &str) {
    info!(target: TARGET, event = "backend_drain", service, %backend, by, "backend draining");
}

pub fn backend_enable(service: &str, backend: SocketAddr, by: &str) {
    info!(target: TARGET, event = "backend_enable", service, %backend, by, "backend enabled");
}

pub fn backend_load(service: &str, backend: SocketAddr, load_pct: u32) {
    info!(target: TARGET, event = "backend_load", service, %backend, load_pct, "backend reported its load");
}

pub fn backend_added(service: &str, backend: SocketAddr, by: &str) {
    info!(target: TARGET, event = "backend_added", service, %backend, by, "backend added");
}

pub fn backend_removed(service: &str, backend: SocketAddr, by: &str) {
    info!(target: TARGET, event = "backend_removed", service, %backend, by, "backend removed: no new flows, established ones continue");
}

pub fn backend_freed(index: BackendIndex) {
    info!(target: TARGET, event = "backend_freed", index = index.0, "removed backend has no flows left");
}

pub fn flows_reset(service: &str, backend: SocketAddr, why: &str, ended: u64) {
    warn!(target: TARGET, event = "flows_reset", service, %backend, why, ended, "ended the backend's flows");
}

pub fn reload_accepted(generation: u64, by: &str, summary: &str) {
    info!(target: TARGET, event = "reload_accepted", generation, by, summary, "configuration reloaded");
}

pub fn reload_refused(by: &str, problems: &[String]) {
    let problems = problems.join("; ");
    warn!(target: TARGET, event = "reload_refused", by, problems, "configuration refused; the running one stays");
}

pub fn restart_recovered(services: usize, backends: usize, flows: usize) {
    info!(
        target: TARGET,
        event = "restart_recovered",
        services,
        backends,
        flows,
        "took over the pinned state of the previous daemon"
    );
}

/// Auto mode's SYN cookies came on (a SYN flood) or went off.
pub fn syn_cookies(on: bool, activations: u64) {
    if on {
        warn!(
            target: TARGET,
            event = "syn_cookies_on",
            activations,
            "SYN flood: answering SYNs with cookies (SYN proxy on)"
        );
    } else {
        info!(
            target: TARGET,
            event = "syn_cookies_off",
            "SYN flood over: SYNs open flows again (SYN proxy off)"
        );
    }
}

/// The tracked conditions of high availability changed: faults (priority 0)
/// and what took priority off.
pub fn ha_conditions(faults: &[String], penalties: &[String], penalty: u8) {
    if faults.is_empty() && penalties.is_empty() {
        info!(target: TARGET, event = "ha_conditions", "tracked conditions all clear");
    } else {
        let faults = faults.join("; ");
        let penalties = penalties.join("; ");
        warn!(
            target: TARGET,
            event = "ha_conditions",
            faults,
            penalties,
            penalty,
            "tracked conditions changed"
        );
    }
}
