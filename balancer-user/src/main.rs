use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Layer-4 load balancer: XDP forwarding and firewalling of TCP and UDP services.
#[derive(Parser)]
#[command(name = "balancer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground; SIGTERM or SIGINT stops it cleanly.
    Run {
        #[arg(long, short, default_value = "/etc/balancer/balancer.toml")]
        config: PathBuf,
    },
    /// Validate a configuration without touching the kernel; exit status 2 when refused.
    Check {
        #[arg(long, short, default_value = "/etc/balancer/balancer.toml")]
        config: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => balancer_user::cli::run::main(&config),
        Command::Check { config, json } => balancer_user::cli::check::main(&config, json),
    }
}
