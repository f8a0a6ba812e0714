//! The four ways the client reaches the nginx backends, each set up in the `lb`
//! namespace just before its runs and taken down right after, so that no mode pays
//! for another's hooks (an attached XDP program, netfilter NAT with conntrack).

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use balancer_tests::{
    Balancer, Process, TempDir, Topology,
    config::{Config, Flows, Forwarding, Health, Scheduler, Service, XdpMode},
    wait_tcp_ready,
};

/// The web port (nginx) and the iperf3 port, the same on every target.
pub const HTTP_PORT: u16 = 80;
pub const IPERF_PORT: u16 = 5201;
/// The balancer's VIP (its daemon adds the address to `front` itself).
pub const VIP_BALANCER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// HAProxy's and nftables' service addresses, added to `front` once.
pub const VIP_HAPROXY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const VIP_NFT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
/// The balancer's full-NAT source address towards the backends.
pub const SNAT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// nftables' SNAT address towards the backends, added to `back` once. Every mode has its
/// own source address at the backends (HAProxy connects from 203.0.113.1): a backend's
/// TIME_WAIT sockets left by one mode's short connections would otherwise meet the
/// next mode's SYNs on the same address and port, and PAWS drops those whose
/// timestamps are older (their clock is another connection's), which costs a 1 s SYN
/// retransmission each.
pub const NFT_SNAT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The nftables table this benchmark loads and deletes.
const NFT_TABLE: &str = "e2e_bench";

const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Balancer,
    Haproxy,
    Nftables,
    Direct,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Balancer, Mode::Haproxy, Mode::Nftables, Mode::Direct];

    /// The name `E2E_MODES` knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Balancer => "balancer",
            Mode::Haproxy => "haproxy",
            Mode::Nftables => "nftables",
            Mode::Direct => "direct",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::Balancer => "balancer (XDP)",
            Mode::Haproxy => "HAProxy",
            Mode::Nftables => "nftables DNAT",
            Mode::Direct => "direct",
        }
    }

    /// Where the client sends its traffic in this mode: a service address, or be1.
    pub fn target(self, topo: &Topology) -> Ipv4Addr {
        match self {
            Mode::Balancer => VIP_BALANCER,
            Mode::Haproxy => VIP_HAPROXY,
            Mode::Nftables => VIP_NFT,
            Mode::Direct => topo.backend_addr(1),
        }
    }

    /// Sets the mode up; the returned value must be given back to [`Active::stop`].
    pub fn start(self, topo: &Topology, n_backends: usize) -> Result<Active> {
        let active = match self {
            Mode::Balancer => Active::Balancer(Box::new(Balancer::start(
                topo.lb(),
                &balancer_config(topo, n_backends),
            )?)),
            Mode::Haproxy => {
                let dir = TempDir::new("e2e-haproxy")?;
                let cfg = dir.join("haproxy.cfg");
                std::fs::write(&cfg, haproxy_config(topo, n_backends))
                    .context("writing haproxy.cfg")?;
                let cfg = cfg.display().to_string();
                topo.lb()
                    .exec("haproxy", &["-c", "-q", "-f", &cfg])
                    .context("haproxy -c")?;
                // -db: foreground, no daemon; -f: the configuration.
                let process = topo.lb().spawn("haproxy", &["-db", "-f", &cfg])?;
                Active::Haproxy { process, _dir: dir }
            }
            Mode::Nftables => {
                let dir = TempDir::new("e2e-nft")?;
                let rules = dir.join("lb.nft");
                std::fs::write(&rules, nft_ruleset(topo, n_backends))
                    .context("writing the nft ruleset")?;
                topo.lb()
                    .exec("nft", &["-f", &rules.display().to_string()])
                    .context("loading the nft ruleset")?;
                Active::Nftables
            }
            Mode::Direct => {
                // The backends have only their on-link network; the client reaches them
                // through lb's ordinary IP forwarding, and be1 answers the same way.
                topo.client()
                    .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.1"])?;
                topo.backend(1)
                    .ip(&["route", "add", "198.51.100.0/24", "via", "203.0.113.1"])?;
                Active::Direct
            }
        };
        let target = SocketAddr::from((self.target(topo), HTTP_PORT));
        if let Err(e) = wait_tcp_ready(topo.client(), target, READY_TIMEOUT) {
            let said = active.output();
            let _ = active.stop(topo);
            return Err(e).with_context(|| {
                format!(
                    "{}: {target} does not answer; it said: {said}",
                    self.label()
                )
            });
        }
        Ok(active)
    }
}

/// A mode that is set up.
pub enum Active {
    Balancer(Box<Balancer>),
    Haproxy { process: Process, _dir: TempDir },
    Nftables,
    Direct,
}

impl Active {
    /// The pids whose CPU time is the load balancer's own (the daemon, HAProxy).
    pub fn lb_pids(&mut self) -> Vec<i32> {
        match self {
            Active::Balancer(b) => vec![b.process().pid() as i32],
            Active::Haproxy { process, .. } => vec![process.pid() as i32],
            Active::Nftables | Active::Direct => Vec::new(),
        }
    }

    /// What the balancer daemon or HAProxy wrote so far (the end of it).
    pub fn output(&self) -> String {
        let out = match self {
            Active::Balancer(b) => b.output_so_far(),
            Active::Haproxy { process, .. } => process.output_so_far(),
            Active::Nftables | Active::Direct => return String::new(),
        };
        let out = out.trim();
        let start = out.len().saturating_sub(2000);
        let start = (start..out.len())
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(out.len());
        out[start..].to_string()
    }

