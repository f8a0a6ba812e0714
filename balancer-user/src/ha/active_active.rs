//! Active-active on the HA thread: every node serves. A node joins by
//! listening to its peers and copying their flow tables; once its copies are
//! complete (or it waited `preempt_sync_timeout_ms` for them) it is ready: it
//! announces the VIPs it can serve (routes in `announce_table`) and holds its
//! SNAT addresses. When a peer dies or leaves, the one survivor that
//! [`members`](super::members) names adopts its SNAT addresses (gratuitous
//! ARP, unsolicited NA) and its flows, and sends them to the others as its
//! own. A draining node withdraws its routes and keeps forwarding.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{
    ANNOUNCE_REPEATS, Inputs, Node,
    members::{Group, Heard, Me},
};
use crate::{
    api::PeerStatus,
    events::TARGET,
    ha::{advert::Advert, node_id},
};

/// This node's place in the group.
pub struct Membership {
    pub group: Group,
    pub me: Me,
    started: Instant,
    /// The SNAT addresses this node holds, and the peers it holds them for.
    pub held: Vec<IpAddr>,
    pub adopted: Vec<String>,
    pub adoptions: u64,
    /// Peers alive at the last look, to tell when one dies.
    alive: BTreeSet<String>,
}

impl Membership {
    pub fn new(group: Group) -> Self {
        Self {
            group,
            me: Me::default(),
            started: Instant::now(),
            held: Vec::new(),
            adopted: Vec::new(),
            adoptions: 0,
            alive: BTreeSet::new(),
        }
    }

    /// The word `balancer status` shows for this node.
    pub fn state_word(&self) -> &'static str {
        word(&self.me.member)
    }

    pub fn peer_status(&self, now: Instant) -> Vec<PeerStatus> {
        self.group
            .peers()
            .iter()
            .map(|(name, p)| PeerStatus {
                node: name.clone(),
                role: word(&p.state).into(),
                priority: p.priority,
                alive: self.group.alive(p, now),
                last_heard_ms: now.saturating_duration_since(p.last_heard).as_millis() as u64,
                snat: p.state.snat.clone(),
            })
            .collect()
    }
}

fn word(m: &super::advert::Member) -> &'static str {
    if m.leaving {
        "leaving"
    } else if m.draining {
        "draining"
    } else if m.ready {
        "active"
    } else {
        "joining"
    }
}

impl Node {
    /// Brings the node in line with the group, its copies and the daemon's
    /// inputs: whether it is ready, its routes, its SNAT addresses, its lease.
    pub(super) async fn settle_group(&mut self, priority: u8, inputs: &Inputs) {
        let now = Instant::now();
        let copies_ready = self.copies_ready();
        let interval = Duration::from_millis(self.config.advert_interval_ms.into());
        let listen = interval * (self.config.dead_after.max(1) + 1);
        let wait = Duration::from_millis(self.config.preempt_sync_timeout_ms.into());
        let table = self.table_held();
        let Some(g) = self.group.as_mut() else {
            return;
        };
        g.me.priority = priority;
        g.me.member.snat = inputs.snat.clone();
        g.me.member.draining = inputs.draining;
        let mut became_ready = false;
        if !g.me.member.ready {
            // Heard every live peer first, as a starting active-standby node
            // does: a peer not heard yet has no copy to wait for.
            let waited = now.saturating_duration_since(g.started);
            if waited >= listen && (copies_ready || waited >= wait) {
                g.me.member.ready = true;
                became_ready = true;
                let how = if copies_ready {
                    "its copies of the peers' flow tables are complete"
                } else {
                    "it waited preempt_sync_timeout_ms for its copies"
                };
                info!(target: TARGET, event = "ha_member", peer = %self.name, state = "active", why = how, table = %table, waited_ms = waited.as_millis() as u64, "this node serves");
            }
        }
        let alive: BTreeSet<String> = g.group.live_peers(now).into_iter().collect();
        for lost in g.alive.difference(&alive) {
            warn!(target: TARGET, event = "ha_member", peer = %lost, state = "lost", "a peer is gone");
        }
        g.alive = alive;
        self.lease.renew();
        if became_ready {
            // Flows that ECMP moves here may still be on their way.
            self.lease
                .start_takeover_grace(Duration::from_millis(self.config.takeover_grace_ms.into()));
        }
        self.announce_vips(priority, inputs).await;
        self.hold_snat(now).await;
        // Published once the routes and addresses are as it says.
        self.update_status(priority, inputs);
    }

