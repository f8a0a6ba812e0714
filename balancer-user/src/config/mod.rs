//! The configuration file: reading, validation, and the resulting [`Config`].
//!
//! `balancer check` and the daemon both go through [`load`], so a file that
//! checks clean is exactly a file the daemon accepts. A refused file yields
//! every problem found, each with its key path and line where known.
//!
//! Layers: `read` walks the TOML document into the `raw` shapes (syntax, unknown
//! keys, types), `validate` turns those into [`Config`] (values, limits,
//! consistency), `pending` lists accepted settings that are not acted on yet.

mod addr;
mod problem;
mod raw;
mod read;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use problem::{ConfigError, Problem, Warning};
pub use types::*;

/// Services the data plane of this version holds (its map size), not a limit of the file format.
pub const MAX_SERVICES: usize = balancer_common::service::MAX_SERVICES as usize;
/// Backends of all services together that the data plane of this version holds.
pub const MAX_BACKENDS: usize = balancer_common::service::MAX_BACKENDS as usize;
/// Backends per service that the data plane of this version holds.
pub const MAX_BACKENDS_PER_SERVICE: usize =
    balancer_common::service::MAX_BACKENDS_PER_SERVICE as usize;
/// Largest backend weight the data plane of this version computes with.
pub const MAX_WEIGHT: u32 = balancer_common::sched::MAX_WEIGHT;
/// SNAT addresses per family that the data plane of this version uses.
pub const MAX_SNAT_ADDRS: usize = balancer_common::service::MAX_SNAT_ADDRS as usize;
/// Interfaces the data plane of this version can redirect to.
pub const MAX_INTERFACES: usize = balancer_common::service::MAX_INTERFACES as usize;

/// An accepted configuration and what the user should be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// Validation remarks: accepted, but worth telling.
    pub warnings: Vec<Warning>,
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        problems: vec![Problem::new(
            path.display().to_string(),
            None,
            format!("cannot read the configuration: {err}"),
        )],
    })?;
    parse(&text)
}

/// Validates a configuration given as TOML text.
pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
    let lines = problem::Lines::new(text);
    let (raw, mut problems) = read::read(text, &lines);
    let Some(raw) = raw else {
        return Err(ConfigError { problems });
    };
    let outcome = validate::validate(raw, &lines);
    problems.extend(outcome.problems);
    match outcome.config {
        Some(config) if problems.is_empty() => Ok(Loaded {
            config,
            warnings: outcome.warnings,
        }),
        _ => {
            // In file order, which is how a user fixes them; those without a line last.
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(ConfigError { problems })
        }
    }
}
