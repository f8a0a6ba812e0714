//! `balancer stats`: the running daemon's counters per service and backend,
//! as a table or JSON; `--watch` asks again every second and shows rates.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal, Write as _},
    net::SocketAddr,
    process::ExitCode,
    time::Duration,
};

use serde::Serialize;

use super::{admin::Target, client};
use crate::{
    api::Request,
    metrics::{
        Snapshot,
        outcome::{Outcome, drop_reasons, outcome},
    },
};
use balancer_common::stats::Counter;

const REFRESH: Duration = Duration::from_secs(1);

pub struct Options {
    pub json: bool,
    pub watch: bool,
    /// With `watch`: stop after this many refreshes.
    pub count: Option<u64>,
}

pub fn main(target: Target, options: Options) -> ExitCode {
    let socket = client::socket_path(target.socket, target.config);
    let fetch = || -> Result<Snapshot, String> {
        let reply = client::call(&socket, &Request::Stats).map_err(|e| format!("{e:#}"))?;
        match reply.stats {
            Some(s) if reply.ok => Ok(*s),
            _ => Err(reply.message),
        }
    };
    let mut prev = match fetch() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !options.watch {
        if options.json {
            let doc = serde_json::json!({ "stats": &prev });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        } else {
            print!("{}", render(&prev, None));
        }
        return ExitCode::SUCCESS;
    }
    let terminal = std::io::stdout().is_terminal() && !options.json;
    let mut shown = 0u64;
    loop {
        std::thread::sleep(REFRESH);
        let now = match fetch() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let r = rates(&prev, &now);
        let mut out = std::io::stdout().lock();
        let written = if options.json {
            let line = serde_json::json!({ "stats": &now, "rates": &r });
            writeln!(out, "{line}")
        } else if terminal {
            // Home and clear, then the frame.
            write!(out, "\x1b[H\x1b[2J{}", render(&now, Some(&r)))
        } else {
            writeln!(out, "{}", render(&now, Some(&r)))
        };
        if written.and_then(|()| out.flush()).is_err() {
            // A closed pipe (`| head`): done.
            return ExitCode::SUCCESS;
        }
        prev = now;
        shown += 1;
        if options.count.is_some_and(|c| shown >= c) {
            return ExitCode::SUCCESS;
        }
    }
}