    /// The XDP mode the balancer's program is attached in on `front` (from `ip link`).
    pub fn xdp_mode(&self, topo: &Topology) -> Option<String> {
        let Active::Balancer(_) = self else {
            return None;
        };
        let out = topo
            .lb()
            .ip(&["-d", "link", "show", "dev", topo.lb_front_if()])
            .ok()?;
        Some(if out.contains("xdpgeneric") {
            "generic (skb)".into()
        } else if out.contains("xdpoffload") {
            "offload".into()
        } else if out.contains("xdp") {
            "native (driver)".into()
        } else {
            format!("not attached? `ip -d link show front`: {}", out.trim())
        })
    }

    /// Takes the mode down again; fails if that does not go cleanly.
    pub fn stop(self, topo: &Topology) -> Result<()> {
        match self {
            Active::Balancer(b) => b.stop().map(drop),
            Active::Haproxy { mut process, _dir } => {
                if let Ok(Some(status)) = process.try_status() {
                    bail!(
                        "haproxy exited during the runs ({status}):\n{}",
                        process.output_so_far()
                    );
                }
                process.signal(balancer_tests::Signal::SIGTERM)?;
                if process.wait_timeout(Duration::from_secs(5))?.is_none() {
                    bail!("haproxy still running 5 s after SIGTERM");
                }
                Ok(())
            }
            Active::Nftables => topo
                .lb()
                .exec("nft", &["delete", "table", "ip", NFT_TABLE])
                .map(drop),
            Active::Direct => {
                let a =
                    topo.client()
                        .ip(&["route", "del", "203.0.113.0/24", "via", "198.51.100.1"]);
                let b =
                    topo.backend(1)
                        .ip(&["route", "del", "198.51.100.0/24", "via", "203.0.113.1"]);
                a.and(b).map(drop)
            }
        }
    }
}

fn backends(topo: &Topology, n: usize) -> impl Iterator<Item = (usize, Ipv4Addr)> + '_ {
    (1..=n).map(|i| (i, topo.backend_addr(i)))
}

/// The balancer: full NAT from the VIP to the three nginx, and to be1's iperf3.
///
/// Two settings differ from the defaults, for the new-connection-per-request runs:
/// the SNAT port range is wide and closed flows are dropped after 2 s, so that tens of
/// thousands of short connections per backend in a few seconds do not run out of SNAT
/// ports (the defaults, 20,000 ports per backend held 30 s after a close, sustain about
/// 670 new connections per second per backend).
pub fn balancer_config(topo: &Topology, n: usize) -> Config {
    let web = backends(topo, n).fold(
        Service::tcp("web", VIP_BALANCER, HTTP_PORT)
            .scheduler(Scheduler::LeastConn)
            .health(Health::none()),
        |s, (_, a)| s.weighted_backend(SocketAddr::new(a.into(), HTTP_PORT), 100),
    );
    Config::new("e2e-bench")
        .interfaces([topo.lb_front_if(), topo.lb_back_if()])
        .xdp_mode(XdpMode::Auto)
        .forwarding(Forwarding::FullNat)
        .snat([SNAT_ADDR])
        .snat_port_range(SNAT_PORTS.0, SNAT_PORTS.1)
        .metrics_off()
        .flows(Flows::default().tcp_transitory_timeout_s(TRANSITORY_S))
        .service(web)
        .service(
            Service::tcp("iperf", VIP_BALANCER, IPERF_PORT)
                .health(Health::none())
                .backend(SocketAddr::new(topo.backend_addr(1).into(), IPERF_PORT)),
        )
}

/// The balancer's SNAT port range and closed-flow timeout in this benchmark.
pub const SNAT_PORTS: (u16, u16) = (10000, 65000);
pub const TRANSITORY_S: u32 = 2;

/// HAProxy in TCP mode, least connections, no health checks (like the balancer's
/// `health = none`), two threads (one per CPU).
pub fn haproxy_config(topo: &Topology, n: usize) -> String {
    let web: Vec<String> = backends(topo, n)
        .map(|(i, a)| format!("    server be{i} {a}:{HTTP_PORT}"))
        .collect();
    format!(
        r#"global
    maxconn 4096
    nbthread 2

defaults
    mode tcp
    timeout connect 3s
    timeout client 30s
    timeout server 30s

listen web
    bind {VIP_HAPROXY}:{HTTP_PORT}
    balance leastconn
{web}

listen iperf
    bind {VIP_HAPROXY}:{IPERF_PORT}
    balance leastconn
    server be1 {be1}:{IPERF_PORT}
"#,
        web = web.join("\n"),
        be1 = topo.backend_addr(1),
    )
}

/// nftables: DNAT of the service address to the backends in turn (`numgen inc`), and
/// SNAT to [`NFT_SNAT_ADDR`] so that the replies (the backends have no route to the
/// client) come back through lb.
pub fn nft_ruleset(topo: &Topology, n: usize) -> String {
    let map: Vec<String> = backends(topo, n)
        .map(|(i, a)| format!("{} : {a}", i - 1))
        .collect();
    format!(
        r#"table ip {NFT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP_NFT} tcp dport {HTTP_PORT} dnat to numgen inc mod {n} map {{ {map} }}
        ip daddr {VIP_NFT} tcp dport {IPERF_PORT} dnat to {be1}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ct status dnat oifname "{back}" snat to {NFT_SNAT_ADDR}
    }}
}}
"#,
        map = map.join(", "),
        be1 = topo.backend_addr(1),
        back = topo.lb_back_if(),
    )
}
