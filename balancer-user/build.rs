//! Builds the XDP program (balancer-ebpf) with the nightly toolchain for the BPF
//! target, so that `include_bytes!` can embed it and the `balancer` binary is all
//! a user installs. `cargo xtask setup` installs what this needs.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("balancer-user is in the workspace");
    let ebpf_dir = workspace.join("balancer-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for watched in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            ebpf_dir.join(watched).display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("balancer-common/src").display()
    );

    // A separate target directory: sharing the outer build's would deadlock on
    // its lock (rust-lang/cargo#6412).
    let target_dir = workspace.join("target").join("ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(&ebpf_dir);
    // The outer cargo's settings are for the host build; the eBPF build takes its
    // own from balancer-ebpf/.cargo/config.toml.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME"
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run rustup to build the eBPF program ({e}); run `cargo xtask setup`")
    });
    if !status.success() {
        panic!(
            "building balancer-ebpf failed ({status}); `cargo xtask setup` installs the nightly \
             rust-src and bpf-linker it needs"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/balancer");
    copy(&object, &out_dir.join("balancer.bpf.o"));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}
