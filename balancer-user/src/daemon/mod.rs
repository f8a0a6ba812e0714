//! `balancer run`: load (or take over) the program, configure the host and
//! the maps, then keep them true: health checks, reloads, admin requests,
//! flow expiry, until told to stop.

mod control;
mod host;
mod scrape;
mod state;

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

pub use state::needs_restart;

use crate::{
    api::{Reply, Request},
    config,
    dataplane::{Dataplane, Pins},
    ha,
    health::HealthChecker,
    netconf::NetChanges,
    netlink::Netlink,
    runtime::Runtime,
};
use control::ControlSocket;
use state::Daemon;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Discard pinned state of a previous daemon instead of taking it over.
    pub fresh: bool,
    pub log_format: LogFormat,
}

pub fn main(config_path: &Path, options: Options) -> ExitCode {
    init_logging(options.log_format);
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
    match runtime.block_on(serve(config_path, loaded.config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How often tracked conditions are looked at and the HA watchdog is fed.
const HA_CONDITIONS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

fn start_ha(daemon: &Daemon) -> Result<ha::HaHandle> {
    let config = daemon.config();
    let key_file = config
        .ha
        .auth_key_file
        .as_ref()
        .context("ha.auth_key_file is required")?;
    let key = ha::read_key(key_file)?;
    let inputs = daemon.ha_inputs(&daemon.xdp_faults());
    ha::start(
        &config.node.name,
        &config.ha,
        key,
        config.node.interfaces.clone(),
        &config.control.pin_dir,
        inputs,
    )
}

/// How the loop ended.
enum Stop {
    Clean,
    /// Leave the program attached and its state pinned (an upgrade).
    HandOver,
}

async fn serve(config_path: &Path, config: config::Config, options: Options) -> Result<()> {
    // Signals first, so that a stop during set-up still cleans up.
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

    // Before touching any pinned state: a second daemon must not take over
    // the first one's maps under it.
    let (socket, mut calls) = ControlSocket::bind(&config.control.socket)?;
    let (_metrics, mut scrapes) = scrape::listen(&config.control)?;
    let netlink = Netlink::connect()?;
    let pins = Pins::prepare(&config.control.pin_dir, options.fresh)?;
    let (dataplane, recovered) = Dataplane::open(pins, config.flows.capacity)?;
    let record = host_record(socket.path());
    let net = NetChanges::recorded(&record, recovered);

    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let checker = HealthChecker::new(health_tx);
    let runtime = if recovered {
        let state = dataplane.recover()?;
        let (runtime, changes) =
            Runtime::recover(config.clone(), &state, Instant::now()).map_err(anyhow::Error::msg)?;
        if !changes.is_empty() {
            info!(
                "the configuration differs from the pinned state: {}",
                changes.summary()
            );
        }
        runtime
    } else {
        Runtime::new(config.clone()).map_err(anyhow::Error::msg)?
    };
    let mut daemon = Daemon::new(
        config_path.to_path_buf(),
        runtime,
        dataplane,
        net,
        checker,
        recovered,
    );

    let started = async {
        host::prepare(daemon.runtime.config(), &mut daemon.net, &netlink).await?;
        if !daemon.config().ha.enabled {
            // Pinned state of a node that had [ha] may hold a lapsed lease,
            // under which the program opens no flows: standalone owns them.
            daemon.dataplane.set_ha_lease(Default::default())?;
        }
        daemon.sync()?;
        daemon.start_syn_proxy()?;
        let interfaces = daemon.config().node.interfaces.clone();
        daemon.dataplane.release_other_interfaces(&interfaces)?;
        for interface in &interfaces {
            let mode = daemon.config().node.xdp_mode;
            daemon.dataplane.attach(interface, mode)?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = started {
        // A daemon that took over running state leaves it running: traffic
        // keeps flowing while the operator fixes what stopped this one.
        if recovered {
            daemon.dataplane.hand_over();
            daemon.net.hand_over();
        } else if let Err(close) = daemon.dataplane.close() {
            warn!("removing the pinned state: {close:#}");
        }
        return Err(e);
    }
    daemon.update_checks();
    if recovered {
        daemon.report_recovery();
    }
    if daemon.config().ha.enabled {
        let started = start_ha(&daemon);
        match started {
            Ok(handle) => daemon.ha = Some(handle),
            Err(e) => {
                if let Err(close) = daemon.dataplane.close() {
                    warn!("removing the pinned state: {close:#}");
                }
                return Err(e);
            }
        }
    }
    let backends: usize = daemon
        .config()
        .services
        .iter()
        .map(|s| s.backends.len())
        .sum();
    info!(
        node = %daemon.config().node.name,
        services = daemon.config().services.len(),
        backends,
        socket = %socket.path().display(),
        "balancer running"
    );

    let mut sweep = tokio::time::interval(daemon.timeouts.sweep_interval());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ha_tick = tokio::time::interval(HA_CONDITIONS_INTERVAL);
    ha_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ha_ticks = 0u64;
    let mut ha_inputs = ha::Inputs::default();
    let mut xdp_faults = Vec::new();
    let stop = loop {
        tokio::select! {
            _ = sweep.tick() => daemon.sweep(),
            _ = housekeeping.tick() => daemon.housekeep(),
            _ = ha_tick.tick(), if daemon.ha.is_some() => {
                ha_ticks += 1;
                // The XDP attachment costs a process spawn: once a second.
                if ha_ticks % 4 == 1 {
                    xdp_faults = daemon.xdp_faults();
                }
                let next = daemon.ha_inputs(&xdp_faults);
                if next.faults != ha_inputs.faults || next.penalty_reasons != ha_inputs.penalty_reasons {
                    crate::events::ha_conditions(&next.faults, &next.penalty_reasons, next.penalty);
                }
                ha_inputs = next;
                if let Some(h) = &daemon.ha {
                    h.set_inputs(ha_inputs.clone());
                    h.pet();
                }
                if let Some(owner) = daemon.ha.as_ref().and_then(|h| h.take_adoption()) {
                    daemon.adopt_flows(owner);
                }
            }
            Some(event) = health_rx.recv() => daemon.on_health(event),
            Some(scrape) = scrapes.recv() => daemon.answer_scrape(scrape),
            Some((request, reply)) = calls.recv() => {
                let (answer, stop) = handle(&mut daemon, request);
                let _ = reply.send(answer);
                if let Some(stop) = stop {
                    // Let the connection's task write the reply before the
                    // runtime goes.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    break stop;
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Stop::Clean; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Stop::Clean; }
            _ = sighup.recv() => {
                let reply = daemon.reload("SIGHUP");
                if !reply.ok {
                    for p in &reply.problems {
                        error!("{p}");
                    }
                }
            }
        }
    };
    if let Some(h) = daemon.ha.take() {
        h.stop();
    }
    let Daemon {
        dataplane, mut net, ..
    } = daemon;
    match stop {
        Stop::Clean => {
            let closed = dataplane.close();
            net.undo(&netlink).await;
            closed
        }
        Stop::HandOver => {
            dataplane.hand_over();
            net.hand_over();
            Ok(())
        }
    }
}

fn handle(daemon: &mut Daemon, request: Request) -> (Reply, Option<Stop>) {
    match request {
        Request::Status => {
            let mut reply = Reply::ok("ok");
            reply.status = Some(daemon.status());
            (reply, None)
        }
        Request::Reload => (daemon.reload("admin"), None),
        Request::Stats => (daemon.stats_reply(), None),
        Request::Backend {
            action,
            service,
            address,
            weight,
        } => (daemon.backend(action, &service, address, weight), None),
        Request::Stop { keep_dataplane } => {
            if keep_dataplane {
                info!("stopping; the program stays attached for the next daemon");
                (
                    Reply::ok("stopping; the program stays attached and its state pinned"),
                    Some(Stop::HandOver),
                )
            } else {
                info!("stopping on request");
                (Reply::ok("stopping"), Some(Stop::Clean))
            }
        }
    }
}

/// Where the host changes are recorded: beside the admin socket, in a
/// directory only root can write.
fn host_record(socket: &Path) -> PathBuf {
    socket.with_file_name(format!(
        "{}.host-changes.json",
        socket
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "balancer".into())
    ))
}
