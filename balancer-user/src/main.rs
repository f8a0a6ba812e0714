use std::process::ExitCode;

use balancer_user::{
    cli::{
        self,
        args::{Cli, Command},
    },
    daemon,
};
use clap::Parser;

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
        Command::Drain { connect } => cli::admin::drain(connect.target(), connect.json),
        Command::Stop {
            keep_dataplane,
            connect,
        } => cli::admin::stop(connect.target(), keep_dataplane, connect.json),
        Command::GenerateDocs { out, date } => cli::docs::main(&out, &date),
    }
}
