//! Active-active, node by node, without routers: two balancer hosts on the
//! same segments, the client's route to the VIP pointing at one of them or
//! the other, as an ECMP router's hash would. What each node announces (its
//! routes in table 200), which SNAT addresses it holds, and whether a
//! connection keeps working when the route moves it to the other node, when
//! its node dies, is replaced, or drains. (`active_active.rs` runs the same
//! against real routers running BIRD.)

mod ha_common;

use std::time::{Duration, Instant};

use balancer_tests::{
    Balancer, LbHost, Netns, TempDir, addrs,
    config::{Config, HaMode},
    require_root, wait_until,
};
use ha_common::*;

const TABLE: u32 = 200;

/// A node's own SNAT addresses.
fn snat_of(host: LbHost) -> [&'static str; 2] {
    match host {
        LbHost::Lb => ["203.0.113.201", "2001:db8:2::201"],
        LbHost::Lb2 => ["203.0.113.202", "2001:db8:2::202"],
    }
}

fn front(host: LbHost) -> &'static str {
    match host {
        LbHost::Lb => "198.51.100.1",
        LbHost::Lb2 => "198.51.100.3",
    }
}

fn other(host: LbHost) -> LbHost {
    match host {
        LbHost::Lb => LbHost::Lb2,
        LbHost::Lb2 => LbHost::Lb,
    }
}

/// Both nodes in active-active.
trait Group {
    fn config(&self, host: LbHost, key: &str) -> Config;
    fn start(&self, host: LbHost) -> Balancer;
    fn route_to(&self, host: LbHost);
}

impl Group for Site {
    /// The active-standby pair's configuration (ha_common), made
    /// active-active: each node its own SNAT addresses, a short drain.
    fn config(&self, host: LbHost, key: &str) -> Config {
        let name = match host {
            LbHost::Lb => "lb-a",
            LbHost::Lb2 => "lb-b",
        };
        let mut c = config(name, 100, front(other(host)), true, key, true);
        c.node.snat_addresses = Some(snat_of(host).map(|a| a.parse().unwrap()).to_vec());
        c.ha =
            c.ha.mode(HaMode::ActiveActive)
                .announce_table(TABLE)
                .withdraw_wait_ms(300)
                .drain_timeout_s(2);
        c
    }

    fn start(&self, host: LbHost) -> Balancer {
        self.start_with(host, &self.config(host, &self.key))
    }

    /// The client's route to the VIPs now leads to `host`'s node.
    fn route_to(&self, host: LbHost) {
        let via6 = match host {
            LbHost::Lb => addrs::LB_FRONT6,
            LbHost::Lb2 => addrs::LB2_FRONT6,
        };
        self.topo
            .client()
            .ip_batch(&[
                format!("route replace {VIP}/32 via {}", front(host)),
                format!("route replace {VIP6}/128 via {via6}"),
            ])
            .unwrap();
    }
}

/// The VIPs `ns` has routes to in the announce table, both families (the
/// kernel has no such table before its first route).
fn announced(ns: &Netns) -> String {
    let table = TABLE.to_string();
    ["-4", "-6"]
        .iter()
        .map(|family| {
            ns.ip(&[family, "route", "show", "table", &table, "proto", "249"])
                .unwrap_or_default()
        })
        .collect()
}

fn holds(ns: &Netns, addr: &str) -> bool {
    ns.ip(&["addr", "show"])
        .unwrap()
        .contains(&format!(" {addr}/"))
}

fn wait_for(what: &str, lb: &Balancer, mut cond: impl FnMut() -> bool) {
    let ok = wait_until(STEP, &mut cond);
    assert!(ok, "{what}\n{}\n{}", ha(lb), lb.output_so_far());
}

