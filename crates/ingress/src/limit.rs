//! A per-source limit for `rate_limit`: requests per second, bursts up to one second's worth.
//! governor's GCRA, as the egress's per-endpoint limits.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota};

#[derive(Debug)]
pub struct RateLimiter(DefaultDirectRateLimiter);

impl RateLimiter {
    /// A limit of `per_second`; `None` for 0, which the configuration refuses.
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        Some(Self(DefaultDirectRateLimiter::direct(Quota::per_second(
            rate,
        ))))
    }

    /// Takes a request's place if the limit has one now.
    pub fn try_acquire(&self) -> bool {
        self.0.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_one_second_then_refuses() {
        let limiter = RateLimiter::new(5).unwrap();
        let granted = (0..20).filter(|_| limiter.try_acquire()).count();
        assert_eq!(granted, 5);
    }
}
