//! When probes start: a random first delay and a jittered period, so that
//! thousands of targets configured at the same moment do not probe in step.

use std::{
    hash::{BuildHasher, Hash, RandomState},
    time::Duration,
};

/// The first probe waits at most this long, however long the interval.
const MAX_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Each period is the interval scaled by a factor in [1 - JITTER, 1 + JITTER).
const JITTER: f64 = 0.10;

/// A small generator (SplitMix64): spreading probes needs no cryptographic
/// quality, only independence between targets, which the per-task seed gives.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the process's random hash keys and `salt` (the target).
    pub fn seeded(salt: impl Hash) -> Self {
        Self(RandomState::new().hash_one(salt))
    }

    #[cfg(test)]
    pub fn from_seed(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits fill an f64 mantissa exactly.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Delay before a target's first probe, in [0, min(interval, 100 ms)).
pub fn first_delay(interval: Duration, unit: f64) -> Duration {
    interval.min(MAX_FIRST_DELAY).mul_f64(unit.clamp(0.0, 1.0))
}

/// Time from one probe's start to the next's: the interval ±10%.
pub fn period(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unit_stays_in_range_and_spreads() {
        let mut rng = Rng::from_seed(42);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        // Every tenth of the range gets a fair share.
        for decile in 0..10 {
            let n = draws
                .iter()
                .filter(|u| (**u * 10.0) as usize == decile)
                .count();
            assert!((800..1200).contains(&n), "decile {decile}: {n}");
        }
    }

    #[test]
    fn first_delay_is_below_the_interval_and_100_ms() {
        let mut rng = Rng::seeded("first");
        for interval in [MS, 50 * MS, 100 * MS, 1000 * MS, 60_000 * MS] {
            let bound = interval.min(100 * MS);
            for _ in 0..1000 {
                let d = first_delay(interval, rng.unit());
                assert!(d < bound, "{d:?} for {interval:?}");
            }
        }
        assert_eq!(first_delay(1000 * MS, 0.0), Duration::ZERO);
    }

    #[test]
    fn period_stays_within_ten_percent() {
        let mut rng = Rng::seeded("period");
        for interval in [MS, 500 * MS, 1000 * MS, 3_600_000 * MS] {
            let (low, high) = (interval.mul_f64(0.9), interval.mul_f64(1.1));
            let mut seen_low_half = false;
            let mut seen_high_half = false;
            for _ in 0..1000 {
                let p = period(interval, rng.unit());
                assert!(p >= low && p <= high, "{p:?} for {interval:?}");
                seen_low_half |= p < interval;
                seen_high_half |= p > interval;
            }
            assert!(
                seen_low_half && seen_high_half,
                "no spread for {interval:?}"
            );
        }
        assert_eq!(period(1000 * MS, 0.0), 900 * MS);
        assert_eq!(period(1000 * MS, 1.0), 1100 * MS);
    }

    #[test]
    fn seeds_differ_between_targets() {
        let a = Rng::seeded(("api", 1)).unit();
        let b = Rng::seeded(("api", 2)).unit();
        assert_ne!(a, b);
    }
}
