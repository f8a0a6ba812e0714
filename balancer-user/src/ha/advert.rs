//! Heartbeats between balancer nodes (VRRP-like adverts), authenticated with
//! HMAC-SHA256 under a shared key. A forged advert fails the MAC; a replayed
//! one repeats a sequence number already seen from that node; a stale one
//! carries a send time too far in the past. All three are ignored and counted.
//!
//! Wire format (network byte order):
//! `"LBHA"` | version u8 | role u8 | priority u8 | name length u8 |
//! sequence u64 (sender's clock, µs since the epoch) | config digest [8] |
//! name | HMAC-SHA256 of everything before it [32].

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"LBHA";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 1 + 1 + 1 + 8 + 8;
const MAC_LEN: usize = 32;
pub const MAX_NAME: usize = 64;
/// UDP port of the adverts.
pub const PORT: u16 = 8909;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Init,
    Standby,
    Active,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }

    fn code(self) -> u8 {
        match self {
            Role::Init => 0,
            Role::Standby => 1,
            Role::Active => 2,
        }
    }

    fn from_code(c: u8) -> Option<Role> {
        match c {
            0 => Some(Role::Init),
            1 => Some(Role::Standby),
            2 => Some(Role::Active),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub node: String,
    pub role: Role,
    /// Effective priority: the configured one less what tracked conditions take.
    pub priority: u8,
    pub seq: u64,
    /// Of the services configuration, so that an operator learns when the two
    /// nodes run different ones.
    pub digest: [u8; 8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not an advert (bad magic, version or length)")]
    Malformed,
    #[error("bad authentication code (forged, or another key)")]
    Forged,
    #[error("sequence {seq} already seen from {node} (replayed)")]
    Replayed { node: String, seq: u64 },
    #[error("sent {age_ms} ms ago by its clock (stale)")]
    Stale { age_ms: u64 },
}

pub struct Codec {
    key: Vec<u8>,
    last_seq: HashMap<String, u64>,
    /// How old an advert may be, by its sender's clock: clocks of the nodes
    /// must agree within this (NTP does).
    max_age: Duration,
}

type HmacSha256 = Hmac<Sha256>;

impl Codec {
    pub fn new(key: Vec<u8>, max_age: Duration) -> Self {
        Self {
            key,
            last_seq: HashMap::new(),
            max_age,
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    pub fn encode(&self, advert: &Advert) -> Vec<u8> {
        let name = &advert.node.as_bytes()[..advert.node.len().min(MAX_NAME)];
        let mut out = Vec::with_capacity(HEADER + name.len() + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(advert.role.code());
        out.push(advert.priority);
        out.push(name.len() as u8);
        out.extend_from_slice(&advert.seq.to_be_bytes());
        out.extend_from_slice(&advert.digest);
        out.extend_from_slice(name);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks and decodes an advert received at `now`; a good one moves the
    /// sender's sequence window.
    pub fn decode(&mut self, data: &[u8], now: SystemTime) -> Result<Advert, Rejected> {
        if data.len() < HEADER + MAC_LEN || &data[..4] != MAGIC || data[4] != VERSION {
            return Err(Rejected::Malformed);
        }
        let name_len = data[7] as usize;
        if name_len > MAX_NAME || data.len() != HEADER + name_len + MAC_LEN {
            return Err(Rejected::Malformed);
        }
        let (body, tag) = data.split_at(HEADER + name_len);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| Rejected::Forged)?;
        let role = Role::from_code(data[5]).ok_or(Rejected::Malformed)?;
        let seq = u64::from_be_bytes(data[8..16].try_into().expect("8 bytes"));
        let digest: [u8; 8] = data[16..24].try_into().expect("8 bytes");
        let node = String::from_utf8(data[HEADER..HEADER + name_len].to_vec())
            .map_err(|_| Rejected::Malformed)?;
        let now_us = micros(now);
        let age = now_us.saturating_sub(seq);
        if age > self.max_age.as_micros() as u64 {
            return Err(Rejected::Stale { age_ms: age / 1000 });
        }
        if let Some(&last) = self.last_seq.get(&node)
            && seq <= last
        {
            return Err(Rejected::Replayed { node, seq });
        }
        self.last_seq.insert(node.clone(), seq);
        Ok(Advert {
            node,
            role,
            priority: data[6],
            seq,
            digest,
        })
    }
}

pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A short digest of what both nodes should agree on.
pub fn digest(text: &str) -> [u8; 8] {
    use sha2::Digest;
    let full = Sha256::digest(text.as_bytes());
    full[..8].try_into().expect("8 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(seq: u64) -> Advert {
        Advert {
            node: "lb-a".into(),
            role: Role::Active,
            priority: 200,
            seq,
            digest: digest("x"),
        }
    }

    fn codec() -> Codec {
        Codec::new(b"secret".to_vec(), Duration::from_secs(2))
    }

    #[test]
    fn a_good_advert_round_trips() {
        let now = SystemTime::now();
        let a = advert(micros(now));
        let mut rx = codec();
        assert_eq!(rx.decode(&codec().encode(&a), now), Ok(a));
    }

    #[test]
    fn another_key_or_a_flipped_bit_is_forged() {
        let now = SystemTime::now();
        let a = advert(micros(now));
        let other = Codec::new(b"other".to_vec(), Duration::from_secs(2));
        assert_eq!(
            codec().decode(&other.encode(&a), now),
            Err(Rejected::Forged)
        );
        let mut wire = codec().encode(&a);
        wire[6] = 255; // priority raised in flight
        assert_eq!(codec().decode(&wire, now), Err(Rejected::Forged));
    }

    #[test]
    fn a_replayed_or_older_sequence_is_refused() {
        let now = SystemTime::now();
        let mut rx = codec();
        let tx = codec();
        let first = tx.encode(&advert(micros(now)));
        assert!(rx.decode(&first, now).is_ok());
        assert!(matches!(
            rx.decode(&first, now),
            Err(Rejected::Replayed { .. })
        ));
        let older = tx.encode(&advert(micros(now) - 1));
        assert!(matches!(
            rx.decode(&older, now),
            Err(Rejected::Replayed { .. })
        ));
        assert!(rx.decode(&tx.encode(&advert(micros(now) + 1)), now).is_ok());
    }

    #[test]
    fn an_old_advert_is_stale() {
        let now = SystemTime::now();
        let old = advert(micros(now - Duration::from_secs(3)));
        assert!(matches!(
            codec().decode(&codec().encode(&old), now),
            Err(Rejected::Stale { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let now = SystemTime::now();
        let good = codec().encode(&advert(micros(now)));
        for len in 0..good.len() {
            assert!(codec().decode(&good[..len], now).is_err());
        }
        let mut long_name = good.clone();
        long_name[7] = 200;
        assert_eq!(codec().decode(&long_name, now), Err(Rejected::Malformed));
    }
}
