//! The SYN proxy's keys and auto mode, seen from the daemon.
//!
//! Keys: one SipHash key per period of `cookie::COOKIE_PERIOD_S` seconds of
//! the wall clock, kept in `SYN_COOKIE_KEYS` for the previous, current and
//! next period (a cookie is accepted from any of the three; see
//! `balancer_common::cookie`). Where the key comes from:
//!
//! - with high availability, derived from `ha.auth_key_file`'s key:
//!   `HMAC-SHA256(auth key, "balancer syncookie" || period as 8 bytes
//!   big-endian)`, its first 16 bytes. Every node of the pair computes the
//!   same key for the same period, so a cookie one issued validates on the
//!   other, and nothing secret crosses the network; a peer that starts late,
//!   or a fresh host that replaces one, has them at once. The nodes' clocks
//!   must agree to within a period (they must already, for the adverts).
//! - standalone, random for each period, drawn when the period's slot is
//!   first written. The slots are pinned with the other maps, so a restarted
//!   daemon keeps the keys of cookies already issued.
//!
//! Auto mode is decided by the program itself (`balancer-ebpf/src/flood.rs`);
//! the daemon watches `SYN_FLOOD` to report when cookies come on and go off.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use balancer_common::{cookie::CookieKey, global::SynFlood};

/// Where the keys come from.
#[derive(Clone)]
pub enum Secret {
    /// The HA peers' shared key: every node derives the same keys.
    Shared(Vec<u8>),
    /// This node's own: a random key per period.
    Local,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Shared(_) => f.write_str("Shared(..)"),
            Secret::Local => f.write_str("Local"),
        }
    }
}

const LABEL: &[u8] = b"balancer syncookie";

/// The key of `period` derived from a shared secret.
pub fn derive(shared: &[u8], period: u32) -> CookieKey {
    let mut mac = Hmac::<Sha256>::new_from_slice(shared).expect("HMAC takes keys of any length");
    mac.update(LABEL);
    mac.update(&u64::from(period).to_be_bytes());
    let out = mac.finalize().into_bytes();
    CookieKey {
        period,
        valid: 1,
        k0: u64::from_le_bytes(out[0..8].try_into().expect("8 bytes")),
        k1: u64::from_le_bytes(out[8..16].try_into().expect("8 bytes")),
    }
}

/// A random key for `period`, from the kernel's generator.
pub fn random(period: u32) -> std::io::Result<CookieKey> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled part of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(CookieKey {
        period,
        valid: 1,
        k0: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
        k1: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    })
}

impl Secret {
    /// The key to write to the slot of `period`, which holds `slot` now;
    /// `None` when it holds the right one already.
    pub fn key_for(&self, period: u32, slot: CookieKey) -> std::io::Result<Option<CookieKey>> {
        match self {
            Secret::Shared(secret) => {
                let want = derive(secret, period);
                Ok((slot != want).then_some(want))
            }
            Secret::Local if slot.valid != 0 && slot.period == period => Ok(None),
            Secret::Local => random(period).map(Some),
        }
    }
}

/// The periods whose keys must be in place during `period`.
pub fn periods_around(period: u32) -> [u32; 3] {
    [period.wrapping_sub(1), period, period.wrapping_add(1)]
}

/// What the daemon last saw of auto mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watch {
    pub active: bool,
    /// Activations the program counted when last looked at.
    pub activations: u64,
}

impl Watch {
    /// Looks at `SYN_FLOOD` at `now_ns` (the program's clock): `Some(on)` when
    /// cookies came on or went off since the last look (a spell too short to
    /// be seen on is reported as on, then off at the next look).
    pub fn observe(&mut self, flood: SynFlood, now_ns: u64) -> Option<bool> {
        let active = flood.active_until_ns > now_ns;
        let missed = flood.activations > self.activations && !self.active && !active;
        self.activations = flood.activations;
        if missed {
            // Came on and went off between two looks: say it went on; the
            // next look says off.
            self.active = true;
            return Some(true);
        }
        if active == self.active {
            return None;
        }
        self.active = active;
        Some(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_keys_are_the_same_everywhere_and_differ_by_period() {
        let a = derive(b"0123456789abcdef", 100);
        let b = derive(b"0123456789abcdef", 100);
        assert_eq!(a, b);
        assert_eq!(a.period, 100);
        assert_eq!(a.valid, 1);
        assert_ne!((a.k0, a.k1), (derive(b"0123456789abcdef", 101).k0, 0));
        assert_ne!(a, derive(b"fedcba9876543210", 100));
    }

    #[test]
    fn a_slot_holding_the_right_key_is_left_alone() {
        let shared = Secret::Shared(b"0123456789abcdef".to_vec());
        let key = derive(b"0123456789abcdef", 7);
        assert_eq!(shared.key_for(7, key).unwrap(), None);
        assert_eq!(
            shared.key_for(8, key).unwrap(),
            Some(derive(b"0123456789abcdef", 8))
        );
        let local = Secret::Local;
        let mine = local.key_for(7, CookieKey::default()).unwrap().unwrap();
        assert_eq!((mine.period, mine.valid), (7, 1));
        assert_eq!(local.key_for(7, mine).unwrap(), None, "a restart keeps it");
        let next = local.key_for(8, mine).unwrap().unwrap();
        assert_ne!((next.k0, next.k1), (mine.k0, mine.k1));
    }

    #[test]
    fn periods_around_wrap() {
        assert_eq!(periods_around(0), [u32::MAX, 0, 1]);
    }

    #[test]
    fn auto_mode_changes_are_reported_once() {
        let mut w = Watch::default();
        let off = SynFlood::default();
        assert_eq!(w.observe(off, 100), None);
        let on = SynFlood {
            active_until_ns: 200,
            activations: 1,
        };
        assert_eq!(w.observe(on, 100), Some(true));
        assert_eq!(w.observe(on, 150), None);
        assert_eq!(w.observe(on, 250), Some(false));
        assert_eq!(w.observe(on, 300), None);
        // On and off again between two looks.
        let brief = SynFlood {
            active_until_ns: 400,
            activations: 2,
        };
        assert_eq!(w.observe(brief, 500), Some(true));
        assert_eq!(w.observe(brief, 600), Some(false));
    }
}
