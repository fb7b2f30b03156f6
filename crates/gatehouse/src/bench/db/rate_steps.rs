//! Open-loop rate steps: transactions offered at a fixed rate whether or not
//! earlier ones have finished, as members arrive in production, and the
//! highest rate at which p99 stays under 10 ms.
//!
//! Arrivals are a Poisson process, as pgbench's `-R` schedules them, and
//! are served by the same number of clients as pgbench's `-c`: a free
//! client takes the next scheduled start, waits for it, and runs the
//! transaction. Latency is measured from the scheduled start, so when the
//! clients fall behind, the wait counts (no coordinated omission) — pgbench
//! measures the same way under `-R`.

use std::{
    sync::{atomic::AtomicU32, Arc, Mutex},
    time::Duration,
};

use indicatif::ProgressBar;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use store::Store;
use tokio::time::Instant;

use super::{
    super::recorder::Recorder,
    closed_loop::Measured,
    workload::{self, Tenants},
};

/// The latency bound of `max_rate_p99_under_10ms`.
pub const P99_LIMIT_MS: f64 = 10.0;

/// A step counts as kept up with when this share of the offered rate was
/// served: below it the clients were saturated, whatever the latency of
/// the transactions they did start. Poisson arrivals over a 2 s step vary
/// by ±5 %, so not tighter.
const KEPT_UP: f64 = 0.9;

/// A side stops stepping up after this many failed steps in a row: one may
/// be a neighbour's burst on shared cores, two are the side's limit.
const FAILURES_TO_STOP: usize = 2;

/// Scheduled starts of a Poisson process at `rate` per second, as offsets
/// from the step's start, up to `length`.
pub struct Arrivals {
    next_us: f64,
    mean_gap_us: f64,
    end_us: f64,
    rng: SmallRng,
}

impl Arrivals {
    pub fn new(rate: u32, length: Duration, rng: SmallRng) -> Arrivals {
        let mut arrivals = Arrivals {
            next_us: 0.0,
            mean_gap_us: 1e6 / f64::from(rate.max(1)),
            end_us: length.as_secs_f64() * 1e6,
            rng,
        };
        arrivals.next_us = arrivals.gap();
        arrivals
    }

    fn gap(&mut self) -> f64 {
        // Exponential gaps; 1 - u is in (0, 1], so the log is finite.
        let u: f64 = self.rng.random();
        -(1.0 - u).ln() * self.mean_gap_us
    }

    pub fn next(&mut self) -> Option<Duration> {
        if self.next_us >= self.end_us {
            return None;
        }
        let at = Duration::from_secs_f64(self.next_us / 1e6);
        self.next_us += self.gap();
        Some(at)
    }
}

/// Offers `rate` transactions/s for `length` to `clients` clients.
pub async fn open_loop(
    store: &Store,
    tenants: &Arc<Tenants>,
    clients: u32,
    rate: u32,
    length: Duration,
    bar: &ProgressBar,
    base: u64,
) -> Measured {
    let recorder = Arc::new(Recorder::new());
    let logged = Arc::new(AtomicU32::new(0));
    let arrivals = Arc::new(Mutex::new(Arrivals::new(
        rate,
        length,
        SmallRng::from_rng(&mut rand::rng()),
    )));
    let started = Instant::now();
    let end = started + length;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (store, tenants, recorder, logged, arrivals) = (
                store.clone(),
                tenants.clone(),
                recorder.clone(),
                logged.clone(),
                arrivals.clone(),
            );
            tokio::spawn(async move {
                let mut rng = SmallRng::from_rng(&mut rand::rng());
                loop {
                    let next = arrivals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next();
                    let Some(offset) = next else { return };
                    let intended = started + offset;
                    // tokio's timer fires on whole milliseconds, rounding
                    // up: aimed 1 ms early it fires at or just before the
                    // scheduled start instead of up to 1 ms after it, which
                    // would count as latency.
                    tokio::time::sleep_until(intended - Duration::from_millis(1)).await;
                    let began = Instant::now();
                    // As pgbench's -T: nothing starts once the time is up,
                    // even if scheduled earlier.
                    if began >= end {
                        return;
                    }
                    let Some((tenant, user)) = tenants.pick(&mut rng) else {
                        return;
                    };
                    let outcome = workload::transaction(&store, tenant, user).await;
                    // From the scheduled start when late; from the real one
                    // when the timer woke early, so an early start does not
                    // shorten the figure.
                    let latency = began.min(intended).elapsed();
                    workload::record(&recorder, &logged, latency, outcome);
                }
            })
        })
        .collect();
    super::show_progress(bar, base, started, length, &recorder).await;
    for task in tasks {
        let _ = task.await;
    }
    Measured {
        recorder,
        elapsed: started.elapsed(),
    }
}

