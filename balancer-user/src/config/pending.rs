//! Settings that this version reads and validates but does not act on yet.
//!
//! Kept in one place so that a user is never silently ignored, and so that a
//! line here is deleted when its feature lands.

use super::{problem::Warning, types::Config};

pub fn not_yet_enforced(_config: &Config) -> Vec<Warning> {
    // Every setting of this version is acted on; one that is read before it is
    // enforced gets a warning here until it is.
    Vec::new()
}
