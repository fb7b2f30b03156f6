//! Per-community read budgets: how many RPC calls each community may make
//! on one chain.
//!
//! One chain reader (and so one provider account) serves every community.
//! Without a budget, one community's mass re-check or a flood of `/check`s
//! takes every call the provider allows, and everyone else's reads come
//! back throttled (Unknown). Each community gets a token bucket here; a
//! community over its budget is refused at once (its reads fall back to the
//! cache or come back Unknown, see [`super::ChainReader::read`]) and never
//! waits while holding anything another community needs.
//!
//! The bucket is GCRA (the "virtual scheduling" form of a token bucket):
//! one instant per community, the theoretical time at which its bucket will
//! be full again. A community whose bucket has refilled holds no state worth
//! keeping, so the map is pruned of such entries as it grows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::CommunityBudget;

pub struct Budgets {
    /// Time one call's token takes to come back.
    interval: Duration,
    /// How far ahead of now a community's bucket may be spent: `burst`
    /// intervals.
    tolerance: Duration,
    /// Per community, the instant its bucket is full again (GCRA's TAT).
    full_at: HashMap<Uuid, Instant>,
    /// Prune when the map reaches this size; doubled after each prune, so
    /// pruning costs O(1) per insert, amortised.
    prune_at: usize,
}

const MIN_PRUNE_AT: usize = 1024;

impl Budgets {
    pub fn new(budget: CommunityBudget) -> Self {
        // Validated: the rate is finite and positive. The clamp keeps a
        // tiny rate from overflowing `Duration` all the same.
        let interval = Duration::from_secs_f64((1.0 / budget.calls_per_second).min(1e9));
        Budgets {
            interval,
            tolerance: interval.saturating_mul(budget.burst),
            full_at: HashMap::new(),
            prune_at: MIN_PRUNE_AT,
        }
    }

    /// Spends `calls` of `community`'s budget if it has that many now and
    /// `keep` more; otherwise spends nothing and says no.
    pub fn try_spend(&mut self, community: Uuid, calls: u32, keep: u32, now: Instant) -> bool {
        let full_at = self
            .full_at
            .get(&community)
            .copied()
            .unwrap_or(now)
            .max(now);
        let Some(after) = full_at.checked_add(self.interval.saturating_mul(calls)) else {
            return false;
        };
        let tolerance = self
            .tolerance
            .saturating_sub(self.interval.saturating_mul(keep));
        if after.saturating_duration_since(now) > tolerance {
            return false;
        }
        self.full_at.insert(community, after);
        if self.full_at.len() >= self.prune_at {
            self.full_at.retain(|_, full_at| *full_at > now);
            self.prune_at = (self.full_at.len() * 2).max(MIN_PRUNE_AT);
        }
        true
    }

    /// Communities with spent budget being tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.full_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(calls_per_second: f64, burst: u32) -> Budgets {
        Budgets::new(CommunityBudget {
            calls_per_second,
            burst,
        })
    }

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut b = budgets(10.0, 5);
        assert!(b.try_spend(A, 5, 0, t0), "the whole burst at once");
        assert!(!b.try_spend(A, 1, 0, t0), "nothing left");
        assert!(!b.try_spend(A, 1, 0, at(99)));
        assert!(b.try_spend(A, 1, 0, at(100)), "one call back every 100 ms");
        assert!(!b.try_spend(A, 2, 0, at(250)), "only one back since");
        assert!(b.try_spend(A, 1, 0, at(250)));
        // Idle long enough, the bucket is full again, and no fuller.
        assert!(b.try_spend(A, 5, 0, at(10_000)));
        assert!(!b.try_spend(A, 1, 0, at(10_000)));
    }

    #[test]
    fn a_refused_spend_costs_nothing() {
        let t0 = Instant::now();
        let mut b = budgets(1.0, 3);
        assert!(!b.try_spend(A, 4, 0, t0), "more than the burst");
        assert!(b.try_spend(A, 3, 0, t0), "the refusal spent nothing");
    }

    #[test]
    fn a_spend_may_be_asked_to_leave_some_behind() {
        let t0 = Instant::now();
        let mut b = budgets(1.0, 10);
        assert!(!b.try_spend(A, 10, 1, t0), "would not leave one");
        assert!(b.try_spend(A, 9, 1, t0));
        assert!(!b.try_spend(A, 1, 1, t0), "the last one is kept…");
        assert!(b.try_spend(A, 1, 0, t0), "…for a spend that keeps none");
    }

    #[test]
    fn communities_have_separate_buckets() {
        let t0 = Instant::now();
        let mut b = budgets(1.0, 2);
        assert!(b.try_spend(A, 2, 0, t0));
        assert!(!b.try_spend(A, 1, 0, t0));
        assert!(b.try_spend(B, 2, 0, t0), "A's spending is not B's");
    }

    #[test]
    fn refilled_communities_are_forgotten() {
        let t0 = Instant::now();
        let mut b = budgets(1_000.0, 1);
        for n in 0..(MIN_PRUNE_AT as u128 - 1) {
            assert!(b.try_spend(Uuid::from_u128(n), 1, 0, t0));
        }
        assert_eq!(b.tracked(), MIN_PRUNE_AT - 1);
        // A second later every one of them has refilled; a newcomer
        // brings the map to the size that prunes it.
        let later = t0 + Duration::from_secs(1);
        assert!(b.try_spend(Uuid::max(), 1, 0, later));
        assert_eq!(b.tracked(), 1, "only the community still refilling");
    }
}
