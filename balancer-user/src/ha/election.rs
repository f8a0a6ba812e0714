//! Who is active: the highest effective priority among the nodes heard from
//! recently, ties broken by node name (the smaller wins). Pure: time and
//! adverts come in, role changes with their reasons come out.
//!
//! - A node starts in `Init` and listens for `dead_after` intervals before it
//!   decides, so that a restarted node does not take the role from a healthy
//!   active peer it has not heard yet.
//! - A standby becomes active when no active peer is alive and no live peer
//!   outranks it, or, with `preempt`, when it outranks the active peer.
//! - An active node steps down when another active node outranks it: two
//!   active nodes (a healed partition) resolve at the first advert.
//! - Priority 0 is a fault: such a node is active only if no live peer can be.
//! - A standby preempts only once its copy of the active node's flow table is
//!   complete ([`Election::set_copy_ready`]), or after `preempt_wait` anyway,
//!   so that taking the role back breaks no connection the copy would keep.

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::advert::{Advert, Role};

#[derive(Debug, Clone)]
pub struct Peer {
    pub role: Role,
    pub priority: u8,
    pub last_heard: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Role,
    pub to: Role,
    /// A word for metrics: fault, split_brain, priority_fell, preempt,
    /// active_peer, outranked, peer_dead, no_active_peer, stopping.
    pub cause: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Election {
    pub me: String,
    /// The configured priority: an active node whose effective priority fell
    /// below it (a tracked condition) yields to a peer that now outranks it.
    pub base: u8,
    pub preempt: bool,
    /// Missed adverts after which a peer is dead.
    pub dead_after: u32,
    pub interval: Duration,
    role: Role,
    started: Instant,
    peers: BTreeMap<String, Peer>,
    /// Times both this node and a peer were active at once.
    pub split_brains: u64,
    /// Whether this node holds a complete copy of the active peer's flows.
    copy_ready: bool,
    /// How long a preempt waits for that copy at most.
    pub preempt_wait: Duration,
    /// Since when a preempt waits for it.
    preempt_held_since: Option<Instant>,
}

impl Election {
    pub fn new(
        me: &str,
        base: u8,
        preempt: bool,
        dead_after: u32,
        interval: Duration,
        now: Instant,
    ) -> Self {
        Self {
            me: me.to_string(),
            base,
            preempt,
            dead_after: dead_after.max(1),
            interval,
            role: Role::Init,
            started: now,
            peers: BTreeMap::new(),
            split_brains: 0,
            copy_ready: true,
            preempt_wait: Duration::ZERO,
            preempt_held_since: None,
        }
    }

    /// Whether this node's copy of the active peer's flow table is complete
    /// (true where nothing is synced).
    pub fn set_copy_ready(&mut self, ready: bool) {
        self.copy_ready = ready;
    }

    /// Whether a preempt may go ahead now: the copy is complete, or it waited
    /// `preempt_wait` for it (then the reason says so).
    fn preempt_ready(&mut self, now: Instant) -> Option<Option<String>> {
        if self.copy_ready {
            self.preempt_held_since = None;
            return Some(None);
        }
        let since = *self.preempt_held_since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        if waited < self.preempt_wait {
            return None;
        }
        self.preempt_held_since = None;
        Some(Some(format!(
            "after waiting {} ms for a complete copy of its flow table",
            waited.as_millis()
        )))
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    fn dead_time(&self) -> Duration {
        self.interval * self.dead_after
    }

    pub fn alive(&self, peer: &Peer, now: Instant) -> bool {
        now.saturating_duration_since(peer.last_heard) < self.dead_time()
    }

    /// Whether (priority, name) `a` outranks `b`.
    fn outranks(a: (u8, &str), b: (u8, &str)) -> bool {
        match a.0.cmp(&b.0) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => a.1 < b.1,
        }
    }

