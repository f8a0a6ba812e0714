//! Source rules and the new-connection rate per source, through
//! BPF_PROG_TEST_RUN with maps written by the daemon's own code.

mod common;

use std::time::{Duration, Instant};

use balancer_common::{service::ServiceId, stats::Counter};
use balancer_tests::{
    config::{Config, Firewall, FirewallAction, Health, Service},
    poll_until,
};
use common::*;

/// A global default of deny with global allow and deny lists, and three
/// services: without lists, with both lists, and allowing everyone.
fn rules() -> Config {
    Config::new("fw")
        .snat([SNAT])
        .firewall(
            Firewall::default()
                .default_action(FirewallAction::Deny)
                .deny(["192.0.2.0/24"])
                .allow(["198.51.100.0/24"]),
        )
        .service(
            Service::tcp("open", VIP, 80)
                .health(Health::none())
                .backend("203.0.113.11:8080"),
        )
        .service(
            Service::tcp("restricted", VIP, 81)
                .allow(["198.51.100.0/25"])
                .deny(["198.51.100.64/26"])
                .health(Health::none())
                .backend("203.0.113.12:8080"),
        )
        .service(
            Service::udp("everyone", VIP, 82)
                .allow(["0.0.0.0/0"])
                .health(Health::none())
                .backend("203.0.113.13:8080"),
        )
}

fn syn_from(src: [u8; 4], port: u16) -> Vec<u8> {
    tcp_frame(src, VIP, 40000, port, "S", b"")
}

#[test]
fn source_rules_decide_in_order() {
    let Some(fx) = Fixture::with_config(&rules(), 4096) else {
        return;
    };
    let admitted = |src: [u8; 4], port: u16| -> bool {
        let frame = if port == 82 {
            udp_frame(src, VIP, 40000, port, b"q")
        } else {
            syn_from(src, port)
        };
        match fx.run(&frame, fx.front).0 {
            XDP_REDIRECT => true,
            XDP_DROP => false,
            other => panic!("{src:?} -> {port}: action {other}"),
        }
    };
    // No service list: the global allow list, then the default (deny).
    assert!(admitted([198, 51, 100, 2], 80));
    assert!(!admitted([203, 0, 113, 50], 80), "default deny");
    // The service's allow list admits its own prefix only, and its deny list
    // (longer prefix) wins inside it.
    assert!(admitted([198, 51, 100, 3], 81));
    assert!(
        !admitted([198, 51, 100, 70], 81),
        "denied /26 inside the allowed /25"
    );
    assert!(
        !admitted([198, 51, 100, 200], 81),
        "outside the allow list, though the global list allows it"
    );
    // An allow list of everything overrides the default, not the block list.
    assert!(admitted([203, 0, 113, 50], 82));
    assert!(!admitted([192, 0, 2, 7], 82), "global block list");
    assert!(!admitted([192, 0, 2, 7], 80));

    assert_eq!(fx.dp.counter(Counter::DropFirewall).unwrap(), 5);
    assert_eq!(
        fx.dp
            .service_drops(ServiceId(0), Counter::DropFirewall)
            .unwrap(),
        2
    );
    assert_eq!(
        fx.dp
            .service_drops(ServiceId(1), Counter::DropFirewall)
            .unwrap(),
        2
    );
    assert_eq!(
        fx.dp
            .service_drops(ServiceId(2), Counter::DropFirewall)
            .unwrap(),
        1
    );
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 3);
}

#[test]
fn new_connections_per_source_are_bounded() {
    let mut config = rules();
    config.firewall = config.firewall.rate(1, 3);
    let Some(fx) = Fixture::with_config(&config, 4096) else {
        return;
    };
    let syn = |src: [u8; 4], sport: u16| tcp_frame(src, VIP, sport, 80, "S", b"");
    let burst = Instant::now();
    let actions: Vec<u32> = (0..5)
        .map(|i| fx.run(&syn([198, 51, 100, 2], 41000 + i), fx.front).0)
        .collect();
    assert_eq!(
        actions,
        [XDP_REDIRECT, XDP_REDIRECT, XDP_REDIRECT, XDP_DROP, XDP_DROP],
        "a burst of 3, then nothing until a token comes back (1 per second)"
    );
    // Another source has its own bucket.
    assert_eq!(
        fx.run(&syn([198, 51, 100, 3], 41000), fx.front).0,
        XDP_REDIRECT
    );
    // The limited source's established flows keep going.
    let data = tcp_frame([198, 51, 100, 2], VIP, 41000, 80, "AP", b"more");
    assert_eq!(fx.run(&data, fx.front).0, XDP_REDIRECT);
    assert_eq!(fx.dp.counter(Counter::DropRateLimit).unwrap(), 2);
    assert_eq!(
        fx.dp
            .service_drops(ServiceId(0), Counter::DropRateLimit)
            .unwrap(),
        2
    );
    // A token comes back after a second: polled with new SYNs every 50 ms (a
    // refused one takes no token, and costs the bucket under a millisecond of
    // refill). None may be admitted before the second is up (less a tick of
    // the coarse clock the program reads), and one refused after 1.1 s is late.
    let mut late = Vec::new();
    let mut admitted_by = Duration::ZERO;
    let mut sport = 41010;
    let took = poll_until(Duration::from_secs(3), Duration::from_millis(50), || {
        let started = burst.elapsed();
        sport += 1;
        let admitted = fx.run(&syn([198, 51, 100, 2], sport), fx.front).0 == XDP_REDIRECT;
        admitted_by = burst.elapsed();
        if !admitted && started >= Duration::from_millis(1100) {
            late.push(started);
        }
        admitted
    })
    .expect("no token came back within 3 s");
    eprintln!("a token came back {admitted_by:?} after the burst ({took:?} of polling)");
    assert!(
        admitted_by >= Duration::from_millis(990),
        "a token came back {admitted_by:?} after the burst, at 1 per second"
    );
    assert!(late.is_empty(), "still refused at {late:?} after the burst");
    // One more, and no other.
    assert_eq!(
        fx.run(&syn([198, 51, 100, 2], sport + 1), fx.front).0,
        XDP_DROP
    );
}
