//! `balancer flows`: the flow table, read from the pinned `FLOWS` map by this
//! process (no daemon needed: the program keeps forwarding without one).
//!
//! The table is read in batches of entries (`BPF_MAP_LOOKUP_BATCH`) and each
//! flow is printed as soon as it is read, so a million flows take no more
//! memory than a few thousand. Only forward entries are shown (one line per
//! connection); each one's reply entry is looked up for its last packet.

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    net::{IpAddr, SocketAddr},
    ops::ControlFlow,
    os::fd::AsFd,
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, IterableMap, MapData};
use balancer_common::{
    PROTO_TCP, PROTO_UDP,
    flow::{
        DIR_FORWARD, FlowKey, FlowValue, STATE_CLOSING, STATE_ESTABLISHED, STATE_NEW,
        STATE_PROXY_SYN, STATE_SYN_RECEIVED,
    },
    maps::{Backends, Flows},
    service::{BACKEND_F_PRESENT, Backend, MAX_BACKENDS},
};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    addr::from_raw,
    config::{self, Control, Protocol},
    dataplane::{PinnedMaps, batch},
};

pub struct Options {
    pub config: PathBuf,
    pub pin_dir: Option<PathBuf>,
    pub service: Option<String>,
    pub backend: Option<String>,
    pub client: Option<String>,
    pub json: bool,
    pub limit: Option<u64>,
}

/// Entries per batch read.
const CHUNK: u32 = 4096;