    /// Routes to the VIPs this node can serve now, none otherwise.
    async fn announce_vips(&mut self, priority: u8, inputs: &Inputs) {
        let Some(g) = &self.group else { return };
        let (vips, why): (&[IpAddr], &str) = if g.me.member.leaving {
            (&[], "stopping")
        } else if !g.me.member.ready {
            (
                &[],
                "joining: its copies of the peers' flow tables are not complete",
            )
        } else if inputs.draining {
            (&[], "draining")
        } else if priority == 0 {
            (&[], "faulty")
        } else {
            (&inputs.servable, "no healthy backend")
        };
        let vips = vips.to_vec();
        if let Some(routes) = self.routes.as_mut() {
            routes.set(&self.netlink, &vips, why).await;
        }
    }

    /// Holds exactly the SNAT addresses the group gives this node: its own,
    /// and those of the dead peers it adopts, whose flows it adopts too.
    async fn hold_snat(&mut self, now: Instant) {
        let Some(g) = self.group.as_mut() else { return };
        let (held, adopted) = g.group.held_by_me(&g.me, now);
        let newly: Vec<String> = adopted
            .iter()
            .filter(|n| !g.adopted.contains(n))
            .cloned()
            .collect();
        for peer in &g.adopted {
            if !adopted.contains(peer) {
                info!(target: TARGET, event = "ha_snat", peer = %peer, adopted = false, "gave the peer's SNAT addresses back");
            }
        }
        g.adoptions += newly.len() as u64;
        g.adopted = adopted;
        let released: Vec<IpAddr> = g
            .held
            .iter()
            .filter(|a| !held.contains(a))
            .copied()
            .collect();
        g.held = held.clone();
        for peer in &newly {
            let owner = node_id(peer.as_bytes());
            self.adopt_flows(owner);
            if let Some(sync) = &self.sync {
                sync.adopted(owner, peer);
            }
            warn!(target: TARGET, event = "ha_snat", peer = %peer, adopted = true, "adopted the SNAT addresses and flows of a peer that is gone");
        }
        if !newly.is_empty() {
            self.lease
                .start_takeover_grace(Duration::from_millis(self.config.takeover_grace_ms.into()));
        }
        if !released.is_empty() {
            self.floating.release(&self.netlink, &released).await;
        }
        if self.owned != held {
            if let Err(e) = self
                .floating
                .ensure_local(&self.netlink, &held, &self.interfaces)
                .await
            {
                warn!("taking the SNAT addresses: {e:#}");
            }
            let new: Vec<IpAddr> = held
                .iter()
                .filter(|a| !self.owned.contains(a))
                .copied()
                .collect();
            self.owned = held;
            if !new.is_empty() {
                // Again on the next ticks: the peer that held them may have
                // answered a neighbour since.
                self.announce_left = ANNOUNCE_REPEATS;
            }
            for ip in new {
                self.announce_one(ip).await;
            }
        }
        if self.announce_left > 0 {
            self.announce_left -= 1;
            self.announce().await;
        }
    }

    /// An advert of a group member.
    pub(super) async fn heard_member(&mut self, advert: &Advert, inputs: &Inputs) {
        let now = Instant::now();
        let Some(g) = self.group.as_mut() else { return };
        let heard = g.group.on_advert(advert, now);
        match &heard {
            Some(Heard::Joined(peer)) => {
                info!(target: TARGET, event = "ha_member", peer = %peer, state = "joined", "a peer joined")
            }
            Some(Heard::Ready(peer)) => {
                info!(target: TARGET, event = "ha_member", peer = %peer, state = "active", "a peer serves")
            }
            Some(Heard::Leaving(peer)) => {
                info!(target: TARGET, event = "ha_member", peer = %peer, state = "leaving", "a peer is stopping")
            }
            None => {}
        }
        if heard.is_some() {
            let priority = self.effective(inputs);
            self.settle_group(priority, inputs).await;
        }
    }

    /// Stopping: the routes go, then the addresses; the lease ends so the
    /// program opens no flow after the daemon. The caller's advert then says
    /// so and a peer adopts this node's addresses at once.
    pub(super) async fn leave_group(&mut self) {
        let Some(g) = self.group.as_mut() else { return };
        g.me.member.leaving = true;
        if let Some(routes) = self.routes.as_mut() {
            routes.set(&self.netlink, &[], "stopping").await;
        }
        self.floating.undo(&self.netlink).await;
        self.owned.clear();
        if let Some(g) = self.group.as_mut() {
            g.held.clear();
        }
        self.lease.expire();
    }
}
