//! `GLOBAL`: program-wide settings the daemon writes, one `u32` per
//! [`Global`] index.

/// Declares [`Global`] and [`GLOBAL_ENTRIES`] from one list.
macro_rules! globals {
    ($($(#[$doc:meta])* $variant:ident,)+) => {
        /// Indexes of `GLOBAL`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Global {
            $($(#[$doc])* $variant,)+
        }

        impl Global {
            pub const ALL: [Global; GLOBAL_ENTRIES as usize] = [$(Global::$variant,)+];

            pub const fn index(self) -> u32 {
                self as u32
            }
        }

        pub const GLOBAL_ENTRIES: u32 = [$(stringify!($variant),)+].len() as u32;
    };
}

globals! {
    /// `GLOBAL_F_*` flags for the whole program.
    Flags,
    /// New connections per second per source address (0 = unlimited).
    Rate,
    /// Their burst.
    Burst,
    /// Number of IPv4 SNAT addresses in `SNAT_POOL`.
    SnatV4,
    /// Number of IPv6 SNAT addresses in `SNAT_POOL`.
    SnatV6,
    /// The `LAYOUT_VERSION` of the daemon that created the maps: pinned maps
    /// of another layout are refused rather than misread.
    Layout,
    /// `firewall.syn_cookies`: [`SYN_COOKIES_OFF`], [`SYN_COOKIES_AUTO`] or
    /// [`SYN_COOKIES_ALWAYS`].
    SynCookies,
    /// Auto mode: half-open flows (opened less completed) the node may see in
    /// one [`SYN_FLOOD_WINDOW_NS`] before SYNs are answered with cookies
    /// (`firewall.syn_flood_threshold`, per window).
    SynFloodLimit,
    /// Auto mode: how long cookies stay on once the flood has fallen below
    /// half the limit, in milliseconds (`firewall.syn_flood_cooldown_s`).
    SynFloodCooldownMs,
    /// The current cookie key period (`cookie::period_at`), written by the
    /// daemon after the period's key.
    SynCookiePeriod,
    /// The MSS the SYN proxy announces to IPv4 clients; the program lowers it
    /// to a backend's that is lower. 0: 1460.
    SynMssV4,
    /// The same for IPv6. 0: 1440.
    SynMssV6,
}

/// Some service uses DNAT: packets not addressed to us are also looked up by source.
pub const GLOBAL_F_DNAT: u32 = 1 << 0;
/// `firewall.default = "deny"`.
pub const GLOBAL_F_DEFAULT_DENY: u32 = 1 << 1;
/// High availability with flow sync: flow changes go to `FLOW_EVENTS`.
pub const GLOBAL_F_SYNC: u32 = 1 << 2;
/// `firewall.deny` has rules: new flows look their source up in it (without,
/// the lookup is skipped).
pub const GLOBAL_F_BLOCK_LIST: u32 = 1 << 3;
/// `firewall.allow` has rules, likewise.
pub const GLOBAL_F_ALLOW_LIST: u32 = 1 << 4;

/// [`Global::SynCookies`] values.
pub const SYN_COOKIES_OFF: u32 = 0;
pub const SYN_COOKIES_AUTO: u32 = 1;
pub const SYN_COOKIES_ALWAYS: u32 = 2;

/// The window in which auto mode counts half-open flows, per CPU.
pub const SYN_FLOOD_WINDOW_NS: u64 = 100_000_000;
/// Windows per second.
pub const SYN_FLOOD_WINDOWS_PER_S: u32 = 10;

/// [`Global::SynFloodLimit`] for a threshold of `per_second` half-open
/// flows: one window's worth, at least 1.
pub const fn syn_flood_window_limit(per_second: u32) -> u32 {
    let limit = per_second.div_ceil(SYN_FLOOD_WINDOWS_PER_S);
    if limit == 0 { 1 } else { limit }
}

/// Value of `SYN_FLOOD`, written by the program: whether auto mode answers
/// SYNs with cookies (until `active_until_ns`, `bpf_ktime_get_coarse_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynFlood {
    /// Cookies are on until then; a CPU that still sees the flood (above half
    /// the limit) pushes it on by the cooldown.
    pub active_until_ns: u64,
    /// Times cookies came on (from off).
    pub activations: u64,
}
const _: () = assert!(core::mem::size_of::<SynFlood>() == 16);

crate::user_pod!(SynFlood);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_limits_are_a_window_of_the_threshold() {
        assert_eq!(syn_flood_window_limit(1000), 100);
        assert_eq!(syn_flood_window_limit(1), 1);
        assert_eq!(syn_flood_window_limit(1001), 101);
        assert_eq!(syn_flood_window_limit(100_000_000), 10_000_000);
    }

    #[test]
    fn indexes_are_dense() {
        for (i, g) in Global::ALL.iter().enumerate() {
            assert_eq!(g.index() as usize, i);
        }
    }
}
