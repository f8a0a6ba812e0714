//! `cargo xtask bench failover`: two balancer hosts with flow sync on the
//! namespace topology; the active host's client link goes down
//! `FAILOVER_RUNS` times (default 20). Measures the gap until a new
//! connection through the VIP succeeds again and how many established
//! connections keep working. The measurement is the bench target
//! `tests/benches/failover.rs` (beside the other HA benchmark, `sync`, with
//! which it shares its set-up); this writes its `## Failover` section of
//! BENCHMARKS.md.

use anyhow::Result;

use super::e2e::report::write_section;
use crate::workspace_root;

pub fn run() -> Result<()> {
    let section = super::section_of_target("## Failover", "failover", &[])?;
    let path = workspace_root().join("BENCHMARKS.md");
    write_section(&path, "## Failover", &section)?;
    print!("{section}");
    eprintln!(
        "failover: wrote the `## Failover` section of {}",
        path.display()
    );
    Ok(())
}
