//! SYN cookies: the SYN proxy's initial sequence number, which proves that
//! the client of a later ACK received the SYN-ACK it answers, so that no
//! state is kept (and no SNAT port taken) for a SYN.
//!
//! Layout of a cookie (32 bits):
//!
//! ```text
//!  31 30 29                                                      0
//! [period][(SipHash(key of the period, 4-tuple, client ISN) + data × 2^23) mod 2^30]
//! ```
//!
//! `period` is the low two bits of the key period the cookie was made in
//! ([`COOKIE_PERIOD_S`]). `data` is what the SYN asked for and the SYN to the
//! backend must carry (7 bits): the index of the client's MSS in the MSS table
//! (2 bits), its window scale (4 bits, [`NO_WSCALE`] for none) and whether it
//! permits SACK (1 bit). A check subtracts the hash again and accepts what is
//! left only when its low 23 bits are 0: a forged cookie passes with a
//! probability of 2^-23, as Linux's (2^-24 less its MSS index), and no
//! neighbour of a valid cookie is valid. The hash is SipHash-2-4 with a
//! 128-bit key per period; the low 30 bits of a cookie are as unpredictable as
//! the hash, so the balancer's initial sequence numbers are too.
//!
//! Keys: one per period, in `SYN_COOKIE_KEYS` at `period % COOKIE_KEY_SLOTS`,
//! each holding the period it is for. A cookie is accepted when its period is
//! the checking node's current one or next to it (one period of clock skew
//! between HA peers either way, and a cookie lives one to two periods).
//!
//! What a client loses (as with Linux's cookies without timestamps, and DPVS's
//! SYN proxy): no TCP timestamps (no PAWS, no RTT samples from them), its MSS
//! rounded down to the table's, no ECN, no TCP Fast Open; and data sent before
//! the backend has answered is dropped once (the client retransmits it).
//! Window scaling and SACK are kept.

/// Seconds per key period.
pub const COOKIE_PERIOD_S: u64 = 60;
/// Slots of `SYN_COOKIE_KEYS`: the previous, current and next period's keys,
/// and one being replaced.
pub const COOKIE_KEY_SLOTS: u32 = 4;
/// A client's SYN without a window scale option (the cookie's field).
pub const NO_WSCALE: u8 = 15;
/// The largest window scale TCP allows (RFC 7323).
pub const MAX_WSCALE: u8 = 14;
/// The window scale the SYN-ACK announces to a client that scales: Linux's
/// for its default buffers, which backends most often have. A backend that
/// answers with another has its windows rescaled on the way to the client.
pub const PROXY_WSCALE: u8 = 7;
/// MSS values a cookie can carry (index in 2 bits): Linux's tables. A
/// client's MSS is rounded down to one of them (up to the first).
pub const MSS_V4: [u16; 4] = [536, 1300, 1440, 1460];
pub const MSS_V6: [u16; 4] = [1220, 1420, 1440, 8940];

const HASH_BITS: u32 = 30;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
/// The data's place: the top 7 of the 30 bits.
const DATA_SHIFT: u32 = 23;
const CHECK_MASK: u32 = (1 << DATA_SHIFT) - 1;

/// A period's SipHash key (`SYN_COOKIE_KEYS` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieKey {
    /// The period (seconds since the Unix epoch / [`COOKIE_PERIOD_S`]) it is
    /// for; a slot whose period is not the one looked for holds no key for it.
    pub period: u32,
    /// 1 once written (a zeroed slot holds no key).
    pub valid: u32,
    pub k0: u64,
    pub k1: u64,
}
const _: () = assert!(core::mem::size_of::<CookieKey>() == 24);

crate::user_pod!(CookieKey);

/// What a cookie carries of the client's SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieData {
    /// Index into [`MSS_V4`] or [`MSS_V6`].
    pub mss_index: u8,
    /// The client's window scale, or [`NO_WSCALE`].
    pub wscale: u8,
    pub sack: bool,
}

