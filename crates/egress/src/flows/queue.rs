//! One endpoint's queue at the replica that owns its partition: at most `max_in_flight` tasks
//! started, some more waiting in memory (unacked, so the broker still holds them), and beyond
//! that parked: acked, and stored as a message schedule due when the endpoint should have room
//! again. What may wait is about [`WAIT_HORIZON`] of the endpoint's work at its own pace, at
//! least `buffer` and at most [`MAX_WAITING`]: a fast endpoint keeps its backlog in memory and
//! runs at full speed, and a slow or stuck one holds at most `max_in_flight + buffer` of its
//! partition's unacked tasks, whatever its backlog.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// How much of an endpoint's work may wait in memory, at its pace.
pub const WAIT_HORIZON: Duration = Duration::from_secs(1);
/// The most tasks of one endpoint that wait in memory.
pub const MAX_WAITING: usize = 1024;

/// The least and the most a task is parked for.
const PARK_MIN: Duration = Duration::from_secs(1);
const PARK_MAX: Duration = Duration::from_secs(600);

/// An endpoint's limits, as its record says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_in_flight: u32,
    /// Requests per second; 0 is unlimited.
    pub rate_limit: u32,
    pub buffer: u32,
}

/// What to do with a task that has just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A slot is free: start it.
    Start,
    /// Queued in memory behind the running ones.
    Wait,
    /// No room: park it for this long.
    Park(Duration),
}

/// At most `rate` starts in any 1.1 s (a tenth over a second, since requests reach a receiver
/// with some jitter after they start): one start per `1.1 s / rate`, no burst.
pub struct Limiter {
    rate: u32,
    inner: DefaultDirectRateLimiter,
}

impl Limiter {
    pub fn new(rate: u32) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(rate)?;
        let period = Duration::from_secs_f64(1.1 / f64::from(rate.get()));
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::MIN);
        Some(Arc::new(Self {
            rate: rate.get(),
            inner: RateLimiter::direct(quota),
        }))
    }

    /// Waits until a request may start.
    pub async fn ready(&self) {
        let clock = DefaultClock::default();
        while let Err(not_until) = self.inner.check() {
            tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
        }
    }
}

/// One endpoint's tasks at its owner; `T` is the task as the broker delivered it.
pub struct EndpointQueue<T> {
    pub in_flight: u32,
    pub waiting: VecDeque<T>,
    limiter: Option<Arc<Limiter>>,
    /// A moving average of the endpoint's answer times.
    latency: Duration,
    /// The last start or finish: an endpoint full since long ago is at least that slow.
    last_progress: Instant,
    /// When the last parked task is due.
    horizon: Instant,
}

