//! `balancer run`: load (or take over) the program, configure the host and
//! the maps, then keep them true: health checks, reloads, admin requests,
//! flow expiry, until told to stop.

mod control;
mod drain;
mod host;
mod logging;
mod scrape;
mod state;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use sd_notify::NotifyState;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

pub use logging::LogFormat;
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
use drain::Drain;
use state::Daemon;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Discard pinned state of a previous daemon instead of taking it over.
    pub fresh: bool,
    pub log_format: LogFormat,
}

pub fn main(config_path: &Path, options: Options) -> ExitCode {
    logging::init(options.log_format);
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

const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// How often tracked conditions are looked at and the HA watchdog is fed.
const HA_CONDITIONS_INTERVAL: Duration = Duration::from_millis(250);

/// Tells the service manager (`NOTIFY_SOCKET`, set by systemd for
/// `Type=notify`) about a change of state; nothing without one.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// A reload as systemd wants to see it: RELOADING=1 with the time it began,
/// then READY=1 whether the file was accepted or the running one stays.
fn reload(daemon: &mut Daemon, by: &str) -> Reply {
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    notify(&reloading);
    let reply = daemon.reload(by);
    let status = if reply.ok {
        reply.message.clone()
    } else {
        format!("running; reload refused: {}", reply.message)
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    reply
}

fn start_ha(daemon: &Daemon) -> Result<ha::HaHandle> {
    let config = daemon.config();
    let key_file = config
        .ha
        .auth_key_file
        .as_ref()
        .context("ha.auth_key_file is required")?;
    let key = ha::read_key(key_file)?;
    // Just attached; the XDP check's first tick looks at once.
    let inputs = daemon.ha_inputs(&[]);
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

/// The signals the daemon answers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    /// What systemd sends on `systemctl restart` (RestartKillSignal= in the
    /// unit): stop, but leave the data plane to the next daemon.
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
            usr2: signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?,
        })
    }
}

/// What feeds the daemon's loop besides its timers and signals.
struct Inputs {
    calls: mpsc::Receiver<control::Call>,
    scrapes: mpsc::Receiver<crate::metrics::http::Scrape>,
    health: mpsc::UnboundedReceiver<crate::health::Event>,
}

async fn serve(config_path: &Path, config: config::Config, options: Options) -> Result<()> {
    // Signals first, so that a stop during set-up still cleans up.
    let mut signals = Signals::new()?;
    // Before touching any pinned state: a second daemon must not take over
    // the first one's maps under it.
    let (socket, calls) = ControlSocket::bind(&config.control.socket)?;
    let (_metrics, scrapes) = scrape::listen(&config.control)?;
    let netlink = Netlink::connect()?;
    let (health_tx, health) = mpsc::unbounded_channel();
    let mut daemon = start(
        config_path,
        config,
        options,
        host_record(socket.path()),
        HealthChecker::new(health_tx),
        &netlink,
    )
    .await?;
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
    // Only now: the program is attached and its maps are filled.
    let status = format!(
        "running: {} services, {backends} backends",
        daemon.config().services.len()
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let mut inputs = Inputs {
        calls,
        scrapes,
        health,
    };
    let stop = run(&mut daemon, &mut signals, &mut inputs, &netlink).await;
    notify(&[NotifyState::Stopping]);
    shut_down(daemon, stop, &netlink).await
}

/// Loads (or takes over) the program and its maps, configures the host,
/// attaches, starts the health checks and high availability.
async fn start(
    config_path: &Path,
    config: config::Config,
    options: Options,
    record: PathBuf,
    checker: HealthChecker,
    netlink: &Netlink,
) -> Result<Daemon> {
    let pins = Pins::prepare(&config.control.pin_dir, options.fresh)?;
    let (dataplane, recovered) = Dataplane::open(pins, config.flows.capacity)?;
    let net = NetChanges::recorded(&record, recovered);
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
        Runtime::new(config).map_err(anyhow::Error::msg)?
    };
    let mut daemon = Daemon::new(
        config_path.to_path_buf(),
        runtime,
        dataplane,
        net,
        checker,
        recovered,
    );
    if let Err(e) = bring_up(&mut daemon, netlink).await {
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
        match start_ha(&daemon) {
            Ok(handle) => daemon.ha = Some(handle),
            Err(e) => {
                if let Err(close) = daemon.dataplane.close() {
                    warn!("removing the pinned state: {close:#}");
                }
                return Err(e);
            }
        }
    }
    Ok(daemon)
}

/// The host's settings, the maps, and the program on every interface.
async fn bring_up(daemon: &mut Daemon, netlink: &Netlink) -> Result<()> {
    host::prepare(daemon.runtime.config(), &mut daemon.net, netlink).await?;
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
    Ok(())
}

