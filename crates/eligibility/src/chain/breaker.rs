//! A circuit breaker per RPC URL.
//!
//! A dead endpoint would otherwise cost every evaluation a full timeout
//! before failing over. After `threshold` consecutive failures the breaker
//! opens and the URL is skipped; after `cooldown` one probe request is let
//! through (half-open) and its result closes or re-opens the breaker.
//!
//! The state machine takes `now` as an argument so it can be tested without
//! sleeping.

use std::time::{Duration, Instant};

/// What a breaker currently allows, for health reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen { probe_since: Instant },
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: State::Closed { failures: 0 },
        }
    }

    /// Whether a request may be sent now. Moving from open to half-open
    /// hands out exactly one probe.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { since } if now.saturating_duration_since(since) >= self.cooldown => {
                self.state = State::HalfOpen { probe_since: now };
                true
            }
            State::Open { .. } => false,
            // A probe whose caller was cancelled never reports back; without
            // this the breaker would stay half-open and refuse forever.
            State::HalfOpen { probe_since }
                if now.saturating_duration_since(probe_since) >= self.cooldown =>
            {
                self.state = State::HalfOpen { probe_since: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open { since: now },
        };
    }

    /// Whether requests flow freely: not open, and not half-open waiting
    /// on a probe. Only a success closes the breaker, so a URL that nothing
    /// has been sent to since it opened still counts as open.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { since } if now.saturating_duration_since(since) >= self.cooldown => {
                BreakerState::HalfOpen
            }
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, COOLDOWN);
        for _ in 0..2 {
            assert!(b.try_acquire(t0));
            b.on_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.try_acquire(t0));
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.try_acquire(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, COOLDOWN);
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn half_open_allows_one_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        b.on_failure(t0);
        let later = t0 + COOLDOWN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later), "the probe");
        assert!(!b.try_acquire(later), "only one probe at a time");
    }

    #[test]
    fn failed_probe_reopens_and_successful_probe_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        b.on_failure(t0);
        let t1 = t0 + COOLDOWN;
        assert!(b.try_acquire(t1));
        b.on_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert!(!b.try_acquire(t1 + Duration::from_secs(1)));

        let t2 = t1 + COOLDOWN;
        assert!(b.try_acquire(t2));
        b.on_success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert!(b.try_acquire(t2));
    }

    #[test]
    fn closed_only_until_it_opens_and_again_after_a_successful_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, COOLDOWN);
        b.on_failure(t0);
        assert!(b.is_closed(), "one failure below the threshold");
        b.on_failure(t0);
        assert!(!b.is_closed());
        assert!(b.try_acquire(t0 + COOLDOWN), "the probe");
        assert!(!b.is_closed(), "half-open is not closed yet");
        b.on_success();
        assert!(b.is_closed());
    }

    #[test]
    fn abandoned_probe_is_replaced_after_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        b.on_failure(t0);
        assert!(b.try_acquire(t0 + COOLDOWN));
        assert!(b.try_acquire(t0 + COOLDOWN * 2));
    }
}
