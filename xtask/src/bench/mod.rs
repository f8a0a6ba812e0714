//! `cargo xtask bench [packet|e2e|memory|metrics|all]`.

mod e2e;
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
        "metrics" => metrics::run(),
        "all" => {
            packet::run()?;
            e2e::run()?;
            memory::run()?;
            metrics::run()
        }
        other => bail!("unknown benchmark {other:?}: packet, e2e, memory, metrics or all"),
    }
}
