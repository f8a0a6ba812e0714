//! `balancer generate-docs` (hidden, for packaging): the man pages and shell
//! completions, generated from the clap definitions in [`super::args`] so that
//! they never drift from what the binary accepts.
//!
//! Layout under the output directory: `man8/balancer.8` (the overview, with
//! files, signals, environment and exit status) and `man8/balancer-NAME.8`
//! for each subcommand; `completions/balancer.bash`, `completions/_balancer`
//! (zsh) and `completions/balancer.fish`.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::{
    Man,
    roff::{Roff, bold, italic, roman},
};

use super::args::Cli;

const SECTION: &str = "8";
const MANUAL: &str = "System Administration";

pub fn main(out: &Path, date: &str) -> ExitCode {
    match generate(out, date) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every page and completion file; returns their paths. `date`
/// (YYYY-MM-DD) goes into the pages' headers.
pub fn generate(out: &Path, date: &str) -> Result<Vec<PathBuf>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();

    let man_dir = out.join("man8");
    fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    written.push(write(&man_dir.join("balancer.8"), &overview(&cmd, date)?)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = subcommand_page(sub, date)?;
        let name = sub.get_display_name().unwrap_or_else(|| sub.get_name());
        written.push(write(&man_dir.join(format!("{name}.{SECTION}")), &page)?);
    }

    let completions = out.join("completions");
    fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "balancer", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
        written.push(path);
    }
    Ok(written)
}

fn write(path: &Path, text: &[u8]) -> Result<PathBuf> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn man(cmd: &clap::Command, date: &str) -> Man {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(date)
        .manual(MANUAL)
        .source(format!("balancer {}", env!("CARGO_PKG_VERSION")))
}

/// balancer(8): what clap knows, a list of the subcommands, then what an
/// operator needs beside them.
fn overview(cmd: &clap::Command, date: &str) -> Result<Vec<u8>> {
    let man = man(cmd, date);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    operator_sections().to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// FILES, SIGNALS, ENVIRONMENT, EXIT STATUS and SEE ALSO of balancer(8).
fn operator_sections() -> Roff {
    let mut roff = Roff::new();
    let entries = |roff: &mut Roff, heading: &str, items: &[(&str, &str)]| {
        roff.control("SH", [heading]);
        for (term, text) in items {
            roff.control("TP", [])
                .text([bold(*term)])
                .text([roman(*text)]);
        }
    };
    entries(
        &mut roff,
        "FILES",
        &[
            (
                "/etc/balancer/balancer.toml",
                "The configuration, read by every subcommand unless --config names another. \
                 Validate it with balancer check before a reload.",
            ),
            (
                "/run/balancer/balancer.sock",
                "The admin socket ([control].socket), mode 0600: status, stats, reload, backend \
                 and stop talk to the daemon through it.",
            ),
            (
                "/run/balancer/balancer.sock.host-changes.json",
                "The host changes the daemon made (addresses, sysctls), so that the daemon that \
                 takes over the pinned state undoes them on its clean stop.",
            ),
            (
                "/sys/fs/bpf/balancer",
                "The pinned program links and maps ([control].pin_dir): the state that outlives \
                 a restart. balancer run --fresh discards it.",
            ),
        ],
    );
    entries(
        &mut roff,
        "SIGNALS",
        &[
            (
                "SIGHUP",
                "Re-read the configuration file. A refused file is logged and the running \
                 configuration stays; balancer reload does the same and exits 2 when refused.",
            ),
            (
                "SIGTERM",
                "Stop cleanly: detach the program, remove the pinned state and undo the host \
                 changes. Established connections through this host end. In active-active, \
                 drain first (balancer drain); a second SIGTERM stops at once.",
            ),
            (
                "SIGINT",
                "Stop cleanly at once, without an active-active drain.",
            ),
            (
                "SIGUSR2",
                "Stop and leave the program attached with its state pinned for the next daemon, \
                 as balancer stop --keep-dataplane does: established connections keep flowing. \
                 The systemd unit sends it on restart (RestartKillSignal=).",
            ),
        ],
    );
    entries(
        &mut roff,
        "ENVIRONMENT",
        &[
            (
                "NOTIFY_SOCKET",
                "Set by systemd for Type=notify: the daemon sends READY=1 once the program is \
                 attached and its maps are filled, RELOADING=1 and READY=1 around a reload, and \
                 STOPPING=1 when it stops.",
            ),
            (
                "WATCHDOG_USEC, WATCHDOG_PID",
                "Set by systemd for WatchdogSec=: the daemon's main loop sends WATCHDOG=1 at half \
                 that interval, so a loop that hangs is restarted.",
            ),
            (
                "JOURNAL_STREAM",
                "Set by systemd when standard error is the journal: with --log-format auto (the \
                 default) each log record is then one JSON line with its fields, prefixed with \
                 its syslog priority.",
            ),
            (
                "RUST_LOG",
                "Log filter (tracing-subscriber syntax), info by default.",
            ),
        ],
    );
    entries(
        &mut roff,
        "EXIT STATUS",
        &[
            ("0", "Success."),
            (
                "1",
                "Failure: the daemon could not start or stopped on an error, or the CLI could not \
                 reach the daemon.",
            ),
            (
                "2",
                "Refused: balancer check or run found the configuration invalid, or the daemon \
                 refused a reload or a backend change.",
            ),
        ],
    );
    roff.control("SH", ["SEE ALSO"]).text([
        italic("systemctl"),
        roman("(1), "),
        italic("journalctl"),
        roman("(1), "),
        italic("systemd.service"),
        roman("(5), "),
        italic("bpftool"),
        roman("(8)"),
    ]);
    roff
}

/// balancer-NAME(8): clap's page, pointing back to the overview.
fn subcommand_page(sub: &clap::Command, date: &str) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    man(sub, date).render(&mut page)?;
    Roff::new()
        .control("SH", ["SEE ALSO"])
        .text([italic("balancer"), roman("(8)")])
        .to_writer(&mut page)?;
    page.flush()?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overview_lists_every_visible_subcommand_and_no_hidden_one() {
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let page = String::from_utf8(overview(&cmd, "2026-01-01").unwrap()).unwrap();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let entry = format!("balancer\\-{}(8)", sub.get_name());
            assert!(page.contains(&entry), "{entry} missing:\n{page}");
        }
        assert!(!page.contains("generate"), "{page}");
        for section in ["FILES", "SIGNALS", "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"] {
            assert!(
                page.contains(&format!(".SH \"{section}\""))
                    || page.contains(&format!(".SH {section}")),
                "{section} missing:\n{page}"
            );
        }
    }
}
