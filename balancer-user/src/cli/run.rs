//! `balancer run`: load, attach, configure, and serve until told to stop.

use std::{io::IsTerminal, path::Path, process::ExitCode};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};

use crate::{
    config::{self, Config, Forwarding},
    dataplane::Dataplane,
    expiry::Timeouts,
    netconf::{self, NetChanges},
    plan,
};

pub fn main(config_path: &Path) -> ExitCode {
    init_logging();
    let loaded = match config::load(config_path) {
        Ok(loaded) => loaded,
        Err(e) => {
            for p in &e.problems {
                error!("{p}");
            }
            error!(
                "{}: refused ({} problems)",
                config_path.display(),
                e.problems.len()
            );
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        warn!("{}: {}", w.path, w.message);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&loaded.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: &Config) -> Result<()> {
    // Signals first, so that a stop during set-up still cleans up.
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

    // Dropped last: addresses and sysctls are restored after the program is gone.
    let mut net = NetChanges::default();
    let mut dataplane = Dataplane::load(config.flows.capacity)?;
    let result = async {
        prepare_host(config, &mut net)?;
        let plan = plan::plan(config, netconf::route_source)?;
        dataplane.apply(&plan)?;
        for interface in &config.node.interfaces {
            dataplane.attach(interface, config.node.xdp_mode)?;
        }
        let backends: usize = plan.services.iter().map(|s| s.backends.len()).sum();
        info!(
            node = %config.node.name,
            services = plan.services.len(),
            backends,
            "balancer running"
        );
        let timeouts = Timeouts::from(&config.flows);
        let mut sweep = tokio::time::interval(timeouts.sweep_interval());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => match dataplane.sweep(&timeouts) {
                    Ok(s) if s.expired > 0 => debug!(
                        scanned = s.scanned,
                        expired = s.expired,
                        released = s.released,
                        "expired idle flows"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!("flow expiry sweep failed: {e:#}"),
                },
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
                _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
                _ = sighup.recv() => {
                    warn!("SIGHUP: reloading is not supported by this version; configuration unchanged");
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    let detached = dataplane.detach_all();
    drop(dataplane);
    net.undo();
    result.and(detached)
}

/// Forwarding on the XDP interfaces (the FIB lookup and the stack's fallback
/// path need it), the floating addresses, and the SNAT port reservation.
fn prepare_host(config: &Config, net: &mut NetChanges) -> Result<()> {
    let ipv6 = config.services.iter().any(|s| s.vip.is_ipv6());
    for interface in &config.node.interfaces {
        netconf::ifindex(interface)?;
        net.sysctl(&format!("net.ipv4.conf.{interface}.forwarding"), "1")?;
        if ipv6 {
            // The program's IPv6 FIB lookups need it on the ingress interface.
            net.sysctl(&format!("net.ipv6.conf.{interface}.forwarding"), "1")?;
        }
        // Packets the program translated but left to the stack (unknown
        // neighbour) carry a local source address: VIP or SNAT.
        net.sysctl(&format!("net.ipv4.conf.{interface}.accept_local"), "1")?;
        net.sysctl(&format!("net.ipv4.conf.{interface}.rp_filter"), "0")?;
    }
    let mut addresses: Vec<_> = config.services.iter().map(|s| s.vip).collect();
    if config.node.forwarding == Forwarding::FullNat {
        addresses.extend(config.node.snat_addresses.iter().copied());
    }
    addresses.sort();
    addresses.dedup();
    net.ensure_local(&addresses, &config.node.interfaces)?;
    if config.node.forwarding == Forwarding::FullNat {
        let (min, max) = config.node.snat_port_range;
        net.reserve_ports(min, max)?;
    }
    Ok(())
}
