//! The harness's configuration builder against the daemon's own parser (no
//! root needed): every key the builder writes is a key the daemon reads, with
//! the value the test set.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use balancer_tests::config::{
    Config, Firewall, FirewallAction, Flows, Forwarding, Ha, HaMode, Health, HealthKind,
    OnBackendDown, Scheduler, Service, SynCookies, XdpMode,
};
use balancer_user::config as daemon;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every key the daemon of this version knows, each set to a value other than its default.
fn every_key() -> Config {
    let mut cfg = Config::new("every-key")
        .interfaces(["front", "back", "spare"])
        .xdp_mode(XdpMode::Generic)
        .forwarding(Forwarding::FullNat)
        .snat(["203.0.113.9", "2001:db8:2::9"])
        .snat_port_range(41000, 41999)
        .metrics("192.0.2.1:9999")
        .flows(
            Flows::default()
                .capacity(4096)
                .tcp_established_timeout_s(600)
                .tcp_transitory_timeout_s(10)
                .tcp_syn_timeout_s(4)
                .udp_timeout_s(20),
        )
        .firewall(
            Firewall::default()
                .default_action(FirewallAction::Deny)
                .allow(["198.51.100.0/24", "2001:db8:1::/64"])
                .deny(["192.0.2.0/24"])
                .rate(5, 20)
                .syn_cookies(SynCookies::Always),
        )
        .ha(Ha::enabled()
            .interface("front")
            .peers(["198.51.100.3"])
            .priority(150)
            .advert_interval_ms(200)
            .dead_after(4)
            .preempt(false)
            .auth_key_file("/etc/balancer/ha.key")
            .sync_flows(false)
            .track_interfaces(["back"])
            .track_xdp(false)
            .track_backends(false)
            .watchdog_ms(5000)
            .mode(HaMode::ActiveActive)
            .announce_table(300)
            .bulk_sync_rate(5000)
            .preempt_sync_timeout_ms(2000)
            .takeover_grace_ms(500)
            .withdraw_wait_ms(700)
            .drain_timeout_s(9))
        .service(
            Service::tcp("web", "198.51.100.10", 80)
                .scheduler(Scheduler::Maglev)
                .allow(["198.51.100.0/25"])
                .deny(["198.51.100.64/26"])
                .health(
                    Health::http("/health")
                        .port(8081)
                        .expect_status(204)
                        .expect_body("ok")
                        .agent_port(9100)
                        .timing(300, 200, 3, 4),
                )
                .on_backend_down(OnBackendDown::Reset)
                .drain_timeout_s(30)
                .weighted_backend("203.0.113.11:8080", 50)
                .backend("203.0.113.12:8080"),
        )
        .service(
            Service::udp("dns", "2001:db8:1::10", 53)
                .health(Health::udp().payload("ping"))
                .backend("[2001:db8:2::11]:5353"),
        )
        .service(
            Service::tcp("pg", "198.51.100.10", 5432)
                .health(Health::exec(["pg_isready", "-q"]))
                .backend("203.0.113.13:5432"),
        );
    cfg.control.socket = Some(PathBuf::from("/run/balancer-test/b.sock"));
    cfg.control.pin_dir = Some(PathBuf::from("/sys/fs/bpf/balancer-test"));
    cfg
}

