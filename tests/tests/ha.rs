//! High availability end to end: two balancer hosts (`lb` as lb-a, `lb2` as
//! lb-b) on the client and backend bridges, real daemons, real adverts.

mod ha_common;

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use balancer_tests::{
    Balancer, TempDir, Topology, addrs, require_root, tcp_connect, tcp_server, wait_until,
};
use balancer_user::ha::advert::{self, Advert, Codec, Role};
use ha_common::*;
use serde_json::Value;

#[test]
fn the_higher_priority_node_is_active_owns_the_vip_and_status_says_so() {
    if !require_root() {
        return;
    }
    let p = pair("haup", true);
    wait_roles(&p.a, "active", &p.b, "standby");
    wait_vip(p.topo.lb(), true);
    wait_vip(p.topo.lb2(), false);
    assert!(request(&p.topo));
    let out = p.b.cli(&["status"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("role standby"), "{text}");
    assert!(
        text.contains("peer lb-a: active  priority 200  alive"),
        "{text}"
    );
    assert!(text.contains("last transition init -> standby"), "{text}");
    let status = ha(&p.a);
    assert_eq!(status["effective_priority"], 200);
    let heard = wait_until(Duration::from_secs(3), || {
        ha(&p.a)["adverts_received"].as_u64().unwrap_or(0) > 0
    });
    assert!(heard, "{}", ha(&p.a));
    let metrics = scrape(p.topo.lb(), "198.51.100.1");
    for line in [
        "balancer_ha_role{role=\"active\"} 1",
        "balancer_ha_role{role=\"standby\"} 0",
        "balancer_ha_effective_priority 200",
        "balancer_ha_transitions_total{from=\"init\",to=\"active\",reason=\"peer_dead\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("balancer_ha_adverts_sent_total "),
        "{metrics}"
    );
    let metrics = scrape(p.topo.lb2(), "198.51.100.3");
    assert!(
        metrics
            .lines()
            .any(|l| l == "balancer_ha_role{role=\"standby\"} 1"),
        "{metrics}"
    );
}

#[test]
fn failover_when_the_active_host_loses_its_link_then_preemption_on_recovery() {
    if !require_root() {
        return;
    }
    let p = pair("halink", true);
    wait_roles(&p.a, "active", &p.b, "standby");
    assert!(request(&p.topo));
    let vip6 = SocketAddr::new(VIP6.parse().unwrap(), 80);
    assert!(wait_until(Duration::from_secs(3), || request_to(
        &p.topo, vip6
    )));

    let down = Instant::now();
    p.topo.lb().ip(&["link", "set", "front", "down"]).unwrap();
    let gap = gap_until_served(&p.topo, down);
    eprintln!("front link down on the active host: served again after {gap:?}");
    // dead_after 3 x 100 ms, then the takeover and its announcement.
    assert!(gap < Duration::from_secs(1), "gap {gap:?}");
    wait_roles(&p.a, "standby", &p.b, "active");
    wait_vip(p.topo.lb2(), true);
    // The IPv6 VIP moved too: lb-b's unsolicited neighbour advertisement
    // overrode the client's cache entry for it.
    let vip6 = SocketAddr::new(VIP6.parse().unwrap(), 80);
    assert!(
        wait_until(Duration::from_secs(2), || request_to(&p.topo, vip6)),
        "the IPv6 VIP answers through lb-b"
    );
    let reason = ha(&p.a)["last_transition"]["reason"].to_string();
    assert!(
        reason.contains("fault") && reason.contains("tracked interface front is down"),
        "{reason}"
    );

    // The link comes back: lb-a outranks lb-b and preempts.
    p.topo.lb().ip(&["link", "set", "front", "up"]).unwrap();
    wait_roles(&p.a, "active", &p.b, "standby");
    // Whether it heard lb-b first and preempted it, or spoke first (no live
    // peer yet, or none active that outranks it) and lb-b, outranked, stepped
    // down: lb-a took the role back by rank.
    let last = ha(&p.a)["last_transition"].clone();
    let reason = last["reason"].to_string();
    assert_eq!(last["to"], "active", "{last}");
    assert!(
        ["preempting lb-b", "none outranks us", "no peer heard"]
            .iter()
            .any(|r| reason.contains(r)),
        "{reason}"
    );
    let b_last = ha(&p.b)["last_transition"].clone();
    assert_eq!(b_last["to"], "standby", "{b_last}");
    let ok = wait_until(Duration::from_secs(5), || request(&p.topo));
    assert!(ok, "served by lb-a again");
}

#[test]
fn failover_when_the_active_daemon_is_killed_and_no_preemption_after() {
    if !require_root() {
        return;
    }
    let mut p = pair_with("hakill", false, true);
    wait_roles(&p.a, "active", &p.b, "standby");
    let mut conns: Vec<_> = (0..10)
        .map(|i| {
            let mut c = tcp_connect(p.topo.client(), vip(), Duration::from_secs(5)).unwrap();
            let reply = c.request(&format!("before {i}")).unwrap();
            (reply.split_once(' ').unwrap().0.to_string(), c)
        })
        .collect();
    let ok = wait_until(Duration::from_secs(5), || {
        ha(&p.b)["sync_installed"].as_u64().unwrap_or(0) >= 10
    });
    assert!(ok, "{}", ha(&p.b));
    let killed = Instant::now();
    p.a.kill().unwrap();
    // Its program still forwards: the service never stops; lb-b takes over.
    let gap = gap_until_served(&p.topo, killed);
    let ok = wait_until(Duration::from_secs(5), || role(&p.b) == "active");
    assert!(ok, "lb-b takes over:\n{}", p.b.output_so_far());
    eprintln!(
        "active daemon killed: lb-b active after {:?}, first failed-request gap {gap:?}",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(1) + gap);
    // While the neighbours' caches move over, a new connection may meet the
    // old node on one side and the new one on the other; it settles at once.
    assert!(wait_until(Duration::from_secs(2), || request(&p.topo)));
    // With flow sync the established connections carry on through lb-b.
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = format!("after {i}");
        assert_eq!(c.request(&line).unwrap(), format!("{name} {line}"));
    }

    // lb-a restarts on its pinned state; without preemption it stays standby.
    // Once it has heard lb-b for twice dead_after adverts it has made its
    // choice (a preempting node takes over at the first advert it hears).
    p.a.restart(p.topo.lb(), &[]).unwrap();
    let heard = wait_until(Duration::from_secs(5), || {
        adverts_received(&p.a) > u64::from(2 * DEAD_AFTER)
    });
    assert!(heard, "the restarted lb-a hears lb-b: {}", ha(&p.a));
    wait_roles(&p.a, "standby", &p.b, "active");
    assert!(
        !roles_taken(&p.a).iter().any(|r| r == "active"),
        "the restarted lb-a was active for a while: {}",
        ha(&p.a)
    );
    // The restarted node released the VIP.
    wait_vip(p.topo.lb(), false);
    assert!(request(&p.topo));
}

