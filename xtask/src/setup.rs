//! Takes a fresh machine of this project's kind (Debian 12, the stable and
//! nightly Rust toolchains) to a working build. See TOOLCHAIN.md in shared/.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{cargo, run as run_cmd};

/// Debian packages: LLVM for bpf-linker, and the programs the tests and the
/// demo drive (iproute2, ethtool, nginx, curl, PostgreSQL, promtool), bpftool
/// for inspection (and the PostgreSQL test's drop counters).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "bpftool",
    "iproute2",
    "ethtool",
    "nginx",
    "curl",
    // `promtool check metrics` judges a real scrape in the metrics tests.
    "prometheus",
    // `cargo xtask bench e2e`: the load generators and the load balancers it
    // compares against.
    "wrk",
    "iperf3",
    "haproxy",
    "nftables",
    // tests/tests/postgres.rs and examples/postgres-ha: servers, pg_basebackup,
    // psql and pgbench of version 15 under /usr/lib/postgresql/15/bin.
    "postgresql-15",
    "postgresql-client-15",
    // examples/postgres-ha's `pgha.sh drops` reads `balancer stats --json`.
    "jq",
    // examples/active-active and the active-active tests: BIRD 2 on the
    // router and on every balancer node (bird, birdc).
    "bird2",
    // `cargo xtask package --check`: dpkg-shlibdeps, strip, lintian,
    // systemd-analyze verify; setpriv (util-linux) runs the daemon with the
    // unit's capability bounding set in tests/tests/systemd.rs.
    "dpkg-dev",
    "binutils",
    "lintian",
    "systemd",
    "util-linux",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The unused-dependency check of `cargo xtask test`.
const CARGO_MACHETE_VERSION: &str = "0.9.2";

pub fn run() -> Result<()> {
    rust_src()?;
    apt()?;
    bpf_linker()?;
    cargo_machete()?;
    // Builds the eBPF object too (balancer-user's build script).
    crate::run(cargo().args(["build", "-p", "balancer-user", "--bin", "balancer"]))?;
    eprintln!("setup: done");
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup; is the nightly toolchain installed?")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpf_linker() -> Result<()> {
    let installed = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    run_cmd(
        cargo()
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
}

fn cargo_machete() -> Result<()> {
    let installed = Command::new("cargo-machete")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_MACHETE_VERSION))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    run_cmd(cargo().args([
        "install",
        "cargo-machete",
        "--version",
        CARGO_MACHETE_VERSION,
        "--locked",
    ]))
}
