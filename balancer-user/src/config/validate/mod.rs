//! Turns the raw shapes into a [`Config`], collecting every problem and warning.
//!
//! Each check runs even when an earlier one failed, so that a refusal lists
//! everything to fix; values that failed are replaced by defaults only to keep
//! going, and the result is used only when there was no problem at all.

mod host;
mod service;

use std::{
    collections::{HashMap, hash_map::Entry},
    hash::Hash,
    net::IpAddr,
    path::PathBuf,
};

use ipnet::IpNet;
use toml::Spanned;

use super::{
    addr,
    problem::{Lines, Problem, Warning},
    raw::{RawConfig, Text},
    types::Config,
};

pub(super) struct Outcome {
    /// `Some` only when there is no problem.
    pub config: Option<Config>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Warning>,
}

pub(super) fn validate(raw: RawConfig, lines: &Lines) -> Outcome {
    let mut check = Checker {
        lines,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let node = check.node(raw.node);
    let control = check.control(raw.control);
    let flows = check.flows(raw.flows);
    let firewall = check.firewall(raw.firewall);
    let ha = check.ha(raw.ha, node.as_ref());
    let services = check.services(raw.services, node.as_ref());
    let config = match (node, services) {
        (Some(node), Some(services)) if check.problems.is_empty() => Some(Config {
            node,
            control,
            flows,
            firewall,
            ha,
            services,
        }),
        _ => None,
    };
    Outcome {
        config,
        problems: check.problems,
        warnings: check.warnings,
    }
}

struct Checker<'a> {
    lines: &'a Lines,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

/// Remembers where each key was first seen, to name it when it comes again.
struct Seen<K>(HashMap<K, usize>);

impl<K: Eq + Hash> Seen<K> {
    fn new() -> Self {
        Self(HashMap::new())
    }

    /// The index where `key` was seen before, or `None` (and remembers `index`).
    fn earlier(&mut self, key: K, index: usize) -> Option<usize> {
        match self.0.entry(key) {
            Entry::Occupied(first) => Some(*first.get()),
            Entry::Vacant(slot) => {
                slot.insert(index);
                None
            }
        }
    }
}

impl Checker<'_> {
    fn error(&mut self, path: impl Into<String>, line: Option<usize>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, line, message));
    }

    fn error_at<T>(
        &mut self,
        path: impl Into<String>,
        at: &Spanned<T>,
        message: impl Into<String>,
    ) {
        let line = self.line(at);
        self.error(path, line, message);
    }

    /// Reports a required key as missing, unless it was there but refused (and reported).
    fn missing(&mut self, refused: &[String], path: &str, line: Option<usize>, message: &str) {
        let key = path.rsplit('.').next().unwrap_or(path);
        if !refused.iter().any(|r| r == key) {
            self.error(path, line, format!("missing: {message}"));
        }
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning::new(path, message));
    }

    fn line<T>(&self, at: &Spanned<T>) -> Option<usize> {
        Some(self.lines.line(at.span().start))
    }

    fn non_empty(&mut self, path: &str, text: Text) -> String {
        if text.get_ref().trim().is_empty() {
            self.error_at(path, &text, "must not be empty");
        }
        text.into_inner()
    }

    fn path(&mut self, path: &str, text: Option<Text>, default: PathBuf) -> PathBuf {
        text.map_or(default, |text| PathBuf::from(self.non_empty(path, text)))
    }

    fn port(&mut self, path: &str, port: &Spanned<i64>) -> Option<u16> {
        match u16::try_from(*port.get_ref()) {
            Ok(0) | Err(_) => {
                self.error_at(
                    path,
                    port,
                    format!("port {} is out of range 1-65535", port.get_ref()),
                );
                None
            }
            Ok(port) => Some(port),
        }
    }

    /// A count or duration where 0 would make no sense.
    fn at_least_one(&mut self, path: &str, value: Option<Spanned<u32>>, default: u32) -> u32 {
        match value {
            None => default,
            Some(value) => {
                if *value.get_ref() == 0 {
                    self.error_at(path, &value, "must be at least 1");
                }
                value.into_inner()
            }
        }
    }

    fn ips(&mut self, path: &str, list: Option<Vec<Text>>) -> Vec<IpAddr> {
        let mut seen = Seen::new();
        let mut ips = Vec::new();
        for (i, text) in list.unwrap_or_default().iter().enumerate() {
            match addr::ip(text.get_ref()) {
                Err(message) => self.error_at(format!("{path}[{i}]"), text, message),
                Ok(ip) => match seen.earlier(ip, i) {
                    Some(j) => self.error_at(
                        format!("{path}[{i}]"),
                        text,
                        format!("{ip} is listed twice (also {path}[{j}])"),
                    ),
                    None => ips.push(ip),
                },
            }
        }
        ips
    }

    fn networks(&mut self, path: &str, list: Option<Vec<Text>>) -> Vec<IpNet> {
        let mut seen = Seen::new();
        let mut nets = Vec::new();
        for (i, text) in list.unwrap_or_default().iter().enumerate() {
            match addr::network(text.get_ref()) {
                Err(message) => self.error_at(format!("{path}[{i}]"), text, message),
                Ok(net) => {
                    if let Some(j) = seen.earlier(net, i) {
                        self.warn(
                            format!("{path}[{i}]"),
                            format!("{net} is listed twice (also {path}[{j}])"),
                        );
                    }
                    nets.push(net);
                }
            }
        }
        nets
    }

    fn interface_names(&mut self, path: &str, list: Vec<Text>) -> Vec<String> {
        let mut seen = Seen::new();
        let mut names = Vec::new();
        for (i, name) in list.into_iter().enumerate() {
            let item = format!("{path}[{i}]");
            if let Err(message) = interface_name(name.get_ref()) {
                self.error_at(item, &name, message);
            } else if let Some(j) = seen.earlier(name.get_ref().clone(), i) {
                let message = format!("`{}` is listed twice (also {path}[{j}])", name.get_ref());
                self.error_at(item, &name, message);
            } else {
                names.push(name.into_inner());
            }
        }
        names
    }
}

/// Linux's rules for a network device name (`dev_valid_name`).
fn interface_name(name: &str) -> Result<(), String> {
    // IFNAMSIZ is 16 including the terminating NUL.
    const MAX_LEN: usize = 15;
    if name.is_empty() {
        Err("an interface name must not be empty".to_owned())
    } else if name.len() > MAX_LEN {
        Err(format!(
            "`{name}` is longer than the {MAX_LEN} bytes Linux allows for an interface name"
        ))
    } else if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        Err(format!("`{name}` is not a valid interface name"))
    } else {
        Ok(())
    }
}
