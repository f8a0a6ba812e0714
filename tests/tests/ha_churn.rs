//! Failover through churn: a standby that starts after the connections, a
//! host replaced by a fresh one, a failback that waits for the copy, a lossy
//! sync link, a peer of another version and a healed partition. Real daemons
//! in two balancer hosts, real clients sending a line every 100 ms on each of
//! their connections; every one of them must keep working.

mod ha_common;

use std::time::{Duration, Instant, SystemTime};

use balancer_tests::{
    Balancer, LbHost, Pace, TcpClient, config::Config, require_root, tcp_connect, wait_until,
};
use balancer_user::ha::{advert, sync::wire};
use ha_common::*;

/// lb-a on `lb` (priority 200) and lb-b on `lb2` (priority 100), flow sync on.
trait Pair {
    fn config(&self, host: LbHost, preempt: bool) -> Config;
    fn start(&self, host: LbHost, config: &Config) -> Balancer;
}

impl Pair for Site {
    fn config(&self, host: LbHost, preempt: bool) -> Config {
        match host {
            LbHost::Lb => config("lb-a", 200, "198.51.100.3", preempt, &self.key, true),
            LbHost::Lb2 => config("lb-b", 100, "198.51.100.1", preempt, &self.key, true),
        }
    }

    fn start(&self, host: LbHost, config: &Config) -> Balancer {
        self.start_with(host, config)
    }
}