/// Whether a side's step kept p99 under the limit while serving the rate.
pub fn passes(offered: u32, achieved_tps: f64, p99_ms: f64) -> bool {
    p99_ms < P99_LIMIT_MS && achieved_tps >= KEPT_UP * f64::from(offered)
}

/// The highest offered rate among `steps` (rate, passed) that passed.
pub fn max_rate_under(steps: impl IntoIterator<Item = (u32, bool)>) -> Option<u32> {
    steps
        .into_iter()
        .filter(|&(_, passed)| passed)
        .map(|(rate, _)| rate)
        .max()
}

/// Whether a side with these step results (in order) should try the next
/// rate.
pub fn keep_stepping(passed: &[bool]) -> bool {
    passed.len() < FAILURES_TO_STOP || passed.iter().rev().take(FAILURES_TO_STOP).any(|&p| p)
}

/// The rates to offer: ascending, each once.
pub fn ordered(mut rates: Vec<u32>) -> Vec<u32> {
    rates.sort_unstable();
    rates.dedup();
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_come_at_the_rate_in_order_and_stop_at_the_end() {
        let mut a = Arrivals::new(1000, Duration::from_secs(10), SmallRng::seed_from_u64(1));
        let mut times = Vec::new();
        while let Some(t) = a.next() {
            times.push(t);
        }
        assert!((9_700..=10_300).contains(&times.len()), "{}", times.len());
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times.iter().all(|t| *t < Duration::from_secs(10)));
        // Poisson, not a metronome: gaps vary (a fixed 1 ms gap has none).
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((0.9..=1.1).contains(&mean), "mean gap {mean} ms");
        // An exponential distribution's deviation equals its mean.
        assert!(
            (0.8..=1.2).contains(&var.sqrt()),
            "deviation {} ms",
            var.sqrt()
        );
    }

    #[test]
    fn a_step_passes_under_ten_ms_only_when_it_kept_up() {
        assert!(passes(500, 498.0, 9.9));
        assert!(!passes(500, 498.0, 10.0));
        // Fast transactions but a third of them never started: saturated.
        assert!(!passes(1500, 1000.0, 4.0));
    }

    #[test]
    fn the_highest_passing_rate_counts_even_after_a_noisy_step() {
        let steps = [
            (250, true),
            (500, false),
            (750, true),
            (1000, false),
            (1250, false),
        ];
        assert_eq!(max_rate_under(steps), Some(750));
        assert_eq!(max_rate_under([(250, false)]), None);
        assert_eq!(max_rate_under([]), None);
    }

    #[test]
    fn a_side_stops_after_two_failures_in_a_row() {
        assert!(keep_stepping(&[]));
        assert!(keep_stepping(&[false]));
        assert!(keep_stepping(&[true, false]));
        assert!(keep_stepping(&[true, false, true, false]));
        assert!(!keep_stepping(&[true, false, false]));
        assert!(!keep_stepping(&[false, false]));
    }

    #[test]
    fn rates_are_offered_in_ascending_order_once() {
        assert_eq!(ordered(vec![1000, 250, 500, 250]), [250, 500, 1000]);
    }
}
