//! `cargo xtask bench active-active`: active-active (issue 15) on the routed
//! topology (a router running BIRD 2 with ECMP and BFD, three nodes): the
//! cost of syncing every flow to every peer against an active-standby pair at
//! the same rate, the gap in new connections when a node's host dies (20
//! runs with the switch flooding frames for the dead node's MAC address to
//! the survivors and 20 without, with held connections), and a peer's
//! flow's per-packet cost against
//! one's own. The measurement is the bench target
//! `tests/benches/active_active/`: it drives flows through each node's
//! program with balancer-user's data-plane layer, which xtask cannot depend
//! on.

use anyhow::Result;

pub fn run() -> Result<()> {
    print!(
        "{}",
        super::section_of_target(
            "## Active-active",
            "active-active",
            &[("bird", &["--version"])]
        )?
    );
    Ok(())
}
