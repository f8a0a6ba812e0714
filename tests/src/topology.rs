//! The standard balancer topology: client -- [brf] -- lb -- [brb] -- backends.
//!
//! ```text
//!  ns client             ns sw                         ns lb
//!  eth0 198.51.100.2 --- c  ]-brf-[ lbf --------------- front 198.51.100.1
//!                                                      back  203.0.113.1
//!  ns be1                                                |
//!  eth0 203.0.113.11 --- be1 ]-brb-[ lbb ----------------+
//!  ns beN
//!  eth0 203.0.113.1N --- beN ]
//! ```
//!
//! Every interface lives in a namespace of the topology; nothing is created in the root
//! namespace, so interface names inside the namespaces are fixed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::netns::{Netns, addr_add_line, bridge_line, veth_line};
use crate::util::unique_prefix;

/// Fixed addresses and names of the standard topology.
pub mod addrs {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The client's address (on `eth0`).
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    /// The balancer's front address (`front`, client side).
    pub const LB_FRONT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    /// The balancer's back address (`back`, backend side).
    pub const LB_BACK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    pub const LB_FRONT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    pub const LB_BACK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
    /// The second balancer host of a topology built with `standby(true)`.
    pub const LB2_FRONT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
    pub const LB2_BACK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
    pub const LB2_FRONT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);
    pub const LB2_BACK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 3);
    /// Prefix lengths of the client and backend networks.
    pub const PREFIX_LEN4: u8 = 24;
    pub const PREFIX_LEN6: u8 = 64;
    /// The largest supported number of backends.
    pub const MAX_BACKENDS: usize = 200;

    /// Backend `i` (1-based): 203.0.113.(10 + i).
    pub fn backend(i: usize) -> Ipv4Addr {
        assert!(
            (1..=MAX_BACKENDS).contains(&i),
            "backend index {i} out of 1..={MAX_BACKENDS}"
        );
        Ipv4Addr::new(203, 0, 113, 10 + i as u8)
    }

    /// Backend `i` (1-based): 2001:db8:2::1N, i.e. the decimal digits of 10 + i read as
    /// the last hex group (be1 = 2001:db8:2::11, be12 = 2001:db8:2::22).
    pub fn backend6(i: usize) -> Ipv6Addr {
        assert!(
            (1..=MAX_BACKENDS).contains(&i),
            "backend index {i} out of 1..={MAX_BACKENDS}"
        );
        let group = u16::from_str_radix(&(10 + i).to_string(), 16).expect("decimal digits");
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, group)
    }
}

/// Interface names inside the namespaces.
pub mod ifnames {
    /// The balancer's client-side interface (in `lb`).
    pub const LB_FRONT: &str = "front";
    /// The balancer's backend-side interface (in `lb`).
    pub const LB_BACK: &str = "back";
    /// The interface of the client and of every backend.
    pub const HOST: &str = "eth0";
    /// Bridges in `sw`.
    pub const BRIDGE_FRONT: &str = "brf";
    pub const BRIDGE_BACK: &str = "brb";
    /// Switch-side peers (in `sw`) of the lb's `front` and `back`.
    pub const SW_LB_FRONT: &str = "lbf";
    pub const SW_LB_BACK: &str = "lbb";
    /// Switch-side peers of the second balancer host's `front` and `back`.
    pub const SW_LB2_FRONT: &str = "lbf2";
    pub const SW_LB2_BACK: &str = "lbb2";
    /// Switch-side peer (in `sw`) of the client's `eth0`.
    pub const SW_CLIENT: &str = "c";

    /// Switch-side peer (in `sw`) of backend `i`'s `eth0`.
    pub fn sw_backend(i: usize) -> String {
        format!("be{i}")
    }
}

/// Builder for [`Topology`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    hint: String,
    backends: usize,
    ipv6: bool,
    standby: bool,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            hint: String::new(),
            backends: 2,
            ipv6: true,
            standby: false,
        }
    }
}

