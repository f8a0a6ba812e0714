//! Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624).
//!
//! One's-complement sums do not depend on byte order, so the functions work on
//! values loaded natively from wire bytes: a checksum field read as a native
//! `u16` is updated with addresses and ports read as native `u32`/`u16`.

/// Folds a 64-bit accumulator into 16 bits with end-around carry.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// What a 32-bit word of the covered data changing from `old` to `new` adds
/// to the one's-complement sum. Changes add up, so that a packet's are folded
/// into its checksum once, by [`apply`].
#[inline(always)]
pub fn delta_u32(old: u32, new: u32) -> u64 {
    ((!old) >> 16) as u64 + ((!old) & 0xffff) as u64 + (new >> 16) as u64 + (new & 0xffff) as u64
}

/// [`delta_u32`] for a 16-bit word.
#[inline(always)]
pub fn delta_u16(old: u16, new: u16) -> u64 {
    (!old) as u64 + new as u64
}

/// [`delta_u32`] for an address of `words` words (as read from the wire).
#[inline(always)]
pub fn delta_addr(old: &[u32; 4], new: &[u32; 4], words: usize) -> u64 {
    let mut delta = 0;
    let mut i = 0;
    while i < 4 {
        if i < words {
            delta += delta_u32(old[i], new[i]);
        }
        i += 1;
    }
    delta
}

/// `check` after changes that add up to `delta`.
#[inline(always)]
pub fn apply(check: u16, delta: u64) -> u16 {
    !fold((!check) as u64 + delta)
}

/// `check` after a 32-bit word of the covered data changed from `old` to `new`.
#[inline(always)]
pub fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    apply(check, delta_u32(old, new))
}

/// `check` after a 16-bit word of the covered data changed from `old` to `new`.
#[inline(always)]
pub fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    apply(check, delta_u16(old, new))
}

/// `check` after an address (`words` as read from the wire) changed.
#[inline(always)]
pub fn replace_addr(check: u16, old: &[u32; 4], new: &[u32; 4], words: usize) -> u16 {
    apply(check, delta_addr(old, new, words))
}

/// The checksum of `data` (one's complement of the one's-complement sum of its
/// big-endian 16-bit words), starting from a partial `initial` sum.
pub fn checksum(initial: u64, data: &[u8]) -> u16 {
    !fold(sum_be(initial, data))
}

/// The one's-complement sum of an IPv4 pseudo-header (RFC 793, 768), to start
/// a TCP or UDP checksum of `len` bytes from.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    let sum = sum_be(sum_be(0, &src), &dst);
    sum_be(sum, &[0, proto]) + u64::from(len)
}

/// The one's-complement sum of an IPv6 pseudo-header (RFC 8200 8.1), to start
/// an upper-layer checksum of `len` bytes from.
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, len: u32) -> u64 {
    let sum = sum_be(sum_be(0, &src), &dst);
    sum_be(sum, &len.to_be_bytes()) + u64::from(next_header)
}

/// One's-complement accumulation of `data` as big-endian 16-bit words.
pub fn sum_be(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_header(src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
        let mut h = [
            0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = checksum(0, &h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn full_checksum_of_valid_header_verifies_to_zero() {
        let h = ipv4_header([198, 51, 100, 1], [198, 51, 100, 10]);
        assert_eq!(checksum(0, &h), 0);
    }

    #[test]
    fn incremental_address_update_matches_recomputation() {
        let mut h = ipv4_header([198, 51, 100, 1], [198, 51, 100, 10]);
        let old = u32::from_ne_bytes(h[16..20].try_into().unwrap());
        let new_bytes = [203, 0, 113, 11];
        let new = u32::from_ne_bytes(new_bytes);
        let check = u16::from_ne_bytes([h[10], h[11]]);
        let updated = replace_u32(check, old, new);
        h[16..20].copy_from_slice(&new_bytes);
        h[10..12].copy_from_slice(&updated.to_ne_bytes());
        assert_eq!(checksum(0, &h), 0);
        assert_eq!(h, ipv4_header([198, 51, 100, 1], new_bytes));
    }

    #[test]
    fn incremental_u16_update_matches_recomputation() {
        let mut h = ipv4_header([1, 2, 3, 4], [5, 6, 7, 8]);
        for ttl in (1..=64u8).rev() {
            let old = u16::from_ne_bytes([h[8], h[9]]);
            h[8] = ttl;
            let new = u16::from_ne_bytes([h[8], h[9]]);
            let c = replace_u16(u16::from_ne_bytes([h[10], h[11]]), old, new);
            h[10..12].copy_from_slice(&c.to_ne_bytes());
            assert_eq!(checksum(0, &h), 0, "ttl {ttl}");
        }
    }

    #[test]
    fn deltas_folded_once_equal_changes_applied_one_by_one() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..10_000 {
            let check = next() as u16;
            let (o1, n1, o2, n2) = (next() as u32, next() as u32, next() as u32, next() as u32);
            let (o3, n3) = (next() as u16, next() as u16);
            let one_by_one = replace_u16(replace_u32(replace_u32(check, o1, n1), o2, n2), o3, n3);
            let summed = apply(
                check,
                delta_u32(o1, n1) + delta_u32(o2, n2) + delta_u16(o3, n3),
            );
            assert_eq!(summed, one_by_one, "check {check:#x}");
        }
    }

    #[test]
    fn pseudo_headers_sum_their_fields() {
        // 198.51.100.2 -> 203.0.113.11, TCP, 20 bytes
        let v4 = pseudo_header_v4([198, 51, 100, 2], [203, 0, 113, 11], 6, 20);
        assert_eq!(v4, 0xc633 + 0x6402 + 0xcb00 + 0x710b + 6 + 20);
        let mut src = [0u8; 16];
        src[15] = 1;
        let mut dst = [0u8; 16];
        dst[0] = 0xff;
        dst[15] = 2;
        assert_eq!(pseudo_header_v6(src, dst, 58, 32), 1 + 0xff00 + 2 + 32 + 58);
    }

    #[test]
    fn odd_length_data_pads_with_zero() {
        assert_eq!(sum_be(0, &[0x12]), 0x1200);
        assert_eq!(sum_be(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
