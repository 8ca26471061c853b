//! When a failed delivery is tried again.
//!
//! The default schedule after the first try is 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (eight
//! attempts in all, about 28 hours), each delay with ±20 % jitter so that retries of many tasks
//! that failed together do not arrive together. A `Retry-After` from the endpoint (429, 503) is
//! honoured: the next attempt comes no sooner than it says, up to the longest delay of the
//! schedule, so an endpoint cannot park a task indefinitely.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// The delay before the 2nd, 3rd, … attempt.
    pub delays: Vec<Duration>,
    /// The fraction each delay may move either way (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            delays: [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                .map(Duration::from_secs)
                .to_vec(),
            jitter: 0.2,
        }
    }
}

impl RetrySchedule {
    /// Attempts in all, the first one included.
    pub fn attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay after attempt `failed` (1 for the first try) failed, or `None` when that was the
    /// last one. `unit` is a random number in `[0, 1)` that picks the jitter; `retry_after` is the
    /// endpoint's own wish.
    pub fn next(&self, failed: u32, retry_after: Option<Duration>, unit: f64) -> Option<Duration> {
        let base = *self.delays.get(failed.checked_sub(1)? as usize)?;
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let jittered = base.mul_f64(factor.max(0.0));
        let longest = self.delays.iter().max().copied().unwrap_or_default();
        Some(match retry_after {
            Some(wish) => jittered.max(wish.min(longest)),
            None => jittered,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_default_schedule_and_its_end() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        assert_eq!(schedule.next(1, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(
            schedule.next(7, None, 0.5),
            Some(Duration::from_secs(36_000))
        );
        assert_eq!(
            schedule.next(8, None, 0.5),
            None,
            "eight attempts, then dead-lettered"
        );
        assert_eq!(schedule.next(0, None, 0.5), None);
        assert_eq!(
            schedule.next(1, Some(Duration::from_secs(90)), 0.5),
            Some(Duration::from_secs(90)),
            "Retry-After is honoured"
        );
        assert_eq!(
            schedule.next(1, Some(Duration::from_secs(10 * 86_400)), 0.5),
            Some(Duration::from_secs(36_000)),
            "up to the longest delay"
        );
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_its_jitter(failed in 1u32..8, unit in 0.0f64..1.0) {
            let schedule = RetrySchedule::default();
            let base = schedule.delays[failed as usize - 1].as_secs_f64();
            let delay = schedule.next(failed, None, unit).unwrap().as_secs_f64();
            prop_assert!(delay >= base * 0.8 - 1e-6 && delay <= base * 1.2 + 1e-6);
        }
    }
}
