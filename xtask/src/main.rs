//! `cargo xtask ...`: set-up of a fresh machine, the test suite, and the demo.

mod bench;
mod demo;
mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, nightly rust-src,
    /// bpf-linker) and build everything. Idempotent; quick when all is there.
    Setup,
    /// Run every check and test: formatting, clippy, unit, packet and namespace tests.
    Test {
        /// Extra arguments for `cargo test` (a test name filter, for example).
        args: Vec<String>,
    },
    /// Benchmarks; figures go to BENCHMARKS.md by hand, with their baselines.
    Bench {
        /// Which: `packet` (per-packet cost, BPF_PROG_TEST_RUN), `e2e` (requests
        /// and throughput through namespaces against HAProxy and nftables),
        /// `memory` (kernel map bytes per flow, the daemon's resident memory
        /// with 10,000 backends and 1,000,000 flows), `failover` (HA failover
        /// gap and connection survival), `sync` (HA flow sync: bulk copies of
        /// 100,000 and 1,000,000 flows, the active node's packet cost meanwhile,
        /// live sync cost), `active-active` (three nodes behind a BIRD router:
        /// sync cost against active-standby, the new-connection gap when a node
        /// dies, a peer's flow per packet), `flood` (legitimate requests and
        /// CPU under a spoofed SYN flood, against HAProxy), `metrics` (a scrape
        /// with 10,000 backends), or `all`.
        #[arg(default_value = "all")]
        which: String,
    },
    /// Build the Debian package (target/package/balancer_VERSION_ARCH.deb) from
    /// a release build and packaging/.
    Package {
        /// Then check it: lintian, systemd-analyze verify, the installed
        /// binary on the installed configuration, man pages against --help.
        #[arg(long)]
        check: bool,
    },
    /// Set up, then run the balancer on a demo topology in network namespaces.
    Demo {
        /// Requests to send through the VIP.
        #[arg(long, default_value_t = 30)]
        requests: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test { args } => test(&args),
        Task::Bench { which } => bench::run(&which),
        Task::Package { check } => package::main(check),
        Task::Demo { requests } => {
            setup::run()?;
            demo::run(requests)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// Runs a command (in the workspace root unless it names a directory of its
/// own), failing with its name if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(workspace_root());
    }
    let shown = format!("{cmd:?}");
    eprintln!("+ {shown}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(extra: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The eBPF crate is a workspace of its own, which `cargo fmt --all` skips.
    run(Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .args(["balancer-ebpf/src/main.rs", "balancer-ebpf/src/baseline.rs"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--release",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(workspace_root().join("balancer-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO"))?;
    // Dependencies nobody uses, in both workspaces (it reads the sources).
    // cargo-machete takes itself for `cargo run` when CARGO_PKG_NAME is set,
    // as it is here under `cargo xtask`, and then reads "machete" as a path.
    run(cargo().arg("machete").env_remove("CARGO_PKG_NAME"))?;
    run(cargo()
        .arg("machete")
        .env_remove("CARGO_PKG_NAME")
        .current_dir(workspace_root().join("balancer-ebpf")))?;
    // The Debian package as an operator installs it (a release build).
    package::main(true)?;
    // The namespace tests run the real binary.
    run(cargo().args(["build", "-p", "balancer-user", "--bin", "balancer"]))?;
    let balancer = workspace_root().join("target/debug/balancer");
    check_contract(&balancer)?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-targets"])
        .env("BALANCER_BIN", &balancer);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    run(&mut cmd)
}

/// The user contract is kept beside the repository (`../shared/spec`), not in it,
/// so the tests read a copy of it. Where it is there, `balancer check` must
/// accept it as it is (exit 0; warnings about settings not enforced yet are
/// fine, a refusal exits 2), and the copy must still be the same file.
fn check_contract(balancer: &Path) -> Result<()> {
    let root = workspace_root();
    let contract = root
        .parent()
        .context("the workspace has a parent directory")?
        .join("shared/spec/balancer.example.toml");
    if !contract.exists() {
        eprintln!(
            "contract check skipped: no {} beside the repository",
            contract.display()
        );
        return Ok(());
    }
    run(Command::new(balancer)
        .args(["check", "--config"])
        .arg(&contract))?;
    let copy = root.join("balancer-user/tests/fixtures/contract.toml");
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    if read(&contract)? != read(&copy)? {
        bail!(
            "{} is not the contract any more: `cp {} {}`, then make the tests and config/balancer.example.toml follow",
            copy.display(),
            contract.display(),
            copy.display()
        );
    }
    eprintln!(
        "contract {} checked; the tests' copy is the same",
        contract.display()
    );
    Ok(())
}