#[test]
fn every_key_reaches_the_daemon_as_set() {
    let cfg = every_key();
    let text = cfg.to_toml();
    let got = daemon::parse(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;

    let node = &got.node;
    assert_eq!(node.name, "every-key");
    assert_eq!(node.interfaces, ["front", "back", "spare"]);
    assert_eq!(node.xdp_mode, daemon::XdpMode::Generic);
    assert_eq!(node.forwarding, daemon::Forwarding::FullNat);
    assert_eq!(
        node.snat_addresses,
        [ip("203.0.113.9"), ip("2001:db8:2::9")]
    );
    assert_eq!(node.snat_port_range, (41000, 41999));

    assert_eq!(got.control.metrics, Some(sa("192.0.2.1:9999")));
    assert_eq!(
        got.control.socket,
        PathBuf::from("/run/balancer-test/b.sock")
    );
    assert_eq!(
        got.control.pin_dir,
        PathBuf::from("/sys/fs/bpf/balancer-test")
    );

    // Field by field rather than whole structs: keys added to the daemon add fields.
    let flows = &got.flows;
    assert_eq!(flows.capacity, 4096);
    assert_eq!(flows.tcp_established_timeout_s, 600);
    assert_eq!(flows.tcp_transitory_timeout_s, 10);
    assert_eq!(flows.udp_timeout_s, 20);
    assert_eq!(flows.tcp_syn_timeout_s, 4);

    let fw = &got.firewall;
    assert_eq!(fw.default, daemon::FirewallAction::Deny);
    let nets = |v: &[ipnet::IpNet]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(nets(&fw.allow), ["198.51.100.0/24", "2001:db8:1::/64"]);
    assert_eq!(nets(&fw.deny), ["192.0.2.0/24"]);
    let rate = &fw.new_connections_per_source;
    assert_eq!((rate.rate, rate.burst), (5, 20));
    assert_eq!(fw.syn_cookies, daemon::SynCookies::Always);

    let ha = &got.ha;
    assert!(ha.enabled);
    assert_eq!(ha.interface.as_deref(), Some("front"));
    assert_eq!(ha.peers, [ip("198.51.100.3")]);
    assert_eq!(ha.priority, 150);
    assert_eq!(ha.advert_interval_ms, 200);
    assert_eq!(ha.dead_after, 4);
    assert!(!ha.preempt);
    assert_eq!(
        ha.auth_key_file.as_deref(),
        Some(std::path::Path::new("/etc/balancer/ha.key"))
    );
    assert!(!ha.sync_flows);
    assert_eq!(ha.track_interfaces, ["back"]);
    assert!(!ha.track_xdp);
    assert!(!ha.track_backends);
    assert_eq!(ha.watchdog_ms, 5000);
    assert_eq!(ha.mode, daemon::HaMode::ActiveActive);
    assert_eq!(ha.announce_table, 300);
    assert_eq!(ha.bulk_sync_rate, 5000);
    assert_eq!(ha.preempt_sync_timeout_ms, 2000);
    assert_eq!(ha.takeover_grace_ms, 500);
    assert_eq!(ha.withdraw_wait_ms, 700);
    assert_eq!(ha.drain_timeout_s, 9);

    assert_eq!(got.services.len(), 3);
    let web = &got.services[0];
    assert_eq!(
        (web.name.as_str(), web.vip, web.port),
        ("web", ip("198.51.100.10"), 80)
    );
    assert_eq!(web.protocol, daemon::Protocol::Tcp);
    assert_eq!(web.scheduler, daemon::Scheduler::Maglev);
    assert_eq!(nets(&web.allow), ["198.51.100.0/25"]);
    assert_eq!(nets(&web.deny), ["198.51.100.64/26"]);
    let h = &web.health;
    assert_eq!(h.kind, daemon::HealthKind::Http);
    assert_eq!(h.port, Some(8081));
    assert_eq!(h.path.as_deref(), Some("/health"));
    assert_eq!(h.expect_status, Some(204));
    assert_eq!(h.expect_body.as_deref(), Some("ok"));
    assert_eq!(h.agent_port, Some(9100));
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.rise, h.fall),
        (300, 200, 3, 4)
    );
    assert_eq!(web.on_backend_down, daemon::OnBackendDown::Reset);
    assert_eq!(web.drain_timeout_s, 30);
    let backends: Vec<(SocketAddr, u32)> =
        web.backends.iter().map(|b| (b.address, b.weight)).collect();
    assert_eq!(
        backends,
        [
            (sa("203.0.113.11:8080"), 50),
            (
                sa("203.0.113.12:8080"),
                daemon::BackendConfig::DEFAULT_WEIGHT
            ),
        ]
    );

    let dns = &got.services[1];
    assert_eq!(dns.protocol, daemon::Protocol::Udp);
    assert_eq!(dns.vip, ip("2001:db8:1::10"));
    assert_eq!(dns.health.kind, daemon::HealthKind::Udp);
    assert_eq!(dns.health.payload.as_deref(), Some("ping"));
    assert_eq!(dns.backends[0].address, sa("[2001:db8:2::11]:5353"));

    let pg = &got.services[2];
    assert_eq!(pg.health.kind, daemon::HealthKind::Exec);
    assert_eq!(
        pg.health.command,
        Some(vec!["pg_isready".to_string(), "-q".to_string()])
    );
}

