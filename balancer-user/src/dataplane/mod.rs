//! The loaded XDP program and its maps: load, attach, write a [`Plan`], read
//! counters, run the flow sweep. The packet tests drive the program through
//! this same type; every other reader of the maps goes through
//! [`maps::PinnedMaps`].
//!
//! [`Plan`]: crate::plan::Plan

pub mod batch;
mod counters;
pub mod maps;
mod pin;
mod recover;
mod write;

use std::{path::PathBuf, time::Duration};

pub use maps::{PinnedMaps, ViewOf};
pub use pin::{MapShape, Pins};
pub use recover::{Recovered, RecoveredBackend, RecoveredService};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapError, xdp::DevMapHash},
    programs::{
        TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use balancer_common::{
    LAYOUT_VERSION,
    expiry::{SweepLimits, SweepStats},
    global::Global,
    maps::{
        Flows, Globals, HalfOpen, IfaceMtu, MapDef, SweepLimitsMap, SweepStatsMap, TxPorts,
        half_open_capacity,
    },
};
use tracing::{info, warn};

use crate::{config::XdpMode as ConfigXdpMode, expiry::Timeouts};

/// XDP_PASS: what the sweep program returns when it ran.
const XDP_PASS: u32 = 2;

/// The program object, built by build.rs from balancer-ebpf.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer.bpf.o"));
const PROGRAM_NAME: &str = "balancer";
/// The in-kernel flow sweep, run with BPF_PROG_TEST_RUN (never attached):
/// `FLOWS`, then `HALF_OPEN`.
const SWEEP_PROGRAMS: [&str; 2] = ["sweep_flows", "sweep_half_open"];

pub struct Dataplane {
    ebpf: Ebpf,
    attached: Vec<(String, XdpLinkId)>,
    pins: Option<Pins>,
}

/// What one BPF_PROG_TEST_RUN of the program did with a frame.
#[derive(Debug, Clone)]
pub struct TestRunOutcome {
    /// The XDP action.
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The kernel's measure of the run.
    pub duration: Duration,
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
            let mut global = dp.map_mut::<Globals, Array<_, _>>()?;
            let layout = global.get(&Global::Layout.index(), 0)?;
            if existing && layout != LAYOUT_VERSION {
                bail!(pin::incompatible(
                    pins.dir(),
                    &format!("map layout {layout}, this version {LAYOUT_VERSION}")
                ));
            }
            global.set(Global::Layout.index(), LAYOUT_VERSION, 0)?;
        }
        dp.pins = Some(pins);
        Ok((dp, existing))
    }

    fn load_with(flow_capacity: u32, pins: Option<(&Pins, &[MapShape])>) -> Result<Self> {
        raise_memlock();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(Flows::NAME, flow_capacity);
        loader.map_max_entries(HalfOpen::NAME, half_open_capacity(flow_capacity));
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
        for name in SWEEP_PROGRAMS {
            let sweep: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            sweep
                .load()
                .with_context(|| format!("the kernel refused the flow sweep program {name}"))?;
        }
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
        let mut mtus = self.map_mut::<IfaceMtu, HashMap<_, _, _>>()?;
        mtus.insert(ifindex, mtu, 0)?;
        let mut ports = self.map_mut::<TxPorts, DevMapHash<_>>()?;
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

    /// Runs the program once on `frame` through BPF_PROG_TEST_RUN, as if it
    /// had arrived on `ifindex`: the packet tests, the benchmarks and the
    /// flow sweep all run it this way.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<TestRunOutcome> {
        test_run(self.program()?, frame, ifindex)
    }

    /// Removes flows idle past `timeouts` (both entries of each), giving back
    /// their backend's count (unless a FIN or RST already did) and their SNAT
    /// port. The sweep runs in the kernel (`sweep_flows`): one system call for
    /// the whole table.
    pub fn sweep(&mut self, timeouts: &Timeouts) -> Result<SweepStats> {
        self.sweep_with(timeouts.limits())
    }

    /// [`Dataplane::sweep`] with limits of the caller's (an HA takeover
    /// adopts the peers' flows with `SweepLimits::adopt`).
    pub fn sweep_with(&mut self, limits: SweepLimits) -> Result<SweepStats> {
        {
            let mut map = self.map_mut::<SweepLimitsMap, Array<_, _>>()?;
            map.set(0, limits, 0)?;
        }
        for name in SWEEP_PROGRAMS {
            let prog: &Xdp = self
                .ebpf
                .program(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            // The program looks at no packet; the kernel wants one of Ethernet size.
            let run = test_run(prog, &[0u8; 64], 0)
                .with_context(|| format!("running the flow sweep {name}"))?;
            if run.action != XDP_PASS {
                bail!(
                    "the flow sweep {name} did not run (returned {})",
                    run.action
                );
            }
        }
        let stats = self.map::<SweepStatsMap, Array<_, _>>()?;
        Ok(stats.get(&0, 0)?)
    }

    /// The loaded program's map of descriptor `M`, read-only.
    pub fn map<'a, M: MapDef, V>(&'a self) -> Result<V>
    where
        V: ViewOf<M> + TryFrom<&'a Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map(M::NAME)
            .ok_or_else(|| anyhow!("map {} missing from the object", M::NAME))?;
        maps::view::<M, _, _>(map)
    }

    /// The loaded program's map of descriptor `M`, to write.
    pub fn map_mut<'a, M: MapDef, V>(&'a mut self) -> Result<V>
    where
        V: ViewOf<M> + TryFrom<&'a mut Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(M::NAME)
            .ok_or_else(|| anyhow!("map {} missing from the object", M::NAME))?;
        maps::view::<M, _, _>(map)
    }
}

