//! Settings that this version reads and validates but does not act on yet.
//!
//! Kept in one place so that a user is never silently ignored, and so that a
//! line here is deleted when its feature lands.
//!
//! A warning says what the user asked for and did not get. Where a key's
//! documented default is a feature that is not built yet (`syn_cookies` is
//! `auto`, `tcp_syn_timeout_s` is 5), a file without the key asked for nothing:
//! it gets what it got before the key existed, and no warning, since a warning on
//! every file would teach users to skip warnings. Written in the file, such a key
//! is warned about unless its value is what this version does anyway
//! (`syn_cookies = "off"`). The default takes effect when the feature lands.

use super::{
    problem::Warning,
    types::{Config, SynCookies},
};

/// Which of the keys below the file sets itself, rather than leaving them to
/// their defaults; filled in by validation, which sees the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub tcp_syn_timeout_s: bool,
    pub syn_cookies: bool,
}

pub fn not_yet_enforced(config: &Config, written: &Written) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if written.tcp_syn_timeout_s {
        warnings.push(Warning::new(
            "flows.tcp_syn_timeout_s",
            format!(
                "not enforced yet: this version expires a flow whose handshake has not completed after flows.tcp_transitory_timeout_s ({} s), like a closing one",
                config.flows.tcp_transitory_timeout_s
            ),
        ));
    }
    let cookies = config.firewall.syn_cookies;
    if written.syn_cookies && cookies != SynCookies::Off {
        warnings.push(Warning::new(
            "firewall.syn_cookies",
            format!(
                "\"{cookies}\" is not enforced yet: this version answers no SYN with a cookie; every SYN to a VIP opens a flow at once, as with \"off\""
            ),
        ));
    }
    warnings
}
