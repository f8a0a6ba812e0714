//! What the daemon knows about one backend beyond the file: its place in the
//! maps, its health, drain and reported load, and the flags that follow.

use std::time::{Instant, SystemTime};

use balancer_common::service::{
    BACKEND_F_DRAINING, BACKEND_F_HEALTHY, BACKEND_F_PRESENT, BACKEND_F_PURGE, BackendIndex,
};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Checked, no verdict yet: takes no new flows until the first check says up.
    Unknown,
    Up,
    Down,
    /// `kind = "none"`: always eligible.
    Unchecked,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
            Health::Unchecked => "unchecked",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackendState {
    pub index: BackendIndex,
    pub health: Health,
    /// Why the health is what it is (the last check's verdict).
    pub reason: String,
    pub since: SystemTime,
    /// Drained by an operator (`balancer backend drain`).
    pub admin_drain: Option<Instant>,
    /// Drained or downed by its own agent.
    pub agent_drain: bool,
    pub agent_down: bool,
    /// Percentage busy reported by the agent (0 when it has no agent).
    pub load_pct: u32,
    /// The service resets a failed backend's flows (`on_backend_down = "reset"`).
    pub reset_when_down: bool,
    /// Drained past the service's `drain_timeout_s`: remaining flows are ended.
    pub drain_expired: bool,
}

impl BackendState {
    pub fn new(index: BackendIndex, checked: bool, reset_when_down: bool) -> Self {
        Self {
            index,
            health: if checked {
                Health::Unknown
            } else {
                Health::Unchecked
            },
            reason: if checked {
                "waiting for the first check".into()
            } else {
                "not checked".into()
            },
            since: SystemTime::now(),
            admin_drain: None,
            agent_drain: false,
            agent_down: false,
            load_pct: 0,
            reset_when_down,
            drain_expired: false,
        }
    }

    pub fn healthy(&self) -> bool {
        matches!(self.health, Health::Up | Health::Unchecked) && !self.agent_down
    }

    pub fn draining(&self) -> bool {
        self.admin_drain.is_some() || self.agent_drain
    }

    /// `BACKEND_F_*` for the `BACKENDS` entry.
    pub fn flags(&self) -> u32 {
        let mut flags = BACKEND_F_PRESENT;
        if self.healthy() {
            flags |= BACKEND_F_HEALTHY;
        }
        if self.draining() {
            flags |= BACKEND_F_DRAINING;
        }
        let reset = self.reset_when_down && self.health == Health::Down;
        if reset || (self.drain_expired && self.draining()) {
            flags |= BACKEND_F_PURGE;
        }
        flags
    }

    /// For `balancer status`: the one word an operator reads first.
    pub fn state_word(&self) -> &'static str {
        if !self.healthy() {
            "down"
        } else if self.draining() {
            "draining"
        } else {
            "up"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_takes_no_flows_and_unchecked_does() {
        let checked = BackendState::new(BackendIndex(0), true, false);
        assert_eq!(checked.flags() & BACKEND_F_HEALTHY, 0);
        let unchecked = BackendState::new(BackendIndex(0), false, false);
        assert_ne!(unchecked.flags() & BACKEND_F_HEALTHY, 0);
    }

    #[test]
    fn reset_services_purge_down_backends_only() {
        let mut b = BackendState::new(BackendIndex(0), true, true);
        b.health = Health::Up;
        assert_eq!(b.flags() & BACKEND_F_PURGE, 0);
        b.health = Health::Down;
        assert_ne!(b.flags() & BACKEND_F_PURGE, 0);
        let mut keep = BackendState::new(BackendIndex(0), true, false);
        keep.health = Health::Down;
        assert_eq!(keep.flags() & BACKEND_F_PURGE, 0);
    }

    #[test]
    fn a_drain_that_expired_purges_until_enabled() {
        let mut b = BackendState::new(BackendIndex(0), false, false);
        b.admin_drain = Some(Instant::now());
        assert_eq!(
            b.flags(),
            BACKEND_F_PRESENT | BACKEND_F_HEALTHY | BACKEND_F_DRAINING
        );
        b.drain_expired = true;
        assert_ne!(b.flags() & BACKEND_F_PURGE, 0);
        b.admin_drain = None;
        assert_eq!(b.flags(), BACKEND_F_PRESENT | BACKEND_F_HEALTHY);
    }

    #[test]
    fn an_agent_that_says_down_takes_it_out() {
        let mut b = BackendState::new(BackendIndex(0), false, false);
        b.agent_down = true;
        assert_eq!(b.flags() & BACKEND_F_HEALTHY, 0);
        assert_eq!(b.state_word(), "down");
    }
}