    /// An advert from a peer; returns a change of our role if it calls for one.
    pub fn on_advert(
        &mut self,
        advert: &Advert,
        my_priority: u8,
        now: Instant,
    ) -> Option<Transition> {
        if advert.node == self.me {
            return None;
        }
        self.peers.insert(
            advert.node.clone(),
            Peer {
                role: advert.role,
                priority: advert.priority,
                last_heard: now,
            },
        );
        if self.role == Role::Active && advert.role == Role::Active {
            self.split_brains += 1;
        }
        self.decide(my_priority, now)
    }

    /// Called every interval (and whenever our priority changes).
    pub fn on_tick(&mut self, my_priority: u8, now: Instant) -> Option<Transition> {
        self.decide(my_priority, now)
    }

    fn decide(&mut self, mine: u8, now: Instant) -> Option<Transition> {
        if self.role == Role::Init && now.saturating_duration_since(self.started) < self.dead_time()
        {
            // Listening first, unless an active peer already spoke.
            let heard_active = self
                .peers
                .values()
                .any(|p| p.role == Role::Active && self.alive(p, now));
            if !heard_active {
                return None;
            }
        }
        if mine == 0 {
            // A fault (a tracked interface down, the program detached, the
            // daemon hung): this node cannot serve, whoever else can.
            if self.role == Role::Standby {
                return None;
            }
            let from = std::mem::replace(&mut self.role, Role::Standby);
            return Some(Transition {
                from,
                to: Role::Standby,
                cause: "fault",
                reason: "fault: effective priority 0 (a tracked condition failed)".into(),
            });
        }
        let me = (mine, self.me.as_str());
        let live: Vec<(&String, &Peer)> = self
            .peers
            .iter()
            .filter(|(_, p)| self.alive(p, now))
            .collect();
        let active_peer = live
            .iter()
            .filter(|(_, p)| p.role == Role::Active)
            .max_by(|a, b| {
                if Self::outranks((a.1.priority, a.0), (b.1.priority, b.0)) {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            });
        let outranked_by = live
            .iter()
            .find(|(name, p)| Self::outranks((p.priority, name), me));
        let (to, cause, reason) = match (self.role, active_peer) {
            (Role::Active, Some((name, p))) if Self::outranks((p.priority, name), me) => (
                Role::Standby,
                "split_brain",
                format!(
                    "{name} (priority {}) is active too and outranks us (priority {mine})",
                    p.priority
                ),
            ),
            (Role::Active, _) => match outranked_by {
                Some((name, p)) if mine < self.base => (
                    Role::Standby,
                    "priority_fell",
                    format!(
                        "our priority fell to {mine} (tracked conditions) and {name} (priority {}) outranks us",
                        p.priority
                    ),
                ),
                _ => return None,
            },
            (_, Some((name, p))) => {
                let (name, peer_priority) = ((*name).clone(), p.priority);
                let wants = self.preempt && mine > 0 && Self::outranks(me, (peer_priority, &name));
                // A starting node becomes standby first and copies the table.
                let ready = if wants && self.role == Role::Standby {
                    self.preempt_ready(now)
                } else {
                    None
                };
                if let Some(late) = ready {
                    let mut reason =
                        format!("preempting {name} (priority {peer_priority} < {mine})");
                    if let Some(late) = late {
                        reason = format!("{reason} {late}");
                    }
                    (Role::Active, "preempt", reason)
                } else if self.role == Role::Standby {
                    return None;
                } else {
                    (
                        Role::Standby,
                        "active_peer",
                        format!("{name} (priority {peer_priority}) is active"),
                    )
                }
            }
            (_, None) => match outranked_by {
                Some((name, p)) => {
                    if self.role == Role::Standby {
                        return None;
                    }
                    (
                        Role::Standby,
                        "outranked",
                        format!(
                            "{name} (priority {}) outranks us (priority {mine})",
                            p.priority
                        ),
                    )
                }
                None if live.is_empty() => (
                    Role::Active,
                    "peer_dead",
                    format!(
                        "no peer heard for {} ms (dead_after {} x {} ms)",
                        self.dead_time().as_millis(),
                        self.dead_after,
                        self.interval.as_millis()
                    ),
                ),
                None => (
                    Role::Active,
                    "no_active_peer",
                    format!("no active peer and none outranks us (priority {mine})"),
                ),
            },
        };
        if to == self.role {
            return None;
        }
        let from = std::mem::replace(&mut self.role, to);
        Some(Transition {
            from,
            to,
            cause,
            reason,
        })
    }

    /// Gives up the role at once (stopping, or a fault that must not wait
    /// for a peer's advert).
    pub fn step_down(&mut self, reason: &str) -> Option<Transition> {
        if self.role != Role::Active {
            return None;
        }
        self.role = Role::Standby;
        Some(Transition {
            from: Role::Active,
            to: Role::Standby,
            cause: "stopping",
            reason: reason.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(100);

    fn advert(node: &str, role: Role, priority: u8) -> Advert {
        Advert {
            node: node.into(),
            role,
            priority,
            seq: 0,
            digest: [0; 8],
            member: None,
        }
    }

    #[test]
    fn alone_it_becomes_active_after_listening_for_dead_after_intervals() {
        let t0 = Instant::now();
        let mut e = Election::new("lb-a", 200, true, 3, I, t0);
        assert_eq!(e.on_tick(200, t0 + I * 2), None);
        let t = e.on_tick(200, t0 + I * 3).unwrap();
        assert_eq!(t.to, Role::Active);
        assert!(
            t.reason.contains("no peer heard for 300 ms"),
            "{}",
            t.reason
        );
    }

    #[test]
    fn a_starting_node_defers_to_an_active_peer_without_preempt() {
        let t0 = Instant::now();
        let mut e = Election::new("lb-a", 200, false, 3, I, t0);
        let t = e
            .on_advert(&advert("lb-b", Role::Active, 100), 200, t0)
            .unwrap();
        assert_eq!(t.to, Role::Standby);
        // Still standby while the lower peer keeps sending.
        for k in 1..10 {
            assert_eq!(
                e.on_advert(&advert("lb-b", Role::Active, 100), 200, t0 + I * k),
                None
            );
        }
    }

    #[test]
    fn with_preempt_the_higher_priority_takes_the_role_back() {
        let t0 = Instant::now();
        let mut e = Election::new("lb-a", 200, true, 3, I, t0);
        // A starting node is standby first (to copy the flow table), then
        // takes the role back.
        let t = e
            .on_advert(&advert("lb-b", Role::Active, 100), 200, t0)
            .unwrap();
        assert_eq!(t.to, Role::Standby);
        let t = e
            .on_advert(&advert("lb-b", Role::Active, 100), 200, t0 + I)
            .unwrap();
        assert_eq!(t.to, Role::Active);
        assert!(t.reason.contains("preempting lb-b"), "{}", t.reason);
        // And the peer, seeing us, steps down:
        let mut b = Election::new("lb-b", 100, true, 3, I, t0);
        b.on_tick(100, t0 + I * 3);
        assert_eq!(b.role(), Role::Active);
        let t = b
            .on_advert(&advert("lb-a", Role::Active, 200), 100, t0 + I * 4)
            .unwrap();
        assert_eq!(t.to, Role::Standby);
        assert_eq!(b.split_brains, 1);
    }

    #[test]
    fn a_preempt_waits_for_a_complete_copy_then_goes_ahead_anyway() {
        let t0 = Instant::now();
        let mut e = Election::new("lb-a", 200, true, 3, I, t0);
        e.preempt_wait = I * 10;
        e.set_copy_ready(false);
        let active = advert("lb-b", Role::Active, 100);
        assert_eq!(e.on_advert(&active, 200, t0).unwrap().to, Role::Standby);
        for k in 1..10 {
            assert_eq!(
                e.on_advert(&active, 200, t0 + I * k),
                None,
                "waiting at {k}"
            );
        }
        // The copy completes: it takes the role back at once.
        e.set_copy_ready(true);
        let t = e.on_advert(&active, 200, t0 + I * 10).unwrap();
        assert_eq!(t.to, Role::Active);
        assert!(!t.reason.contains("waiting"), "{}", t.reason);

        // Another one whose copy never completes goes ahead after the wait,
        // and says so.
        let mut late = Election::new("lb-a", 200, true, 3, I, t0);
        late.preempt_wait = I * 10;
        late.set_copy_ready(false);
        late.on_advert(&active, 200, t0);
        assert_eq!(late.on_advert(&active, 200, t0 + I), None);
        let t = late.on_advert(&active, 200, t0 + I * 11).unwrap();
        assert_eq!(t.to, Role::Active);
        assert!(t.reason.contains("after waiting 1000 ms"), "{}", t.reason);
    }

    #[test]
    fn a_standby_takes_over_from_a_dead_peer_at_once_whatever_its_copy() {
        let t0 = Instant::now();
        let mut e = Election::new("lb-b", 100, true, 3, I, t0);
        e.preempt_wait = I * 1000;
        e.set_copy_ready(false);
        e.on_advert(&advert("lb-a", Role::Active, 200), 100, t0);
        assert_eq!(e.role(), Role::Standby);
        assert_eq!(e.on_tick(100, t0 + I * 3).unwrap().to, Role::Active);
    }

    #[test]
    fn a_standby_takes_over_when_the_active_peer_goes_silent() {
        let t0 = Instant::now();
        let mut e = Election::new("lb-b", 100, true, 3, I, t0);
        assert_eq!(
            e.on_advert(&advert("lb-a", Role::Active, 200), 100, t0)
                .unwrap()
                .to,
            Role::Standby
        );
        assert_eq!(e.on_tick(100, t0 + I * 2), None);
        let t = e.on_tick(100, t0 + I * 3).unwrap();
        assert_eq!(t.to, Role::Active);
    }

    #[test]
    fn equal_priorities_are_decided_by_name_and_a_fault_never_wins() {
        let t0 = Instant::now();
        let mut b = Election::new("lb-b", 100, true, 3, I, t0);
        b.on_tick(100, t0 + I * 3);
        let t = b
            .on_advert(&advert("lb-a", Role::Active, 100), 100, t0 + I * 4)
            .unwrap();
        assert_eq!(t.to, Role::Standby, "lb-a < lb-b");
        let mut a = Election::new("lb-a", 200, true, 3, I, t0);
        a.on_advert(&advert("lb-b", Role::Active, 50), 0, t0);
        assert_eq!(a.role(), Role::Standby, "priority 0 does not preempt");
    }

    #[test]
    fn an_active_node_whose_priority_falls_yields_even_without_preempt() {
        let t0 = Instant::now();
        let mut a = Election::new("lb-a", 200, false, 3, I, t0);
        a.on_tick(200, t0 + I * 3);
        assert_eq!(a.role(), Role::Active);
        assert_eq!(
            a.on_advert(&advert("lb-b", Role::Standby, 100), 200, t0 + I * 4),
            None
        );
        let t = a.on_tick(50, t0 + I * 5).unwrap();
        assert_eq!(t.to, Role::Standby);
        assert!(t.reason.contains("fell to 50"), "{}", t.reason);
        // The standby, not preempting, takes over once nobody is active.
        let mut b = Election::new("lb-b", 100, false, 3, I, t0);
        b.on_advert(&advert("lb-a", Role::Active, 200), 100, t0 + I * 4);
        assert_eq!(b.role(), Role::Standby);
        let t = b
            .on_advert(&advert("lb-a", Role::Standby, 50), 100, t0 + I * 5)
            .unwrap();
        assert_eq!(t.to, Role::Active);
    }

    #[test]
    fn a_fault_gives_up_the_role_even_with_no_peer_to_take_it() {
        let t0 = Instant::now();
        let mut a = Election::new("lb-a", 200, true, 3, I, t0);
        a.on_tick(200, t0 + I * 3);
        assert_eq!(a.role(), Role::Active);
        let t = a.on_tick(0, t0 + I * 4).unwrap();
        assert_eq!(t.to, Role::Standby);
        assert!(t.reason.contains("fault"), "{}", t.reason);
        assert_eq!(a.on_tick(0, t0 + I * 40), None, "stays out while faulty");
        assert_eq!(a.on_tick(200, t0 + I * 41).unwrap().to, Role::Active);
    }
}