/// One BPF_PROG_TEST_RUN of `prog` on `frame` with `repeat = 1` (with more,
/// the kernel would run it on its own rewritten output), as if it had arrived
/// on `ifindex` (0: no interface).
pub fn test_run(prog: &Xdp, frame: &[u8], ifindex: u32) -> Result<TestRunOutcome> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    // Room for what the program may add at the end (a SYN-ACK's options).
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    if ifindex != 0 {
        opts.ctx_in = Some(&ctx);
    }
    opts.repeat = 1;
    let result = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutcome {
        action: result.return_value,
        frame: out,
        duration: result.duration,
    })
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use balancer_common::maps::{ALL, PROGRAM_PRIVATE};

    use super::*;

    /// `bpf_map_type` values of each descriptor kind.
    fn map_types(kind: &str) -> &'static [u32] {
        match kind {
            "Array" => &[2],
            "PerCpuArray" => &[6],
            // BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH
            "Hash" => &[1, 9],
            "LpmTrie" => &[11],
            "RingBuf" => &[27],
            "DevMapHash" => &[25],
            other => panic!("kind {other}"),
        }
    }

    #[test]
    fn every_map_of_the_object_is_described_once_with_its_shape() {
        let shapes: BTreeMap<String, MapShape> = pin::shapes(PROGRAM, 1024)
            .unwrap()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        for (name, kind, key, value) in ALL {
            let shape = shapes
                .get(*name)
                .unwrap_or_else(|| panic!("{name} is described but not in the object"));
            assert!(
                map_types(kind).contains(&shape.map_type),
                "{name}: type {} is not a {kind}",
                shape.map_type
            );
            if *kind == "RingBuf" {
                continue;
            }
            // An LPM trie's key starts with the prefix length.
            let key = if *kind == "LpmTrie" { key + 4 } else { *key };
            assert_eq!(shape.key_size as usize, key, "{name}: key size");
            if *kind != "DevMapHash" {
                assert_eq!(shape.value_size as usize, *value, "{name}: value size");
            }
        }
        for name in shapes.keys() {
            let described = ALL.iter().filter(|(n, ..)| n == name).count();
            let private = PROGRAM_PRIVATE.contains(&name.as_str());
            assert_eq!(
                described + usize::from(private),
                1,
                "{name}: in the object, described {described} times, private {private}"
            );
        }
    }
}
