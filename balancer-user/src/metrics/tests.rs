use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use balancer_common::expiry::SweepStats;

use super::*;
use crate::metrics::{render::openmetrics, text::prometheus_from_openmetrics};

fn sweep(removed: u64, kept: u64) -> SweepStats {
    SweepStats {
        removed_entries: removed,
        kept_entries: kept,
        expired: removed / 2,
        ..SweepStats::default()
    }
}

#[test]
fn evictions_are_what_is_neither_left_nor_removed() {
    let mut f = FlowAccounting::default();
    let t = SystemTime::now();
    let d = Duration::from_millis(1);
    // The first sweep sets the baseline: 10 flows there already.
    f.swept(sweep(0, 20), 10, 10, t, d);
    assert_eq!(f.evictions(), 0);
    // 40 more flows, all there.
    f.swept(sweep(0, 100), 50, 50, t, d);
    assert_eq!(f.evictions(), 0);
    // 100 more, but the table kept 150 entries of 300: 150 evicted.
    f.swept(sweep(0, 150), 150, 150, t, d);
    assert_eq!(f.evictions(), 150);
    // Everything expires: the figure stays.
    f.swept(sweep(150, 0), 150, 150, t, d);
    assert_eq!(f.evictions(), 150);
    assert_eq!(f.table(300).entries, Some(0));
    assert_eq!(f.table(300).expired, 75);
}

#[test]
fn flows_made_during_a_sweep_never_count_as_evicted() {
    let mut f = FlowAccounting::default();
    let t = SystemTime::now();
    let d = Duration::from_millis(1);
    // 5 flows started during the first walk; 3 of them were seen by it.
    f.swept(sweep(0, 26), 10, 15, t, d);
    // Nothing else happened: 30 entries, all there.
    f.swept(sweep(0, 30), 15, 15, t, d);
    assert_eq!(f.evictions(), 0);
    // 2 flows start during this walk and it sees them; counted after it.
    f.swept(sweep(0, 34), 15, 17, t, d);
    assert_eq!(f.evictions(), 0);
}

#[test]
fn check_figures_forget_removed_backends() {
    let mut m = Metrics::new();
    let a = "203.0.113.11:80".parse().unwrap();
    let b = "203.0.113.12:80".parse().unwrap();
    m.checked("web", a, true, Duration::from_millis(3));
    m.checked("web", a, false, Duration::from_millis(300));
    m.checked("web", b, true, Duration::from_millis(1));
    let figures = m.check_figures(|_, addr| addr == a);
    assert_eq!(figures.len(), 1);
    assert_eq!(figures[0].backend, "203.0.113.11:80");
    assert_eq!(figures[0].failures, 1);
    assert_eq!(m.check_figures(|_, _| true).len(), 1);
}

fn snapshot() -> Snapshot {
    Snapshot {
        node: "lb-a".into(),
        taken_unix_ms: 1_000_000,
        version: "0.1.0".into(),
        layout_version: 5,
        started_unix: 900,
        role: "standalone".into(),
        ha: None,
        syn_cookies: crate::api::SynCookieStatus {
            mode: "auto".into(),
            ..Default::default()
        },
        generation: 2,
        last_reload: None,
        reloads_accepted: 1,
        reloads_refused: 0,
        counters: [
            ("new_flow".to_string(), 12),
            ("drop_firewall".to_string(), 3),
            ("forward_tx".to_string(), 40),
        ]
        .into_iter()
        .collect(),
        flow_table: FlowTable {
            capacity: 1024,
            entries: Some(24),
            evictions: 0,
            expired: 0,
            half_open_expired: 0,
            syn_proxy_timed_out: 0,
            last_sweep_unix_ms: Some(999_000),
            last_sweep_s: 0.0001,
        },
        snat_ports_per_backend: [("ipv4".to_string(), 20_000)].into_iter().collect(),
        services: vec![ServiceSnapshot {
            name: "web".into(),
            vip: "198.51.100.10".parse().unwrap(),
            port: 80,
            protocol: "tcp".into(),
            scheduler: "least-conn".into(),
            drops: [("firewall".to_string(), 3)].into_iter().collect(),
            backends: vec![BackendSnapshot {
                address: "203.0.113.11:8080".parse().unwrap(),
                weight: 100,
                state: "up".into(),
                health: "up".into(),
                draining: false,
                load_pct: 25,
                active: 2,
                packets_to_backend: 20,
                bytes_to_backend: 2000,
                packets_to_client: 20,
                bytes_to_client: 4000,
                connections: 12,
                snat_ports: Some(2),
            }],
        }],
    }
}

fn rendered() -> String {
    let mut m = Metrics::new();
    m.checked(
        "web",
        "203.0.113.11:8080".parse().unwrap(),
        true,
        Duration::from_millis(2),
    );
    openmetrics(snapshot(), m.check_figures(|_, _| true))
}

