//! Discord's invalid requests in a sliding window, for the breaker.
//!
//! Discord bans a bot (for an hour, from the whole API) that makes 10,000
//! invalid requests in 10 minutes: responses 401, 403 and 429, except 429s
//! of a shared rate limit. The count is kept in slots of a sixtieth of the
//! window, so it is a few hundred bytes whatever the rate; a slot is dropped
//! only once all of it is older than the window, so the count errs high and
//! the breaker closes a slot late rather than early.

use serde::{Deserialize, Serialize};

/// Slots per window.
const SLOTS: u64 = 60;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InvalidRequests {
    /// Slot length in milliseconds, fixed by the first count.
    #[serde(default)]
    slot_ms: u64,
    /// (slot start in Unix milliseconds, count), oldest first.
    #[serde(default)]
    slots: Vec<(u64, u32)>,
}

impl InvalidRequests {
    /// Counts `n` invalid requests at `now_ms`.
    pub(crate) fn add(&mut self, n: u32, now_ms: u64, window_ms: u64) {
        if n == 0 {
            return;
        }
        if self.slot_ms == 0 {
            self.slot_ms = (window_ms / SLOTS).max(1);
        }
        self.forget(now_ms, window_ms);
        let start = now_ms - now_ms % self.slot_ms;
        match self.slots.last_mut() {
            Some((last, count)) if *last == start => *count = count.saturating_add(n),
            // A clock behind the one that wrote the last slot: count it there.
            Some((last, count)) if *last > start => *count = count.saturating_add(n),
            _ => self.slots.push((start, n)),
        }
    }

    /// Invalid requests in the window ending at `now_ms`.
    pub(crate) fn count(&self, now_ms: u64, window_ms: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(start, _)| self.live(*start, now_ms, window_ms))
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// Until when the breaker stays open: `None` if fewer than `limit`
    /// invalid requests are in the window, else the moment enough of them
    /// have left it (if no more come).
    pub(crate) fn open_until(&self, now_ms: u64, window_ms: u64, limit: u64) -> Option<u64> {
        let mut left = self.count(now_ms, window_ms);
        if left < limit {
            return None;
        }
        for (start, n) in &self.slots {
            if !self.live(*start, now_ms, window_ms) {
                continue;
            }
            left -= u64::from(*n);
            if left < limit {
                return Some(start + self.slot_ms + window_ms);
            }
        }
        // Unreachable with limit > 0; closed once the newest slot leaves.
        Some(now_ms + window_ms + self.slot_ms)
    }

    fn live(&self, start: u64, now_ms: u64, window_ms: u64) -> bool {
        start + self.slot_ms + window_ms > now_ms
    }

    fn forget(&mut self, now_ms: u64, window_ms: u64) {
        let slot_ms = self.slot_ms;
        self.slots
            .retain(|(start, _)| start + slot_ms + window_ms > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 600_000;

    #[test]
    fn the_breaker_opens_at_the_limit_and_closes_once_the_window_has_passed() {
        let mut invalid = InvalidRequests::default();
        invalid.add(4, 1_000, WINDOW);
        assert_eq!(invalid.open_until(1_000, WINDOW, 5), None);
        invalid.add(1, 30_000, WINDOW);
        let until = invalid.open_until(30_000, WINDOW, 5).expect("open");
        // Closed once the first four (slot 0..10 s) have left the window.
        assert_eq!(until, 10_000 + WINDOW);
        assert!(
            until >= 1_000 + WINDOW,
            "never before the window has passed"
        );
        assert_eq!(invalid.open_until(until, WINDOW, 5), None);
        assert_eq!(invalid.count(until, WINDOW), 1);
    }

    #[test]
    fn old_slots_are_dropped_and_the_record_stays_small() {
        let mut invalid = InvalidRequests::default();
        for second in 0..3_600u64 {
            invalid.add(1, second * 1_000, WINDOW);
        }
        assert!(
            invalid.slots.len() <= SLOTS as usize + 1,
            "{}",
            invalid.slots.len()
        );
        let now = 3_599_000;
        let count = invalid.count(now, WINDOW);
        assert!((600..=610).contains(&count), "{count}");
    }

    #[test]
    fn a_slower_clock_still_counts() {
        let mut invalid = InvalidRequests::default();
        invalid.add(1, 50_000, WINDOW);
        invalid.add(1, 40_000, WINDOW);
        assert_eq!(invalid.count(50_000, WINDOW), 2);
    }
}
