//! `cargo xtask bench sync`: HA flow sync (issue 13) between two balancer
//! hosts: a bulk copy of 100,000 and of 1,000,000 flows to a standby that
//! starts late, the active node's per-packet cost while it sends one, and the
//! cost of live sync per 10,000 new connections on both nodes. The
//! measurement is the bench target `tests/benches/sync.rs`: it fills the
//! active node's table and runs packets through its program with
//! balancer-user's data-plane layer, which xtask cannot depend on.

use anyhow::Result;

pub fn run() -> Result<()> {
    print!("{}", super::section_of_target("## Flow sync", "sync", &[])?);
    Ok(())
}
