//! `cargo xtask bench memory`: kernel map memory per tracked flow, and the
//! daemon's resident memory, with 10,000 backends and a flow table for
//! 1,000,000 flows, beside a minimal configuration measured in the same run.
//! The measurement is the bench target `tests/benches/memory.rs`: it fills the
//! daemon's table through balancer-user's data-plane layer, which xtask cannot
//! depend on.

use anyhow::Result;

pub fn run() -> Result<()> {
    print!(
        "{}",
        super::section_of_target("## Memory", "memory", &[("bpftool", &["version"])])?
    );
    Ok(())
}
