//! Settings that this version reads and validates but does not act on yet.
//!
//! Kept in one place so that a user is never silently ignored, and so that a
//! line here is deleted when its feature lands.

use super::{problem::Warning, types::Config};

pub fn not_yet_enforced(config: &Config) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut warn = |path: String, message: &str| warnings.push(Warning::new(path, message));

    if config.ha.enabled {
        warn(
            "ha.enabled".into(),
            "high availability comes later: this node runs standalone, owns no floating address and sends no heartbeats",
        );
    }

    warnings
}