/// The log line of `lb`'s first transition to `to`.
fn transition_to(lb: &Balancer, to: &str) -> String {
    lb.output_so_far()
        .lines()
        .find(|l| l.contains("HA role") && l.contains(&format!("-> {to}")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_standby_that_starts_after_the_connections_keeps_them_on_failover() {
    if !require_root() {
        return;
    }
    let mut site = Site::new("hcla");
    let a = site.start(LbHost::Lb, &site.config(LbHost::Lb, false));
    wait_role(&a, "active");
    let chatter = chatter(&site.topo, 30);
    talked(&chatter, 3);
    // The standby starts after the connections: it copies the table.
    let b = site.start(LbHost::Lb2, &site.config(LbHost::Lb2, false));
    wait_role(&b, "standby");
    wait_copy(&b, "lb-a");
    site.topo.kill_lb(LbHost::Lb).unwrap();
    let died = Instant::now();
    wait_role(&b, "active");
    eprintln!("lb-b active {:?} after lb-a's host died", died.elapsed());
    talked(&chatter, 10);
    assert_all_survived(chatter.stop(), 30);
    let took_over = transition_to(&b, "active");
    assert!(took_over.contains("lb-a: complete"), "{took_over}");
    drop(a);
    site.topo.replace_lb(LbHost::Lb).unwrap();
}

#[test]
fn a_replaced_host_copies_the_table_and_a_second_failover_keeps_every_connection() {
    if !require_root() {
        return;
    }
    let mut site = Site::new("hcrp");
    let a = site.start(LbHost::Lb, &site.config(LbHost::Lb, false));
    let b = site.start(LbHost::Lb2, &site.config(LbHost::Lb2, false));
    wait_role(&a, "active");
    wait_role(&b, "standby");
    let chatter = chatter(&site.topo, 20);
    wait_copy(&b, "lb-a");
    talked(&chatter, 3);

    // lb-a's host dies; lb-b takes over.
    site.topo.kill_lb(LbHost::Lb).unwrap();
    wait_role(&b, "active");
    talked(&chatter, 5);
    drop(a);

    // A fresh host, nothing pinned, takes lb-a's place and joins as standby.
    site.topo.replace_lb(LbHost::Lb).unwrap();
    let a2 = site.start(LbHost::Lb, &site.config(LbHost::Lb, false));
    wait_role(&a2, "standby");
    wait_copy(&a2, "lb-b");
    talked(&chatter, 3);

    // Then lb-b's host dies: the replacement has every connection.
    site.topo.kill_lb(LbHost::Lb2).unwrap();
    wait_role(&a2, "active");
    talked(&chatter, 10);
    assert_all_survived(chatter.stop(), 20);
    let took_over = transition_to(&a2, "active");
    assert!(took_over.contains("lb-b: complete"), "{took_over}");
    drop(b);
    site.topo.replace_lb(LbHost::Lb2).unwrap();
}

#[test]
fn a_returning_node_takes_the_role_back_only_once_its_copy_is_complete() {
    if !require_root() {
        return;
    }
    let mut site = Site::new("hcpe");
    let a = site.start(LbHost::Lb, &site.config(LbHost::Lb, true));
    // lb-b sends its copies at the slowest bulk rate (100 flows per second),
    // so that lb-a's copy of it, after lb-a returns, takes a few seconds.
    let mut b_config = site.config(LbHost::Lb2, true);
    b_config.ha.bulk_sync_rate = Some(100);
    let b = site.start(LbHost::Lb2, &b_config);
    wait_role(&a, "active");
    wait_role(&b, "standby");
    let chatter = chatter(&site.topo, 20);
    // Idle connections too, so that the copy takes a while: the failback
    // must wait for it.
    let idle: Vec<TcpClient> = (0..300)
        .map(|i| {
            let mut c = tcp_connect(site.topo.client(), vip(), Duration::from_secs(5)).unwrap();
            c.request(&format!("idle {i}")).unwrap();
            c
        })
        .collect();
    wait_copy(&b, "lb-a");

    site.topo.kill_lb(LbHost::Lb).unwrap();
    wait_role(&b, "active");
    talked(&chatter, 5);
    drop(a);

    site.topo.replace_lb(LbHost::Lb).unwrap();
    let mut config = site.config(LbHost::Lb, true);
    config.ha.preempt_sync_timeout_ms = Some(60_000);
    let a2 = site.start(LbHost::Lb, &config);
    // Standby while the copy arrives...
    let saw_progress = wait_until(STEP, || copy_state(&a2, "lb-b") == "in_progress");
    assert!(saw_progress, "{}", ha(&a2));
    assert_eq!(role(&a2), "standby");
    // ...then it takes the role back.
    wait_role(&a2, "active");
    wait_role(&b, "standby");
    let log = a2.output_so_far();
    let copied = log
        .find("the copy of the peer's flow table is complete")
        .expect("no complete copy logged");
    let preempted = log.find("-> active").expect("no transition to active");
    assert!(
        copied < preempted,
        "took the role before the copy was complete:\n{log}"
    );
    talked(&chatter, 10);
    assert_all_survived(chatter.stop(), 20);
    drop(idle);
}

#[test]
fn ten_percent_loss_on_the_sync_path_loses_no_flow() {
    if !require_root() {
        return;
    }
    let site = Site::new("hclo");
    let a = site.start(LbHost::Lb, &site.config(LbHost::Lb, false));
    let b = site.start(LbHost::Lb2, &site.config(LbHost::Lb2, false));
    wait_role(&a, "active");
    wait_role(&b, "standby");
    wait_copy(&b, "lb-a");
    // One sync datagram in ten to lb-b is lost (no netem here: nftables).
    site.topo
        .lb2()
        .exec(
            "nft",
            &["add table inet loss; \
                 add chain inet loss input { type filter hook input priority 0; }; \
                 add rule inet loss input udp dport 8910 numgen random mod 10 0 drop"],
        )
        .unwrap();
    // New connections open while the loss goes on.
    let mut conns: Vec<(String, TcpClient)> = Vec::new();
    let mut pace = Pace::new(Duration::from_millis(10));
    for i in 0..200 {
        let mut c = tcp_connect(site.topo.client(), vip(), Duration::from_secs(5)).unwrap();
        let reply = c.request(&format!("held {i}")).unwrap();
        conns.push((reply.split_once(' ').unwrap().0.to_string(), c));
        pace.wait();
    }
    // Every one arrives: the standby installed them all (resent where lost).
    let ok = wait_until(STEP, || {
        ha(&b)["sync_installed"].as_u64().unwrap_or(0) >= 200
    });
    assert!(ok, "{}", ha(&b));
    let resent = ha(&a)["sync_retransmitted"].as_u64().unwrap_or(0);
    eprintln!("lb-a resent {resent} datagrams that lb-b lacked");
    assert!(resent > 0, "no loss to repair: {}", ha(&a));
    site.topo.kill_lb(LbHost::Lb).unwrap();
    wait_role(&b, "active");
    let mut broken = Vec::new();
    for (i, (backend, c)) in conns.iter_mut().enumerate() {
        let line = format!("after {i}");
        match c.request(&line) {
            Ok(reply) if reply == format!("{backend} {line}") => {}
            other => broken.push(format!("connection {i}: {other:?}")),
        }
    }
    assert_all_survived(broken, conns.len());
}

#[test]
fn a_peer_of_another_sync_version_is_refused_with_an_event() {
    if !require_root() {
        return;
    }
    let site = Site::new("hcvr");
    let b = site.start(LbHost::Lb2, &site.config(LbHost::Lb2, false));
    wait_role(&b, "active");
    // lb-a of another version: its records have another layout.
    let now = advert::micros(SystemTime::now());
    let foreign = wire::Codec::new(KEY.as_bytes().to_vec(), "lb-a", now, Duration::from_secs(2))
        .with_layout(wire::RECORD_LAYOUT + 1)
        .bulk_request(now);
    site.topo.lb().run(|| {
        let s = std::net::UdpSocket::bind("198.51.100.1:0").unwrap();
        s.send_to(&foreign, ("198.51.100.3", wire::PORT)).unwrap();
    });
    b.wait_for_log(&["ha_sync_refused", "layout"], STEP)
        .unwrap();
    let ok = wait_until(STEP, || ha(&b)["sync_rejected_by_reason"]["version"] == 1);
    assert!(ok, "{}", ha(&b));
    assert_eq!(ha(&b)["sync_bulks_sent"], 0, "nothing was sent to it");
}

#[test]
fn a_healed_partition_keeps_the_winners_connections() {
    if !require_root() {
        return;
    }
    let site = Site::new("hcpa");
    let a = site.start(LbHost::Lb, &site.config(LbHost::Lb, true));
    let b = site.start(LbHost::Lb2, &site.config(LbHost::Lb2, true));
    wait_role(&a, "active");
    wait_role(&b, "standby");
    let chatter = chatter(&site.topo, 20);
    wait_copy(&b, "lb-a");
    // The HA link breaks both ways: lb-b hears nothing of lb-a and takes
    // over too.
    let block = "add table inet part; \
                 add chain inet part input { type filter hook input priority 0; }; \
                 add rule inet part input udp dport { 8909, 8910 } drop";
    site.topo.lb2().exec("nft", &[block]).unwrap();
    site.topo.lb().exec("nft", &[block]).unwrap();
    wait_role(&b, "active");
    assert_eq!(role(&a), "active", "lb-a hears nothing either");
    talked(&chatter, 5);
    // The link returns: lb-b, outranked, steps down; lb-a stays.
    for lb in [site.topo.lb(), site.topo.lb2()] {
        lb.exec("nft", &["delete table inet part"]).unwrap();
    }
    wait_role(&b, "standby");
    assert_eq!(role(&a), "active");
    b.wait_for_log(&["HA role active -> standby"], STEP)
        .unwrap();
    assert!(
        ha(&a)["split_brains"].as_u64().unwrap_or(0) + ha(&b)["split_brains"].as_u64().unwrap_or(0)
            > 0,
        "the split brain was not counted"
    );
    talked(&chatter, 10);
    assert_all_survived(chatter.stop(), 20);
    let metrics = scrape(site.topo.lb(), "198.51.100.1");
    assert!(
        metrics.contains("balancer_ha_split_brains_total"),
        "{metrics}"
    );
    // lb-b stepped down: its copy of lb-a's table started over.
    assert!(metrics.contains("balancer_ha_sync_copy_state"), "{metrics}");
    promtool_accepts(&metrics);
}
