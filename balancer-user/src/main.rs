use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use balancer_user::{
    api::BackendAction,
    cli::{self, admin::Target},
    daemon::{self, LogFormat},
};
use clap::{Args, Parser, Subcommand};

/// Layer-4 load balancer: XDP forwarding and firewalling of TCP and UDP services.
#[derive(Parser)]
#[command(name = "balancer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "/etc/balancer/balancer.toml";

/// How the CLI finds the daemon.
#[derive(Args)]
struct Connect {
    /// The daemon's configuration; its `[control].socket` is used.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The admin socket, overriding the configuration's.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
}

impl Connect {
    fn target(&self) -> Target<'_> {
        Target {
            socket: self.socket.as_deref(),
            config: &self.config,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground; SIGHUP reloads, SIGTERM or SIGINT stops it cleanly.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Discard the pinned state a previous daemon left (its established
        /// connections are dropped) instead of taking it over.
        #[arg(long)]
        fresh: bool,
        /// `json` writes one JSON object per log record, for collectors.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Validate a configuration without touching the kernel; exit status 2 when refused.
    Check {
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
    /// Stop the running daemon.
    Stop {
        /// Leave the program attached and its state pinned, for an upgrade:
        /// established connections keep flowing until the next `balancer run`
        /// takes over.
        #[arg(long)]
        keep_dataplane: bool,
        #[command(flatten)]
        connect: Connect,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            fresh,
            log_format,
        } => daemon::main(&config, daemon::Options { fresh, log_format }),
        Command::Check { config, json } => cli::check::main(&config, json),
        Command::Status { connect } => cli::admin::status(connect.target(), connect.json),
        Command::Stats {
            watch,
            count,
            connect,
        } => cli::stats::main(
            connect.target(),
            cli::stats::Options {
                json: connect.json,
                watch,
                count,
            },
        ),
        Command::Flows {
            config,
            pin_dir,
            service,
            backend,
            client,
            limit,
            json,
        } => cli::flows::main(cli::flows::Options {
            config,
            pin_dir,
            service,
            backend,
            client,
            json,
            limit,
        }),
        Command::Reload { connect } => cli::admin::reload(connect.target(), connect.json),
        Command::Backend {
            action,
            service,
            address,
            weight,
            connect,
        } => cli::admin::backend(
            connect.target(),
            action,
            service,
            address,
            weight,
            connect.json,
        ),
        Command::Stop {
            keep_dataplane,
            connect,
        } => cli::admin::stop(connect.target(), keep_dataplane, connect.json),
    }
}