#[test]
fn the_remaining_keywords_are_spelled_as_the_daemon_reads_them() {
    for (kind, want) in [
        (HealthKind::Tcp, daemon::HealthKind::Tcp),
        (HealthKind::None, daemon::HealthKind::None),
    ] {
        let text = Config::new("kw")
            .forwarding(Forwarding::Dnat)
            .xdp_mode(XdpMode::Native)
            .metrics_off()
            .firewall(Firewall::default().default_action(FirewallAction::Allow))
            .service(
                Service::tcp("s", "198.51.100.10", 80)
                    .scheduler(Scheduler::RoundRobin)
                    .on_backend_down(OnBackendDown::Keep)
                    .health(Health::kind(kind))
                    .backend("203.0.113.11:8080"),
            )
            .service(
                Service::tcp("t", "198.51.100.10", 81)
                    .scheduler(Scheduler::P2c)
                    .backend("203.0.113.11:8080"),
            )
            .service(
                Service::tcp("u", "198.51.100.10", 82)
                    .scheduler(Scheduler::LeastConn)
                    .backend("203.0.113.11:8080"),
            )
            .to_toml();
        let got = daemon::parse(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .config;
        assert_eq!(got.node.forwarding, daemon::Forwarding::Dnat);
        assert_eq!(got.node.xdp_mode, daemon::XdpMode::Native);
        assert_eq!(got.control.metrics, None);
        assert_eq!(got.firewall.default, daemon::FirewallAction::Allow);
        let s = &got.services;
        assert_eq!(s[0].scheduler, daemon::Scheduler::RoundRobin);
        assert_eq!(s[0].on_backend_down, daemon::OnBackendDown::Keep);
        assert_eq!(s[0].health.kind, want);
        assert_eq!(s[1].scheduler, daemon::Scheduler::P2c);
        assert_eq!(s[2].scheduler, daemon::Scheduler::LeastConn);
    }
}

/// Keys that default in the daemon are written only when a test sets them.
#[test]
fn keys_are_written_only_when_set() {
    let base = Config::new("new-keys")
        .service(Service::tcp("web", "198.51.100.10", 80).backend("203.0.113.11:8080"));
    let text = base.to_toml();
    for key in [
        "tcp_syn_timeout_s",
        "syn_cookies",
        "mode",
        "announce_table",
        "bulk_sync_rate",
        "takeover_grace_ms",
        "withdraw_wait_ms",
        "drain_timeout_s",
    ] {
        assert!(!text.contains(key), "{key} written unset:\n{text}");
    }
    daemon::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for mode in [SynCookies::Off, SynCookies::Auto, SynCookies::Always] {
        let t = Config::new("x")
            .firewall(Firewall::default().syn_cookies(mode))
            .service(Service::tcp("web", "198.51.100.10", 80).backend("203.0.113.11:8080"))
            .to_toml();
        let got = daemon::parse(&t).unwrap_or_else(|e| panic!("{e}\n{t}"));
        let want = match mode {
            SynCookies::Off => daemon::SynCookies::Off,
            SynCookies::Auto => daemon::SynCookies::Auto,
            SynCookies::Always => daemon::SynCookies::Always,
        };
        assert_eq!(got.config.firewall.syn_cookies, want, "{t}");
    }
    let t = Config::new("x")
        .ha(Ha::enabled()
            .interface("front")
            .peers(["198.51.100.3"])
            .auth_key_file("/etc/balancer/ha.key")
            .mode(HaMode::ActiveStandby))
        .service(Service::tcp("web", "198.51.100.10", 80).backend("203.0.113.11:8080"))
        .to_toml();
    let got = daemon::parse(&t).unwrap_or_else(|e| panic!("{e}\n{t}"));
    assert_eq!(got.config.ha.mode, daemon::HaMode::ActiveStandby);
}