/// Per-second rates between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rates {
    pub interval_s: f64,
    pub connections: f64,
    pub forwarded_packets: f64,
    pub dropped_packets: f64,
    pub services: Vec<ServiceRates>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceRates {
    pub name: String,
    pub dropped_packets: f64,
    pub backends: Vec<BackendRates>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendRates {
    pub address: SocketAddr,
    pub connections: f64,
    pub packets_to_backend: f64,
    pub bytes_to_backend: f64,
    pub packets_to_client: f64,
    pub bytes_to_client: f64,
}

pub fn rates(a: &Snapshot, b: &Snapshot) -> Rates {
    let dt = (b.taken_unix_ms.saturating_sub(a.taken_unix_ms) as f64 / 1000.0).max(1e-3);
    // A counter that went down was reset (a restarted daemon with --fresh,
    // a backend slot reused): count from zero.
    let per_s = |x: u64, y: u64| y.checked_sub(x).unwrap_or(y) as f64 / dt;
    let sum = |s: &Snapshot, f: fn(Outcome) -> bool| -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| f(outcome(**c)))
            .map(|c| s.counter(*c))
            .sum()
    };
    let forwarded = |o: Outcome| matches!(o, Outcome::Forwarded(_));
    let dropped = |o: Outcome| matches!(o, Outcome::Dropped(_));
    let before: BTreeMap<(&str, SocketAddr), _> = a
        .services
        .iter()
        .flat_map(|s| {
            s.backends
                .iter()
                .map(move |b| ((s.name.as_str(), b.address), b))
        })
        .collect();
    let services = b
        .services
        .iter()
        .map(|svc| {
            let old = a.services.iter().find(|s| s.name == svc.name);
            let drops = |s: &crate::metrics::ServiceSnapshot| s.drops.values().sum::<u64>();
            ServiceRates {
                name: svc.name.clone(),
                dropped_packets: per_s(old.map_or(0, drops), drops(svc)),
                backends: svc
                    .backends
                    .iter()
                    .map(|bk| {
                        let o = before.get(&(svc.name.as_str(), bk.address));
                        let was =
                            |f: fn(&crate::metrics::BackendSnapshot) -> u64| o.map_or(0, |o| f(o));
                        BackendRates {
                            address: bk.address,
                            connections: per_s(was(|x| x.connections), bk.connections),
                            packets_to_backend: per_s(
                                was(|x| x.packets_to_backend),
                                bk.packets_to_backend,
                            ),
                            bytes_to_backend: per_s(
                                was(|x| x.bytes_to_backend),
                                bk.bytes_to_backend,
                            ),
                            packets_to_client: per_s(
                                was(|x| x.packets_to_client),
                                bk.packets_to_client,
                            ),
                            bytes_to_client: per_s(was(|x| x.bytes_to_client), bk.bytes_to_client),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Rates {
        interval_s: dt,
        connections: per_s(a.counter(Counter::NewFlow), b.counter(Counter::NewFlow)),
        forwarded_packets: per_s(sum(a, forwarded), sum(b, forwarded)),
        dropped_packets: per_s(sum(a, dropped), sum(b, dropped)),
        services,
    }
}

/// The table: totals, or with `rates` the traffic per second.
pub fn render(s: &Snapshot, rates: Option<&Rates>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  role {}  configuration generation {}",
        s.node, s.role, s.generation
    );
    let total = |f: fn(Outcome) -> bool| -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| f(outcome(**c)))
            .map(|c| s.counter(*c))
            .sum()
    };
    match rates {
        None => {
            let _ = writeln!(
                out,
                "packets: forwarded {}  passed to the host {}  dropped {}  connections {}",
                total(|o| matches!(o, Outcome::Forwarded(_))),
                total(|o| matches!(o, Outcome::Passed(_))),
                total(|o| matches!(o, Outcome::Dropped(_))),
                s.counter(Counter::NewFlow)
            );
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "per second: forwarded {:.1}  dropped {:.1}  connections {:.1}",
                r.forwarded_packets, r.dropped_packets, r.connections
            );
        }
    }
    let drops: Vec<String> = drop_reasons()
        .map(|(c, reason)| format!("{reason} {}", s.counter(c)))
        .collect();
    let _ = writeln!(out, "dropped: {}", drops.join("  "));
    let t = &s.flow_table;
    match t.entries {
        Some(entries) => {
            let age = t
                .last_sweep_unix_ms
                .map(|at| s.taken_unix_ms.saturating_sub(at) / 1000)
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "flow table: {entries} of {} entries ({:.1}%) at the last sweep {age}s ago; {} evicted, {} flows expired ({} half-open)",
                t.capacity,
                entries as f64 * 100.0 / t.capacity.max(1) as f64,
                t.evictions,
                t.expired,
                t.half_open_expired
            );
        }
        None => {
            let _ = writeln!(
                out,
                "flow table: {} entries at most; not swept yet",
                t.capacity
            );
        }
    }
    let _ = writeln!(
        out,
        "syn cookies: {}; sent {}  valid {}  invalid {}; proxied handshakes {}, refused {}, timed out {}",
        s.syn_cookies.describe(s.taken_unix_ms / 1000),
        s.counter(Counter::SynCookieSent),
        s.counter(Counter::SynCookieValid),
        s.counter(Counter::DropSynCookieInvalid),
        s.counter(Counter::SynProxyEstablished),
        s.counter(Counter::SynProxyRefused),
        t.syn_proxy_timed_out
    );
    for svc in &s.services {
        let vip = match svc.vip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let srates = rates.and_then(|r| r.services.iter().find(|x| x.name == svc.name));
        let dropped = match srates {
            Some(sr) => format!("dropped {:.1}/s", sr.dropped_packets),
            None => {
                let nonzero: Vec<String> = svc
                    .drops
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                if nonzero.is_empty() {
                    "dropped 0".into()
                } else {
                    format!("dropped: {}", nonzero.join(", "))
                }
            }
        };
        let _ = writeln!(
            out,
            "\nservice {}  {vip}:{}/{}  {dropped}",
            svc.name, svc.port, svc.protocol
        );
        let unit = if srates.is_some() { "/S" } else { "" };
        let _ = writeln!(
            out,
            "  {:<40} {:<9} {:>7} {:>10} {:>12} {:>12} {:>12} {:>12} {:>6}",
            "BACKEND",
            "STATE",
            "ACTIVE",
            format!("CONNS{unit}"),
            format!("PKTS>BE{unit}"),
            format!("BYTES>BE{unit}"),
            format!("PKTS>CL{unit}"),
            format!("BYTES>CL{unit}"),
            "SNAT"
        );
        for b in &svc.backends {
            let snat = b.snat_ports.map_or("-".into(), |p| p.to_string());
            let r = srates.and_then(|sr| sr.backends.iter().find(|x| x.address == b.address));
            let cols: [String; 5] = match r {
                Some(r) => [
                    format!("{:.1}", r.connections),
                    format!("{:.1}", r.packets_to_backend),
                    bytes(r.bytes_to_backend),
                    format!("{:.1}", r.packets_to_client),
                    bytes(r.bytes_to_client),
                ],
                None => [
                    b.connections.to_string(),
                    b.packets_to_backend.to_string(),
                    bytes(b.bytes_to_backend as f64),
                    b.packets_to_client.to_string(),
                    bytes(b.bytes_to_client as f64),
                ],
            };
            let _ = writeln!(
                out,
                "  {:<40} {:<9} {:>7} {:>10} {:>12} {:>12} {:>12} {:>12} {:>6}",
                b.address.to_string(),
                b.state,
                b.active,
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                snat
            );
        }
    }
    out
}

