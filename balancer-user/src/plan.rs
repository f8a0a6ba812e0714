//! What the kernel maps must hold for a configuration: pure, so that the daemon
//! and the packet tests write the same thing and it can be tested without root.

use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use anyhow::{Context, Result, bail};
use balancer_common::{
    PROTO_TCP, PROTO_UDP,
    firewall::{RULE_ALLOW, RULE_DENY, Scope},
    global::{
        GLOBAL_F_ALLOW_LIST, GLOBAL_F_BLOCK_LIST, GLOBAL_F_DEFAULT_DENY, GLOBAL_F_DNAT,
        GLOBAL_F_SYNC, SYN_COOKIES_ALWAYS, SYN_COOKIES_AUTO, SYN_COOKIES_OFF,
    },
    service::{
        ADDR_F_DNAT_BACKEND, ADDR_F_SNAT, ADDR_F_VIP, AddrKey, BACKEND_F_HEALTHY,
        BACKEND_F_PRESENT, Backend, BackendIndex, MAGLEV_M, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE,
        MAX_SERVICES, MAX_SNAT_ADDRS, RR_TABLE_LEN, SCHED_LEAST_CONN, SCHED_MAGLEV, SCHED_P2C,
        SCHED_ROUND_ROBIN, SERVICE_F_ALLOW_LIST, SERVICE_F_DNAT, SERVICE_F_RULES, ServiceId,
        ServiceKey, ServiceValue,
    },
};

use crate::{
    addr::raw,
    config::{Config, FirewallAction, Forwarding, Protocol, Scheduler, Service, SynCookies},
    sched::{self, round_robin_sequence},
};

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub services: Vec<PlannedService>,
    /// Addresses the program must look at, with `ADDR_F_*` flags.
    pub local_addrs: Vec<(IpAddr, u32)>,
    /// `GLOBAL_F_*` flags.
    pub global_flags: u32,
    /// Source rules of new flows: (scope, prefix, `RULE_*`), by family.
    pub firewall_v4: Vec<(Scope, Ipv4Net, u32)>,
    pub firewall_v6: Vec<(Scope, Ipv6Net, u32)>,
    /// New connections per second and burst per source (0 = unlimited).
    pub rate: u32,
    pub burst: u32,
    /// `firewall.syn_cookies` (`SYN_COOKIES_*`), and auto mode's threshold
    /// (half-open flows per second, node-wide) and cooldown.
    pub syn_cookies: u32,
    pub syn_flood_threshold: u32,
    pub syn_flood_cooldown_ms: u32,
    /// `node.snat_addresses` by family: every new full-NAT flow takes a port on
    /// one of its family's (empty: the backend's own egress address).
    pub snat_v4: Vec<IpAddr>,
    pub snat_v6: Vec<IpAddr>,
}

impl Plan {
    /// Active-active: the peers' SNAT addresses are looked at too, so that the
    /// backends' replies to a peer's flows are translated here once this node
    /// holds the addresses (it adopted them). New flows never take them.
    pub fn with_peer_snat(mut self, peers: &[IpAddr]) -> Self {
        let mut local = LocalAddrs(std::mem::take(&mut self.local_addrs));
        for ip in peers {
            local.mark(*ip, ADDR_F_SNAT);
        }
        self.local_addrs = local.0;
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    pub name: String,
    pub key: ServiceKey,
    pub value: ServiceValue,
    pub backends: Vec<PlannedBackend>,
    /// Round-robin: the sequence of backend slots (`value.rr_len` long).
    pub rr_sequence: Vec<u32>,
    /// Maglev: the lookup table of backend slots (`MAGLEV_M` long).
    pub maglev_table: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedBackend {
    pub address: SocketAddr,
    pub index: BackendIndex,
    pub entry: Backend,
    pub snat: Option<IpAddr>,
}

/// Where services and backends live in the maps, and the backends' state: the
/// running daemon keeps them stable across changes (flows refer to a backend
/// by index, `SERVICES` entries and firewall rules to a service by id). A
/// service or backend that has no place is `None`: the plan is refused rather
/// than written to another one's place.
pub trait Placement {
    fn service_id(&self, service: &str) -> Option<ServiceId>;
    fn backend_index(&self, service: &str, backend: SocketAddr) -> Option<BackendIndex>;
    /// `BACKEND_F_*` flags.
    fn backend_flags(&self, service: &str, backend: SocketAddr) -> Option<u32>;
}

/// Ids and indexes in file order, every backend healthy: a fresh start whose
/// health is not known, and the packet tests.
pub struct Sequential<'a>(pub &'a Config);

impl Placement for Sequential<'_> {
    fn service_id(&self, service: &str) -> Option<ServiceId> {
        let position = self.0.services.iter().position(|s| s.name == service)?;
        Some(ServiceId(position as u32))
    }

