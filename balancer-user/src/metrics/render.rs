//! A [`Snapshot`] and the health-check histograms as metrics, in the
//! OpenMetrics text format that prometheus-client writes. Every family the
//! daemon exports is written here, in this order (the README lists them).

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode,
    },
    metrics::{MetricType, histogram::Histogram},
    registry::Registry,
};

use super::{
    BackendSnapshot, Snapshot,
    outcome::{HEALTH_STATES, Outcome, drop_reasons, outcome},
    text::PrometheusText,
};
use balancer_common::stats::Counter;

/// The health-check figures of one backend.
#[derive(Debug, Clone)]
pub struct CheckFigures {
    pub service: String,
    pub backend: String,
    pub durations: Histogram,
    pub failures: u64,
}

/// Roles a node can have; one is 1, the others 0.
/// Active-standby's roles, then active-active's states that are not one.
const ROLES: [&str; 7] = [
    "active",
    "standby",
    "init",
    "standalone",
    "joining",
    "draining",
    "leaving",
];

/// Renders `snapshot` and `checks` as an OpenMetrics exposition (ending in
/// `# EOF`).
pub fn openmetrics(snapshot: Snapshot, checks: Vec<CheckFigures>) -> String {
    let registry = registry(snapshot, checks);
    let mut out = String::with_capacity(4096);
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// The same in the Prometheus text format, converted as it is written.
pub fn prometheus(snapshot: Snapshot, checks: Vec<CheckFigures>) -> String {
    let registry = registry(snapshot, checks);
    let mut out = String::with_capacity(4096);
    encode(&mut PrometheusText::new(&mut out), &registry).expect("writing to a String cannot fail");
    out
}

fn registry(snapshot: Snapshot, checks: Vec<CheckFigures>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { snapshot, checks }));
    registry
}

#[derive(Debug)]
struct Scrape {
    snapshot: Snapshot,
    checks: Vec<CheckFigures>,
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: u64) -> Fmt {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: V,
) -> Fmt {
    m.encode_family(labels)?.encode_gauge(&v)
}

/// Each backend's row: service, address, figures.
type BackendRow<'a> = (&'a str, String, &'a BackendSnapshot);

/// A gauge family with one sample per backend (labels `service`, `backend`);
/// a backend whose `value` is `None` has no sample.
fn backend_gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    rows: &[BackendRow],
    name: &str,
    help: &str,
    value: impl Fn(&BackendSnapshot) -> Option<V>,
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (svc, addr, b) in rows {
        if let Some(v) = value(b) {
            gauge(&mut m, &[("service", *svc), ("backend", addr.as_str())], v)?;
        }
    }
    Ok(())
}

/// A counter family with two samples per backend (labels `service`,
/// `backend`, `direction`): `value` gives the to_backend and to_client figures.
fn backend_directional_counter(
    e: &mut DescriptorEncoder,
    rows: &[BackendRow],
    name: &str,
    help: &str,
    value: impl Fn(&BackendSnapshot) -> (u64, u64),
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (svc, addr, b) in rows {
        let (to_backend, to_client) = value(b);
        for (dir, v) in [("to_backend", to_backend), ("to_client", to_client)] {
            counter(
                &mut m,
                &[
                    ("service", *svc),
                    ("backend", addr.as_str()),
                    ("direction", dir),
                ],
                v,
            )?;
        }
    }
    Ok(())
}

fn single_counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Fmt {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn single_gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> Fmt {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        let s = &self.snapshot;
        self.process(&mut e, s)?;
        self.dataplane(&mut e, s)?;
        self.flow_table(&mut e, s)?;
        self.services(&mut e, s)?;
        self.backends(&mut e, s)?;
        self.health_checks(&mut e)
    }
}

