//! Per-packet cost through BPF_PROG_TEST_RUN (tests/benches/packet_cost.rs),
//! beside an XDP_PASS and a MAC-swap XDP_TX program measured in the same run.

use std::process::Command;

use anyhow::Result;

use crate::{cargo, run as run_cmd};

pub fn run() -> Result<()> {
    // The baseline programs are built with the balancer's eBPF object.
    run_cmd(cargo().args(["build", "-p", "balancer-user", "--bin", "balancer"]))?;
    let mut bench: Command = cargo();
    bench.args(["bench", "-p", "balancer-tests", "--bench", "packet_cost"]);
    run_cmd(&mut bench)
}
