//! The loaded XDP program and its maps: load, attach, write a [`Plan`], read
//! counters. The packet tests drive the program through this same type.

pub mod batch;
mod counters;
mod pin;
mod recover;

use std::{collections::BTreeMap, net::IpAddr, os::fd::AsFd, path::PathBuf};

pub use pin::{MapShape, Pins, open_pinned_map};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData, PerCpuArray,
        lpm_trie::{Key as LpmKey, LpmTrie},
        xdp::DevMapHash,
    },
    programs::{
        TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use balancer_common::{
    LAYOUT_VERSION, RawAddr,
    expiry::{SweepLimits, SweepStats},
    firewall::{
        GLOBAL_BURST, GLOBAL_LAYOUT, GLOBAL_RATE, GLOBAL_SNAT_V4, GLOBAL_SNAT_V6, RuleKeyV4,
        RuleKeyV6, rule_prefix_len,
    },
    flow::{FlowKey, FlowValue},
    service::{
        ADDR_FILTER_WORDS, AddrKey, Backend, GLOBAL_FLAGS, MAGLEV_M, MAX_BACKENDS_PER_SERVICE,
        MAX_SNAT_ADDRS, RR_TABLE_LEN, ServiceKey, ServiceValue, addr_filter_bit,
    },
    stats::{BackendStats, COUNTER_COUNT, Counter, service_drop_index},
};
use ipnet::{Ipv4Net, Ipv6Net};
use tracing::{info, warn};

use crate::{
    config::XdpMode as ConfigXdpMode,
    expiry::Timeouts,
    plan::{Plan, addr_key},
};

/// XDP_PASS: what the sweep program returns when it ran.
const XDP_PASS: u32 = 2;

/// The program object, built by build.rs from balancer-ebpf.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer.bpf.o"));
const PROGRAM_NAME: &str = "balancer";
/// The in-kernel flow sweep, run with BPF_PROG_TEST_RUN (never attached).
const SWEEP_PROGRAM: &str = "sweep_flows";

pub struct Dataplane {
    ebpf: Ebpf,
    attached: Vec<(String, XdpLinkId)>,
    pins: Option<Pins>,
}

impl Dataplane {
    /// Loads the program with a flow table of `flow_capacity` entries (both
    /// directions of a connection take one each), maps of its own.
    pub fn load(flow_capacity: u32) -> Result<Self> {
        Self::load_with(flow_capacity, None)
    }

    /// Loads the program on the maps pinned in `pins`, creating and pinning
    /// those that are not there. Returns whether a previous daemon's state was
    /// found (then its flows, counts and places are in the maps).
    pub fn open(pins: Pins, flow_capacity: u32) -> Result<(Self, bool)> {
        let shapes = pin::shapes(PROGRAM, flow_capacity)?;
        let existing = pins.existing_state(&shapes)?;
        let mut dp = Self::load_with(flow_capacity, Some((&pins, &shapes)))?;
        {
            let mut global: Array<&mut MapData, u32> = dp.map_mut("GLOBAL")?;
            let layout = global.get(&GLOBAL_LAYOUT, 0)?;
            if existing && layout != LAYOUT_VERSION {
                bail!(pin::incompatible(
                    pins.dir(),
                    &format!("map layout {layout}, this version {LAYOUT_VERSION}")
                ));
            }
            global.set(GLOBAL_LAYOUT, LAYOUT_VERSION, 0)?;
        }
        dp.pins = Some(pins);
        Ok((dp, existing))
    }

    fn load_with(flow_capacity: u32, pins: Option<(&Pins, &[MapShape])>) -> Result<Self> {
        raise_memlock();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("FLOWS", flow_capacity);
        let paths: Vec<(&str, PathBuf)> = pins
            .map(|(pins, shapes)| {
                shapes
                    .iter()
                    .map(|s| (s.name.as_str(), pins.map_path(&s.name)))
                    .collect()
            })
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(PROGRAM)
            .context("loading the XDP program's maps")?;
        let prog: &mut Xdp = program_mut(&mut ebpf)?;
        prog.load().context("the kernel refused the XDP program")?;
        let sweep: &mut Xdp = ebpf
            .program_mut(SWEEP_PROGRAM)
            .ok_or_else(|| anyhow!("program {SWEEP_PROGRAM} missing from the object"))?
            .try_into()?;
        sweep
            .load()
            .context("the kernel refused the flow sweep program")?;
        Ok(Self {
            ebpf,
            attached: Vec::new(),
            pins: None,
        })
    }

    pub fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?
            .try_into()
            .map_err(Into::into)
    }

    /// Attaches to `interface` and lets the program redirect to it. `auto`
    /// tries the driver's native mode and falls back to generic.
    /// With pinned state, an interface that already has the program (a
    /// previous daemon's link) gets this one in its place atomically: no packet
    /// sees the interface without a program.
    pub fn attach(&mut self, interface: &str, mode: ConfigXdpMode) -> Result<()> {
        let pinned = self.pins.as_ref().map(|p| p.link_path(interface));
        let prog = program_mut(&mut self.ebpf)?;
        if let Some(path) = pinned.as_ref().filter(|p| p.exists()) {
            let old = PinnedLink::from_pin(path)
                .with_context(|| format!("opening the pinned link {}", path.display()))?;
            let link = XdpLink::try_from(FdLink::from(old))
                .with_context(|| format!("{} is not an XDP link", path.display()))?;
            let id = prog
                .attach_to_link(link)
                .with_context(|| format!("replacing the program on {interface}"))?;
            let ifindex = crate::netconf::ifindex(interface)?;
            self.add_tx_port(ifindex)?;
            info!(%interface, ifindex, "took over the pinned XDP program");
            self.attached.push((interface.to_string(), id));
            return Ok(());
        }
        let link = match mode {
            ConfigXdpMode::Native => prog.attach(interface, XdpMode::Driver)?,
            ConfigXdpMode::Generic => prog.attach(interface, XdpMode::Skb)?,
            ConfigXdpMode::Auto => match prog.attach(interface, XdpMode::Driver) {
                Ok(link) => link,
                Err(e) => {
                    warn!(%interface, "native XDP not available ({e}); using generic mode");
                    prog.attach(interface, XdpMode::Skb)?
                }
            },
        };
        let link = match pinned {
            Some(path) => {
                let owned = prog.take_link(link)?;
                let fd = FdLink::try_from(owned).with_context(|| {
                    format!("{interface}: the kernel gave no BPF link to pin (too old?)")
                })?;
                let pinned = fd
                    .pin(&path)
                    .with_context(|| format!("pinning the link at {}", path.display()))?;
                prog.attach_to_link(XdpLink::try_from(FdLink::from(pinned))?)?
            }
            None => link,
        };
        let ifindex = crate::netconf::ifindex(interface)?;
        self.add_tx_port(ifindex)?;
        info!(%interface, ifindex, ?mode, "attached XDP program");
        self.attached.push((interface.to_string(), link));
        Ok(())
    }

    /// Leaves the program attached and the maps pinned for the next daemon
    /// (an upgrade or a restart): only this process's handles are closed.
    pub fn hand_over(mut self) {
        self.attached.clear();
        info!("left the program attached and its state pinned for the next daemon");
    }

    /// Detaches from every interface and removes the pinned state.
    pub fn close(mut self) -> Result<()> {
        if let Some(pins) = self.pins.take() {
            pins.remove_all()?;
        }
        self.detach_all()
    }

    /// Interfaces a previous daemon attached to that this configuration does
    /// not name: the program leaves them.
    pub fn release_other_interfaces(&mut self, keep: &[String]) -> Result<()> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        for interface in pins.linked_interfaces() {
            if !keep.contains(&interface) {
                std::fs::remove_file(pins.link_path(&interface))?;
                info!(%interface, "detached XDP program (no longer configured)");
            }
        }
        Ok(())
    }

    /// Lets the program redirect frames out of `ifindex` (packets up to its MTU).
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        let mtu = crate::netconf::mtu(ifindex)?;
        let mut mtus: HashMap<&mut MapData, u32, u32> = self.map_mut("IFACE_MTU")?;
        mtus.insert(ifindex, mtu, 0)?;
        let mut ports: DevMapHash<&mut MapData> = self.map_mut("TX_PORTS")?;
        ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to TX_PORTS"))
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) -> Result<()> {
        let prog = program_mut(&mut self.ebpf)?;
        for (interface, link) in self.attached.drain(..) {
            prog.detach(link)
                .with_context(|| format!("detaching from {interface}"))?;
            info!(%interface, "detached XDP program");
        }
        Ok(())
    }

    /// Writes services, backends and local addresses of `plan`.
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        {
            let mut addrs: HashMap<&mut MapData, AddrKey, u32> = self.map_mut("LOCAL_ADDRS")?;
            for (ip, flags) in &plan.local_addrs {
                addrs.insert(addr_key(*ip), *flags, 0)?;
            }
        }
        // Bits only added here: the addresses are in LOCAL_ADDRS before the
        // filter lets packets look. `remove_stale` clears what is left over.
        self.write_addr_filter(plan, true)?;
        {
            let mut global: Array<&mut MapData, u32> = self.map_mut("GLOBAL")?;
            global.set(GLOBAL_FLAGS, plan.global_flags, 0)?;
            global.set(GLOBAL_RATE, plan.rate, 0)?;
            global.set(GLOBAL_BURST, plan.burst, 0)?;
            global.set(GLOBAL_SNAT_V4, plan.snat_v4.len() as u32, 0)?;
            global.set(GLOBAL_SNAT_V6, plan.snat_v6.len() as u32, 0)?;
        }
        {
            let mut pool: Array<&mut MapData, RawAddr> = self.map_mut("SNAT_POOL")?;
            for (base, addrs) in [(0, &plan.snat_v4), (MAX_SNAT_ADDRS, &plan.snat_v6)] {
                for (i, ip) in addrs.iter().enumerate() {
                    pool.set(base + i as u32, crate::addr::raw(*ip).0, 0)?;
                }
            }
        }
        self.write_rules("FIREWALL_V4", &plan.firewall_v4, rule_v4)?;
        self.write_rules("FIREWALL_V6", &plan.firewall_v6, rule_v6)?;
        {
            let mut slots: Array<&mut MapData, u32> = self.map_mut("SERVICE_SLOTS")?;
            for svc in &plan.services {
                for (slot, b) in svc.backends.iter().enumerate() {
                    slots.set(
                        svc.value.id * MAX_BACKENDS_PER_SERVICE + slot as u32,
                        b.index,
                        0,
                    )?;
                }
            }
        }
        {
            let mut backends: Array<&mut MapData, Backend> = self.map_mut("BACKENDS")?;
            for svc in &plan.services {
                for b in &svc.backends {
                    backends.set(b.index, b.entry, 0)?;
                }
            }
        }
        {
            let mut rr: Array<&mut MapData, u32> = self.map_mut("RR_TABLE")?;
            for svc in &plan.services {
                for (i, slot) in svc.rr_sequence.iter().enumerate() {
                    rr.set(svc.value.id * RR_TABLE_LEN + i as u32, slot, 0)?;
                }
            }
        }
        {
            let mut maglev: Array<&mut MapData, u32> = self.map_mut("MAGLEV_TABLE")?;
            for svc in &plan.services {
                for (i, slot) in svc.maglev_table.iter().enumerate() {
                    maglev.set(svc.value.id * MAGLEV_M + i as u32, slot, 0)?;
                }
            }
        }
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            self.map_mut("SERVICES")?;
        for svc in &plan.services {
            services
                .insert(svc.key, svc.value, 0)
                .with_context(|| format!("writing service {}", svc.name))?;
        }
        Ok(())
    }

    /// Removes what `plan` no longer has: services, addresses, firewall
    /// rules. Run after [`Dataplane::apply`] so that nothing is missing in
    /// between.
    pub fn remove_stale(&mut self, plan: &Plan) -> Result<()> {
        {
            let keep: Vec<ServiceKey> = plan.services.iter().map(|s| s.key).collect();
            let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
                self.map_mut("SERVICES")?;
            let stale: Vec<ServiceKey> = services
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !keep.contains(k))
                .collect();
            for k in stale {
                services.remove(&k)?;
            }
        }
        {
            let keep: Vec<AddrKey> = plan
                .local_addrs
                .iter()
                .map(|(ip, _)| addr_key(*ip))
                .collect();
            let mut addrs: HashMap<&mut MapData, AddrKey, u32> = self.map_mut("LOCAL_ADDRS")?;
            let stale: Vec<AddrKey> = addrs
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !keep.contains(k))
                .collect();
            for k in stale {
                addrs.remove(&k)?;
            }
        }
        self.write_addr_filter(plan, false)?;
        self.remove_stale_rules("FIREWALL_V4", &plan.firewall_v4, rule_v4)?;
        self.remove_stale_rules("FIREWALL_V6", &plan.firewall_v6, rule_v6)?;
        Ok(())
    }

    /// Writes one family's firewall rules (scope, network, action) to `map`,
    /// keyed by `key`.
    fn write_rules<N: std::fmt::Display, K: aya::Pod>(
        &mut self,
        map: &str,
        rules: &[(u32, N, u32)],
        key: fn(u32, &N) -> (u32, K),
    ) -> Result<()> {
        let mut trie: LpmTrie<&mut MapData, K, u32> = self.map_mut(map)?;
        for (scope, net, action) in rules {
            let (prefix_len, k) = key(*scope, net);
            trie.insert(&LpmKey::new(prefix_len, k), action, 0)
                .with_context(|| format!("writing firewall rule {net}"))?;
        }
        Ok(())
    }

    /// Removes from `map` the rules that are not among `rules`.
    fn remove_stale_rules<N, K: aya::Pod + PartialEq>(
        &mut self,
        map: &str,
        rules: &[(u32, N, u32)],
        key: fn(u32, &N) -> (u32, K),
    ) -> Result<()> {
        let keep: Vec<(u32, K)> = rules
            .iter()
            .map(|(scope, net, _)| key(*scope, net))
            .collect();
        let mut trie: LpmTrie<&mut MapData, K, u32> = self.map_mut(map)?;
        let stale: Vec<LpmKey<K>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            trie.remove(&k)?;
        }
        Ok(())
    }

    /// `ADDR_FILTER` for the addresses of `plan`: with `keep`, bits already
    /// set stay (a stale bit only costs a lookup); without, exactly the plan's.
    fn write_addr_filter(&mut self, plan: &Plan, keep: bool) -> Result<()> {
        let mut words = vec![0u64; ADDR_FILTER_WORDS as usize];
        for (ip, _) in &plan.local_addrs {
            let bit = addr_filter_bit(&addr_key(*ip).addr);
            words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        let mut filter: Array<&mut MapData, u64> = self.map_mut("ADDR_FILTER")?;
        for (i, want) in words.into_iter().enumerate() {
            let now = filter.get(&(i as u32), 0)?;
            let next = if keep { now | want } else { want };
            if next != now {
                filter.set(i as u32, next, 0)?;
            }
        }
        Ok(())
    }

    /// Sets `HA_LEASE` (the HA thread writes it through its pin; the packet
    /// tests through here): 0 no high availability, else until when
    /// (`bpf_ktime_get_ns`) this node answers for the floating addresses.
    pub fn set_ha_lease(&mut self, until_ns: u64) -> Result<()> {
        let mut lease: Array<&mut MapData, u64> = self.map_mut("HA_LEASE")?;
        lease.set(0, until_ns, 0)?;
        Ok(())
    }

    /// Rewrites the flags of backend `index`, keeping the rest of its entry.
    pub fn set_backend_flags(&mut self, index: u32, flags: u32) -> Result<()> {
        let mut backends: Array<&mut MapData, Backend> = self.map_mut("BACKENDS")?;
        let mut entry = backends.get(&index, 0)?;
        entry.flags = flags;
        backends.set(index, entry, 0)?;
        Ok(())
    }

    /// The load a backend's agent reported (percent busy).
    pub fn set_load(&mut self, index: u32, load_pct: u32) -> Result<()> {
        let mut load: Array<&mut MapData, u32> = self.map_mut("BACKEND_LOAD")?;
        load.set(index, load_pct, 0)?;
        Ok(())
    }

    /// A backend index that nothing refers to any more: entry, counts, load
    /// and traffic counters back to zero for whoever gets it next.
    pub fn clear_backend(&mut self, index: u32) -> Result<()> {
        {
            let mut backends: Array<&mut MapData, Backend> = self.map_mut("BACKENDS")?;
            backends.set(index, Backend::default(), 0)?;
        }
        {
            let mut active: Array<&mut MapData, u64> = self.map_mut("ACTIVE_CONNS")?;
            active.set(index, 0, 0)?;
        }
        self.set_load(index, 0)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let mut stats: PerCpuArray<&mut MapData, BackendStats> = self.map_mut("BACKEND_STATS")?;
        let zero = aya::maps::PerCpuValues::try_from(vec![BackendStats::default(); cpus])?;
        stats.set(index, zero, 0)?;
        Ok(())
    }

    /// Global counters summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>> {
        let stats: PerCpuArray<&MapData, u64> = self.map("STATS")?;
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            let per_cpu = stats.get(&(c as u32), 0)?;
            out.insert(c.name(), per_cpu.iter().sum());
        }
        debug_assert_eq!(out.len(), COUNTER_COUNT as usize);
        Ok(out)
    }

    /// Drops of new flows to a service for `reason`, summed over CPUs.
    pub fn service_drops(&self, service_id: u32, reason: Counter) -> Result<u64> {
        let drops: PerCpuArray<&MapData, u64> = self.map("SERVICE_DROPS")?;
        Ok(drops
            .get(&service_drop_index(service_id, reason), 0)?
            .iter()
            .sum())
    }

    pub fn counter(&self, c: Counter) -> Result<u64> {
        let stats: PerCpuArray<&MapData, u64> = self.map("STATS")?;
        Ok(stats.get(&(c as u32), 0)?.iter().sum())
    }

    /// Active connections of a backend: opened minus ended (by a FIN or RST,
    /// or by expiry).
    pub fn active_conns(&self, index: u32) -> Result<u64> {
        let active: Array<&MapData, u64> = self.map("ACTIVE_CONNS")?;
        Ok(active.get(&index, 0)?)
    }

    /// Removes flows idle past `timeouts` (both entries of each), giving back
    /// their backend's count (unless a FIN or RST already did) and their SNAT
    /// port. The sweep runs in the kernel (`sweep_flows`): one system call for
    /// the whole table.
    pub fn sweep(&mut self, timeouts: &Timeouts) -> Result<SweepStats> {
        {
            let mut limits: Array<&mut MapData, SweepLimits> = self.map_mut("SWEEP_LIMITS")?;
            limits.set(0, timeouts.limits(), 0)?;
        }
        let prog: &Xdp = self
            .ebpf
            .program(SWEEP_PROGRAM)
            .ok_or_else(|| anyhow!("program {SWEEP_PROGRAM} missing from the object"))?
            .try_into()?;
        // The program looks at no packet; the kernel wants one of Ethernet size.
        let frame = [0u8; 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.repeat = 1;
        let run = prog.test_run(opts).context("running the flow sweep")?;
        if run.return_value != XDP_PASS {
            bail!("the flow sweep did not run (returned {})", run.return_value);
        }
        let stats: Array<&MapData, SweepStats> = self.map("SWEEP_STATS")?;
        Ok(stats.get(&0, 0)?)
    }

    /// Traffic of a backend, summed over CPUs.
    pub fn backend_stats(&self, index: u32) -> Result<BackendStats> {
        let stats: PerCpuArray<&MapData, BackendStats> = self.map("BACKEND_STATS")?;
        let per_cpu = stats.get(&index, 0)?;
        let mut sum = BackendStats::default();
        for s in per_cpu.iter() {
            sum.packets_to += s.packets_to;
            sum.bytes_to += s.bytes_to;
            sum.packets_from += s.packets_from;
            sum.bytes_from += s.bytes_from;
            sum.new_flows += s.new_flows;
        }
        Ok(sum)
    }

    /// Number of entries in the flow table (both directions), read 4,096 per
    /// system call (it also runs when a restarted daemon takes over a full
    /// table).
    pub fn flow_entries(&self) -> Result<usize> {
        let flows: HashMap<&MapData, FlowKey, FlowValue> = self.map("FLOWS")?;
        let mut count = 0;
        batch::for_each(
            aya::maps::IterableMap::map(&flows).fd().as_fd(),
            std::mem::size_of::<FlowKey>(),
            std::mem::size_of::<FlowValue>(),
            4096,
            |_, _| {
                count += 1;
                std::ops::ControlFlow::Continue(())
            },
        )
        .context("counting the flow table")?;
        Ok(count)
    }

    fn map<'a, T>(&'a self, name: &str) -> Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
        T::try_from(map).with_context(|| format!("map {name}"))
    }

    fn map_mut<'a, T>(&'a mut self, name: &str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
        T::try_from(map).with_context(|| format!("map {name}"))
    }
}

/// The `FIREWALL_V4` key (prefix length, data) of a rule.
fn rule_v4(scope: u32, net: &Ipv4Net) -> (u32, RuleKeyV4) {
    (
        rule_prefix_len(net.prefix_len().into()),
        RuleKeyV4 {
            scope_be: scope.to_be(),
            addr: u32::from_ne_bytes(net.network().octets()),
        },
    )
}

/// The `FIREWALL_V6` key (prefix length, data) of a rule.
fn rule_v6(scope: u32, net: &Ipv6Net) -> (u32, RuleKeyV6) {
    (
        rule_prefix_len(net.prefix_len().into()),
        RuleKeyV6 {
            scope_be: scope.to_be(),
            addr: crate::addr::raw(IpAddr::V6(net.network())).0,
        },
    )
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?;
    prog.try_into().map_err(Into::into)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: rlim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        // Since 5.11 maps are charged to the memory cgroup instead; only older
        // kernels need the limit.
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
