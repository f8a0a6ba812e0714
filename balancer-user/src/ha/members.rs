//! Active-active membership: which peers are in the group, and who holds each
//! node's SNAT addresses. Pure: adverts and time come in, what this node must
//! hold comes out, and every node that has heard the same adverts computes the
//! same answer.
//!
//! A node holds its own SNAT addresses while it is ready (its copies of the
//! peers' flow tables are complete), not faulty and not leaving. Otherwise,
//! if it ever served (flows may use its addresses), one surviving node holds
//! them: of the ready, healthy members (those not
//! draining first), the one that scores highest for the owner by rendezvous
//! hashing. So a dead node's addresses go to one peer without any vote, and
//! when several nodes die their addresses spread over the survivors.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use super::advert::{Advert, Member};

#[derive(Debug, Clone)]
pub struct Peer {
    pub priority: u8,
    pub last_heard: Instant,
    pub state: Member,
    /// It was ready once (in this or an earlier run): flows may use its
    /// addresses, so someone must hold them while it cannot.
    pub served: bool,
}

/// This node's own state, as its next advert says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    pub member: Member,
    /// Its effective priority: 0 is a fault.
    pub priority: u8,
}

/// What the group heard that an operator wants to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Joined(String),
    Ready(String),
    Leaving(String),
}

#[derive(Debug, Clone)]
pub struct Group {
    me: String,
    dead_after: u32,
    interval: Duration,
    peers: BTreeMap<String, Peer>,
}

impl Group {
    pub fn new(me: &str, dead_after: u32, interval: Duration) -> Self {
        Self {
            me: me.to_string(),
            dead_after: dead_after.max(1),
            interval,
            peers: BTreeMap::new(),
        }
    }

    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    /// Heard within `dead_after` intervals and not leaving.
    pub fn alive(&self, p: &Peer, now: Instant) -> bool {
        !p.state.leaving
            && now.saturating_duration_since(p.last_heard) <= self.interval * self.dead_after
    }

    /// The names of the peers alive now.
    pub fn live_peers(&self, now: Instant) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, p)| self.alive(p, now))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// An advert of a group member (adverts without member state are not
    /// this mode's and are left to the caller).
    pub fn on_advert(&mut self, advert: &Advert, now: Instant) -> Option<Heard> {
        let state = advert.member.clone()?;
        if advert.node == self.me {
            return None;
        }
        let heard = match self.peers.get(&advert.node) {
            _ if state.leaving => {
                let was = self.peers.get(&advert.node);
                (was.is_some_and(|p| !p.state.leaving)).then(|| Heard::Leaving(advert.node.clone()))
            }
            Some(p) if self.alive(p, now) => {
                (state.ready && !p.state.ready).then(|| Heard::Ready(advert.node.clone()))
            }
            _ => Some(Heard::Joined(advert.node.clone())),
        };
        let served = state.ready || self.peers.get(&advert.node).is_some_and(|p| p.served);
        self.peers.insert(
            advert.node.clone(),
            Peer {
                priority: advert.priority,
                last_heard: now,
                state,
                served,
            },
        );
        heard
    }

    /// The SNAT addresses this node must hold now, and the nodes whose
    /// addresses it holds for them (adopted).
    pub fn held_by_me(&self, me: &Me, now: Instant) -> (Vec<IpAddr>, Vec<String>) {
        let mut addresses = Vec::new();
        if self.holds_own(me) {
            addresses.extend(me.member.snat.iter().copied());
        }
        let mut adopted = Vec::new();
        for (name, peer) in &self.peers {
            if !peer.served || self.alive(peer, now) && serves(&peer.state, peer.priority) {
                continue;
            }
            if self.adopter(name, me, now).as_deref() == Some(self.me.as_str()) {
                addresses.extend(peer.state.snat.iter().copied());
                adopted.push(name.clone());
            }
        }
        addresses.sort();
        addresses.dedup();
        (addresses, adopted)
    }

    fn holds_own(&self, me: &Me) -> bool {
        serves(&me.member, me.priority)
    }

    /// Which node holds the addresses of `owner`, which cannot: the member
    /// that scores highest for it, preferring those not draining.
    fn adopter(&self, owner: &str, me: &Me, now: Instant) -> Option<String> {
        let mut candidates: Vec<(&str, bool)> = Vec::new();
        if self.holds_own(me) {
            candidates.push((&self.me, me.member.draining));
        }
        for (name, p) in &self.peers {
            if name != owner && self.alive(p, now) && serves(&p.state, p.priority) {
                candidates.push((name, p.state.draining));
            }
        }
        let staying = candidates.iter().any(|(_, draining)| !draining);
        candidates
            .into_iter()
            .filter(|(_, draining)| !staying || !draining)
            .max_by_key(|(name, _)| score(owner, name))
            .map(|(name, _)| name.to_string())
    }
}

/// A member that may hold addresses: ready, not faulty, not leaving.
fn serves(m: &Member, priority: u8) -> bool {
    m.ready && !m.leaving && priority > 0
}

