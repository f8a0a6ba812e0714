//! `cargo xtask package [--check]`: the Debian package, built with dpkg-deb
//! from the manifest below and the files in packaging/.
//!
//! The man pages and completions come from the release binary itself
//! (`balancer generate-docs`, hidden), which generates them from its clap
//! definitions: xtask does not depend on balancer-user, whose build script
//! needs the bpf-linker that `cargo xtask setup` installs.
//!
//! `--check` (run by `cargo xtask test`): lintian finds no error, the unit
//! passes `systemd-analyze verify`, the package unpacks into a scratch root
//! where the installed binary accepts the installed configuration, the man
//! pages name every subcommand that `balancer --help` lists, and the bash
//! completion loads.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{cargo, run, workspace_root};

const PACKAGE: &str = "balancer";

/// What the package installs besides the generated files: (file in
/// packaging/, path in the package, mode).
const MANIFEST: &[(&str, &str, u32)] = &[
    (
        "balancer.service",
        "lib/systemd/system/balancer.service",
        0o644,
    ),
    ("balancer.toml", "etc/balancer/balancer.toml", 0o644),
    // `ip route` names the active-active VIP routes' protocol "balancer".
    (
        "../examples/active-active/rt_protos.d/balancer.conf",
        "etc/iproute2/rt_protos.d/balancer.conf",
        0o644,
    ),
    (
        "debian/copyright",
        "usr/share/doc/balancer/copyright",
        0o644,
    ),
    (
        "debian/README.Debian",
        "usr/share/doc/balancer/README.Debian",
        0o644,
    ),
    (
        "debian/lintian-overrides",
        "usr/share/lintian/overrides/balancer",
        0o644,
    ),
    ("debian/conffiles", "DEBIAN/conffiles", 0o644),
    ("debian/postinst", "DEBIAN/postinst", 0o755),
    ("debian/prerm", "DEBIAN/prerm", 0o755),
    ("debian/postrm", "DEBIAN/postrm", 0o755),
];

/// Completions as `balancer generate-docs` names them, and where each shell
/// looks for them.
const COMPLETIONS: &[(&str, &str)] = &[
    (
        "balancer.bash",
        "usr/share/bash-completion/completions/balancer",
    ),
    ("_balancer", "usr/share/zsh/vendor-completions/_balancer"),
    (
        "balancer.fish",
        "usr/share/fish/vendor_completions.d/balancer.fish",
    ),
];

pub fn main(check: bool) -> Result<()> {
    let deb = build()?;
    if check {
        self::check(&deb)?;
    }
    println!("package: {}", deb.display());
    Ok(())
}

fn packaging() -> PathBuf {
    workspace_root().join("packaging")
}

fn out_dir() -> PathBuf {
    workspace_root().join("target/package")
}

/// Builds target/package/balancer_VERSION_ARCH.deb; returns its path.
pub fn build() -> Result<PathBuf> {
    for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip", "gzip"] {
        ensure!(
            found(tool),
            "{tool} not found: `cargo xtask setup` installs it (dpkg-dev, binutils)"
        );
    }
    let changelog = fs::read_to_string(packaging().join("debian/changelog"))
        .context("reading packaging/debian/changelog")?;
    let (version, date) = latest_entry(&changelog)?;
    let crate_version = env!("CARGO_PKG_VERSION");
    ensure!(
        version == crate_version,
        "packaging/debian/changelog's latest entry is {version}, the workspace is {crate_version}: add an entry"
    );
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "balancer-user",
        "--bin",
        "balancer",
    ]))?;
    let release = workspace_root().join("target/release/balancer");

    let out = out_dir();
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))?;
    let root = out.join(format!("{PACKAGE}_{version}_{arch}"));
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&root)?;

    // The binary, stripped as dh_strip does.
    let binary = root.join("usr/sbin/balancer");
    create_parent(&binary)?;
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            "-o",
        ])
        .arg(&binary)
        .arg(&release))?;
    set_mode(&binary, 0o755)?;

    // Man pages and completions from the clap definitions.
    let generated = out.join("generated");
    run(Command::new(&release)
        .args(["generate-docs", "--out"])
        .arg(&generated)
        .args(["--date", &date]))?;
    let man8 = root.join("usr/share/man/man8");
    fs::create_dir_all(&man8)?;
    let mut pages: Vec<_> = fs::read_dir(generated.join("man8"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    pages.sort();
    ensure!(
        !pages.is_empty(),
        "balancer generate-docs wrote no man page"
    );
    for page in &pages {
        let name = page.file_name().context("page name")?.to_string_lossy();
        gzip(page, &man8.join(format!("{name}.gz")))?;
    }
    for (name, dest) in COMPLETIONS {
        install(
            &generated.join("completions").join(name),
            &root.join(dest),
            0o644,
        )?;
    }

    for (source, dest, mode) in MANIFEST {
        install(&packaging().join(source), &root.join(dest), *mode)?;
    }
    // A native package: the changelog is changelog.gz (Debian policy 12.7).
    let changelog_gz = root.join("usr/share/doc/balancer/changelog.gz");
    gzip(&packaging().join("debian/changelog"), &changelog_gz)?;

    let control = fs::read_to_string(packaging().join("debian/control"))?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@DEPENDS@", &depends(&binary)?)
        .replace("@INSTALLED_SIZE@", &installed_size(&root)?.to_string());
    fs::write(root.join("DEBIAN/control"), control)?;
    fs::write(root.join("DEBIAN/md5sums"), md5sums(&root)?)?;
    normalize_modes(&root)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&deb))?;
    Ok(deb)
}