/// How often the daemon asks the kernel (netlink) whether the program is
/// still attached (an HA condition).
const XDP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A tokio interval whose missed ticks are delayed, not made up in a burst.
fn every(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// The daemon's loop: timers, health verdicts, scrapes, admin calls and
/// signals, until one says stop.
async fn run(
    daemon: &mut Daemon,
    signals: &mut Signals,
    inputs: &mut Inputs,
    netlink: &Netlink,
) -> Stop {
    // Pinged from this loop, so that a loop that hangs stops the pings and
    // systemd restarts the daemon (which takes over the pinned state).
    let watchdog = sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero());
    let mut watchdog_tick = every(watchdog.map_or(Duration::from_secs(3600), |t| t / 2));
    let mut sweep = every(daemon.timeouts.sweep_interval());
    let mut housekeeping = every(HOUSEKEEPING_INTERVAL);
    let mut ha_tick = every(HA_CONDITIONS_INTERVAL);
    let mut xdp_check = every(XDP_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
            _ = sweep.tick() => daemon.sweep(),
            _ = housekeeping.tick() => {
                daemon.housekeep();
                if let Some(mut drain) = daemon.drain.take() {
                    if drain.done(|| daemon.own_flows()) {
                        return Stop::Clean;
                    }
                    daemon.drain = Some(drain);
                }
            }
            _ = xdp_check.tick(), if daemon.ha.is_some() => daemon.check_xdp(netlink).await,
            _ = ha_tick.tick(), if daemon.ha.is_some() => daemon.tick_ha(),
            Some(event) = inputs.health.recv() => daemon.on_health(event),
            Some(scrape) = inputs.scrapes.recv() => daemon.answer_scrape(scrape),
            Some((request, reply)) = inputs.calls.recv() => {
                let (answer, stop) = handle(daemon, request);
                let _ = reply.send(answer);
                if let Some(stop) = stop {
                    // Let the connection's task write the reply before the
                    // runtime goes.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return stop;
                }
            }
            _ = signals.term.recv() => {
                if start_drain(daemon, "SIGTERM") {
                    continue;
                }
                info!("SIGTERM: stopping");
                return Stop::Clean;
            }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); return Stop::Clean; }
            _ = signals.usr2.recv() => {
                info!("SIGUSR2: stopping; the program stays attached for the next daemon");
                return Stop::HandOver;
            }
            _ = signals.hup.recv() => {
                let reply = reload(daemon, "SIGHUP");
                if !reply.ok {
                    for p in &reply.problems {
                        error!("{p}");
                    }
                }
            }
        }
    }
}

/// Gives up the HA role, then either undoes everything or leaves the data
/// plane to the next daemon.
async fn shut_down(mut daemon: Daemon, stop: Stop, netlink: &Netlink) -> Result<()> {
    if let Some(h) = daemon.ha.take() {
        h.stop();
    }
    let Daemon {
        dataplane, mut net, ..
    } = daemon;
    match stop {
        Stop::Clean => {
            let closed = dataplane.close();
            net.undo(netlink).await;
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
        Request::Reload => (reload(daemon, "admin"), None),
        Request::Stats => (daemon.stats_reply(), None),
        Request::Backend {
            action,
            service,
            address,
            weight,
        } => (daemon.backend(action, &service, address, weight), None),
        Request::Drain => {
            if !active_active(daemon) {
                return (
                    Reply::refused(
                        "refused: drain is for ha.mode = \"active-active\"; drain a backend with `balancer backend drain`, or stop this node with `balancer stop`",
                        Vec::new(),
                    ),
                    None,
                );
            }
            if daemon.drain.is_none() {
                start_drain(daemon, "admin");
            }
            (
                Reply::ok(
                    "draining: routes withdrawn; this node stops once its flows end or ha.drain_timeout_s passes",
                ),
                None,
            )
        }
        Request::Stop { keep_dataplane } => {
            if !keep_dataplane && start_drain(daemon, "admin stop") {
                return (
                    Reply::ok(
                        "draining first: routes withdrawn; this node stops once its flows end or ha.drain_timeout_s passes (stop again to stop at once)",
                    ),
                    None,
                );
            }
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

fn active_active(daemon: &Daemon) -> bool {
    let ha = &daemon.config().ha;
    ha.enabled && ha.mode == config::HaMode::ActiveActive
}

/// In active-active, a stop drains first: starts the drain and says so. A
/// stop during a drain, or without active-active, stops at once (false).
fn start_drain(daemon: &mut Daemon, by: &str) -> bool {
    if !active_active(daemon) || daemon.drain.is_some() {
        return false;
    }
    daemon.drain = Some(Drain::start(&daemon.config().ha, by));
    // The HA thread withdraws the routes now, not at its next tick.
    daemon.tick_ha();
    true
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
