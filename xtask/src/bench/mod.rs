//! `cargo xtask bench [packet|e2e|memory|failover|flood|metrics|all]`.

mod e2e;
mod failover;
mod flood;
mod host;
mod memory;
mod metrics;
mod packet;

use anyhow::{Result, bail};

pub fn run(which: &str) -> Result<()> {
    match which {
        "packet" => packet::run(),
        "e2e" => e2e::run(),
        "memory" => memory::run(),
        "failover" => failover::run(),
        "flood" => flood::run(),
        "metrics" => metrics::run(),
        "all" => {
            packet::run()?;
            e2e::run()?;
            memory::run()?;
            failover::run()?;
            flood::run()?;
            metrics::run()
        }
        other => {
            bail!(
                "unknown benchmark {other:?}: packet, e2e, memory, failover, flood, metrics or all"
            )
        }
    }
}