impl Scrape {
    fn process(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Fmt {
        let layout = s.layout_version.to_string();
        e.encode_descriptor(
            "balancer_build",
            "The running balancer: its version and the kernel map layout it uses",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", s.version.as_str()), ("layout", layout.as_str())])?;
        single_gauge(
            e,
            "balancer_start_time_seconds",
            "When the daemon started, seconds since the Unix epoch",
            s.started_unix as i64,
        )?;
        single_gauge(
            e,
            "balancer_config_generation",
            "Configurations accepted since the daemon started (1 = the one it started with)",
            s.generation as i64,
        )?;
        single_gauge(
            e,
            "balancer_config_last_reload_success",
            "Whether the last reload was accepted (1 also when there was none)",
            i64::from(s.last_reload.as_ref().is_none_or(|r| r.ok)),
        )?;
        if let Some(r) = &s.last_reload {
            single_gauge(
                e,
                "balancer_config_last_reload_timestamp_seconds",
                "When the last reload was tried, seconds since the Unix epoch",
                r.at_unix as i64,
            )?;
        }
        let mut m = e.encode_descriptor(
            "balancer_config_reloads",
            "Reloads (balancer reload, SIGHUP) by result",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &[("result", "accepted")], s.reloads_accepted)?;
        counter(&mut m, &[("result", "refused")], s.reloads_refused)?;
        let mut m = e.encode_descriptor(
            "balancer_ha_role",
            "The node's role: 1 for the one it has",
            None,
            MetricType::Gauge,
        )?;
        for role in ROLES {
            gauge(&mut m, &[("role", role)], i64::from(s.role == role))?;
        }
        if let Some(ha) = &s.ha {
            self.ha(e, s, ha)?;
        }
        Ok(())
    }

    fn ha(&self, e: &mut DescriptorEncoder, s: &Snapshot, ha: &crate::api::HaStatus) -> Fmt {
        single_gauge(
            e,
            "balancer_ha_priority",
            "The configured priority",
            i64::from(ha.priority),
        )?;
        single_gauge(
            e,
            "balancer_ha_effective_priority",
            "The priority the node advertises: configured less what tracked conditions take (0: a fault)",
            i64::from(ha.effective_priority),
        )?;
        let mut m = e.encode_descriptor(
            "balancer_ha_transitions",
            "Role changes of this node, by from, to and reason (fault, split_brain, priority_fell, preempt, active_peer, outranked, peer_dead, no_active_peer, stopping); the event log has the details",
            None,
            MetricType::Counter,
        )?;
        for (key, n) in &ha.transitions {
            let mut parts = key.splitn(3, '|');
            let (from, to, reason) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            counter(
                &mut m,
                &[("from", from), ("to", to), ("reason", reason)],
                *n,
            )?;
        }
        single_counter(
            e,
            "balancer_ha_adverts_sent",
            "Adverts sent to peers",
            ha.adverts_sent,
        )?;
        single_counter(
            e,
            "balancer_ha_adverts_received",
            "Adverts accepted from peers",
            ha.adverts_received,
        )?;
        let mut m = e.encode_descriptor(
            "balancer_ha_adverts_rejected",
            "Adverts ignored, by reason (forged, replayed, stale, malformed, unknown_sender, other_mode: a peer runs the other ha.mode)",
            None,
            MetricType::Counter,
        )?;
        for reason in [
            "forged",
            "replayed",
            "stale",
            "malformed",
            "unknown_sender",
            "other_mode",
        ] {
            let n = ha.adverts_rejected.get(reason).copied().unwrap_or(0);
            counter(&mut m, &[("reason", reason)], n)?;
        }
        single_counter(
            e,
            "balancer_ha_split_brains",
            "Times this node and a peer were active at once",
            ha.split_brains,
        )?;
        let mut m = e.encode_descriptor(
            "balancer_ha_sync_records",
            "Flow-sync records: sent (active), installed, closed or unmatched (standby), rejected datagrams, lost (no room in the ring)",
            None,
            MetricType::Counter,
        )?;
        for (what, n) in [
            ("sent", ha.sync_sent),
            ("installed", ha.sync_installed),
            ("closed", ha.sync_closed),
            ("unmatched", ha.sync_unmatched),
            ("rejected", ha.sync_rejected),
            ("lost", s.counter(Counter::SyncLost)),
        ] {
            counter(&mut m, &[("result", what)], n)?;
        }
        if let Some(lag) = ha.sync_lag_ms {
            single_gauge(
                e,
                "balancer_ha_sync_lag_seconds",
                "How old the last flow-sync datagram was when it arrived (the nodes' clocks must agree)",
                lag / 1000.0,
            )?;
        }
        let mut m = e.encode_descriptor(
            "balancer_ha_sync_rejected",
            "Flow-sync datagrams refused, by reason (forged, stale, malformed, version: a peer of another sync format or record layout, unknown_sender)",
            None,
            MetricType::Counter,
        )?;
        for reason in ["forged", "stale", "malformed", "version", "unknown_sender"] {
            let n = ha.sync_rejected_by_reason.get(reason).copied().unwrap_or(0);
            counter(&mut m, &[("reason", reason)], n)?;
        }
        single_counter(
            e,
            "balancer_ha_sync_retransmitted",
            "Flow-sync datagrams sent again because a peer said it lacked them",
            ha.sync_retransmitted,
        )?;
        single_counter(
            e,
            "balancer_ha_sync_bulks_sent",
            "Bulk copies of this node's flow table sent to peers",
            ha.sync_bulks_sent,
        )?;
        single_counter(
            e,
            "balancer_ha_sync_bulk_flows_sent",
            "Flows sent in bulk copies of this node's flow table",
            ha.sync_bulk_flows_sent,
        )?;
        single_counter(
            e,
            "balancer_ha_sync_copies_lost",
            "Times this node's copy of a peer's flow table had a hole only a bulk copy could repair",
            ha.sync_copies_lost,
        )?;
        let mut m = e.encode_descriptor(
            "balancer_ha_sync_copy_state",
            "This node's copy of each peer's flow table: 1 for the state it is in (none, in_progress, complete)",
            None,
            MetricType::Gauge,
        )?;
        for (peer, copy) in &ha.sync_copies {
            for state in ["none", "in_progress", "complete"] {
                gauge(
                    &mut m,
                    &[("peer", peer.as_str()), ("state", state)],
                    i64::from(copy.state() == state),
                )?;
            }
        }
        let mut m = e.encode_descriptor(
            "balancer_ha_sync_copy_flows",
            "Flows of each peer's table this node copied: received so far in a bulk copy in progress, the bulk copy's total once complete",
            None,
            MetricType::Gauge,
        )?;
        for (peer, copy) in &ha.sync_copies {
            let flows = match copy {
                crate::api::SyncCopy::None => 0,
                crate::api::SyncCopy::InProgress { received, .. } => *received,
                crate::api::SyncCopy::Complete { flows, .. } => *flows,
            };
            gauge(&mut m, &[("peer", peer.as_str())], flows as i64)?;
        }
        if ha.mode == "active-active" {
            self.active_active(e, ha)?;
        }
        Ok(())
    }

    fn active_active(&self, e: &mut DescriptorEncoder, ha: &crate::api::HaStatus) -> Fmt {
        let mut m = e.encode_descriptor(
            "balancer_ha_announced",
            "Active-active: 1 for each VIP this node announces (a route in ha.announce_table)",
            None,
            MetricType::Gauge,
        )?;
        for vip in &ha.announced {
            gauge(&mut m, &[("vip", vip.to_string().as_str())], 1)?;
        }
        let mut m = e.encode_descriptor(
            "balancer_ha_snat_held",
            "Active-active: 1 for each SNAT address this node holds, by the node it belongs to (this one, or a peer it adopted)",
            None,
            MetricType::Gauge,
        )?;
        for addr in &ha.snat_held {
            let owner = ha
                .peers
                .iter()
                .find(|p| p.snat.contains(addr))
                .map_or("self", |p| p.node.as_str());
            gauge(
                &mut m,
                &[("address", addr.to_string().as_str()), ("owner", owner)],
                1,
            )?;
        }
        single_counter(
            e,
            "balancer_ha_adoptions",
            "Active-active: times this node adopted a dead or leaving peer's SNAT addresses and flows",
            ha.adoptions,
        )
    }

    fn dataplane(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Fmt {
        let mut m = e.encode_descriptor(
            "balancer_forwarded_packets",
            "Packets the XDP program sent on, by how (tx: out of the interface it came in on; redirect: another)",
            None,
            MetricType::Counter,
        )?;
        for c in Counter::ALL {
            if let Outcome::Forwarded(via) = outcome(c) {
                counter(&mut m, &[("via", via)], s.counter(c))?;
            }
        }
        let mut m = e.encode_descriptor(
            "balancer_passed_packets",
            "Packets the XDP program gave to the host's stack, by reason",
            None,
            MetricType::Counter,
        )?;
        for c in Counter::ALL {
            if let Outcome::Passed(reason) = outcome(c) {
                counter(&mut m, &[("reason", reason)], s.counter(c))?;
            }
        }
        let mut m = e.encode_descriptor(
            "balancer_dropped_packets",
            "Packets the XDP program dropped, by reason",
            None,
            MetricType::Counter,
        )?;
        for (c, reason) in drop_reasons() {
            counter(&mut m, &[("reason", reason)], s.counter(c))?;
        }
        single_counter(
            e,
            "balancer_connections",
            "New flows (TCP connections, UDP flows) the XDP program opened",
            s.counter(Counter::NewFlow),
        )?;
        single_counter(
            e,
            "balancer_icmp_relayed_packets",
            "ICMP errors about tracked flows, translated and sent on",
            s.counter(Counter::IcmpRelayed),
        )?;
        self.syn_proxy(e, s)?;
        if !s.snat_ports_per_backend.is_empty() {
            let mut m = e.encode_descriptor(
                "balancer_snat_ports_per_backend",
                "SNAT ports each backend's flows can hold at once (port range times SNAT addresses), by family",
                None,
                MetricType::Gauge,
            )?;
            for (family, ports) in &s.snat_ports_per_backend {
                gauge(&mut m, &[("family", family.as_str())], *ports as i64)?;
            }
        }
        Ok(())
    }

    fn syn_proxy(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Fmt {
        let mut m = e.encode_descriptor(
            "balancer_syn_cookies_mode",
            "firewall.syn_cookies: 1 for the mode configured (off, auto, always)",
            None,
            MetricType::Gauge,
        )?;
        for mode in ["off", "auto", "always"] {
            gauge(
                &mut m,
                &[("mode", mode)],
                i64::from(s.syn_cookies.mode == mode),
            )?;
        }
        single_gauge(
            e,
            "balancer_syn_cookies_active",
            "1 while SYNs to a VIP are answered with cookies (always, or auto during a SYN flood)",
            i64::from(s.syn_cookies.active),
        )?;
        single_counter(
            e,
            "balancer_syn_cookies_activations",
            "Times auto mode turned SYN cookies on (a SYN flood began)",
            s.syn_cookies.activations,
        )?;
        let mut m = e.encode_descriptor(
            "balancer_syn_cookies",
            "SYN cookies by result: sent (a SYN answered), valid (an ACK that opened a flow), invalid (an ACK dropped)",
            None,
            MetricType::Counter,
        )?;
        for c in Counter::ALL {
            if let Outcome::SynCookie(result) = outcome(c) {
                counter(&mut m, &[("result", result)], s.counter(c))?;
            }
        }
        counter(
            &mut m,
            &[("result", "invalid")],
            s.counter(Counter::DropSynCookieInvalid),
        )?;
        let mut m = e.encode_descriptor(
            "balancer_tcp_handshakes",
            "TCP handshakes completed through the balancer, by how: direct (the client acknowledged the backend), syn_proxy (the backend answered a SYN the proxy sent)",
            None,
            MetricType::Counter,
        )?;
        for c in Counter::ALL {
            if let Outcome::Handshake(via) = outcome(c) {
                counter(&mut m, &[("via", via)], s.counter(c))?;
            }
        }
        let mut m = e.encode_descriptor(
            "balancer_syn_proxy_failures",
            "SYN-proxied handshakes the backend did not complete: refused (a reset; the client got one) or timed_out (no answer within flows.tcp_syn_timeout_s)",
            None,
            MetricType::Counter,
        )?;
        counter(
            &mut m,
            &[("reason", "refused")],
            s.counter(Counter::SynProxyRefused),
        )?;
        counter(
            &mut m,
            &[("reason", "timed_out")],
            s.flow_table.syn_proxy_timed_out,
        )?;
        let mut m = e.encode_descriptor(
            "balancer_syn_proxy_syn_resent",
            "SYNs the SYN proxy sent a backend again, by reason: time_wait (the backend answered with an ACK of an older connection on the same 4-tuple; the SYN went again with a later sequence number), no_answer (the client sent its first segment again before the backend answered)",
            None,
            MetricType::Counter,
        )?;
        for c in Counter::ALL {
            if let Outcome::SynProxyResent(reason) = outcome(c) {
                counter(&mut m, &[("reason", reason)], s.counter(c))?;
            }
        }
        Ok(())
    }

    fn flow_table(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Fmt {
        let t = &s.flow_table;
        single_gauge(
            e,
            "balancer_flow_table_max_entries",
            "Entries the flow table holds at most (flows.capacity); each flow takes two",
            t.capacity as i64,
        )?;
        if let Some(entries) = t.entries {
            single_gauge(
                e,
                "balancer_flow_table_entries",
                "Entries in the flow table when the last sweep ended",
                entries as i64,
            )?;
        }
        single_counter(
            e,
            "balancer_flow_table_evictions",
            "Entries the flow table's LRU evicted to make room, derived at each sweep (created minus removed minus left); a lower bound",
            t.evictions,
        )?;
        single_counter(
            e,
            "balancer_flows_expired",
            "Flows the sweeps removed as idle past their timeout",
            t.expired,
        )?;
        single_counter(
            e,
            "balancer_half_open_flows_expired",
            "Of the expired flows, TCP flows whose handshake had not completed within flows.tcp_syn_timeout_s",
            t.half_open_expired,
        )?;
        if let Some(at) = t.last_sweep_unix_ms {
            single_gauge(
                e,
                "balancer_flow_sweep_timestamp_seconds",
                "When the last flow sweep ran, seconds since the Unix epoch",
                at as f64 / 1000.0,
            )?;
            single_gauge(
                e,
                "balancer_flow_sweep_duration_seconds",
                "How long the last flow sweep took",
                t.last_sweep_s,
            )?;
        }
        Ok(())
    }

    fn services(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Fmt {
        let mut m = e.encode_descriptor(
            "balancer_service",
            "A configured service: its address, protocol and scheduler",
            None,
            MetricType::Info,
        )?;
        for svc in &s.services {
            let (vip, port) = (svc.vip.to_string(), svc.port.to_string());
            m.encode_info(&[
                ("service", svc.name.as_str()),
                ("vip", vip.as_str()),
                ("port", port.as_str()),
                ("protocol", svc.protocol.as_str()),
                ("scheduler", svc.scheduler.as_str()),
            ])?;
        }
        let mut m = e.encode_descriptor(
            "balancer_service_dropped_packets",
            "New flows of a service dropped, by reason",
            None,
            MetricType::Counter,
        )?;
        for svc in &s.services {
            for (_, reason) in drop_reasons() {
                let v = svc.drops.get(reason).copied().unwrap_or(0);
                counter(
                    &mut m,
                    &[("service", svc.name.as_str()), ("reason", reason)],
                    v,
                )?;
            }
        }
        Ok(())
    }

    fn backends(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Fmt {
        // Label values once: the address is written by every family.
        let rows: Vec<BackendRow> = s
            .services
            .iter()
            .flat_map(|svc| {
                svc.backends
                    .iter()
                    .map(move |b| (svc.name.as_str(), b.address.to_string(), b))
            })
            .collect();
        backend_directional_counter(
            e,
            &rows,
            "balancer_backend_packets",
            "Packets of a backend's flows, by direction (to_backend: from the clients; to_client: the replies)",
            |b| (b.packets_to_backend, b.packets_to_client),
        )?;
        backend_directional_counter(
            e,
            &rows,
            "balancer_backend_bytes",
            "Bytes (IP packets, headers included) of a backend's flows, by direction",
            |b| (b.bytes_to_backend, b.bytes_to_client),
        )?;
        let mut m = e.encode_descriptor(
            "balancer_backend_connections",
            "New connections (flows) sent to a backend",
            None,
            MetricType::Counter,
        )?;
        for &(svc, ref addr, b) in &rows {
            let addr = addr.as_str();
            counter(
                &mut m,
                &[("service", svc), ("backend", addr)],
                b.connections,
            )?;
        }
        backend_gauge(
            e,
            &rows,
            "balancer_backend_active_connections",
            "A backend's open connections (opened minus ended by a FIN, RST or expiry)",
            |b| Some(b.active as i64),
        )?;
        let mut m = e.encode_descriptor(
            "balancer_backend_health_state",
            "A backend's health as the checks say: 1 for the state it is in (up, down, unknown: not checked yet, unchecked: no checks)",
            None,
            MetricType::Gauge,
        )?;
        for &(svc, ref addr, b) in &rows {
            let addr = addr.as_str();
            for state in HEALTH_STATES {
                gauge(
                    &mut m,
                    &[("service", svc), ("backend", addr), ("state", state)],
                    i64::from(b.health == state),
                )?;
            }
        }
        backend_gauge(
            e,
            &rows,
            "balancer_backend_weight",
            "A backend's configured weight",
            |b| Some(i64::from(b.weight)),
        )?;
        backend_gauge(
            e,
            &rows,
            "balancer_backend_load_ratio",
            "The load a backend's agent reported, 0 to 1 (0 without an agent)",
            |b| Some(f64::from(b.load_pct) / 100.0),
        )?;
        backend_gauge(
            e,
            &rows,
            "balancer_backend_draining",
            "1 while a backend is drained (by balancer backend drain or its agent): no new flows",
            |b| Some(i64::from(b.draining)),
        )?;
        if rows.iter().any(|(_, _, b)| b.snat_ports.is_some()) {
            backend_gauge(
                e,
                &rows,
                "balancer_backend_snat_ports",
                "SNAT ports a backend's flows held at the last sweep (of balancer_snat_ports_per_backend)",
                |b| b.snat_ports.map(|ports| ports as i64),
            )?;
        }
        Ok(())
    }

    fn health_checks(&self, e: &mut DescriptorEncoder) -> Fmt {
        if self.checks.is_empty() {
            return Ok(());
        }
        let mut m = e.encode_descriptor(
            "balancer_health_check_duration_seconds",
            "How long a backend's health checks took, failed ones included",
            None,
            MetricType::Histogram,
        )?;
        for c in &self.checks {
            let labels = [
                ("service", c.service.as_str()),
                ("backend", c.backend.as_str()),
            ];
            c.durations.encode(m.encode_family(&labels)?)?;
        }
        let mut m = e.encode_descriptor(
            "balancer_health_check_failures",
            "A backend's health checks that failed",
            None,
            MetricType::Counter,
        )?;
        for c in &self.checks {
            counter(
                &mut m,
                &[
                    ("service", c.service.as_str()),
                    ("backend", c.backend.as_str()),
                ],
                c.failures,
            )?;
        }
        Ok(())
    }
}