impl CookieData {
    /// The data of a SYN with these options (`mss` 0: none, which TCP reads
    /// as 536 for IPv4 and 1220 for IPv6).
    #[inline(always)]
    pub fn of_syn(mss: u16, wscale: u8, sack: bool, v6: bool) -> Self {
        let table = if v6 { &MSS_V6 } else { &MSS_V4 };
        let mut mss_index = 0u8;
        if mss >= table[1] {
            mss_index = 1;
        }
        if mss >= table[2] {
            mss_index = 2;
        }
        if mss >= table[3] {
            mss_index = 3;
        }
        let wscale = if wscale > MAX_WSCALE && wscale != NO_WSCALE {
            MAX_WSCALE
        } else {
            wscale
        };
        Self {
            mss_index,
            wscale,
            sack,
        }
    }

    /// The MSS the SYN to the backend announces for the client.
    #[inline(always)]
    pub fn mss(self, v6: bool) -> u16 {
        let table = if v6 { &MSS_V6 } else { &MSS_V4 };
        table[(self.mss_index & 3) as usize]
    }

    #[inline(always)]
    pub const fn bits(self) -> u32 {
        (self.mss_index as u32 & 3) | (self.wscale as u32 & 15) << 2 | (self.sack as u32) << 6
    }

    #[inline(always)]
    pub const fn from_bits(bits: u32) -> Self {
        Self {
            mss_index: (bits & 3) as u8,
            wscale: ((bits >> 2) & 15) as u8,
            sack: (bits >> 6) & 1 != 0,
        }
    }
}

/// The cookie for a SYN whose 4-tuple and ISN hash to `hash` under the key of
/// `period`.
#[inline(always)]
pub const fn make(hash: u32, period: u32, data: CookieData) -> u32 {
    (period & 3) << HASH_BITS | (hash.wrapping_add(data.bits() << DATA_SHIFT) & HASH_MASK)
}

/// The period bits of a cookie.
#[inline(always)]
pub const fn period_bits(cookie: u32) -> u32 {
    cookie >> HASH_BITS
}

/// The full period a cookie of `bits` was made in, seen from `current`: the
/// previous, current or next period whose low bits they are, or `None`.
#[inline(always)]
pub const fn period_of(bits: u32, current: u32) -> Option<u32> {
    let candidate = current.wrapping_add(1);
    if candidate & 3 == bits {
        return Some(candidate);
    }
    if current & 3 == bits {
        return Some(current);
    }
    let candidate = current.wrapping_sub(1);
    if candidate & 3 == bits {
        return Some(candidate);
    }
    None
}

/// What `cookie` carries, if `hash` (its tuple and ISN under its period's
/// key) proves it ours.
#[inline(always)]
pub const fn check(cookie: u32, hash: u32) -> Option<CookieData> {
    let rest = cookie.wrapping_sub(hash) & HASH_MASK;
    if rest & CHECK_MASK != 0 {
        return None;
    }
    Some(CookieData::from_bits(rest >> DATA_SHIFT))
}

/// The SipHash input of an IPv4 SYN: addresses and ports as read from the
/// wire (native loads of wire-order bytes), and the client's ISN (host order).
#[inline(always)]
pub const fn words_v4(src: u32, dst: u32, sport_be: u16, dport_be: u16, isn: u32) -> [u64; 2] {
    [
        (src as u64) << 32 | dst as u64,
        (sport_be as u64) << 48 | (dport_be as u64) << 32 | isn as u64,
    ]
}

