use std::time::{Duration, Instant};

use balancer_common::service::{BACKEND_F_DRAINING, BACKEND_F_HEALTHY, BACKEND_F_PRESENT};

use super::*;
use crate::{
    config,
    dataplane::{Recovered, RecoveredBackend, RecoveredService},
};

fn config(backends: &[&str]) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    let text = format!(
        r#"
[node]
name = "t"
interfaces = ["front", "back"]
snat_addresses = ["203.0.113.9"]

[[service]]
name = "web"
vip = "198.51.100.10"
port = 80
protocol = "tcp"
drain_timeout_s = 10
health = {{ kind = "tcp" }}
backends = [{}]

[[service]]
name = "dns"
vip = "198.51.100.10"
port = 53
protocol = "udp"
health = {{ kind = "none" }}
backends = [{{ address = "203.0.113.31:53" }}]
"#,
        list.join(", ")
    );
    config::parse(&text).unwrap().config
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const A: &str = "203.0.113.11:80";
const B: &str = "203.0.113.12:80";
const C: &str = "203.0.113.13:80";

#[test]
fn kept_backends_keep_their_index_and_state_across_a_change() {
    let mut rt = Runtime::new(config(&[A, B])).unwrap();
    let b_index = rt.backend("web", addr(B)).unwrap().index;
    rt.backend_mut("web", addr(B)).unwrap().health = Health::Up;
    let changes = rt.apply_config(config(&[B, C]), Instant::now()).unwrap();
    assert_eq!(changes.backends_added, vec![("web".into(), addr(C))]);
    assert_eq!(changes.backends_removed, vec![("web".into(), addr(A))]);
    let b = rt.backend("web", addr(B)).unwrap();
    assert_eq!((b.index, b.health), (b_index, Health::Up));
    let c = rt.backend("web", addr(C)).unwrap();
    assert_eq!(
        c.health,
        Health::Unknown,
        "checked: waits for its first verdict"
    );
    assert_ne!(c.index, b_index);
    assert_eq!(rt.retired().len(), 1);
}

#[test]
fn a_removed_backends_index_is_reused_only_once_its_flows_are_gone() {
    let mut rt = Runtime::new(config(&[A])).unwrap();
    let a_index = rt.backend("web", addr(A)).unwrap().index;
    let t0 = Instant::now();
    rt.apply_config(config(&[B]), t0).unwrap();
    assert_ne!(rt.backend("web", addr(B)).unwrap().index, a_index);
    // Still one flow: kept, then purged at the deadline, freed after.
    let still_one = |i: BackendIndex| u64::from(i == a_index);
    assert!(rt.housekeeping(t0, still_one).is_empty());
    let later = t0 + Duration::from_secs(10);
    assert_eq!(
        rt.housekeeping(later, still_one),
        vec![Chore::Purge { index: a_index }]
    );
    rt.apply_config(config(&[B, C]), later).unwrap();
    assert_ne!(rt.backend("web", addr(C)).unwrap().index, a_index);
    assert_eq!(
        rt.housekeeping(later, |_| 0),
        vec![Chore::Free { index: a_index }]
    );
    assert!(rt.retired().is_empty());
}

#[test]
fn a_drained_backend_takes_no_flows_and_its_drain_times_out() {
    let mut rt = Runtime::new(config(&[A, B])).unwrap();
    let t0 = Instant::now();
    let a = rt.backend_mut("web", addr(A)).unwrap();
    a.health = Health::Up;
    a.admin_drain = Some(t0);
    assert_eq!(
        rt.backend_flags("web", addr(A)),
        Some(BACKEND_F_PRESENT | BACKEND_F_HEALTHY | BACKEND_F_DRAINING)
    );
    assert!(
        rt.housekeeping(t0 + Duration::from_secs(9), |_| 3)
            .is_empty()
    );
    assert_eq!(
        rt.housekeeping(t0 + Duration::from_secs(10), |_| 3),
        vec![Chore::DrainExpired {
            service: "web".into(),
            backend: addr(A)
        }]
    );
}

#[test]
fn a_full_table_refuses_the_change_and_keeps_the_running_one() {
    let mut rt = Runtime::new(config(&[A])).unwrap();
    rt.free_indexes.clear();
    let err = rt
        .apply_config(config(&[A, B]), Instant::now())
        .unwrap_err();
    assert!(err.contains("no room"), "{err}");
    assert_eq!(rt.config().services[0].backends.len(), 1);
    assert!(rt.backend("web", addr(A)).is_some());
}

#[test]
fn recovery_keeps_places_and_verdicts_and_retires_what_the_file_dropped() {
    let recovered = Recovered {
        services: vec![RecoveredService {
            vip: "198.51.100.10".parse().unwrap(),
            port: 80,
            protocol: config::Protocol::Tcp,
            id: ServiceId(7),
            backends: vec![
                RecoveredBackend {
                    index: BackendIndex(40),
                    address: addr(A),
                    flags: BACKEND_F_PRESENT | BACKEND_F_HEALTHY,
                },
                RecoveredBackend {
                    index: BackendIndex(41),
                    address: addr(C),
                    flags: BACKEND_F_PRESENT,
                },
            ],
        }],
        orphans: vec![RecoveredBackend {
            index: BackendIndex(99),
            address: addr("203.0.113.50:80"),
            flags: BACKEND_F_PRESENT | BACKEND_F_DRAINING,
        }],
    };
    let (rt, changes) = Runtime::recover(config(&[A, B]), &recovered, Instant::now()).unwrap();
    assert_eq!(rt.service("web").unwrap().id, ServiceId(7));
    let a = rt.backend("web", addr(A)).unwrap();
    assert_eq!((a.index, a.health), (BackendIndex(40), Health::Up));
    assert!(changes.backends_added.contains(&("web".into(), addr(B))));
    assert_eq!(changes.backends_removed, vec![("web".into(), addr(C))]);
    let retired: Vec<u32> = rt.retired().iter().map(|r| r.index.0).collect();
    assert_eq!(retired, vec![99, 41]);
    assert!(changes.services_added.contains(&"dns".to_string()));
    assert_ne!(rt.service("dns").unwrap().id, ServiceId(7));
}

#[test]
fn the_index_bound_covers_configured_and_retired_backends() {
    let mut rt = Runtime::new(config(&[A, B])).unwrap();
    let highest = |rt: &Runtime| {
        rt.services()
            .flat_map(|(_, s)| s.backends.values().map(|b| b.index))
            .chain(rt.retired().iter().map(|r| r.index))
            .max()
            .unwrap()
    };
    assert_eq!(rt.index_bound(), highest(&rt).0 + 1);
    let b_index = rt.backend("web", addr(B)).unwrap().index;
    rt.apply_config(config(&[A]), Instant::now()).unwrap();
    assert!(rt.index_bound() > b_index.0, "B is retired, still counted");
}
