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
}

/// Some service uses DNAT: packets not addressed to us are also looked up by source.
pub const GLOBAL_F_DNAT: u32 = 1 << 0;
/// `firewall.default = "deny"`.
pub const GLOBAL_F_DEFAULT_DENY: u32 = 1 << 1;
/// High availability with flow sync: flow changes go to `FLOW_EVENTS`.
pub const GLOBAL_F_SYNC: u32 = 1 << 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense() {
        for (i, g) in Global::ALL.iter().enumerate() {
            assert_eq!(g.index() as usize, i);
        }
    }
}