    fn backend_index(&self, service: &str, backend: SocketAddr) -> Option<BackendIndex> {
        let mut index = 0;
        for s in &self.0.services {
            if s.name == service {
                let slot = s.backends.iter().position(|b| b.address == backend)?;
                return Some(BackendIndex(index + slot as u32));
            }
            index += s.backends.len() as u32;
        }
        None
    }

    fn backend_flags(&self, service: &str, backend: SocketAddr) -> Option<u32> {
        self.backend_index(service, backend)?;
        Some(BACKEND_F_PRESENT | BACKEND_F_HEALTHY)
    }
}

/// [`plan_with`] of [`Sequential`] placement.
pub fn plan(config: &Config, snat_source: impl FnMut(IpAddr) -> Result<IpAddr>) -> Result<Plan> {
    plan_with(config, &Sequential(config), snat_source)
}

/// Addresses the program must look at, each with its `ADDR_F_*` flags.
#[derive(Default)]
struct LocalAddrs(Vec<(IpAddr, u32)>);

impl LocalAddrs {
    fn mark(&mut self, ip: IpAddr, flag: u32) {
        match self.0.iter_mut().find(|(a, _)| *a == ip) {
            Some((_, flags)) => *flags |= flag,
            None => self.0.push((ip, flag)),
        }
    }
}

/// Builds the map contents. `snat_source` gives the full-NAT source address
/// towards a backend when `node.snat_addresses` has none of its family (the
/// address of the egress interface).
pub fn plan_with(
    config: &Config,
    placement: &dyn Placement,
    mut snat_source: impl FnMut(IpAddr) -> Result<IpAddr>,
) -> Result<Plan> {
    if config.services.len() > MAX_SERVICES as usize {
        bail!(
            "{} services configured; this version supports {MAX_SERVICES}",
            config.services.len()
        );
    }
    let dnat = config.node.forwarding == Forwarding::Dnat;
    let mut local = LocalAddrs::default();
    let fw = &config.firewall;
    let mut rules = scope_rules(Scope::Block, &[], &fw.deny);
    rules.extend(scope_rules(Scope::Allow, &fw.allow, &[]));
    let mut services = Vec::with_capacity(config.services.len());
    let mut backend_total = 0usize;
    for svc in &config.services {
        let planned = plan_service(config, svc, placement, &mut local, &mut snat_source)?;
        // Scoped by the id the kernel finds the service under, never by its
        // position in the file: a reload that adds, removes or reorders
        // services must not move one service's rules to another.
        rules.extend(scope_rules(
            Scope::Service(planned.value.id),
            &svc.allow,
            &svc.deny,
        ));
        backend_total += planned.backends.len();
        if backend_total > MAX_BACKENDS as usize {
            bail!("more than {MAX_BACKENDS} backends in all; this version supports {MAX_BACKENDS}");
        }
        services.push(planned);
    }
    let (snat_v4, snat_v6): (Vec<IpAddr>, Vec<IpAddr>) = if dnat {
        (Vec::new(), Vec::new())
    } else {
        config.node.snat_addresses.iter().partition(|a| a.is_ipv4())
    };
    for ip in snat_v4.iter().chain(&snat_v6) {
        local.mark(*ip, ADDR_F_SNAT);
    }
    if snat_v4.len().max(snat_v6.len()) > MAX_SNAT_ADDRS as usize {
        bail!(
            "more than {MAX_SNAT_ADDRS} SNAT addresses of one family; this version uses {MAX_SNAT_ADDRS}"
        );
    }
    let mut firewall_v4 = Vec::new();
    let mut firewall_v6 = Vec::new();
    for (scope, net, action) in rules {
        match net {
            IpNet::V4(n) => firewall_v4.push((scope, n, action)),
            IpNet::V6(n) => firewall_v6.push((scope, n, action)),
        }
    }
    Ok(Plan {
        services,
        local_addrs: local.0,
        global_flags: global_flags(config),
        firewall_v4,
        firewall_v6,
        rate: fw.new_connections_per_source.rate,
        burst: fw.new_connections_per_source.burst,
        syn_cookies: match fw.syn_cookies {
            SynCookies::Off => SYN_COOKIES_OFF,
            SynCookies::Auto => SYN_COOKIES_AUTO,
            SynCookies::Always => SYN_COOKIES_ALWAYS,
        },
        syn_flood_threshold: fw.syn_flood_threshold,
        syn_flood_cooldown_ms: fw.syn_flood_cooldown_s.saturating_mul(1000),
        snat_v4,
        snat_v6,
    })
}

