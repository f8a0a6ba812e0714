//! `balancer status`, `reload`, `backend` and `stop`: requests to the
//! running daemon, replies printed for a person or as JSON.

use std::{
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use super::client;
use crate::api::{BackendAction, Reply, Request, Status};

/// The daemon refused the change (a bad configuration, an unknown backend).
const REFUSED: u8 = 2;

pub struct Target<'a> {
    pub socket: Option<&'a Path>,
    pub config: &'a Path,
}

pub fn status(target: Target, json: bool) -> ExitCode {
    run(target, &Request::Status, json, |reply| {
        if let Some(status) = &reply.status {
            print!("{}", render_status(status, unix_now()));
        }
    })
}

pub fn reload(target: Target, json: bool) -> ExitCode {
    run(target, &Request::Reload, json, print_reply)
}

pub fn backend(
    target: Target,
    action: BackendAction,
    service: String,
    address: SocketAddr,
    weight: Option<u32>,
    json: bool,
) -> ExitCode {
    let request = Request::Backend {
        action,
        service,
        address,
        weight,
    };
    run(target, &request, json, print_reply)
}

pub fn drain(target: Target, json: bool) -> ExitCode {
    run(target, &Request::Drain, json, print_reply)
}

pub fn stop(target: Target, keep_dataplane: bool, json: bool) -> ExitCode {
    run(target, &Request::Stop { keep_dataplane }, json, print_reply)
}

fn run(target: Target, request: &Request, json: bool, show: impl Fn(&Reply)) -> ExitCode {
    let socket = client::socket_path(target.socket, target.config);
    match client::call(&socket, request) {
        Ok(reply) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply).unwrap_or_default()
                );
            } else if reply.ok {
                show(&reply);
            } else {
                print_reply(&reply);
            }
            if reply.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(REFUSED)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_reply(reply: &Reply) {
    if reply.ok {
        println!("{}", reply.message);
    } else {
        eprintln!("error: {}", reply.message);
        for p in &reply.problems {
            eprintln!("  {p}");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The table `balancer status` prints.
pub fn render_status(status: &Status, now: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  role {}  pid {}  configuration generation {}{}",
        status.node,
        status.role,
        status.pid,
        status.generation,
        if status.recovered {
            "  (took over a previous daemon's state)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "syn cookies: {}", status.syn_cookies.describe(now));
    if let Some(ha) = &status.ha {
        let _ = writeln!(
            out,
            "ha: {}  priority {} (effective {}){}",
            ha.role,
            ha.priority,
            ha.effective_priority,
            if ha.conditions.is_empty() {
                String::new()
            } else {
                format!("  conditions: {}", ha.conditions.join("; "))
            }
        );
        for p in &ha.peers {
            let _ = writeln!(
                out,
                "  peer {}: {}  priority {}  {} (heard {} ms ago)",
                p.node,
                p.role,
                p.priority,
                if p.alive { "alive" } else { "DEAD" },
                p.last_heard_ms
            );
        }
        for (peer, copy) in &ha.sync_copies {
            let _ = writeln!(out, "  flow table of {peer}: {}", copy.describe());
        }
        if ha.mode == "active-active" {
            let list = |ips: &[std::net::IpAddr]| {
                if ips.is_empty() {
                    "none".to_string()
                } else {
                    ips.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let _ = writeln!(out, "  announced: {}", list(&ha.announced));
            let _ = writeln!(
                out,
                "  SNAT addresses held: {}{}",
                list(&ha.snat_held),
                if ha.adopted.is_empty() {
                    String::new()
                } else {
                    format!(" (adopted from {})", ha.adopted.join(", "))
                }
            );
        }
        if let Some(t) = &ha.last_transition {
            let _ = writeln!(
                out,
                "  last transition {} -> {} {} ago: {}",
                t.from,
                t.to,
                age(now.saturating_sub(t.at_unix)),
                t.reason
            );
        }
    }
    if let Some(r) = &status.last_reload {
        let _ = writeln!(
            out,
            "last reload {} ago: {}{}",
            age(now.saturating_sub(r.at_unix)),
            if r.ok { "" } else { "REFUSED: " },
            r.message
        );
    }
    for svc in &status.services {
        let vip = match svc.vip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let _ = writeln!(
            out,
            "\nservice {}  {vip}:{}/{}  scheduler {}  check {}",
            svc.name, svc.port, svc.protocol, svc.scheduler, svc.health_check
        );
        let _ = writeln!(
            out,
            "  {:<40} {:<9} {:>6} {:>7} {:>5} {:>6}  reason",
            "BACKEND", "STATE", "WEIGHT", "ACTIVE", "LOAD", "SINCE"
        );
        for b in &svc.backends {
            let _ = writeln!(
                out,
                "  {:<40} {:<9} {:>6} {:>7} {:>4}% {:>6}  {}",
                b.address.to_string(),
                b.state,
                b.weight,
                b.active,
                b.load_pct,
                age(now.saturating_sub(b.since_unix)),
                b.reason
            );
        }
    }
    if !status.retired.is_empty() {
        let _ = writeln!(out, "\nremoved, finishing their flows:");
        for r in &status.retired {
            let _ = writeln!(
                out,
                "  {:<40} {:<12} {:>7} active, ended in {}",
                r.address.to_string(),
                r.service,
                r.active,
                age(r.ends_in_s)
            );
        }
    }
    out
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, ServiceStatus};

    #[test]
    fn the_status_table_names_every_backend_with_its_state_and_reason() {
        let status = Status {
            node: "lb-a".into(),
            role: "standalone".into(),
            config: "/etc/balancer/balancer.toml".into(),
            pid: 42,
            generation: 3,
            last_reload: None,
            recovered: false,
            syn_cookies: crate::api::SynCookieStatus {
                mode: "auto".into(),
                ..Default::default()
            },
            services: vec![ServiceStatus {
                name: "db-rw".into(),
                vip: "198.51.100.20".parse().unwrap(),
                port: 5432,
                protocol: "tcp".into(),
                scheduler: "least-conn".into(),
                health_check: "http".into(),
                backends: vec![BackendStatus {
                    address: "203.0.113.41:5432".parse().unwrap(),
                    weight: 100,
                    state: "down".into(),
                    health: "down".into(),
                    reason: "HTTP 503 from /primary (expected 200)".into(),
                    since_unix: 1000,
                    draining: false,
                    load_pct: 0,
                    active: 0,
                }],
            }],
            retired: Vec::new(),
            ha: None,
        };
        let text = render_status(&status, 1090);
        assert!(
            text.contains("service db-rw  198.51.100.20:5432/tcp"),
            "{text}"
        );
        assert!(text.contains("203.0.113.41:5432"), "{text}");
        assert!(text.contains("down"), "{text}");
        assert!(text.contains("90s  HTTP 503 from /primary"), "{text}");
        assert!(text.contains("generation 3"), "{text}");
    }
}
