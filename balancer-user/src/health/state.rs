//! The hysteresis of one target: pure, so that rise/fall counting is tested
//! without sockets or clocks.

/// Up/down with a streak of results that disagree with the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    state: Option<bool>,
    /// Consecutive results against `state`; any agreeing result resets it, so
    /// only an unbroken run of `rise` successes or `fall` failures flips.
    streak: u32,
    rise: u32,
    fall: u32,
}

/// A change of state that [`Hysteresis::observe`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    pub healthy: bool,
    /// How many consecutive results made the change (1 for a first verdict).
    pub streak: u32,
}

impl Hysteresis {
    /// `rise` and `fall` below 1 are taken as 1, as validation never lets them be 0.
    pub fn new(initial: Option<bool>, rise: u32, fall: u32) -> Self {
        Self {
            state: initial,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> Option<bool> {
        self.state
    }

    /// Takes one probe result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Flip> {
        let Some(current) = self.state else {
            // Nothing is known yet: waiting for `rise` successes would keep a
            // freshly started daemon from forwarding to anything for seconds.
            self.state = Some(ok);
            self.streak = 0;
            return Some(Flip {
                healthy: ok,
                streak: 1,
            });
        };
        if ok == current {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak < needed {
            return None;
        }
        let streak = self.streak;
        self.state = Some(ok);
        self.streak = 0;
        Some(Flip {
            healthy: ok,
            streak,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(h: &mut Hysteresis, results: &str) -> Vec<Option<bool>> {
        results
            .chars()
            .map(|c| h.observe(c == '+').map(|f| f.healthy))
            .collect()
    }

    #[test]
    fn first_result_decides_from_unknown() {
        let mut up = Hysteresis::new(None, 3, 3);
        assert_eq!(
            up.observe(true),
            Some(Flip {
                healthy: true,
                streak: 1
            })
        );
        assert_eq!(up.state(), Some(true));

        let mut down = Hysteresis::new(None, 3, 3);
        assert_eq!(down.observe(false).map(|f| f.healthy), Some(false));
        assert_eq!(down.state(), Some(false));
    }

    #[test]
    fn known_initial_state_is_not_reannounced() {
        let mut h = Hysteresis::new(Some(true), 2, 2);
        assert_eq!(feed(&mut h, "+++"), [None, None, None]);
        let mut h = Hysteresis::new(Some(false), 2, 2);
        assert_eq!(feed(&mut h, "-+"), [None, None]);
        assert_eq!(h.observe(true).map(|f| f.healthy), Some(true));
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        let mut h = Hysteresis::new(Some(true), 2, 3);
        assert_eq!(feed(&mut h, "--"), [None, None]);
        assert_eq!(
            h.observe(false),
            Some(Flip {
                healthy: false,
                streak: 3
            })
        );
        assert_eq!(h.state(), Some(false));
        assert_eq!(feed(&mut h, "---"), [None, None, None]);
    }

    #[test]
    fn rise_consecutive_successes_bring_it_up() {
        let mut h = Hysteresis::new(Some(false), 2, 3);
        assert_eq!(h.observe(true), None);
        assert_eq!(
            h.observe(true),
            Some(Flip {
                healthy: true,
                streak: 2
            })
        );
        assert_eq!(h.state(), Some(true));
    }

    #[test]
    fn an_interrupted_streak_starts_again() {
        let mut h = Hysteresis::new(Some(true), 2, 3);
        assert_eq!(feed(&mut h, "--+--+--"), [None; 8]);
        assert_eq!(h.state(), Some(true));
        assert_eq!(h.observe(false).map(|f| f.healthy), Some(false));

        assert_eq!(feed(&mut h, "+-+-+-"), [None; 6]);
        assert_eq!(h.state(), Some(false));
        assert_eq!(feed(&mut h, "++"), [None, Some(true)]);
    }

    #[test]
    fn flapping_with_thresholds_of_one_follows_every_result() {
        let mut h = Hysteresis::new(None, 1, 1);
        assert_eq!(
            feed(&mut h, "+-+-++--"),
            [
                Some(true),
                Some(false),
                Some(true),
                Some(false),
                Some(true),
                None,
                Some(false),
                None
            ]
        );
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut h = Hysteresis::new(Some(true), 0, 0);
        assert_eq!(h.observe(false).map(|f| f.healthy), Some(false));
        assert_eq!(h.observe(true).map(|f| f.healthy), Some(true));
    }
}