impl<T> EndpointQueue<T> {
    pub fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            waiting: VecDeque::new(),
            limiter: None,
            latency: Duration::from_millis(50),
            last_progress: now,
            horizon: now,
        }
    }

    /// The endpoint's rate limiter, made anew when its rate changed.
    pub fn limiter(&mut self, rate: u32) -> Option<Arc<Limiter>> {
        if self.limiter.as_ref().map(|l| l.rate) != Some(rate).filter(|r| *r > 0) {
            self.limiter = Limiter::new(rate);
        }
        self.limiter.clone()
    }

    /// Where an arriving task goes.
    pub fn admit(&mut self, limits: Limits, now: Instant) -> Admit {
        if self.in_flight < limits.max_in_flight.max(1) && self.waiting.is_empty() {
            self.in_flight += 1;
            self.last_progress = now;
            return Admit::Start;
        }
        if self.waiting.len() < self.room(limits, now) {
            return Admit::Wait;
        }
        Admit::Park(self.park_for(limits, now))
    }

    /// A started task finished after `latency`; returns the next waiting one to start, if the
    /// limits leave room for it.
    pub fn finished(&mut self, limits: Limits, latency: Duration, now: Instant) -> Option<T> {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.latency = (self.latency * 7 + latency) / 8;
        self.last_progress = now;
        self.next(limits, now)
    }

    /// The next waiting task, if a slot is free (taken for it).
    pub fn next(&mut self, limits: Limits, now: Instant) -> Option<T> {
        if self.in_flight >= limits.max_in_flight.max(1) {
            return None;
        }
        let task = self.waiting.pop_front()?;
        self.in_flight += 1;
        self.last_progress = now;
        Some(task)
    }

    /// Nothing started or waiting, and nothing started lately (the limiter's state still
    /// matters for a second after the last start).
    pub fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self.waiting.is_empty()
            && now.duration_since(self.last_progress) > Duration::from_secs(2)
            && self.horizon <= now
    }

    /// How many tasks may wait: those the endpoint should start within [`WAIT_HORIZON`], at its
    /// answer time over its slots (or the time it has been stuck, if longer), and at its rate
    /// limit; at least `buffer`, at most [`MAX_WAITING`].
    fn room(&self, limits: Limits, now: Instant) -> usize {
        let slots = limits.max_in_flight.max(1);
        let stuck = if self.in_flight >= slots {
            now.duration_since(self.last_progress)
        } else {
            Duration::ZERO
        };
        let pace = self.latency.max(stuck).max(Duration::from_micros(100));
        let mut starts = f64::from(slots) * WAIT_HORIZON.as_secs_f64() / pace.as_secs_f64();
        if limits.rate_limit > 0 {
            starts = starts.min(f64::from(limits.rate_limit) * WAIT_HORIZON.as_secs_f64() / 1.1);
        }
        (starts as usize).clamp(
            limits.buffer as usize,
            MAX_WAITING.max(limits.buffer as usize),
        )
    }

    /// How long a task that finds no room is parked: parked tasks are spaced by the endpoint's
    /// estimated time per task (its answer time over its slots, or its rate limit), behind those
    /// ahead of them, so each comes back about when there is room for it.
    fn park_for(&mut self, limits: Limits, now: Instant) -> Duration {
        let stuck = now.duration_since(self.last_progress);
        let per_task = self.latency.max(stuck) / limits.max_in_flight.max(1);
        let per_task = match limits.rate_limit {
            0 => per_task,
            rate => per_task.max(Duration::from_secs_f64(1.1 / f64::from(rate))),
        };
        let ahead = self.in_flight + self.waiting.len() as u32;
        let due = self.horizon.max(now + per_task * ahead) + per_task;
        let delay = due.duration_since(now).clamp(PARK_MIN, PARK_MAX);
        self.horizon = now + delay;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_in_flight: 2,
        rate_limit: 0,
        buffer: 3,
    };

    #[test]
    fn slots_then_the_buffer_then_parking_and_finishing_starts_the_next_in_order() {
        let now = Instant::now();
        let mut queue = EndpointQueue::new(now);
        // A slow endpoint (1 s an answer): only the buffer waits.
        queue.latency = Duration::from_secs(1);
        assert_eq!(queue.admit(LIMITS, now), Admit::Start);
        assert_eq!(queue.admit(LIMITS, now), Admit::Start);
        for n in 0..3 {
            assert_eq!(queue.admit(LIMITS, now), Admit::Wait);
            queue.waiting.push_back(n);
        }
        let Admit::Park(first) = queue.admit(LIMITS, now) else {
            panic!("parked");
        };
        let Admit::Park(second) = queue.admit(LIMITS, now) else {
            panic!("parked");
        };
        assert!(first >= PARK_MIN && second >= first, "{first:?} {second:?}");
        assert_eq!(
            queue.finished(LIMITS, Duration::from_millis(10), now),
            Some(0)
        );
        assert_eq!(queue.in_flight, 2);
        // A lower max_in_flight holds the next back until enough have finished.
        let one = Limits {
            max_in_flight: 1,
            ..LIMITS
        };
        assert_eq!(queue.finished(one, Duration::from_millis(10), now), None);
        assert_eq!(queue.finished(one, Duration::from_millis(10), now), Some(1));
        assert_eq!(queue.in_flight, 1);
        // Waiting tasks go first: a newcomer does not overtake them.
        assert_eq!(queue.admit(LIMITS, now), Admit::Wait);
    }

    #[test]
    fn a_fast_endpoint_keeps_its_backlog_waiting_and_a_stuck_one_only_its_buffer() {
        let now = Instant::now();
        let limits = Limits {
            max_in_flight: 32,
            rate_limit: 0,
            buffer: 8,
        };
        let mut fast: EndpointQueue<()> = EndpointQueue::new(now);
        fast.latency = Duration::from_millis(2);
        fast.in_flight = 32;
        // 32 slots × 1 s / 2 ms = 16,000 starts: capped.
        assert_eq!(fast.room(limits, now), MAX_WAITING);
        let mut slow: EndpointQueue<()> = EndpointQueue::new(now);
        slow.latency = Duration::from_millis(50);
        slow.in_flight = 32;
        assert_eq!(slow.room(limits, now), 640);
        // Nothing finished for 5 s: stuck, however fast it answered before.
        assert_eq!(fast.room(limits, now + Duration::from_secs(5)), 8);
        // A rate limit of 100/s lets about 90 wait.
        let limited = Limits {
            rate_limit: 100,
            ..limits
        };
        assert_eq!(fast.room(limited, now), 90);
    }

    #[test]
    fn an_endpoint_stuck_for_long_parks_its_backlog_further_out() {
        let now = Instant::now();
        let limits = Limits {
            max_in_flight: 4,
            rate_limit: 0,
            buffer: 0,
        };
        let mut queue: EndpointQueue<()> = EndpointQueue::new(now);
        for _ in 0..4 {
            assert_eq!(queue.admit(limits, now), Admit::Start);
        }
        let later = now + Duration::from_secs(40);
        let delays: Vec<Duration> = (0..10)
            .map(|_| match queue.admit(limits, later) {
                Admit::Park(d) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        // 40 s without progress over 4 slots: about 10 s a task.
        assert!(delays[0] >= Duration::from_secs(40), "{delays:?}");
        assert!(
            delays
                .windows(2)
                .all(|w| w[1] >= w[0] + Duration::from_secs(9))
        );
        assert!(delays.iter().all(|d| *d <= PARK_MAX));
    }

    #[test]
    fn a_rate_limit_spaces_parked_tasks_at_the_rate() {
        let now = Instant::now();
        let limits = Limits {
            max_in_flight: 100,
            rate_limit: 1,
            buffer: 0,
        };
        let mut queue: EndpointQueue<()> = EndpointQueue::new(now);
        queue.in_flight = 100;
        let Admit::Park(a) = queue.admit(limits, now) else {
            panic!()
        };
        let Admit::Park(b) = queue.admit(limits, now) else {
            panic!()
        };
        assert!(b - a >= Duration::from_secs(1), "{a:?} {b:?}");
    }

    #[tokio::test]
    async fn the_limiter_allows_at_most_the_rate_in_any_second() {
        let limiter = Limiter::new(10).unwrap();
        let started = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..12 {
            limiter.ready().await;
            starts.push(started.elapsed());
        }
        for window in starts.windows(11) {
            assert!(
                window[10] - window[0] >= Duration::from_secs(1),
                "{starts:?}"
            );
        }
        assert!(Limiter::new(0).is_none());
    }
}
