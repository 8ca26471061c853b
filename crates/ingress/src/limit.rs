//! A per-source token bucket for `rate_limit` (requests per second, bursts up to one second's worth).

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes a token if one is there.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_one_second_then_refuses() {
        let limiter = RateLimiter::new(5);
        let granted = (0..20).filter(|_| limiter.try_acquire()).count();
        assert_eq!(granted, 5);
    }
}