impl TopologyBuilder {
    /// A few letters that go into the namespace names (e.g. the test's name).
    pub fn hint(mut self, hint: &str) -> Self {
        self.hint = hint.to_string();
        self
    }

    /// Number of backends (1..=[`addrs::MAX_BACKENDS`]); default 2.
    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    /// Whether to add the IPv6 addresses (default: yes).
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// A second balancer host `lb2` on both bridges (`front` 198.51.100.3,
    /// `back` 203.0.113.3), for high availability.
    pub fn standby(mut self, on: bool) -> Self {
        self.standby = on;
        self
    }

    pub fn build(self) -> Result<Topology> {
        Topology::build(self)
    }
}

/// One of the two balancer hosts of a topology built with `standby(true)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbHost {
    /// `lb`: `front` 198.51.100.1, `back` 203.0.113.1.
    Lb,
    /// `lb2`: `front` 198.51.100.3, `back` 203.0.113.3.
    Lb2,
}

/// The standard topology (see the module documentation). Dropping it removes every
/// namespace, interface and process in it.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    ipv6: bool,
    /// Hosts replaced so far (their namespaces get fresh names).
    replacements: u32,
    // Field order is drop order: hosts first, the switch last.
    client: Netns,
    lb: Netns,
    lb2: Option<Netns>,
    backends: Vec<Netns>,
    /// XDP_PASS on the switch-side peers of the balancers' veths (see
    /// `wire`), attached while these are open.
    _xdp_links: Vec<std::os::fd::OwnedFd>,
    sw: Netns,
}

impl Topology {
    /// The standard topology with `n_backends` backends and IPv6 addresses.
    /// `prefix_hint` (a few letters) goes into the namespace names.
    pub fn balanced(prefix_hint: &str, n_backends: usize) -> Result<Topology> {
        Topology::builder()
            .hint(prefix_hint)
            .backends(n_backends)
            .build()
    }

    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    fn build(b: TopologyBuilder) -> Result<Topology> {
        ensure!(
            (1..=addrs::MAX_BACKENDS).contains(&b.backends),
            "number of backends must be in 1..={}, not {}",
            addrs::MAX_BACKENDS,
            b.backends
        );
        let started = Instant::now();
        let prefix = unique_prefix(if b.hint.is_empty() { "lbt" } else { &b.hint });
        let ns = |role: &str| Netns::with_label(&format!("{prefix}-{role}"), role);
        // Namespaces are created one by one; if one fails, those already created are
        // dropped (and removed) when this function returns the error.
        let sw = ns("sw")?;
        let client = ns("client")?;
        let lb = ns("lb")?;
        let lb2 = if b.standby { Some(ns("lb2")?) } else { None };
        let mut backends = Vec::with_capacity(b.backends);
        for i in 1..=b.backends {
            backends.push(ns(&format!("be{i}"))?);
        }
        let mut topo = Topology {
            prefix,
            ipv6: b.ipv6,
            replacements: 0,
            client,
            lb,
            lb2,
            backends,
            _xdp_links: Vec::new(),
            sw,
        };
        topo.wire()
            .with_context(|| format!("building topology {}", topo.prefix))?;
        if std::env::var_os("BALANCER_TESTS_VERBOSE").is_some() {
            eprintln!(
                "topology {} ({} backends) built in {:?}",
                topo.prefix,
                topo.backends.len(),
                started.elapsed()
            );
        }
        Ok(topo)
    }