/// 1234567 → "1.2M" (bytes, powers of 1024).
fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{BackendSnapshot, FlowTable, ServiceSnapshot};

    pub(crate) fn snapshot(at_ms: u64, conns: u64, packets: u64) -> Snapshot {
        Snapshot {
            node: "lb-a".into(),
            taken_unix_ms: at_ms,
            version: "0.1.0".into(),
            layout_version: 5,
            started_unix: 0,
            role: "standalone".into(),
            ha: None,
            syn_cookies: Default::default(),
            generation: 1,
            last_reload: None,
            reloads_accepted: 0,
            reloads_refused: 0,
            counters: [
                ("new_flow".to_string(), conns),
                ("forward_tx".to_string(), packets),
                ("drop_firewall".to_string(), 2),
            ]
            .into_iter()
            .collect(),
            flow_table: FlowTable {
                capacity: 1000,
                entries: Some(20),
                evictions: 0,
                expired: 3,
                half_open_expired: 1,
                syn_proxy_timed_out: 0,
                last_sweep_unix_ms: Some(at_ms - 2000),
                last_sweep_s: 0.001,
            },
            snat_ports_per_backend: BTreeMap::new(),
            services: vec![ServiceSnapshot {
                name: "web".into(),
                vip: "198.51.100.10".parse().unwrap(),
                port: 80,
                protocol: "tcp".into(),
                scheduler: "least-conn".into(),
                drops: [("firewall".to_string(), 2)].into_iter().collect(),
                backends: vec![BackendSnapshot {
                    address: "203.0.113.11:8080".parse().unwrap(),
                    weight: 100,
                    state: "up".into(),
                    health: "unchecked".into(),
                    draining: false,
                    load_pct: 0,
                    active: 1,
                    packets_to_backend: packets,
                    bytes_to_backend: packets * 100,
                    packets_to_client: packets / 2,
                    bytes_to_client: packets * 1000,
                    connections: conns,
                    snat_ports: Some(1),
                }],
            }],
        }
    }

    #[test]
    fn the_table_has_every_backend_with_its_counters() {
        let text = render(&snapshot(10_000, 5, 100), None);
        assert!(
            text.contains("service web  198.51.100.10:80/tcp  dropped: firewall 2"),
            "{text}"
        );
        assert!(text.contains("203.0.113.11:8080"), "{text}");
        assert!(
            text.contains("flow table: 20 of 1000 entries (2.0%) at the last sweep 2s ago"),
            "{text}"
        );
        let row = text.lines().find(|l| l.contains("203.0.113.11")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "203.0.113.11:8080",
                "up",
                "1",
                "5",
                "100",
                "9.8K",
                "50",
                "97.7K",
                "1"
            ]
        );
    }

    #[test]
    fn rates_are_per_second_of_the_snapshots_clock() {
        let r = rates(&snapshot(10_000, 5, 100), &snapshot(12_000, 25, 300));
        assert_eq!(r.interval_s, 2.0);
        assert_eq!(r.connections, 10.0);
        assert_eq!(r.forwarded_packets, 100.0);
        let b = &r.services[0].backends[0];
        assert_eq!(b.connections, 10.0);
        assert_eq!(b.bytes_to_backend, 10_000.0);
        let text = render(&snapshot(12_000, 25, 300), Some(&r));
        assert!(text.contains("CONNS/S"), "{text}");
        let row = text.lines().find(|l| l.contains("203.0.113.11")).unwrap();
        assert!(row.contains(" 10.0 "), "{row}");
    }
}
