//! `cargo xtask bench [packet|e2e|memory|failover|metrics|all]`.

mod e2e;
mod failover;
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
        "metrics" => metrics::run(),
        "all" => {
            packet::run()?;
            e2e::run()?;
            memory::run()?;
            failover::run()?;
            metrics::run()
        }
        other => {
            bail!("unknown benchmark {other:?}: packet, e2e, memory, failover, metrics or all")
        }
    }
}
