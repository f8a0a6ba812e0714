//! One module per group of `balancer` subcommands; `run` is the daemon.
pub mod admin;
pub mod args;
pub mod check;
mod client;
pub mod docs;
pub mod flows;
pub mod stats;
