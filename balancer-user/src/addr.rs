//! Conversions between std addresses and the wire-order words of the map types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use balancer_common::{FAMILY_V4, FAMILY_V6, RawAddr};

pub fn raw(ip: IpAddr) -> (RawAddr, u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut words = [0u32; 4];
            for (w, chunk) in words.iter_mut().zip(o.chunks_exact(4)) {
                *w = u32::from_ne_bytes(chunk.try_into().expect("4 bytes"));
            }
            (words, FAMILY_V6)
        }
    }
}

pub fn from_raw(words: RawAddr, family: u8) -> IpAddr {
    if family == FAMILY_V6 {
        let mut o = [0u8; 16];
        for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for ip in ["198.51.100.10", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (w, f) = raw(ip);
            assert_eq!(from_raw(w, f), ip);
        }
    }

    #[test]
    fn ipv4_words_are_in_wire_order() {
        let (w, f) = raw("198.51.100.10".parse().unwrap());
        assert_eq!(f, FAMILY_V4);
        assert_eq!(w[0].to_ne_bytes(), [198, 51, 100, 10]);
        assert_eq!(&w[1..], &[0, 0, 0]);
    }
}
