//! Backend choice arithmetic shared by the program and its tests.

/// Largest configurable weight; keeps [`less_busy`]'s products within 64 bits.
pub const MAX_WEIGHT: u32 = 65_535;

/// Load percentage written by the daemon at which a backend takes nothing new.
pub const LOAD_FULL: u32 = 100;

/// Share of new flows a backend may take: its weight scaled by its free capacity.
#[inline(always)]
pub fn capacity(weight: u32, load_pct: u32) -> u64 {
    if load_pct >= LOAD_FULL {
        0
    } else {
        weight as u64 * (LOAD_FULL - load_pct) as u64
    }
}

/// Whether a backend with `a_active` connections and capacity `a_cap` is less
/// busy than one with `b_active` and `b_cap` (active/capacity, compared without
/// division). Equal load is not "less", so the first one seen in a rotating scan
/// keeps ties.
#[inline(always)]
pub fn less_busy(a_active: u64, a_cap: u64, b_active: u64, b_cap: u64) -> bool {
    // capacity <= MAX_WEIGHT * 100 < 2^23 and counts are clamped to 2^32, so the
    // products fit; BPF has no 128-bit multiply.
    let a = if a_active > u32::MAX as u64 {
        u32::MAX as u64
    } else {
        a_active
    };
    let b = if b_active > u32::MAX as u64 {
        u32::MAX as u64
    } else {
        b_active
    };
    a * b_cap < b * a_cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_connections_per_weight_is_less_busy() {
        // 3 on weight 100 vs 2 on weight 50: 0.03 < 0.04
        assert!(less_busy(3, capacity(100, 0), 2, capacity(50, 0)));
        assert!(!less_busy(2, capacity(50, 0), 3, capacity(100, 0)));
    }

    #[test]
    fn ties_are_not_less_busy() {
        assert!(!less_busy(0, 100, 0, 100));
        assert!(!less_busy(4, 100, 4, 100));
    }

    #[test]
    fn reported_load_reduces_capacity() {
        assert_eq!(capacity(100, 50), capacity(50, 0));
        assert_eq!(capacity(100, 100), 0);
        assert_eq!(capacity(100, 250), 0);
        // same connections, busier host is more busy
        assert!(less_busy(2, capacity(100, 0), 2, capacity(100, 60)));
    }
}