/// Version and date (YYYY-MM-DD) of the changelog's latest entry.
fn latest_entry(changelog: &str) -> Result<(String, String)> {
    let first = changelog.lines().next().unwrap_or_default();
    let version = first
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(v, _)| v.to_string())
        .with_context(|| format!("changelog: no version in {first:?}"))?;
    let trailer = changelog
        .lines()
        .find(|l| l.starts_with(" -- "))
        .context("changelog: no trailer line")?;
    // " -- Name <mail>  Mon, 07 Dec 2026 16:00:00 +0000"
    let when = trailer
        .split_once(">  ")
        .map(|(_, d)| d)
        .context("changelog: no date in the trailer")?;
    let words: Vec<&str> = when.split_whitespace().collect();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (day, month, year) = match words.as_slice() {
        [_, day, month, year, ..] => (day, month, year),
        _ => bail!("changelog: cannot read the date {when:?}"),
    };
    let month = MONTHS
        .iter()
        .position(|m| m == month)
        .with_context(|| format!("changelog: month {month:?}"))?
        + 1;
    let day: u32 = day.parse().context("changelog: day")?;
    Ok((version, format!("{year}-{month:02}-{day:02}")))
}

/// Shared-library dependencies as dpkg-shlibdeps finds them, and iproute2
/// (the daemon runs `ip`).
fn depends(binary: &Path) -> Result<String> {
    let dir = out_dir().join("shlibdeps");
    fs::create_dir_all(dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        "Source: balancer\n\nPackage: balancer\nArchitecture: any\n",
    )?;
    let substvars = stdout(
        Command::new("dpkg-shlibdeps")
            .args(["-O", "-e"])
            .arg(binary)
            .current_dir(&dir),
    )?;
    let libs = substvars
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps said {substvars:?}"))?;
    Ok(format!("{libs}, iproute2"))
}