/// `GLOBAL_F_*` of a configuration.
fn global_flags(config: &Config) -> u32 {
    let mut flags = 0;
    if config.node.forwarding == Forwarding::Dnat {
        flags |= GLOBAL_F_DNAT;
    }
    if config.firewall.default == FirewallAction::Deny {
        flags |= GLOBAL_F_DEFAULT_DENY;
    }
    if !config.firewall.deny.is_empty() {
        flags |= GLOBAL_F_BLOCK_LIST;
    }
    if !config.firewall.allow.is_empty() {
        flags |= GLOBAL_F_ALLOW_LIST;
    }
    if config.ha.enabled && config.ha.sync_flows {
        flags |= GLOBAL_F_SYNC;
    }
    flags
}

/// One service: its key and value, its backends at their places, and its
/// scheduler's table. Marks its VIP (and with DNAT its backends, in full NAT
/// their SNAT sources) in `local`.
fn plan_service(
    config: &Config,
    svc: &Service,
    placement: &dyn Placement,
    local: &mut LocalAddrs,
    snat_source: &mut impl FnMut(IpAddr) -> Result<IpAddr>,
) -> Result<PlannedService> {
    if svc.backends.len() > MAX_BACKENDS_PER_SERVICE as usize {
        bail!(
            "service {}: {} backends; this version supports {MAX_BACKENDS_PER_SERVICE}",
            svc.name,
            svc.backends.len()
        );
    }
    let dnat = config.node.forwarding == Forwarding::Dnat;
    let id = placement
        .service_id(&svc.name)
        .with_context(|| format!("service {} has no place in the maps", svc.name))?;
    local.mark(svc.vip, ADDR_F_VIP);
    let mut backends = Vec::with_capacity(svc.backends.len());
    for b in &svc.backends {
        let snat = if dnat {
            local.mark(b.address.ip(), ADDR_F_DNAT_BACKEND);
            None
        } else {
            let ip = match config
                .node
                .snat_addresses
                .iter()
                .find(|a| a.is_ipv4() == b.address.is_ipv4())
            {
                Some(ip) => *ip,
                None => snat_source(b.address.ip()).with_context(|| {
                    format!("service {}: source address towards {}", svc.name, b.address)
                })?,
            };
            local.mark(ip, ADDR_F_SNAT);
            Some(ip)
        };
        let unplaced = || format!("service {}: backend {} has no place", svc.name, b.address);
        let index = placement
            .backend_index(&svc.name, b.address)
            .with_context(unplaced)?;
        let flags = placement
            .backend_flags(&svc.name, b.address)
            .with_context(unplaced)?;
        let (addr, family) = raw(b.address.ip());
        backends.push(PlannedBackend {
            address: b.address,
            index,
            entry: Backend {
                addr,
                snat_addr: snat.map(|ip| raw(ip).0).unwrap_or_default(),
                port_be: b.address.port().to_be(),
                family,
                flags,
                weight: b.weight,
                ..Backend::default()
            },
            snat,
        });
    }
    let (rr_sequence, maglev_table) = scheduler_tables(svc, &backends);
    let (vip, family) = raw(svc.vip);
    let (port_min, port_max) = config.node.snat_port_range;
    Ok(PlannedService {
        name: svc.name.clone(),
        key: ServiceKey {
            vip,
            port_be: svc.port.to_be(),
            proto: match svc.protocol {
                Protocol::Tcp => PROTO_TCP,
                Protocol::Udp => PROTO_UDP,
            },
            family,
        },
        value: ServiceValue {
            id,
            backend_count: backends.len() as u32,
            scheduler: match svc.scheduler {
                Scheduler::LeastConn => SCHED_LEAST_CONN,
                Scheduler::RoundRobin => SCHED_ROUND_ROBIN,
                Scheduler::P2c => SCHED_P2C,
                Scheduler::Maglev => SCHED_MAGLEV,
            },
            flags: if dnat { SERVICE_F_DNAT } else { 0 }
                | if svc.allow.is_empty() {
                    0
                } else {
                    SERVICE_F_ALLOW_LIST
                }
                | if svc.allow.is_empty() && svc.deny.is_empty() {
                    0
                } else {
                    SERVICE_F_RULES
                },
            snat_port_min: port_min,
            snat_port_max: port_max,
            rr_len: rr_sequence.len() as u32,
        },
        backends,
        rr_sequence,
        maglev_table,
    })
}