    fn wire(&mut self) -> Result<()> {
        use ifnames::*;
        let v6 = self.ipv6;
        // The switch carries frames only: no IPv6 link-local chatter from its ports.
        self.sw.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        self.sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        self.sw.ip_batch(&[
            bridge_line(BRIDGE_FRONT),
            bridge_line(BRIDGE_BACK),
            format!("link set {BRIDGE_FRONT} up"),
            format!("link set {BRIDGE_BACK} up"),
        ])?;
        // Hosts: no DAD anywhere, so IPv6 addresses (link-local ones too) work at once.
        let hosts = std::iter::once(&self.client)
            .chain(std::iter::once(&self.lb))
            .chain(self.lb2.iter())
            .chain(self.backends.iter());
        for h in hosts {
            h.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            h.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        }

        // client
        let mut lines = vec![
            veth_line(HOST, &self.sw, SW_CLIENT),
            addr_add_line(HOST, &format!("{}/{}", addrs::CLIENT, addrs::PREFIX_LEN4)),
        ];
        if v6 {
            lines.push(addr_add_line(
                HOST,
                &format!("{}/{}", addrs::CLIENT6, addrs::PREFIX_LEN6),
            ));
        }
        lines.push(format!("link set {HOST} up"));
        self.client.ip_batch(&lines)?;

        // lb (and lb2)
        self.wire_lb(
            &self.lb,
            (addrs::LB_FRONT, addrs::LB_BACK),
            (addrs::LB_FRONT6, addrs::LB_BACK6),
            (SW_LB_FRONT, SW_LB_BACK),
        )?;
        if let Some(lb2) = &self.lb2 {
            self.wire_lb(
                lb2,
                (addrs::LB2_FRONT, addrs::LB2_BACK),
                (addrs::LB2_FRONT6, addrs::LB2_BACK6),
                (SW_LB2_FRONT, SW_LB2_BACK),
            )?;
        }

        // backends: on-link only, no default route (the balancer does full NAT).
        for (idx, be) in self.backends.iter().enumerate() {
            let i = idx + 1;
            let mut lines = vec![
                veth_line(HOST, &self.sw, &sw_backend(i)),
                addr_add_line(
                    HOST,
                    &format!("{}/{}", addrs::backend(i), addrs::PREFIX_LEN4),
                ),
            ];
            if v6 {
                lines.push(addr_add_line(
                    HOST,
                    &format!("{}/{}", addrs::backend6(i), addrs::PREFIX_LEN6),
                ));
            }
            lines.push(format!("link set {HOST} up"));
            be.ip_batch(&lines)?;
        }

        // switch ports
        let mut lines = vec![
            format!("link set {SW_CLIENT} master {BRIDGE_FRONT} up"),
            format!("link set {SW_LB_FRONT} master {BRIDGE_FRONT} up"),
            format!("link set {SW_LB_BACK} master {BRIDGE_BACK} up"),
        ];
        if self.lb2.is_some() {
            lines.push(format!("link set {SW_LB2_FRONT} master {BRIDGE_FRONT} up"));
            lines.push(format!("link set {SW_LB2_BACK} master {BRIDGE_BACK} up"));
        }
        for i in 1..=self.backends.len() {
            lines.push(format!(
                "link set {} master {BRIDGE_BACK} up",
                sw_backend(i)
            ));
        }
        self.sw.ip_batch(&lines)?;

        let mut links = self.tune_lb_ports(&self.lb, (SW_LB_FRONT, SW_LB_BACK))?;
        if let Some(lb2) = &self.lb2 {
            links.extend(self.tune_lb_ports(lb2, (SW_LB2_FRONT, SW_LB2_BACK))?);
        }
        self._xdp_links.extend(links);
        Ok(())
    }