/// Installed-Size in KiB as dpkg-gencontrol counts it: each file rounded up
/// to a KiB, each directory one.
fn installed_size(root: &Path) -> Result<u64> {
    let mut kib = 0;
    for path in walk(root)? {
        if path.starts_with(root.join("DEBIAN")) {
            continue;
        }
        let meta = fs::symlink_metadata(&path)?;
        kib += if meta.is_dir() {
            1
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(kib)
}

fn md5sums(root: &Path) -> Result<String> {
    let mut files: Vec<String> = walk(root)?
        .into_iter()
        .filter(|p| p.is_file() && !p.starts_with(root.join("DEBIAN")))
        .map(|p| {
            p.strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(String::new());
    }
    stdout(Command::new("md5sum").args(&files).current_dir(root)).map(|s| s + "\n")
}

/// Directories 0755; files keep the mode they were given (0644 or 0755).
fn normalize_modes(root: &Path) -> Result<()> {
    for path in walk(root)? {
        if path.is_dir() {
            set_mode(&path, 0o755)?;
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            found.push(path);
        }
    }
    Ok(found)
}

fn install(source: &Path, dest: &Path, mode: u32) -> Result<()> {
    create_parent(dest)?;
    fs::copy(source, dest)
        .with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
    set_mode(dest, mode)
}

fn gzip(source: &Path, dest: &Path) -> Result<()> {
    create_parent(dest)?;
    let out = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(source)
        .output()
        .context("running gzip")?;
    ensure!(out.status.success(), "gzip {}: {out:?}", source.display());
    fs::write(dest, out.stdout)?;
    set_mode(dest, 0o644)
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().context("a path with a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn found(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A tool the checks need: present, or under CI=true an error, else the
/// check is skipped with a message.
fn require(tool: &str, package: &str) -> Result<bool> {
    if found(tool) {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("{tool} not found: `cargo xtask setup` installs {package}");
    }
    eprintln!("SKIPPED: {tool} not found (apt-get install {package}, or cargo xtask setup)");
    Ok(false)
}

fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cmd`, failing with its output unless it exits with 0.
fn output(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

pub fn check(deb: &Path) -> Result<()> {
    if require("lintian", "lintian")? {
        lintian(deb)?;
    }
    let scratch = out_dir().join("scratch-root");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    run(Command::new("dpkg").arg("-x").arg(deb).arg(&scratch))?;
    installed_binary_accepts_installed_configuration(&scratch)?;
    man_pages_name_every_subcommand(&scratch)?;
    bash_completion_loads(&scratch)?;
    if require("systemd-analyze", "systemd")? {
        systemd_analyze_verify(&scratch)?;
    }
    println!("package check: ok");
    Ok(())
}

/// No error; warnings and informational tags are shown (overrides, with
/// their reasons, are in packaging/debian/lintian-overrides).
fn lintian(deb: &Path) -> Result<()> {
    let shown = format!("lintian {}", deb.display());
    eprintln!("+ {shown}");
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--display-info", "--show-overrides"])
        .arg(deb)
        .output()
        .context("running lintian")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{text}");
    ensure!(out.status.success(), "{shown} failed ({})", out.status);
    ensure!(
        !text.lines().any(|l| l.starts_with("E: ")),
        "lintian reported errors"
    );
    Ok(())
}

fn installed_binary_accepts_installed_configuration(scratch: &Path) -> Result<()> {
    let out = output(
        Command::new(scratch.join("usr/sbin/balancer"))
            .arg("check")
            .arg("--config")
            .arg(scratch.join("etc/balancer/balancer.toml")),
    )
    .context("the installed binary refused the installed configuration")?;
    println!(
        "installed balancer check: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

/// Every subcommand `balancer --help` lists has an entry in balancer(8) and
/// a page of its own; `help` (clap's) is described in balancer(8)'s text.
fn man_pages_name_every_subcommand(scratch: &Path) -> Result<()> {
    let help = stdout(Command::new(scratch.join("usr/sbin/balancer")).arg("--help"))?;
    let subcommands = listed_subcommands(&help);
    ensure!(
        subcommands.len() >= 8,
        "found only {subcommands:?} in balancer --help:\n{help}"
    );
    let man8 = scratch.join("usr/share/man/man8");
    let overview = roff_text(&man8.join("balancer.8.gz"))?;
    let mut missing = Vec::new();
    for name in &subcommands {
        let covered = if name == "help" {
            overview.contains("balancer help")
        } else {
            overview.contains(&format!("balancer-{name}(8)"))
                && man8.join(format!("balancer-{name}.8.gz")).is_file()
        };
        if !covered {
            missing.push(name.as_str());
        }
    }
    ensure!(
        missing.is_empty(),
        "balancer --help lists {missing:?}, which the man pages do not cover"
    );
    println!(
        "man pages cover every subcommand: {}",
        subcommands.join(", ")
    );
    Ok(())
}

/// The names under `Commands:` in clap's help.
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A gzipped man page's roff source with `\-` read as `-`.
fn roff_text(page: &Path) -> Result<String> {
    let out = output(Command::new("gzip").arg("-dc").arg(page))?;
    Ok(String::from_utf8_lossy(&out.stdout).replace("\\-", "-"))
}

fn bash_completion_loads(scratch: &Path) -> Result<()> {
    let file = scratch.join("usr/share/bash-completion/completions/balancer");
    let out = stdout(
        Command::new("bash")
            .arg("-c")
            .arg("source \"$1\" && complete -p balancer")
            .arg("bash")
            .arg(&file),
    )?;
    ensure!(out.contains("balancer"), "bash completion: {out}");
    Ok(())
}

/// systemd-analyze verify on the unit as installed. It resolves ExecStart=
/// and the man page in the root it is given, and needs the units the service
/// is ordered against: the host's are copied into the scratch root.
fn systemd_analyze_verify(scratch: &Path) -> Result<()> {
    let units = scratch.join("lib/systemd/system");
    for entry in fs::read_dir("/lib/systemd/system").context("reading /lib/systemd/system")? {
        let entry = entry?;
        let dest = units.join(entry.file_name());
        if entry.file_type()?.is_file() && !dest.exists() {
            fs::copy(entry.path(), &dest)?;
        }
    }
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg(format!("--root={}", scratch.display()))
        .args(["verify", "balancer.service"])
        .env("MANPATH", scratch.join("usr/share/man"));
    let out = output(&mut cmd)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        said.trim().is_empty(),
        "systemd-analyze verify balancer.service warned:\n{said}"
    );
    println!("systemd-analyze verify balancer.service: ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changelog_gives_version_and_date() {
        let text = "balancer (0.1.0) unstable; urgency=medium\n\n  * x\n\n -- A B <a@b.invalid>  Mon, 07 Dec 2026 16:00:00 +0000\n";
        assert_eq!(
            latest_entry(text).unwrap(),
            ("0.1.0".to_string(), "2026-12-07".to_string())
        );
    }

    #[test]
    fn subcommands_are_read_from_clap_help() {
        let help = "About\n\nUsage: balancer <COMMAND>\n\nCommands:\n  run      Run\n  check    Check\n  help     Print this message\n\nOptions:\n  -h, --help  Print help\n";
        assert_eq!(listed_subcommands(help), ["run", "check", "help"]);
    }
}