#[test]
fn forged_replayed_and_unknown_adverts_are_ignored_and_counted() {
    if !require_root() {
        return;
    }
    let p = pair("haforge", true);
    wait_roles(&p.a, "active", &p.b, "standby");
    let transitions_before = ha(&p.b)["transitions"].clone();
    let b_addr = SocketAddr::new("198.51.100.3".parse().unwrap(), advert::PORT);
    let now = SystemTime::now();
    // A replay must carry a sequence lb-b has passed: wait until it accepted
    // a real advert sent after `now` (two more: the first may be in flight).
    let heard = adverts_received(&p.b);
    assert!(
        wait_until(Duration::from_secs(3), || adverts_received(&p.b)
            > heard + 1),
        "lb-b heard no advert from lb-a"
    );
    let claim = |seq: u64| Advert {
        node: "lb-a".into(),
        role: Role::Standby,
        priority: 0,
        seq,
        digest: [0; 8],
        member: None,
    };
    // Forged: another key, claiming lb-a gave up.
    let forged = Codec::new(
        b"not the key at all, not at all".to_vec(),
        Duration::from_secs(2),
    )
    .encode(&claim(advert::micros(now)));
    // Replayed: the right key, a sequence lb-b has already passed.
    let replayed = Codec::new(KEY.as_bytes().to_vec(), Duration::from_secs(2))
        .encode(&claim(advert::micros(now) - 50_000));
    // Stale: the right key, ten seconds old.
    let stale = Codec::new(KEY.as_bytes().to_vec(), Duration::from_secs(2))
        .encode(&claim(advert::micros(now - Duration::from_secs(10))));
    p.topo.lb().run(|| {
        let s = std::net::UdpSocket::bind("198.51.100.1:0").unwrap();
        for wire in [&forged, &replayed, &stale] {
            for _ in 0..5 {
                s.send_to(wire, b_addr).unwrap();
            }
        }
    });
    // From the client: not a peer at all.
    p.topo.client().run(|| {
        let s = std::net::UdpSocket::bind("198.51.100.2:0").unwrap();
        s.send_to(&forged, b_addr).unwrap();
    });
    let ok = wait_until(Duration::from_secs(3), || {
        let r = &ha(&p.b)["adverts_rejected"];
        r["forged"] == 5 && r["replayed"] == 5 && r["stale"] == 5 && r["unknown_sender"] == 1
    });
    assert!(ok, "{}", ha(&p.b)["adverts_rejected"]);
    // lb-b decides on each advert as it comes; more than dead_after of lb-a's
    // real ones after the forged ones, a role change would have happened.
    let received = adverts_received(&p.b);
    let more = wait_until(Duration::from_secs(3), || {
        adverts_received(&p.b) > received + u64::from(DEAD_AFTER)
    });
    assert!(more, "lb-b hears lb-a: {}", ha(&p.b));
    assert_eq!(role(&p.b), "standby", "nothing forged moved the role");
    assert_eq!(
        ha(&p.b)["transitions"],
        transitions_before,
        "nothing forged moved the role"
    );
    let metrics = scrape(p.topo.lb2(), "198.51.100.3");
    for line in [
        "balancer_ha_adverts_rejected_total{reason=\"forged\"} 5",
        "balancer_ha_adverts_rejected_total{reason=\"replayed\"} 5",
        "balancer_ha_adverts_rejected_total{reason=\"stale\"} 5",
        "balancer_ha_adverts_rejected_total{reason=\"unknown_sender\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(p.b.output_so_far().contains("advert ignored"));
}

#[test]
fn split_brain_heals_to_the_rightful_owner() {
    if !require_root() {
        return;
    }
    let p = pair("hasplit", true);
    wait_roles(&p.a, "active", &p.b, "standby");
    // A partition between the two hosts only: adverts cannot pass.
    p.topo
        .lb()
        .ip(&["route", "add", "prohibit", "198.51.100.3/32"])
        .unwrap();
    p.topo
        .lb2()
        .ip(&["route", "add", "prohibit", "198.51.100.1/32"])
        .unwrap();
    wait_roles(&p.a, "active", &p.b, "active");
    let healed = Instant::now();
    p.topo
        .lb()
        .ip(&["route", "del", "prohibit", "198.51.100.3/32"])
        .unwrap();
    p.topo
        .lb2()
        .ip(&["route", "del", "prohibit", "198.51.100.1/32"])
        .unwrap();
    wait_roles(&p.a, "active", &p.b, "standby");
    eprintln!(
        "split brain healed {:?} after the partition ended",
        healed.elapsed()
    );
    // The daemon resolves it at the first advert either side hears (at most
    // one interval after the routes are back); this bound also holds the two
    // `ip route del` and the CLI polling on a busy machine.
    assert!(healed.elapsed() < Duration::from_secs(1));
    assert!(ha(&p.b)["split_brains"].as_u64().unwrap() >= 1);
    wait_vip(p.topo.lb2(), false);
    assert!(p.b.output_so_far().contains("both nodes active"));
    let ok = wait_until(Duration::from_secs(5), || request(&p.topo));
    assert!(ok);
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    if !require_root() {
        return;
    }
    let topo = Topology::builder()
        .hint("hakeym")
        .backends(1)
        .build()
        .unwrap();
    let keys = TempDir::new("hakey").unwrap();
    let key = key_file(&keys, 0o644);
    let err = Balancer::start(
        topo.lb(),
        &config("lb-a", 200, "198.51.100.3", true, &key, false),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("readable by every user"), "{err}");
    assert!(Path::new(&key).exists());
}

#[test]
fn with_flow_sync_established_connections_survive_a_failover() {
    if !require_root() {
        return;
    }
    let p = pair_with("hasync", true, true);
    wait_roles(&p.a, "active", &p.b, "standby");
    let ok = wait_until(Duration::from_secs(5), || request(&p.topo));
    assert!(ok);
    let mut conns: Vec<_> = (0..30)
        .map(|i| {
            let mut c = tcp_connect(p.topo.client(), vip(), Duration::from_secs(5)).unwrap();
            let line = format!("before {i}");
            let reply = c.request(&line).unwrap();
            (reply.split_once(' ').unwrap().0.to_string(), c)
        })
        .collect();
    // The standby has them all (plus the probe's, closed again).
    let ok = wait_until(Duration::from_secs(5), || {
        ha(&p.b)["sync_installed"].as_u64().unwrap_or(0) >= 31
    });
    assert!(ok, "{}", ha(&p.b));
    let metrics = scrape(p.topo.lb2(), "198.51.100.3");
    assert!(
        metrics.contains("balancer_ha_sync_lag_seconds "),
        "{metrics}"
    );
    assert!(
        metrics.contains("balancer_ha_sync_records_total{result=\"installed\"} "),
        "{metrics}"
    );
    promtool_accepts(&metrics);

    let down = Instant::now();
    p.topo.lb().ip(&["link", "set", "front", "down"]).unwrap();
    wait_roles(&p.a, "standby", &p.b, "active");
    let mut survived = 0;
    for (i, (name, c)) in conns.iter_mut().enumerate() {
        let line = format!("after {i}");
        match c.request(&line) {
            Ok(reply) if reply == format!("{name} {line}") => survived += 1,
            other => eprintln!("connection {i} on {name}: {other:?}"),
        }
    }
    eprintln!(
        "flow sync: {survived} of {} established connections kept working through the failover ({:?})",
        conns.len(),
        down.elapsed()
    );
    assert_eq!(survived, conns.len());
    // Counts on the new active node: the 30 held connections.
    let out = p.b.cli(&["status", "--json"]).unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let active: u64 = status["status"]["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["active"].as_u64().unwrap())
        .sum();
    assert_eq!(active, 30, "{}", status["status"]["services"]);
}

#[test]
fn an_active_node_that_cannot_reach_the_backends_yields_to_one_that_can() {
    if !require_root() {
        return;
    }
    // Priorities 120 and 100: losing every backend of a service costs 50.
    let p = pair_prio("hareach", true, false, 120);
    wait_roles(&p.a, "active", &p.b, "standby");
    for i in 1..=3 {
        let route = format!("{}/32", addrs::backend(i));
        p.topo
            .lb()
            .ip(&["route", "add", "prohibit", &route])
            .unwrap();
    }
    wait_roles(&p.a, "standby", &p.b, "active");
    let status = ha(&p.a);
    assert_eq!(status["effective_priority"], 70, "{status}");
    assert!(
        status["conditions"]
            .to_string()
            .contains("every backend of web is down here"),
        "{status}"
    );
    assert!(
        status["last_transition"]["reason"]
            .as_str()
            .unwrap()
            .contains("fell to 70"),
        "{status}"
    );
    assert!(wait_until(Duration::from_secs(3), || request(&p.topo)));
    let log = p.a.output_so_far();
    assert!(
        log.lines().any(|l| l.contains("tracked conditions changed")
            && l.contains("every backend of web is down here")),
        "the condition is an event:\n{log}"
    );
    // Reachable again: lb-a's checks pass, its priority is back, it preempts.
    for i in 1..=3 {
        let route = format!("{}/32", addrs::backend(i));
        p.topo
            .lb()
            .ip(&["route", "del", "prohibit", &route])
            .unwrap();
    }
    wait_roles(&p.a, "active", &p.b, "standby");
}

#[test]
fn a_node_restarted_without_ha_on_pinned_state_opens_flows_again() {
    if !require_root() {
        return;
    }
    let topo = Topology::builder()
        .hint("haoff")
        .backends(3)
        .build()
        .unwrap();
    let _servers: Vec<_> = (1..=3)
        .map(|i| {
            tcp_server(
                topo.backend(i),
                SocketAddr::new(addrs::backend(i).into(), 8080),
            )
            .unwrap()
        })
        .collect();
    let keys = TempDir::new("hakey").unwrap();
    let key = key_file(&keys, 0o600);
    let with_ha = config("lb-a", 200, "198.51.100.3", true, &key, false);
    let mut lb = Balancer::start(topo.lb(), &with_ha).unwrap();
    // Alone: active once dead_after intervals passed without a peer.
    assert!(wait_until(Duration::from_secs(5), || role(&lb) == "active"));
    assert!(wait_until(Duration::from_secs(3), || request(&topo)));
    // Stopped keeping the data plane: the lease lapses, no new flows open.
    let out = lb.cli(&["stop", "--keep-dataplane"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        lb.process()
            .wait_timeout(Duration::from_secs(5))
            .unwrap()
            .is_some()
    );
    // Restarted standalone on the same pinned maps: its flows again.
    let mut without_ha = with_ha;
    without_ha.ha.enabled = Some(false);
    lb.home().write_config(&without_ha).unwrap();
    lb.restart(topo.lb(), &[]).unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || request(&topo)),
        "{}",
        lb.output_so_far()
    );
}

/// The program detached from one of the active node's interfaces (by anyone:
/// here `bpftool link detach` on its pinned link) is a fault: the node gives
/// up the role and the standby serves.
#[test]
fn an_active_node_whose_program_is_detached_yields() {
    if !require_root() || !balancer_tests::require_program("bpftool") {
        return;
    }
    let p = pair("haxdp", false);
    wait_roles(&p.a, "active", &p.b, "standby");
    let link = p.a.home().pin_dir().join("links").join("front");
    let out = std::process::Command::new("bpftool")
        .args(["link", "detach", "pinned"])
        .arg(&link)
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool link detach: {out:?}");
    wait_roles(&p.a, "standby", &p.b, "active");
    let status = ha(&p.a);
    assert_eq!(status["effective_priority"], 0, "{status}");
    assert!(
        status["conditions"]
            .to_string()
            .contains("the XDP program is not attached to front"),
        "{status}"
    );
    assert!(wait_until(Duration::from_secs(3), || request(&p.topo)));
}