#[test]
fn the_exposition_has_each_family_with_its_labels() {
    let om = rendered();
    assert!(om.ends_with("# EOF\n"), "{om}");
    let b = r#"service="web",backend="203.0.113.11:8080""#;
    for line in [
        "balancer_connections_total 12".to_string(),
        r#"balancer_dropped_packets_total{reason="firewall"} 3"#.into(),
        r#"balancer_dropped_packets_total{reason="no_healthy_backend"} 0"#.into(),
        r#"balancer_service_dropped_packets_total{service="web",reason="firewall"} 3"#.into(),
        format!(r#"balancer_backend_packets_total{{{b},direction="to_backend"}} 20"#),
        format!(r#"balancer_backend_bytes_total{{{b},direction="to_client"}} 4000"#),
        format!("balancer_backend_connections_total{{{b}}} 12"),
        format!("balancer_backend_active_connections{{{b}}} 2"),
        format!(r#"balancer_backend_health_state{{{b},state="up"}} 1"#),
        format!(r#"balancer_backend_health_state{{{b},state="down"}} 0"#),
        format!("balancer_backend_weight{{{b}}} 100"),
        format!("balancer_backend_load_ratio{{{b}}} 0.25"),
        format!("balancer_backend_draining{{{b}}} 0"),
        format!("balancer_backend_snat_ports{{{b}}} 2"),
        format!("balancer_health_check_duration_seconds_count{{{b}}} 1"),
        format!(r#"balancer_health_check_duration_seconds_bucket{{le="0.005",{b}}} 1"#),
        format!("balancer_health_check_failures_total{{{b}}} 0"),
        r#"balancer_ha_role{role="standalone"} 1"#.into(),
        r#"balancer_ha_role{role="active"} 0"#.into(),
        "balancer_config_generation 2".into(),
        r#"balancer_config_reloads_total{result="accepted"} 1"#.into(),
        r#"balancer_build_info{version="0.1.0",layout="5"} 1"#.into(),
        "balancer_flow_table_entries 24".into(),
        "balancer_flow_table_max_entries 1024".into(),
        "balancer_flow_table_evictions_total 0".into(),
        r#"balancer_snat_ports_per_backend{family="ipv4"} 20000"#.into(),
    ] {
        assert!(om.lines().any(|l| l == line), "no line {line:?} in\n{om}");
    }
}

#[test]
fn both_formats_say_the_same() {
    let mut m = Metrics::new();
    m.checked(
        "web",
        "203.0.113.11:8080".parse().unwrap(),
        false,
        Duration::from_millis(20),
    );
    let om = openmetrics(snapshot(), m.check_figures(|_, _| true));
    let text = render::prometheus(snapshot(), m.check_figures(|_, _| true));
    assert_eq!(text, prometheus_from_openmetrics(&om));
    assert!(!text.contains("# EOF"));
}

#[test]
fn names_follow_the_prometheus_conventions() {
    let text = prometheus_from_openmetrics(&rendered());
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("balancer_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "{name} twice"
            );
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = types
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("{name} before its TYPE line"));
            let kind = &types[family];
            if kind != "histogram" {
                assert_eq!(name, family, "{line}");
            }
            for label in ["service", "backend", "reason"] {
                if line.contains(&format!("{label}=")) {
                    assert!(
                        line.contains(&format!("{label}=\"")),
                        "label {label} in {line}"
                    );
                }
            }
        }
    }
    // Durations in seconds, sizes in bytes, a ratio as a ratio.
    for name in types.keys() {
        for bad in ["_ms", "_milliseconds", "_percent", "_pct", "_kb"] {
            assert!(!name.contains(bad), "{name}");
        }
    }
}

// --- monitoring/: the dashboard, the scrape example and the alerts ---------

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitoring");

/// Metric families of a full exposition (Prometheus text names).
fn exported_names() -> Vec<String> {
    // With high availability too: its families exist only then.
    let mut ha = snapshot();
    ha.role = "active".into();
    ha.ha = Some(crate::api::HaStatus {
        sync_lag_ms: Some(1.0),
        ..Default::default()
    });
    let text = rendered() + &openmetrics(ha, Metrics::new().check_figures(|_, _| true));
    prometheus_from_openmetrics(&text)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// Every `balancer_...` metric name in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("balancer_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{MONITORING}/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut ids = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice: {p}");
        assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24);
    }
    let mut out = Vec::new();
    exprs(&dash, &mut out);
    assert!(out.len() > 20, "{out:?}");
    out
}

#[test]
fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
    let exported = exported_names();
    let known = |name: &str| {
        exported.iter().any(|f| {
            name == f
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f))
        })
    };
    let alerts = std::fs::read_to_string(format!("{MONITORING}/balancer-alerts.yml")).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for expr in dashboard_exprs().iter().chain([&alerts]) {
        for name in names_in(expr) {
            assert!(known(&name), "{name} is not exported (in {expr})");
            used.insert(name);
        }
    }
    // The dashboard shows what the issue asks for.
    for family in [
        "balancer_backend_connections_total",
        "balancer_backend_active_connections",
        "balancer_backend_packets_total",
        "balancer_backend_bytes_total",
        "balancer_backend_health_state",
        "balancer_health_check_duration_seconds_bucket",
        "balancer_backend_weight",
        "balancer_backend_load_ratio",
        "balancer_backend_draining",
        "balancer_dropped_packets_total",
        "balancer_service_dropped_packets_total",
        "balancer_flow_table_entries",
        "balancer_flow_table_evictions_total",
        "balancer_backend_snat_ports",
        "balancer_ha_role",
        "balancer_build_info",
        "balancer_config_generation",
        "balancer_config_last_reload_success",
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }
}

/// `promtool` for the checks below; None (and a note) where it is missing,
/// a failure under `CI=true` (`cargo xtask setup` installs it).
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool not found (apt-get install prometheus; cargo xtask setup does)"
        );
        eprintln!("SKIPPED: needs promtool");
        return None;
    }
    Some("promtool")
}

#[test]
fn the_dashboard_queries_and_the_monitoring_files_pass_promtool() {
    let Some(promtool) = promtool() else {
        return;
    };
    let check = |args: &[&str]| {
        let out = std::process::Command::new(promtool)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&["check", "config", &format!("{MONITORING}/prometheus.yml")]);
    check(&[
        "check",
        "rules",
        &format!("{MONITORING}/balancer-alerts.yml"),
    ]);
    // The dashboard's queries as recording rules: promtool parses each.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        if e.starts_with("label_values(") {
            continue;
        }
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$service", ".*");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("balancer-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    check(&["check", "rules", path.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
}