pub fn main(options: Options) -> ExitCode {
    match run(&options, &mut BufWriter::new(std::io::stdout().lock())) {
        Ok(summary) => {
            if !options.json {
                eprintln!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A closed pipe (`| head`) is the reader's choice.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One flow as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow {
    pub service: Option<String>,
    pub protocol: &'static str,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub backend: SocketAddr,
    /// The source the backend sees (the SNAT address and port, or the client).
    pub source: SocketAddr,
    pub state: &'static str,
    pub age_s: f64,
    /// Since the last packet either way.
    pub idle_s: f64,
}

/// Which flows to print.
#[derive(Debug, Default)]
pub struct Filter {
    service: Option<(IpAddr, u16, u8)>,
    backend: Option<BackendFilter>,
    client: Option<IpNet>,
}

#[derive(Debug, Clone, Copy)]
enum BackendFilter {
    Address(IpAddr),
    Socket(SocketAddr),
}

impl Filter {
    fn matches(&self, f: &Flow, proto: u8) -> bool {
        if let Some((vip, port, p)) = self.service
            && (f.vip.ip() != vip || f.vip.port() != port || proto != p)
        {
            return false;
        }
        match self.backend {
            Some(BackendFilter::Address(ip)) if f.backend.ip() != ip => return false,
            Some(BackendFilter::Socket(sa)) if f.backend != sa => return false,
            _ => {}
        }
        if let Some(net) = self.client
            && !net.contains(&f.client.ip())
        {
            return false;
        }
        true
    }
}

fn run(options: &Options, out: &mut impl Write) -> Result<String> {
    // The configuration names the services and says where the pins are.
    let loaded = config::load(&options.config);
    let config = match &loaded {
        Ok(l) => Some(&l.config),
        // With --pin-dir the file is needed only for service names.
        Err(_) if options.pin_dir.is_some() && options.service.is_none() => None,
        Err(e) => bail!(
            "{}: {} (or give --pin-dir)",
            options.config.display(),
            e.problems
                .first()
                .map_or_else(|| "refused".to_string(), |p| p.to_string())
        ),
    };
    let pin_dir = options
        .pin_dir
        .clone()
        .or_else(|| config.map(|c| c.control.pin_dir.clone()))
        .unwrap_or_else(|| Control::default().pin_dir);
    let services: HashMap<(IpAddr, u16, u8), String> = config
        .map(|c| {
            c.services
                .iter()
                .map(|s| ((s.vip, s.port, proto_number(s.protocol)), s.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut filter = Filter::default();
    if let Some(name) = &options.service {
        let Some((key, _)) = services.iter().find(|(_, n)| *n == name) else {
            bail!("no service named {name:?} in {}", options.config.display());
        };
        filter.service = Some(*key);
    }
    if let Some(b) = &options.backend {
        filter.backend = Some(if let Ok(sa) = b.parse::<SocketAddr>() {
            BackendFilter::Socket(sa)
        } else {
            BackendFilter::Address(
                b.parse()
                    .with_context(|| format!("--backend {b}: not an address or address:port"))?,
            )
        });
    }
    if let Some(c) = &options.client {
        filter.client = Some(match c.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(
                c.parse::<IpAddr>()
                    .with_context(|| format!("--client {c}: not an address or prefix"))?,
            ),
        });
    }
    let pinned = PinnedMaps::new(&pin_dir);
    let backends = read_backends(&pinned)?;
    let table: BpfHashMap<MapData, FlowKey, FlowValue> =
        pinned.open::<Flows, _>().with_context(|| {
            format!(
                "is the balancer running, as root, with control.pin_dir {}?",
                pin_dir.display()
            )
        })?;
    let fd = table.map().fd().as_fd();
    let now = crate::ktime::coarse_ns();
    if !options.json {
        writeln!(
            out,
            "{:<12} {:<5} {:<21} {:<21} {:<21} {:<21} {:<11} {:>7} {:>7}",
            "SERVICE", "PROTO", "CLIENT", "VIP", "BACKEND", "SOURCE", "STATE", "AGE", "IDLE"
        )?;
    }
    let (mut scanned, mut forward, mut shown) = (0u64, 0u64, 0u64);
    let mut failure: Option<anyhow::Error> = None;
    batch::for_each(
        fd,
        size_of::<FlowKey>(),
        size_of::<FlowValue>(),
        CHUNK,
        |k, v| {
            scanned += 1;
            let (key, value): (FlowKey, FlowValue) = (batch::read(k), batch::read(v));
            if value.direction != DIR_FORWARD {
                return ControlFlow::Continue(());
            }
            forward += 1;
            let mut flow = describe(&key, &value, &backends, &services, now);
            if !filter.matches(&flow, key.proto) {
                return ControlFlow::Continue(());
            }
            // The reply direction's last packet.
            if let Ok(reply) = table.get(&value.peer_key(key.proto, key.family), 0) {
                let last = reply.last_seen_ns.max(value.last_seen_ns);
                flow.idle_s = secs(now.saturating_sub(last));
            }
            let written = if options.json {
                serde_json::to_writer(&mut *out, &flow)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(writeln!(out)?))
            } else {
                print_row(out, &flow).map_err(anyhow::Error::from)
            };
            if let Err(e) = written {
                failure = Some(e);
                return ControlFlow::Break(());
            }
            shown += 1;
            if options.limit.is_some_and(|l| shown >= l) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )
    .context("reading FLOWS")?;
    if let Some(e) = failure {
        return Err(e);
    }
    out.flush()?;
    Ok(format!(
        "{shown} flows shown, of {forward} in the table ({scanned} entries, both directions)"
    ))
}

fn print_row(out: &mut impl Write, f: &Flow) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:<5} {:<21} {:<21} {:<21} {:<21} {:<11} {:>7} {:>7}",
        f.service.as_deref().unwrap_or("-"),
        f.protocol,
        f.client.to_string(),
        f.vip.to_string(),
        f.backend.to_string(),
        f.source.to_string(),
        f.state,
        format!("{:.0}s", f.age_s),
        format!("{:.0}s", f.idle_s),
    )
}

/// A forward entry as a person reads it.
fn describe(
    key: &FlowKey,
    value: &FlowValue,
    backends: &[Option<SocketAddr>],
    services: &HashMap<(IpAddr, u16, u8), String>,
    now: u64,
) -> Flow {
    let client = SocketAddr::new(from_raw(key.src, key.family), u16::from_be(key.sport_be));
    let vip = SocketAddr::new(from_raw(key.dst, key.family), u16::from_be(key.dport_be));
    let backend = backends
        .get(value.backend.0 as usize)
        .copied()
        .flatten()
        .unwrap_or_else(|| {
            SocketAddr::new(
                from_raw(value.new_dst, key.family),
                u16::from_be(value.new_dport_be),
            )
        });
    let source = SocketAddr::new(
        from_raw(value.new_src, key.family),
        u16::from_be(value.new_sport_be),
    );
    Flow {
        service: services.get(&(vip.ip(), vip.port(), key.proto)).cloned(),
        protocol: match key.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => "other",
        },
        client,
        vip,
        backend,
        source,
        state: match value.state {
            STATE_NEW => "new",
            STATE_ESTABLISHED => "established",
            STATE_CLOSING => "closing",
            STATE_SYN_RECEIVED => "syn-received",
            STATE_PROXY_SYN => "proxy-syn",
            _ => "unknown",
        },
        age_s: secs(now.saturating_sub(value.created_ns)),
        idle_s: secs(now.saturating_sub(value.last_seen_ns)),
    }
}

/// Backend addresses by index, from the pinned `BACKENDS` map.
fn read_backends(pinned: &PinnedMaps) -> Result<Vec<Option<SocketAddr>>> {
    let backends: Array<MapData, Backend> = pinned.open::<Backends, _>()?;
    let raw: Vec<Backend> =
        batch::array(backends.map().fd().as_fd(), MAX_BACKENDS).context("reading BACKENDS")?;
    Ok(raw
        .iter()
        .map(|b| {
            (b.flags & BACKEND_F_PRESENT != 0)
                .then(|| SocketAddr::new(from_raw(b.addr, b.family), u16::from_be(b.port_be)))
        })
        .collect())
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}
