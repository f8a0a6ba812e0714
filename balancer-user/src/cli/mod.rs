//! One module per `balancer` subcommand.
pub mod check;
pub mod run;