fn adopted(lb: &Balancer) -> Vec<String> {
    ha(lb)["adopted"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn each_node_announces_what_it_can_serve_and_holds_its_own_snat_addresses() {
    if !require_root() {
        return;
    }
    let mut site = Site::new("aaan");
    let a = site.start(LbHost::Lb);
    let b = site.start(LbHost::Lb2);
    for (lb, host) in [(&a, LbHost::Lb), (&b, LbHost::Lb2)] {
        let ns = site.ns(host);
        // The role is published once the routes and addresses are in place.
        wait_for("serving", lb, || role(lb) == "active");
        let routes = announced(ns);
        assert!(routes.contains(VIP) && routes.contains(VIP6), "{routes}");
        for own in snat_of(host) {
            assert!(holds(ns, own), "{own} on its own node");
        }
        for theirs in snat_of(other(host)) {
            assert!(!holds(ns, theirs), "{theirs} is the other node's");
        }
        // Nobody owns a VIP by ARP in this mode.
        assert!(!has_vip(ns));
    }
    // Every IPv4 backend down: the IPv4 VIP is withdrawn on both nodes, the
    // IPv6 one stays; back up, announced again.
    let (v4, v6): (Vec<_>, Vec<_>) = site.servers.drain(..).partition(|s| s.addr().is_ipv4());
    site.servers = v6;
    for s in v4 {
        s.stop();
    }
    for (lb, host) in [(&a, LbHost::Lb), (&b, LbHost::Lb2)] {
        let ns = site.ns(host);
        wait_for("the IPv4 VIP withdrawn", lb, || {
            !announced(ns).contains(VIP)
        });
        assert!(announced(ns).contains(VIP6));
    }
    site.serve(true);
    for (lb, host) in [(&a, LbHost::Lb), (&b, LbHost::Lb2)] {
        let ns = site.ns(host);
        wait_for("the IPv4 VIP announced again", lb, || {
            announced(ns).contains(VIP)
        });
    }
    let metrics = scrape(site.ns(LbHost::Lb), front(LbHost::Lb));
    assert!(
        metrics.contains(&format!("balancer_ha_announced{{vip=\"{VIP}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("balancer_ha_snat_held{address=\"203.0.113.201\",owner=\"self\"} 1"),
        "{metrics}"
    );
    promtool_accepts(&metrics);
    // A clean stop withdraws everything it announced.
    a.stop().unwrap();
    assert_eq!(announced(site.ns(LbHost::Lb)), "");
}

/// The connections of one node, moved to the other as an ECMP router moves
/// them when a node joins or leaves; then their node dies, is replaced by a
/// fresh host that joins, and the other drains. All keep working.
#[test]
fn connections_survive_a_move_a_death_a_replacement_and_a_drain() {
    if !require_root() {
        return;
    }
    let mut site = Site::new("aamv");
    let a = site.start(LbHost::Lb);
    let b = site.start(LbHost::Lb2);
    wait_role(&a, "active");
    wait_role(&b, "active");
    site.route_to(LbHost::Lb);
    let n = 10;
    let chatter = chatter(&site.topo, n);
    talked(&chatter, 2);
    wait_copy(&b, "lb-a");
    wait_for("lb-b holds lb-a's flows", &b, || {
        ha(&b)["sync_installed"].as_u64().unwrap_or(0) >= n as u64
    });

    // The route moves: lb-b forwards lb-a's flows with lb-a's SNAT address and
    // port; the backends' replies still reach lb-a, which holds that address.
    site.route_to(LbHost::Lb2);
    talked(&chatter, 5);

    // lb-a's host dies: lb-b adopts its SNAT addresses and flows.
    let died = Instant::now();
    site.topo.kill_lb(LbHost::Lb).unwrap();
    drop(a);
    wait_for("lb-b adopts lb-a", &b, || adopted(&b) == ["lb-a"]);
    eprintln!(
        "lb-b adopted lb-a's addresses {:?} after it died",
        died.elapsed()
    );
    for theirs in snat_of(LbHost::Lb) {
        assert!(holds(site.ns(LbHost::Lb2), theirs), "{theirs} adopted");
    }
    talked(&chatter, 5);

    // A fresh host replaces it and joins: once its copy is complete it holds
    // its addresses again, and the route may lead to it.
    site.topo.replace_lb(LbHost::Lb).unwrap();
    let a2 = site.start(LbHost::Lb);
    wait_for("lb-a2 serves", &a2, || role(&a2) == "active");
    wait_for("lb-b gives lb-a's addresses back", &b, || {
        adopted(&b).is_empty()
    });
    for own in snat_of(LbHost::Lb) {
        wait_for("lb-a2 holds its addresses", &a2, || {
            holds(site.ns(LbHost::Lb), own)
        });
    }
    talked(&chatter, 5);
    site.route_to(LbHost::Lb);
    talked(&chatter, 5);

    // lb-b drains: its routes go at once; it stops after drain_timeout_s
    // with its flows (the adopted ones) left for lb-a2 to adopt.
    let drained = Instant::now();
    let out = b.cli(&["drain"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(announced(site.ns(LbHost::Lb2)), "");
    let mut b = b;
    let exited = b
        .process()
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .expect("lb-b still running 15 s after the drain began");
    assert!(exited.success(), "{}", b.output_so_far());
    eprintln!("lb-b drained and stopped after {:?}", drained.elapsed());
    assert!(b.output_so_far().contains("drain_timeout_s passed"));
    wait_for("lb-a2 adopts lb-b", &a2, || adopted(&a2) == ["lb-b"]);
    talked(&chatter, 5);
    assert_all_survived(chatter.stop(), n);
}

#[test]
fn a_drain_with_no_flows_stops_at_once_and_the_peer_adopts_without_waiting() {
    if !require_root() {
        return;
    }
    let site = Site::new("aadr");
    let mut a = site.start(LbHost::Lb);
    let b = site.start(LbHost::Lb2);
    wait_role(&a, "active");
    wait_role(&b, "active");
    let out = a.cli(&["stop"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining first"));
    let began = Instant::now();
    a.process()
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("lb-a still running 10 s after its drain began");
    let stopped = began.elapsed();
    // The withdraw wait (300 ms), then the next count (at most a second).
    assert!(stopped < Duration::from_secs(3), "{stopped:?}");
    assert!(a.output_so_far().contains("drained: no flow left"));
    // It said it was leaving: no dead_after wait.
    let adopted_in = wait_until(Duration::from_secs(1), || adopted(&b) == ["lb-a"]);
    assert!(adopted_in, "{}", ha(&b));
}

#[test]
fn a_peer_with_another_key_is_refused() {
    if !require_root() {
        return;
    }
    let site = Site::new("aakey");
    let a = site.start(LbHost::Lb);
    let keys = TempDir::new("aakey2").unwrap();
    let path = keys.join("other.key");
    std::fs::write(&path, "another key, not the group's at all").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let b = Balancer::start(
        site.ns(LbHost::Lb2),
        &site.config(LbHost::Lb2, &path.display().to_string()),
    )
    .unwrap();
    wait_for("lb-b's adverts refused as forged", &a, || {
        ha(&a)["adverts_rejected"]["forged"].as_u64().unwrap_or(0) > 3
    });
    wait_for("lb-b's flow sync refused as forged", &a, || {
        ha(&a)["sync_rejected_by_reason"]["forged"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    // Each serves alone, knowing no peer: nothing adopted either way.
    wait_role(&a, "active");
    wait_role(&b, "active");
    assert_eq!(ha(&a)["peers"], serde_json::json!([]));
    assert!(adopted(&a).is_empty() && adopted(&b).is_empty());
}
