//! Backend choice arithmetic shared by the program and its tests.

use crate::flow::FlowKey;

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

/// A hash of a flow's 5-tuple that is the same on every node and every run, so
/// that Maglev sends a flow whose state was lost (a restart, a failover) to the
/// backend it had. Murmur3's mixing of the key's 32-bit words.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    let words = [
        key.src[0],
        key.src[1],
        key.src[2],
        key.src[3],
        key.dst[0],
        key.dst[1],
        key.dst[2],
        key.dst[3],
        (key.sport_be as u32) << 16 | key.dport_be as u32,
        (key.proto as u32) << 8 | key.family as u32,
    ];
    let mut i = 0;
    while i < words.len() {
        let mut k = words[i].wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    h ^= 40;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
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
    fn flow_hash_depends_on_every_field_and_nothing_else() {
        let key = FlowKey {
            src: [0x0264_33c6, 0, 0, 0],
            dst: [0x0a64_33c6, 0, 0, 0],
            sport_be: 51000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let h = flow_hash(&key);
        assert_eq!(h, flow_hash(&key.clone()), "deterministic");
        let variants = [
            FlowKey {
                src: [1, 0, 0, 0],
                ..key
            },
            FlowKey {
                dst: [1, 0, 0, 0],
                ..key
            },
            FlowKey { sport_be: 1, ..key },
            FlowKey { dport_be: 1, ..key },
            FlowKey { proto: 17, ..key },
            FlowKey { family: 6, ..key },
        ];
        for v in variants {
            assert_ne!(flow_hash(&v), h, "{v:?}");
        }
        assert_eq!(
            flow_hash(&FlowKey {
                _pad: [9, 9],
                ..key
            }),
            h,
            "padding ignored"
        );
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