/// The round-robin sequence or the Maglev table of a service, over the
/// backends that may take flows now, so that a Maglev flow of a failed
/// backend moves to the one every node agrees on.
fn scheduler_tables(svc: &Service, backends: &[PlannedBackend]) -> (Vec<u32>, Vec<u32>) {
    let weights: Vec<u32> = backends
        .iter()
        .map(|b| {
            if b.entry.selectable() {
                b.entry.weight
            } else {
                0
            }
        })
        .collect();
    match svc.scheduler {
        Scheduler::RoundRobin => (
            round_robin_sequence(&weights, RR_TABLE_LEN as usize),
            Vec::new(),
        ),
        Scheduler::Maglev => {
            let names: Vec<String> = svc.backends.iter().map(|b| b.address.to_string()).collect();
            (Vec::new(), sched::maglev_table(&names, &weights, MAGLEV_M))
        }
        Scheduler::LeastConn | Scheduler::P2c => (Vec::new(), Vec::new()),
    }
}

/// The rules of one scope; a prefix both allowed and denied is denied.
fn scope_rules(scope: Scope, allow: &[IpNet], deny: &[IpNet]) -> Vec<(Scope, IpNet, u32)> {
    let mut out: Vec<_> = allow
        .iter()
        .filter(|n| !deny.contains(n))
        .map(|n| (scope, *n, RULE_ALLOW))
        .collect();
    out.extend(deny.iter().map(|n| (scope, *n, RULE_DENY)));
    out
}

