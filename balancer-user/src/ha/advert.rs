//! Heartbeats between balancer nodes (VRRP-like adverts), authenticated with
//! HMAC-SHA256 under a shared key. A forged advert fails the MAC; a replayed
//! one repeats a sequence number already seen from that node; a stale one
//! carries a send time too far in the past. All three are ignored and counted.
//!
//! Wire format (network byte order):
//! `"LBHA"` | version u8 | role u8 | priority u8 | name length u8 |
//! sequence u64 (sender's clock, µs since the epoch) | config digest [8] |
//! name | HMAC-SHA256 of everything before it [32].
//!
//! Version 2, sent in active-active, adds after the name what a group member
//! says of itself: flags u8 ([`Member`]) | address count u8 | its SNAT
//! addresses, 16 bytes each (IPv4 as IPv4-mapped). Active-standby nodes keep
//! sending version 1, which releases before this one read.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"LBHA";
const VERSION: u8 = 1;
const VERSION_GROUP: u8 = 2;
const HEADER: usize = 4 + 1 + 1 + 1 + 1 + 8 + 8;
const MAC_LEN: usize = 32;
pub const MAX_NAME: usize = 64;
/// SNAT addresses an advert carries at most (a node's per-family limit twice).
pub const MAX_SNAT: usize = 32;
const MEMBER_READY: u8 = 1;
const MEMBER_DRAINING: u8 = 2;
const MEMBER_LEAVING: u8 = 4;
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
    /// What an active-active node says of itself (version 2); `None` from an
    /// active-standby node.
    pub member: Option<Member>,
}

/// An active-active node's state, as its adverts say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// It holds complete copies of its peers' flow tables (or gave up
    /// waiting): it serves, and owns its SNAT addresses.
    pub ready: bool,
    /// Its routes are withdrawn; it forwards the flows it has until it stops.
    pub draining: bool,
    /// It is stopping: a peer adopts its SNAT addresses now.
    pub leaving: bool,
    /// Its own SNAT addresses (`node.snat_addresses`).
    pub snat: Vec<IpAddr>,
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
        out.push(if advert.member.is_some() {
            VERSION_GROUP
        } else {
            VERSION
        });
        out.push(advert.role.code());
        out.push(advert.priority);
        out.push(name.len() as u8);
        out.extend_from_slice(&advert.seq.to_be_bytes());
        out.extend_from_slice(&advert.digest);
        out.extend_from_slice(name);
        if let Some(m) = &advert.member {
            let flags = [
                (m.ready, MEMBER_READY),
                (m.draining, MEMBER_DRAINING),
                (m.leaving, MEMBER_LEAVING),
            ]
            .iter()
            .filter(|(set, _)| *set)
            .fold(0, |flags, (_, bit)| flags | bit);
            let snat = &m.snat[..m.snat.len().min(MAX_SNAT)];
            out.push(flags);
            out.push(snat.len() as u8);
            for ip in snat {
                let v6 = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => *v6,
                };
                out.extend_from_slice(&v6.octets());
            }
        }
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks and decodes an advert received at `now`; a good one moves the
    /// sender's sequence window.
    pub fn decode(&mut self, data: &[u8], now: SystemTime) -> Result<Advert, Rejected> {
        if data.len() < HEADER + MAC_LEN
            || &data[..4] != MAGIC
            || !matches!(data[4], VERSION | VERSION_GROUP)
        {
            return Err(Rejected::Malformed);
        }
        let name_len = data[7] as usize;
        let named = HEADER + name_len;
        if name_len > MAX_NAME || data.len() < named + MAC_LEN {
            return Err(Rejected::Malformed);
        }
        let extra = if data[4] == VERSION_GROUP {
            if data.len() < named + 2 + MAC_LEN {
                return Err(Rejected::Malformed);
            }
            2 + 16 * data[named + 1] as usize
        } else {
            0
        };
        if data.len() != named + extra + MAC_LEN {
            return Err(Rejected::Malformed);
        }
        let (body, tag) = data.split_at(named + extra);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| Rejected::Forged)?;
        let member = (data[4] == VERSION_GROUP).then(|| {
            let flags = data[named];
            Member {
                ready: flags & MEMBER_READY != 0,
                draining: flags & MEMBER_DRAINING != 0,
                leaving: flags & MEMBER_LEAVING != 0,
                snat: body[named + 2..]
                    .chunks_exact(16)
                    .map(|c| {
                        let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(c).expect("16 bytes"));
                        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                    })
                    .collect(),
            }
        });
        let role = Role::from_code(data[5]).ok_or(Rejected::Malformed)?;
        let seq = u64::from_be_bytes(data[8..16].try_into().expect("8 bytes"));
        let digest: [u8; 8] = data[16..24].try_into().expect("8 bytes");
        let node =
            String::from_utf8(data[HEADER..named].to_vec()).map_err(|_| Rejected::Malformed)?;
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
            member,
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
            member: None,
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
    fn a_group_members_advert_carries_its_state_and_snat_addresses() {
        let now = SystemTime::now();
        let mut a = advert(micros(now));
        a.member = Some(Member {
            ready: true,
            draining: false,
            leaving: true,
            snat: vec![
                "203.0.113.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ],
        });
        let wire = codec().encode(&a);
        assert_eq!(wire[4], VERSION_GROUP);
        assert_eq!(codec().decode(&wire, now), Ok(a.clone()));
        // Every prefix of it is refused, and so is an address count that
        // disagrees with the length.
        for len in 0..wire.len() {
            assert!(codec().decode(&wire[..len], now).is_err(), "{len} bytes");
        }
        let mut lying = wire.clone();
        lying[4 + 4 + 16 + 4 + 1] = 3;
        assert_eq!(codec().decode(&lying, now), Err(Rejected::Malformed));
        // An active-standby node's advert is the first version, unchanged.
        a.member = None;
        assert_eq!(codec().encode(&a)[4], VERSION);
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