    fn wire_lb(
        &self,
        lb: &Netns,
        (front, back): (Ipv4Addr, Ipv4Addr),
        (front6, back6): (Ipv6Addr, Ipv6Addr),
        (sw_front, sw_back): (&str, &str),
    ) -> Result<()> {
        use ifnames::*;
        let v6 = self.ipv6;
        let mut lines = vec![
            veth_line(LB_FRONT, &self.sw, sw_front),
            veth_line(LB_BACK, &self.sw, sw_back),
            addr_add_line(LB_FRONT, &format!("{front}/{}", addrs::PREFIX_LEN4)),
            addr_add_line(LB_BACK, &format!("{back}/{}", addrs::PREFIX_LEN4)),
        ];
        if v6 {
            lines.push(addr_add_line(
                LB_FRONT,
                &format!("{front6}/{}", addrs::PREFIX_LEN6),
            ));
            lines.push(addr_add_line(
                LB_BACK,
                &format!("{back6}/{}", addrs::PREFIX_LEN6),
            ));
        }
        lines.push(format!("link set {LB_FRONT} up"));
        lines.push(format!("link set {LB_BACK} up"));
        lb.ip_batch(&lines)?;
        lb.sysctl("net.ipv4.ip_forward", "1")?;
        if v6 {
            lb.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        Ok(())
    }

    /// The balancer host `which` dies: every process in it is killed at once
    /// (SIGKILL) and its links go, and with them the XDP program attached to
    /// them. Nothing it had is cleaned up; its namespace stays, empty, until
    /// [`Topology::replace_lb`].
    pub fn kill_lb(&self, which: LbHost) -> Result<()> {
        let ns = self.lb_host(which);
        for pid in ns.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Deleting one end of a veth pair deletes both.
        ns.ip_batch(&[
            format!("link del {}", ifnames::LB_FRONT),
            format!("link del {}", ifnames::LB_BACK),
        ])
    }

    /// A fresh host in place of the one [`Topology::kill_lb`] killed: a new
    /// namespace (nothing running, nothing pinned), wired to the same ports
    /// of the bridges with the same addresses.
    pub fn replace_lb(&mut self, which: LbHost) -> Result<()> {
        use ifnames::*;
        self.replacements += 1;
        let name = format!("{}-{}r{}", self.prefix, label(which), self.replacements);
        let fresh = Netns::with_label(&name, label(which))?;
        fresh.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        fresh.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        let (v4, v6, ports) = match which {
            LbHost::Lb => (
                (addrs::LB_FRONT, addrs::LB_BACK),
                (addrs::LB_FRONT6, addrs::LB_BACK6),
                (SW_LB_FRONT, SW_LB_BACK),
            ),
            LbHost::Lb2 => (
                (addrs::LB2_FRONT, addrs::LB2_BACK),
                (addrs::LB2_FRONT6, addrs::LB2_BACK6),
                (SW_LB2_FRONT, SW_LB2_BACK),
            ),
        };
        self.wire_lb(&fresh, v4, v6, ports)?;
        self.sw.ip_batch(&[
            format!("link set {} master {BRIDGE_FRONT} up", ports.0),
            format!("link set {} master {BRIDGE_BACK} up", ports.1),
        ])?;
        self.tune_lb_ports(&fresh, ports)?;
        let old = match which {
            LbHost::Lb => std::mem::replace(&mut self.lb, fresh),
            LbHost::Lb2 => self
                .lb2
                .replace(fresh)
                .context("topology built without standby(true)")?,
        };
        drop(old);
        Ok(())
    }

    fn lb_host(&self, which: LbHost) -> &Netns {
        match which {
            LbHost::Lb => &self.lb,
            LbHost::Lb2 => self.lb2(),
        }
    }

    /// Checksums filled in before frames reach the lb's XDP program, XDP_TX'd
    /// or redirected frames accepted, and redirected frames received (the
    /// peers have NAPI through GRO). See TOOLCHAIN.md, "XDP on veth pairs".
    /// And frames the balancer sends back out of the interface they came in
    /// on (XDP_TX: a SYN proxy's answers) go on at once: veth wakes its peer
    /// for them only when the peer has an XDP program. The returned links
    /// keep those programs attached.
    fn tune_lb_ports(
        &self,
        lb: &Netns,
        (sw_front, sw_back): (&str, &str),
    ) -> Result<Vec<std::os::fd::OwnedFd>> {
        let mut links = Vec::new();
        for dev in [sw_front, sw_back] {
            self.sw.ethtool_k(dev, &[("tx", false), ("gro", true)])?;
            links.push(self.sw.xdp_pass(dev)?);
        }
        for dev in [ifnames::LB_FRONT, ifnames::LB_BACK] {
            lb.ethtool_k(dev, &[("tx", false)])?;
        }
        Ok(links)
    }

    /// The unique prefix of all namespace names of this topology.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn has_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The client namespace (`eth0`: 198.51.100.2/24, 2001:db8:1::2/64).
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The balancer host (`front`: 198.51.100.1/24, `back`: 203.0.113.1/24; forwarding on).
    pub fn lb(&self) -> &Netns {
        &self.lb
    }

    /// The second balancer host (`front` 198.51.100.3/24, `back`
    /// 203.0.113.3/24) of a topology built with `standby(true)`. Panics otherwise.
    pub fn lb2(&self) -> &Netns {
        self.lb2
            .as_ref()
            .expect("topology built without standby(true)")
    }

    /// The switch namespace holding the bridges `brf` and `brb`.
    pub fn switch(&self) -> &Netns {
        &self.sw
    }

    /// Backend `i`, 1-based (`be1` .. `beN`). Panics if out of range.
    pub fn backend(&self, i: usize) -> &Netns {
        assert!(
            (1..=self.backends.len()).contains(&i),
            "backend {i} out of 1..={}",
            self.backends.len()
        );
        &self.backends[i - 1]
    }

    /// All backends in order (index 0 is `be1`).
    pub fn backends(&self) -> &[Netns] {
        &self.backends
    }

    pub fn n_backends(&self) -> usize {
        self.backends.len()
    }

    /// 203.0.113.(10 + i).
    pub fn backend_addr(&self, i: usize) -> Ipv4Addr {
        addrs::backend(i)
    }

    /// 2001:db8:2::1N.
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        addrs::backend6(i)
    }

