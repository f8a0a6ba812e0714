//! Firewall rules belong to a service, whatever its place in the file: the
//! real daemon, real clients from an allowed and a denied source, reloads
//! that remove, reorder and add services, IPv4 and IPv6.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use balancer_tests::{
    Balancer, Topology, addrs,
    config::{Config, Health, Service},
    require_root, tcp_connect_from, tcp_server,
};

const VIP: &str = "198.51.100.10";
const VIP6: &str = "2001:db8:1::10";
/// The client's own addresses are denied where a list names a client; these
/// second ones are what the lists allow.
const OTHER: &str = "198.51.100.5";
const OTHER6: &str = "2001:db8:1::5";

/// A service of the test: its lists name the client's two sources.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// No lists: everyone.
    Open,
    /// `deny` names the client's first address.
    Closed,
    /// `allow` names the client's second address only.
    Only,
}

impl Kind {
    fn port(self) -> u16 {
        match self {
            Kind::Open => 8080,
            Kind::Closed => 9000,
            Kind::Only => 9100,
        }
    }

    /// `service` with this kind's lists, naming the client's sources of a family.
    fn lists(self, service: Service, v6: bool) -> Service {
        let (first, second) = if v6 {
            (format!("{}/128", addrs::CLIENT6), format!("{OTHER6}/128"))
        } else {
            (format!("{}/32", addrs::CLIENT), format!("{OTHER}/32"))
        };
        match self {
            Kind::Open => service,
            Kind::Closed => service.deny([first]),
            Kind::Only => service.allow([second]),
        }
    }

    /// Whether a client at its first (`false`) or second (`true`) address gets in.
    fn admits(self, second_source: bool) -> bool {
        match self {
            Kind::Open => true,
            Kind::Closed => second_source,
            Kind::Only => second_source,
        }
    }
}

/// The configuration with `order`'s services, each in both families.
fn config(order: &[Kind]) -> Config {
    let mut config = Config::new("fw-reload")
        .snat(["203.0.113.9", "2001:db8:2::9"])
        .metrics_off();
    for kind in order {
        for v6 in [false, true] {
            let (vip, backend) = if v6 {
                (VIP6, format!("[{}]:8080", addrs::backend6(1)))
            } else {
                (VIP, format!("{}:8080", addrs::backend(1)))
            };
            let name = format!("{kind:?}{}", if v6 { "6" } else { "4" }).to_lowercase();
            let service = Service::tcp(&name, vip, kind.port())
                .health(Health::none())
                .backend(backend.as_str());
            config = config.service(kind.lists(service, v6));
        }
    }
    config
}

/// Tries every service of `order` from both sources of both families and
/// asserts who gets in.
fn check(topo: &Topology, order: &[Kind], step: &str) {
    let sources = |v6: bool| -> [(IpAddr, bool); 2] {
        if v6 {
            [
                (addrs::CLIENT6.into(), false),
                (OTHER6.parse().unwrap(), true),
            ]
        } else {
            [
                (addrs::CLIENT.into(), false),
                (OTHER.parse().unwrap(), true),
            ]
        }
    };
    let mut wrong = Vec::new();
    for kind in order {
        for v6 in [false, true] {
            let vip: IpAddr = if v6 { VIP6 } else { VIP }.parse().unwrap();
            let target = SocketAddr::new(vip, kind.port());
            for (source, second) in sources(v6) {
                let admitted = kind.admits(second);
                // A dropped SYN shows as a connect that times out: short for
                // those that must be refused, generous for the rest.
                let timeout = Duration::from_millis(if admitted { 3000 } else { 500 });
                let got_in =
                    tcp_connect_from(topo.client(), SocketAddr::new(source, 0), target, timeout)
                        .and_then(|mut c| c.request("hello"))
                        .is_ok_and(|reply| reply.ends_with("hello"));
                if got_in != admitted {
                    wrong.push(format!(
                        "{kind:?} {target} from {source}: {} (should be {})",
                        if got_in { "admitted" } else { "refused" },
                        if admitted { "admitted" } else { "refused" }
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "after {step}:\n{}", wrong.join("\n"));
}

#[test]
fn firewall_rules_stay_with_their_service_through_reloads() {
    if !require_root() {
        return;
    }
    let topo = Topology::balanced("fwrl", 1).unwrap();
    topo.add_client_addr(&format!("{OTHER}/24")).unwrap();
    topo.add_client_addr(&format!("{OTHER6}/64")).unwrap();
    let _servers = [
        SocketAddr::new(addrs::backend(1).into(), 8080),
        SocketAddr::new(addrs::backend6(1).into(), 8080),
    ]
    .map(|addr| tcp_server(topo.backend(1), addr).unwrap());

    let steps: [(&str, Vec<Kind>); 4] = [
        ("the start", vec![Kind::Open, Kind::Closed, Kind::Only]),
        ("removing the first service", vec![Kind::Closed, Kind::Only]),
        ("reordering", vec![Kind::Only, Kind::Closed]),
        (
            "adding one in front",
            vec![Kind::Open, Kind::Only, Kind::Closed],
        ),
    ];
    let lb = Balancer::start(topo.lb(), &config(&steps[0].1)).unwrap();
    for (i, (step, order)) in steps.iter().enumerate() {
        if i > 0 {
            lb.home().write_config(&config(order)).unwrap();
            let out = lb.cli(&["reload"]).unwrap();
            assert!(
                out.status.success(),
                "reload for {step}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        check(&topo, order, step);
    }
    lb.stop().unwrap();
}