/// The same for IPv6 (addresses as four wire-order words each).
#[inline(always)]
pub const fn words_v6(
    src: &[u32; 4],
    dst: &[u32; 4],
    sport_be: u16,
    dport_be: u16,
    isn: u32,
) -> [u64; 5] {
    [
        (src[0] as u64) << 32 | src[1] as u64,
        (src[2] as u64) << 32 | src[3] as u64,
        (dst[0] as u64) << 32 | dst[1] as u64,
        (dst[2] as u64) << 32 | dst[3] as u64,
        (sport_be as u64) << 48 | (dport_be as u64) << 32 | isn as u64,
    ]
}

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of `N` 64-bit words (a message of `8 * N` bytes, the words
/// little-endian as the reference implementation reads them).
#[inline(always)]
pub fn siphash24<const N: usize>(k0: u64, k1: u64, m: &[u64; N]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut i = 0;
    while i < N {
        v[3] ^= m[i];
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^= m[i];
        i += 1;
    }
    let b = ((N as u64 * 8) & 0xff) << 56;
    v[3] ^= b;
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The window a backend's segment advertises (raw, scaled by `backend`) as
/// the client reads it (scaled by `announced`), at most 65,535.
#[inline(always)]
pub fn rescale_window(raw: u16, backend: u8, announced: u8) -> u16 {
    let bytes = (raw as u64) << (backend & 15);
    let out = bytes >> (announced & 15);
    if out > 0xffff { 0xffff } else { out as u16 }
}

/// The period (seconds since the Unix epoch / [`COOKIE_PERIOD_S`]) of `unix_s`.
pub const fn period_at(unix_s: u64) -> u32 {
    (unix_s / COOKIE_PERIOD_S) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vectors of the SipHash paper (Appendix A): key 00..0f,
    /// messages 00, 00 01, ... of 8 and 16 bytes.
    #[test]
    fn siphash_matches_the_reference_vectors() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let m0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let m1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(siphash24(k0, k1, &[m0]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(k0, k1, &[m0, m1]), 0x3f2a_cc7f_57c2_9bdb);
        assert_eq!(siphash24::<0>(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn a_cookie_checks_with_its_hash_only() {
        let data = CookieData::of_syn(1460, 7, true, false);
        assert_eq!(
            data,
            CookieData {
                mss_index: 3,
                wscale: 7,
                sack: true
            }
        );
        for hash in [0, 1, 0x3fff_ffff, 0x1234_5678, u32::MAX] {
            let cookie = make(hash, 5, data);
            assert_eq!(period_bits(cookie), 1);
            assert_eq!(check(cookie, hash), Some(data));
            let mut wrong = 0;
            for other in 0..10_000u32 {
                let h = hash ^ other.wrapping_mul(0x9e37_79b9);
                if h != hash && check(cookie, h).is_some() {
                    wrong += 1;
                }
            }
            assert!(wrong <= 2, "{wrong} other hashes accepted");
            for near in 1..=1000u32 {
                assert_eq!(check(cookie.wrapping_add(near), hash), None);
                assert_eq!(check(cookie.wrapping_sub(near), hash), None);
            }
        }
    }

    #[test]
    fn cookies_live_from_the_previous_to_the_next_period() {
        for current in [0u32, 1, 2, 3, 1000, u32::MAX] {
            for (offset, ok) in [(-1i64, true), (0, true), (1, true), (2, false)] {
                let p = (current as i64 + offset) as u32;
                let got = period_of(p & 3, current);
                assert_eq!(got, ok.then_some(p), "current {current} offset {offset}");
            }
        }
    }

    #[test]
    fn mss_rounds_down_to_the_table() {
        assert_eq!(
            CookieData::of_syn(0, NO_WSCALE, false, false).mss(false),
            536
        );
        assert_eq!(CookieData::of_syn(1299, 0, false, false).mss(false), 536);
        assert_eq!(CookieData::of_syn(1400, 0, false, false).mss(false), 1300);
        assert_eq!(CookieData::of_syn(9000, 0, false, false).mss(false), 1460);
        assert_eq!(CookieData::of_syn(1440, 0, false, true).mss(true), 1440);
        assert_eq!(CookieData::of_syn(9000, 0, false, true).mss(true), 8940);
        assert_eq!(
            CookieData::of_syn(1460, 20, false, false).wscale,
            MAX_WSCALE
        );
    }

    #[test]
    fn windows_are_rescaled_and_capped() {
        assert_eq!(rescale_window(1000, 7, 7), 1000);
        assert_eq!(rescale_window(1000, 9, 7), 4000);
        assert_eq!(rescale_window(1000, 5, 7), 250);
        assert_eq!(rescale_window(60000, 14, 0), 0xffff);
    }

    #[test]
    fn periods_count_minutes_since_the_epoch() {
        assert_eq!(period_at(0), 0);
        assert_eq!(period_at(59), 0);
        assert_eq!(period_at(60), 1);
    }
}
