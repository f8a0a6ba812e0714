//! `cargo xtask bench [packet|e2e|all]`.

mod e2e;
mod packet;

use anyhow::{Result, bail};

pub fn run(which: &str) -> Result<()> {
    match which {
        "packet" => packet::run(),
        "e2e" => e2e::run(),
        "all" => {
            packet::run()?;
            e2e::run()
        }
        other => bail!("unknown benchmark {other:?}: packet, e2e or all"),
    }
}