    /// Which backend (1-based) has address `ip`, if any.
    pub fn backend_index(&self, ip: IpAddr) -> Option<usize> {
        (1..=self.backends.len())
            .find(|&i| ip == IpAddr::V4(addrs::backend(i)) || ip == IpAddr::V6(addrs::backend6(i)))
    }

    /// Which backend (1-based) has label `label` (`"be2"` -> 2), e.g. from a server reply.
    pub fn backend_by_label(&self, label: &str) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.label() == label)
            .map(|p| p + 1)
    }

    pub fn client_addr(&self) -> Ipv4Addr {
        addrs::CLIENT
    }

    pub fn lb_front_addr(&self) -> Ipv4Addr {
        addrs::LB_FRONT
    }

    pub fn lb_back_addr(&self) -> Ipv4Addr {
        addrs::LB_BACK
    }

    /// The lb's client-side interface name (`front`, inside `lb`).
    pub fn lb_front_if(&self) -> &'static str {
        ifnames::LB_FRONT
    }

    /// The lb's backend-side interface name (`back`, inside `lb`).
    pub fn lb_back_if(&self) -> &'static str {
        ifnames::LB_BACK
    }

    /// Adds another source address to the client's `eth0` (e.g. `"198.51.100.5/24"`).
    pub fn add_client_addr(&self, cidr: &str) -> Result<()> {
        if cidr.contains(':') && !self.ipv6 {
            bail!("topology {} was built without IPv6", self.prefix);
        }
        self.client.add_addr(ifnames::HOST, cidr)
    }

    /// Adds an address to the lb's `front` (e.g. a VIP `"198.51.100.10/24"`).
    pub fn add_lb_front_addr(&self, cidr: &str) -> Result<()> {
        self.lb.add_addr(ifnames::LB_FRONT, cidr)
    }

    /// All namespaces of the topology.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![&self.client, &self.lb];
        v.extend(self.lb2.iter());
        v.extend(self.backends.iter());
        v.push(&self.sw);
        v
    }
}

fn label(which: LbHost) -> &'static str {
    match which {
        LbHost::Lb => "lb",
        LbHost::Lb2 => "lb2",
    }
}
