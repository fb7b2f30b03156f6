use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use hdrhistogram::Histogram;

/// Latency and outcome counters shared by every virtual user.
///
/// Two histograms: one for the whole run (the report) and one reset on every
/// progress tick (the live p99), so a bad second is visible while it happens.
pub struct Recorder {
    total: Mutex<Histogram<u64>>,
    window: Mutex<Histogram<u64>>,
    pub successes: AtomicU64,
    pub connection_errors: AtomicU64,
    pub query_errors: AtomicU64,
    pub cross_tenant_rows: AtomicU64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant figures. The bounds are
    // constants that hdrhistogram accepts, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            total: Mutex::new(histogram()),
            window: Mutex::new(histogram()),
            successes: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            query_errors: AtomicU64::new(0),
            cross_tenant_rows: AtomicU64::new(0),
        }
    }

    pub fn success(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // saturating_record clamps outliers to the top bucket instead of
        // dropping them.
        lock(&self.total).saturating_record(micros.max(1));
        lock(&self.window).saturating_record(micros.max(1));
        self.successes.fetch_add(1, Ordering::Relaxed);
    }

    /// The live window's p99 in milliseconds and its count; resets it.
    pub fn take_window(&self) -> (f64, u64) {
        let mut w = lock(&self.window);
        let out = (w.value_at_quantile(0.99) as f64 / 1000.0, w.len());
        w.reset();
        out
    }

    pub fn snapshot(&self) -> Histogram<u64> {
        lock(&self.total).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a histogram half-updated
    // in a way that matters for a benchmark; keep measuring.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
