//! The `balancer` command line as clap sees it: the binary parses it, and the
//! man pages and shell completions are generated from it (see [`super::docs`]).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use super::admin::Target;
use crate::{api::BackendAction, daemon::LogFormat};

/// Where every subcommand looks for the configuration unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/balancer/balancer.toml";

/// Layer-4 load balancer: XDP forwarding and firewalling of TCP and UDP services.
///
/// The daemon (balancer run) loads an XDP program on the configured
/// interfaces, fills its maps from the configuration and keeps them current:
/// health checks, reloads, run-time backend changes, flow expiry and, with
/// [ha], failover between hosts. The program and its maps are pinned, so a
/// restarted daemon takes over established connections. The other commands
/// validate a configuration or talk to the running daemon through its admin
/// socket; balancer help COMMAND or balancer COMMAND --help describes one.
#[derive(Parser)]
#[command(name = "balancer", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How the CLI finds the daemon.
#[derive(Args)]
pub struct Connect {
    /// The daemon's configuration; its `[control].socket` is used.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The admin socket, overriding the configuration's.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Connect {
    pub fn target(&self) -> Target<'_> {
        Target {
            socket: self.socket.as_deref(),
            config: &self.config,
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground; SIGHUP reloads, SIGTERM or SIGINT stops it cleanly,
    /// SIGUSR2 stops it and leaves the data plane for the next daemon (a restart).
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Discard the pinned state a previous daemon left (its established
        /// connections are dropped) instead of taking it over.
        #[arg(long)]
        fresh: bool,
        /// How log records are written to standard error.
        #[arg(long, value_enum, default_value = "auto")]
        log_format: LogFormat,
    },
    /// Validate a configuration without touching the kernel; exit status 2 when refused.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Role, services and backends of the running daemon, with health, weight and active connections.
    Status {
        #[command(flatten)]
        connect: Connect,
    },
    /// Counters per service and backend: packets, bytes, connections, drops by reason.
    Stats {
        /// Ask again every second and show rates (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many refreshes.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
        #[command(flatten)]
        connect: Connect,
    },
    /// The flow table (client, VIP, backend, state, age), read from the
    /// pinned maps; one line, or with --json one JSON object, per connection.
    Flows {
        /// The configuration file; its `[control].pin_dir` is read.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The pinned state, overriding the configuration's `[control].pin_dir`.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Only flows of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only flows to this backend (ADDRESS or ADDRESS:PORT).
        #[arg(long)]
        backend: Option<String>,
        /// Only flows from this client (ADDRESS or PREFIX/LEN).
        #[arg(long)]
        client: Option<String>,
        /// At most this many flows.
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its configuration file; exit status 2 when it refuses it.
    Reload {
        #[command(flatten)]
        connect: Connect,
    },
    /// Change one backend of the running daemon (lasts until the next reload or restart).
    Backend {
        action: BackendAction,
        service: String,
        address: SocketAddr,
        /// Weight of an added backend.
        #[arg(long)]
        weight: Option<u32>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Active-active: withdraw this node's routes to the VIPs, keep forwarding
    /// its connections until they end or ha.drain_timeout_s passes, then stop.
    /// Returns at once; `balancer status` shows the drain.
    Drain {
        #[command(flatten)]
        connect: Connect,
    },
    /// Stop the running daemon. In active-active, drain first (as `balancer
    /// drain` does); a second stop during a drain stops at once.
    Stop {
        /// Leave the program attached and its state pinned, for an upgrade:
        /// established connections keep flowing until the next `balancer run`
        /// takes over.
        #[arg(long)]
        keep_dataplane: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Directory for `man8/` and `completions/`; created if missing.
        #[arg(long)]
        out: PathBuf,
        /// The date the pages carry (YYYY-MM-DD), e.g. the release's.
        #[arg(long, default_value = "")]
        date: String,
    },
}
