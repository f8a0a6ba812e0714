//! Settings that this version reads and validates but does not act on yet.
//!
//! Kept in one place so that a user is never silently ignored, and so that a
//! line here is deleted when its feature lands.
//!
//! A warning says what the user asked for and did not get. Where a key's
//! documented default is a feature that is not built yet, a file without the
//! key asked for nothing: it gets what it got before the key existed, and no
//! warning, since a warning on every file would teach users to skip warnings.
//! Written in the file, such a key is warned about unless its value is what
//! this version does anyway. The default takes effect when the feature lands.

use super::{
    problem::Warning,
    types::{Config, HaMode},
};

/// Which of the keys below the file sets itself, rather than leaving them to
/// their defaults; filled in by validation, which sees the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub announce_table: bool,
}

pub fn not_yet_enforced(config: &Config, written: &Written) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if config.ha.mode == HaMode::ActiveActive {
        warnings.push(Warning::new(
            "ha.mode",
            format!(
                "\"{}\" is not enforced yet: this version runs \"{}\", in which the active node alone owns the VIPs and serves them",
                HaMode::ActiveActive,
                HaMode::ActiveStandby
            ),
        ));
        // In active-standby the table is unused, which validation says.
        if written.announce_table {
            warnings.push(Warning::new(
                "ha.announce_table",
                format!(
                    "not enforced yet: this version keeps no routes to the VIPs in table {}",
                    config.ha.announce_table
                ),
            ));
        }
    }
    warnings
}
