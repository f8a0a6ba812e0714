//! `balancer check`: validates a configuration file without touching the kernel.
//!
//! Exit status 0 when the file would be accepted by `balancer run`, 2 when it is
//! refused or cannot be read.

use std::{path::Path, process::ExitCode};

use serde::Serialize;

use crate::config::{self, ConfigError, Loaded, Problem, Warning};

const REFUSED: u8 = 2;

pub fn main(config: &Path, json: bool) -> ExitCode {
    let result = config::load(config);
    if json {
        print_json(&result);
    } else {
        print_text(config, &result);
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(REFUSED),
    }
}

fn print_text(path: &Path, result: &Result<Loaded, ConfigError>) {
    match result {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            println!("ok: {}", Summary::of(loaded));
        }
        Err(err) => {
            for problem in &err.problems {
                eprintln!("error: {problem}");
            }
            let count = err.problems.len();
            eprintln!(
                "{}: refused ({count} {})",
                path.display(),
                if count == 1 { "problem" } else { "problems" }
            );
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    problems: &'a [Problem],
    warnings: &'a [Warning],
    summary: Option<Summary<'a>>,
}

#[derive(Serialize)]
struct Summary<'a> {
    node: &'a str,
    services: usize,
    backends: usize,
}

impl<'a> Summary<'a> {
    fn of(loaded: &'a Loaded) -> Self {
        let services = &loaded.config.services;
        Self {
            node: &loaded.config.node.name,
            services: services.len(),
            backends: services.iter().map(|s| s.backends.len()).sum(),
        }
    }
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        write!(
            f,
            "{}, {} (node {})",
            plural(self.services, "service"),
            plural(self.backends, "backend"),
            self.node
        )
    }
}

fn print_json(result: &Result<Loaded, ConfigError>) {
    let report = match result {
        Ok(loaded) => Report {
            ok: true,
            problems: &[],
            warnings: &loaded.warnings,
            summary: Some(Summary::of(loaded)),
        },
        Err(err) => Report {
            ok: false,
            problems: &err.problems,
            warnings: &[],
            summary: None,
        },
    };
    match serde_json::to_string_pretty(&report) {
        Ok(text) => println!("{text}"),
        // Only plain strings and numbers are serialized, so this cannot happen; say so if it does.
        Err(err) => eprintln!("error: cannot print the report as JSON: {err}"),
    }
}