/// `LOCAL_ADDRS` key of an address.
pub fn addr_key(ip: IpAddr) -> AddrKey {
    let (addr, family) = raw(ip);
    AddrKey {
        addr,
        family,
        _pad0: 0,
        _pad1: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const TWO_SERVICES: &str = r#"
[node]
name = "t"
interfaces = ["front", "back"]
snat_addresses = ["203.0.113.9"]

[[service]]
name = "web"
vip = "198.51.100.10"
port = 80
protocol = "tcp"
health = { kind = "none" }
backends = [{ address = "203.0.113.11:8080", weight = 2 }, { address = "203.0.113.12:8080" }]

[[service]]
name = "dns"
vip = "198.51.100.10"
port = 53
protocol = "udp"
health = { kind = "none" }
backends = [{ address = "203.0.113.31:53" }]
"#;

    #[test]
    fn services_get_consecutive_ids_and_slot_indexes() {
        let cfg = config::parse(TWO_SERVICES).unwrap().config;
        let p = plan(&cfg, |_| unreachable!("snat addresses are configured")).unwrap();
        assert_eq!(p.services.len(), 2);
        let web = &p.services[0];
        assert_eq!(web.value.id, ServiceId(0));
        assert_eq!(web.value.backend_count, 2);
        assert_eq!(web.key.port_be, 80u16.to_be());
        assert_eq!(web.key.proto, PROTO_TCP);
        assert_eq!(web.backends[1].index, BackendIndex(1));
        assert_eq!(web.backends[0].entry.weight, 2);
        assert_eq!(web.backends[0].entry.port_be, 8080u16.to_be());
        let dns = &p.services[1];
        assert_eq!(dns.backends[0].index, BackendIndex(2), "after web's two");
        assert_eq!(dns.key.proto, PROTO_UDP);
        assert!(dns.backends[0].entry.selectable());
    }

    #[test]
    fn vip_and_snat_addresses_are_marked_once() {
        let cfg = config::parse(TWO_SERVICES).unwrap().config;
        let p = plan(&cfg, |_| unreachable!()).unwrap();
        assert_eq!(
            p.local_addrs,
            vec![
                ("198.51.100.10".parse().unwrap(), ADDR_F_VIP),
                ("203.0.113.9".parse().unwrap(), ADDR_F_SNAT),
            ]
        );
    }

    #[test]
    fn dnat_marks_backends_by_source_and_sets_the_global_flag() {
        let text = TWO_SERVICES.replace(
            "snat_addresses = [\"203.0.113.9\"]",
            "forwarding = \"dnat\"",
        );
        let cfg = config::parse(&text).unwrap().config;
        let p = plan(&cfg, |_| unreachable!("dnat needs no source address")).unwrap();
        assert_eq!(p.global_flags, GLOBAL_F_DNAT);
        assert!(
            p.local_addrs
                .contains(&("203.0.113.11".parse().unwrap(), ADDR_F_DNAT_BACKEND))
        );
        assert!(
            p.services
                .iter()
                .all(|s| s.value.flags & SERVICE_F_DNAT != 0)
        );
        assert!(p.services[0].backends[0].snat.is_none());
    }

    #[test]
    fn firewall_rules_are_scoped_and_deny_wins_a_tie() {
        let text = TWO_SERVICES.replace(
            "[[service]]\nname = \"web\"",
            "[firewall]\ndefault = \"deny\"\ndeny = [\"192.0.2.0/24\"]\nallow = [\"198.51.100.0/24\", \"2001:db8::/32\"]\nnew_connections_per_source = { rate = 10, burst = 20 }\n\n[[service]]\nname = \"web\"\nallow = [\"198.51.100.0/25\", \"198.51.100.64/26\"]\ndeny = [\"198.51.100.64/26\"]",
        );
        let cfg = config::parse(&text).unwrap().config;
        let p = plan(&cfg, |_| unreachable!()).unwrap();
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(
            p.firewall_v4,
            vec![
                (Scope::Block, net("192.0.2.0/24"), RULE_DENY),
                (Scope::Allow, net("198.51.100.0/24"), RULE_ALLOW),
                (
                    Scope::Service(ServiceId(0)),
                    net("198.51.100.0/25"),
                    RULE_ALLOW
                ),
                (
                    Scope::Service(ServiceId(0)),
                    net("198.51.100.64/26"),
                    RULE_DENY
                ),
            ]
        );
        assert_eq!(
            p.firewall_v6,
            vec![(Scope::Allow, "2001:db8::/32".parse().unwrap(), RULE_ALLOW)]
        );
        assert_ne!(p.global_flags & GLOBAL_F_DEFAULT_DENY, 0);
        assert_ne!(p.services[0].value.flags & SERVICE_F_ALLOW_LIST, 0);
        assert_eq!(p.services[1].value.flags & SERVICE_F_ALLOW_LIST, 0);
        assert_ne!(p.services[0].value.flags & SERVICE_F_RULES, 0);
        assert_eq!((p.rate, p.burst), (10, 20));
    }

    /// `open` (no lists) and `closed` (a deny list) in the order given, with
    /// `front` first when set.
    fn services(order: &[&str]) -> Config {
        let mut text = String::from(
            "[node]\nname = \"t\"\ninterfaces = [\"front\", \"back\"]\nsnat_addresses = [\"203.0.113.9\"]\n",
        );
        for name in order {
            let (port, lists) = match *name {
                "open" => (8080, ""),
                "closed" => (9000, "deny = [\"198.51.100.0/24\", \"2001:db8:1::/64\"]\n"),
                "front" => (7000, "allow = [\"192.0.2.0/24\"]\n"),
                other => panic!("{other}"),
            };
            text.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nvip = \"198.51.100.10\"\nport = {port}\nprotocol = \"tcp\"\n{lists}health = {{ kind = \"none\" }}\nbackends = [{{ address = \"203.0.113.11:80\" }}]\n"
            ));
        }
        config::parse(&text).unwrap().config
    }

    /// Each service's rules, by the name of the service whose id scopes them.
    fn rules_by_service(p: &Plan) -> Vec<(String, String, u32)> {
        let name = |scope: Scope| {
            p.services
                .iter()
                .find(|s| Scope::Service(s.value.id) == scope)
                .map_or(format!("scope {scope:?}"), |s| s.name.clone())
        };
        let mut out: Vec<_> = p
            .firewall_v4
            .iter()
            .map(|(scope, net, action)| (name(*scope), net.to_string(), *action))
            .chain(
                p.firewall_v6
                    .iter()
                    .map(|(scope, net, action)| (name(*scope), net.to_string(), *action)),
            )
            .filter(|(scope, _, _)| !scope.starts_with("scope "))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn firewall_rules_follow_their_service_through_reloads_that_reorder() {
        let closed_rules = vec![
            (
                "closed".to_string(),
                "198.51.100.0/24".to_string(),
                RULE_DENY,
            ),
            (
                "closed".to_string(),
                "2001:db8:1::/64".to_string(),
                RULE_DENY,
            ),
        ];
        let mut rt = crate::runtime::Runtime::new(services(&["open", "closed"])).unwrap();
        let plan_now =
            |rt: &crate::runtime::Runtime| plan_with(rt.config(), rt, |_| unreachable!()).unwrap();
        assert_eq!(rules_by_service(&plan_now(&rt)), closed_rules);
        let now = std::time::Instant::now();
        // `open` removed: `closed` keeps its id, now at position 0 in the file.
        rt.apply_config(services(&["closed"]), now).unwrap();
        let p = plan_now(&rt);
        assert_ne!(
            p.services[0].value.id,
            ServiceId(0),
            "closed keeps the id it had"
        );
        assert_eq!(rules_by_service(&p), closed_rules);
        // Reordered, and one added in front.
        rt.apply_config(services(&["front", "closed", "open"]), now)
            .unwrap();
        let p = plan_now(&rt);
        let mut want = closed_rules.clone();
        want.push(("front".to_string(), "192.0.2.0/24".to_string(), RULE_ALLOW));
        assert_eq!(rules_by_service(&p), want);
        for s in &p.services {
            let scoped: Vec<u32> = p
                .firewall_v4
                .iter()
                .filter(|(scope, _, _)| *scope == Scope::Service(s.value.id))
                .map(|(_, _, a)| *a)
                .collect();
            match s.name.as_str() {
                "open" => assert!(scoped.is_empty(), "open has no rules: {scoped:?}"),
                "closed" => assert_eq!(scoped, [RULE_DENY]),
                "front" => assert_eq!(scoped, [RULE_ALLOW]),
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn a_service_or_backend_without_a_place_refuses_the_plan() {
        struct Nowhere;
        impl Placement for Nowhere {
            fn service_id(&self, _: &str) -> Option<ServiceId> {
                None
            }
            fn backend_index(&self, _: &str, _: SocketAddr) -> Option<BackendIndex> {
                Some(BackendIndex(0))
            }
            fn backend_flags(&self, _: &str, _: SocketAddr) -> Option<u32> {
                Some(0)
            }
        }
        let cfg = services(&["open"]);
        let err = plan_with(&cfg, &Nowhere, |_| unreachable!()).unwrap_err();
        assert!(
            format!("{err:#}").contains("service open has no place"),
            "{err:#}"
        );
        let rt = crate::runtime::Runtime::new(services(&["open"])).unwrap();
        let other = services(&["closed"]);
        let err = plan_with(&other, &rt, |_| unreachable!()).unwrap_err();
        assert!(
            format!("{err:#}").contains("closed has no place"),
            "{err:#}"
        );
    }

    #[test]
    fn without_snat_addresses_the_egress_address_is_used() {
        let text = TWO_SERVICES.replace("snat_addresses = [\"203.0.113.9\"]", "");
        let cfg = config::parse(&text).unwrap().config;
        let p = plan(&cfg, |_| Ok("203.0.113.1".parse().unwrap())).unwrap();
        let snat = p.services[0].backends[0].snat.unwrap();
        assert_eq!(snat, "203.0.113.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.services[0].backends[0].entry.snat_addr, raw(snat).0);
    }
}
