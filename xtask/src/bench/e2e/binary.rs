//! Which `balancer` binary the benchmark measures: `BALANCER_BIN` if given, else a release
//! build of the working tree, or with `E2E_BUILD=head` of the committed HEAD alone (other
//! people's half-done edits in the working tree then do not get in).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace_root};

/// Makes sure `BALANCER_BIN` names the binary to measure; returns how it was made.
pub fn prepare() -> Result<String> {
    if let Some(bin) = std::env::var_os("BALANCER_BIN") {
        return Ok(format!(
            "`BALANCER_BIN` = `{}`",
            PathBuf::from(bin).display()
        ));
    }
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let head_only = std::env::var("E2E_BUILD").is_ok_and(|v| v == "head");
    let (bin, what) = if head_only {
        let dir = std::env::temp_dir().join(format!("balancer-e2e-head-{rev}"));
        if !dir.join("Cargo.toml").exists() {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            export_head(&dir)?;
        }
        build(cargo().current_dir(&dir))?;
        (
            dir.join("target/release/balancer"),
            format!(
                "release build of commit {rev} alone (`E2E_BUILD=head`: no uncommitted changes)"
            ),
        )
    } else {
        build(cargo().current_dir(workspace_root()))?;
        let dirty = Command::new("git")
            .args(["diff", "--quiet", "HEAD", "--"])
            .current_dir(workspace_root())
            .status()
            .is_ok_and(|s| s.code() == Some(1));
        (
            workspace_root().join("target/release/balancer"),
            format!(
                "release build of the working tree (HEAD {rev}{})",
                if dirty {
                    " with uncommitted changes"
                } else {
                    ""
                }
            ),
        )
    };
    // SAFETY: no other thread of this process reads or writes the environment now
    // (the benchmark has not started any yet).
    unsafe { std::env::set_var("BALANCER_BIN", &bin) };
    Ok(what)
}

fn build(cmd: &mut Command) -> Result<()> {
    crate::run(cmd.args([
        "build",
        "--release",
        "-p",
        "balancer-user",
        "--bin",
        "balancer",
    ]))
}

/// `git archive HEAD | tar -x -C dir`.
fn export_head(dir: &std::path::Path) -> Result<()> {
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", "HEAD"])
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let out = archive.stdout.take().context("git archive's stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .stdin(out)
        .status()
        .context("running tar")?;
    let git = archive.wait()?;
    if !git.success() || !tar.success() {
        let _ = std::fs::remove_dir_all(dir);
        bail!(
            "exporting HEAD to {} failed (git {git}, tar {tar})",
            dir.display()
        );
    }
    Ok(())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