/// Rendezvous hash of a candidate for an owner's addresses.
fn score(owner: &str, candidate: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(owner.as_bytes());
    h.update([0]);
    h.update(candidate.as_bytes());
    h.finalize()[..8].try_into().expect("8 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(100);

    fn member(ready: bool, snat: &str) -> Member {
        Member {
            ready,
            draining: false,
            leaving: false,
            snat: vec![snat.parse().unwrap()],
        }
    }

    fn advert(node: &str, priority: u8, m: Member) -> Advert {
        Advert {
            node: node.into(),
            role: super::super::advert::Role::Active,
            priority,
            seq: 0,
            digest: [0; 8],
            member: Some(m),
        }
    }

    fn me(ready: bool, snat: &str) -> Me {
        Me {
            member: member(ready, snat),
            priority: 100,
        }
    }

    /// Three nodes, each knowing the other two as ready.
    fn three(now: Instant) -> Vec<(Group, Me)> {
        let nodes = [
            ("lb-1", "203.0.113.201"),
            ("lb-2", "203.0.113.202"),
            ("lb-3", "203.0.113.203"),
        ];
        nodes
            .iter()
            .map(|(name, snat)| {
                let mut g = Group::new(name, 3, I);
                for (other, other_snat) in nodes.iter().filter(|(o, _)| o != name) {
                    g.on_advert(&advert(other, 100, member(true, other_snat)), now);
                }
                (g, me(true, snat))
            })
            .collect()
    }

    #[test]
    fn each_ready_node_holds_its_own_addresses_only() {
        let now = Instant::now();
        for (g, m) in three(now) {
            let (held, adopted) = g.held_by_me(&m, now);
            assert_eq!(held, m.member.snat);
            assert!(adopted.is_empty());
        }
    }

    #[test]
    fn a_dead_nodes_addresses_go_to_exactly_one_survivor() {
        let t0 = Instant::now();
        let later = t0 + I * 4;
        let mut nodes = three(t0);
        // lb-3 dies: lb-1 and lb-2 keep hearing each other.
        nodes.truncate(2);
        let names = ["lb-1", "lb-2"];
        for (i, (g, _)) in nodes.iter_mut().enumerate() {
            let other = names[1 - i];
            let snat = if other == "lb-1" {
                "203.0.113.201"
            } else {
                "203.0.113.202"
            };
            g.on_advert(&advert(other, 100, member(true, snat)), later);
        }
        let dead: IpAddr = "203.0.113.203".parse().unwrap();
        let holders: Vec<bool> = nodes
            .iter()
            .map(|(g, m)| g.held_by_me(m, later).0.contains(&dead))
            .collect();
        assert_eq!(holders.iter().filter(|h| **h).count(), 1, "{holders:?}");
        let (g, m) = &nodes[holders.iter().position(|h| *h).unwrap()];
        assert_eq!(g.held_by_me(m, later).1, ["lb-3"]);
    }

    #[test]
    fn a_returning_node_gets_its_addresses_back_once_it_is_ready() {
        let t0 = Instant::now();
        let mut g = Group::new("lb-1", 3, I);
        let mine = me(true, "203.0.113.201");
        let theirs: IpAddr = "203.0.113.202".parse().unwrap();
        // lb-2 joins for the first time: no flow uses its addresses yet, so
        // nobody holds them until it is ready.
        let joined = g.on_advert(&advert("lb-2", 100, member(false, "203.0.113.202")), t0);
        assert_eq!(joined, Some(Heard::Joined("lb-2".into())));
        assert_eq!(g.held_by_me(&mine, t0).0, mine.member.snat);
        // Ready: lb-2 holds its own.
        let ready = g.on_advert(&advert("lb-2", 100, member(true, "203.0.113.202")), t0);
        assert_eq!(ready, Some(Heard::Ready("lb-2".into())));
        assert_eq!(g.held_by_me(&mine, t0).0, mine.member.snat);
        // It dies: lb-1 holds its addresses; a fresh lb-2 that joins does not
        // get them until its copy is complete.
        let later = t0 + I * 4;
        assert!(g.held_by_me(&mine, later).0.contains(&theirs));
        let back = g.on_advert(&advert("lb-2", 100, member(false, "203.0.113.202")), later);
        assert_eq!(back, Some(Heard::Joined("lb-2".into())));
        assert!(g.held_by_me(&mine, later).0.contains(&theirs));
        g.on_advert(&advert("lb-2", 100, member(true, "203.0.113.202")), later);
        assert_eq!(g.held_by_me(&mine, later).0, mine.member.snat);
        let now = later;
        // Faulty (priority 0): its addresses come back here.
        g.on_advert(&advert("lb-2", 0, member(true, "203.0.113.202")), now);
        assert!(g.held_by_me(&mine, now).0.contains(&theirs));
    }

    #[test]
    fn a_leaving_node_is_adopted_at_once_and_a_draining_one_adopts_last() {
        let now = Instant::now();
        let mut g = Group::new("lb-1", 3, I);
        let mut mine = me(true, "203.0.113.201");
        let mut leaving = member(true, "203.0.113.202");
        g.on_advert(&advert("lb-2", 100, leaving.clone()), now);
        leaving.leaving = true;
        let heard = g.on_advert(&advert("lb-2", 100, leaving), now);
        assert_eq!(heard, Some(Heard::Leaving("lb-2".into())));
        assert_eq!(g.held_by_me(&mine, now).1, ["lb-2"]);
        // This node drains while lb-3, ready, does not: lb-3 adopts.
        g.on_advert(&advert("lb-3", 100, member(true, "203.0.113.203")), now);
        mine.member.draining = true;
        assert!(g.held_by_me(&mine, now).1.is_empty());
        // A node that is not ready adopts nothing, and holds nothing.
        let joining = me(false, "203.0.113.201");
        assert_eq!(g.held_by_me(&joining, now), (Vec::new(), Vec::new()));
    }
}
