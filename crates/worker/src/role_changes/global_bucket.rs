//! Discord's global limit as a token bucket every worker process draws from.
//!
//! Discord allows a bot a number of requests per second across all routes
//! and all processes (50 unless Discord raised it), counted in windows we
//! cannot see. A token bucket of capacity `c` refilled at `r` per second
//! lets at most `c + r·t` requests through in any `t` seconds, so choosing
//! `c + r·(1 s + slack) <= limit` keeps every one-second window under the
//! limit wherever it falls. The slack is [`LEASE_TTL`] (a leased token may
//! be spent that long after the record granted it, never later) plus the
//! operator's margin for requests that reach Discord bunched up (network
//! jitter; `DISCORD_GLOBAL_MARGIN`, 20 ms by default).
//!
//! How much of the limit to give up is a trade. Every global 429 counts as
//! an invalid request towards Discord's ban (10,000 in ten minutes), but
//! one is not dangerous: it pauses every worker until its `retry_after`
//! and the invalid-request breaker stops all sending long before a ban.
//! Headroom, on the other hand, is paid every second a large server is
//! synced. So the bucket keeps a burst of `limit / 25` (2 at 50/s) and a
//! small default slack — at 50/s that is 46 requests a second sustained,
//! 0.92 of the limit — and an operator whose path to Discord is jittery
//! raises the margin (a quarter of a second costs a fifth of the rate).
//!
//! A process takes tokens a few at a time (a lease) so that one key-value
//! round trip can pay for several requests, and spends them within
//! [`LEASE_TTL`] of the moment the record granted them, or lets them lapse:
//! a token kept longer would let two seconds' worth of requests land in
//! one.
//!
//! The record also carries the invalid-request count (one read tells a
//! process both whether it may send and whether the breaker is open) and
//! the processes seen recently, which size the share a process falls back
//! to when it cannot reach the record.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::invalid_requests::InvalidRequests;

/// How long after the record granted it a leased token may be spent.
pub(crate) const LEASE_TTL: Duration = Duration::from_millis(20);

/// The default allowance for requests that reach Discord later or more
/// bunched than they were sent (see the module header).
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(20);

/// A process that has not drawn for this long no longer counts as a peer.
const PEER_TTL_MS: u64 = 60_000;

/// The bucket's shape for a limit of `per_second` requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GlobalRate {
    capacity: f64,
    refill_per_ms: f64,
}

impl GlobalRate {
    /// The bucket that keeps any second within `per_second` when requests
    /// reach Discord up to `margin` later or more bunched than they were
    /// sent (see the module header). Below 2 a second no burst fits: the
    /// bucket then keeps one token and refills at half the rate.
    pub(crate) fn for_limit(per_second: f64, margin: Duration) -> GlobalRate {
        let capacity = (per_second / 25.0).floor().max(1.0);
        let slack = (LEASE_TTL + margin).as_secs_f64();
        let sustained = (per_second - capacity).max(per_second / 2.0) / (1.0 + slack);
        GlobalRate {
            capacity,
            refill_per_ms: sustained / 1000.0,
        }
    }

    /// Requests per second the bucket lets through, sustained.
    pub(crate) fn per_second(&self) -> f64 {
        self.refill_per_ms * 1000.0
    }

    /// The most tokens one lease takes: the burst, so that one process
    /// cannot empty the bucket for longer than a burst.
    pub(crate) fn lease_max(&self) -> u32 {
        self.capacity as u32
    }
}

/// What a lease got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lease {
    Granted(u32),
    /// None now; the next token is there at this Unix millisecond.
    WaitUntil(u64),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GlobalRecord {
    /// Tokens in the bucket at `at_ms`.
    tokens: f64,
    at_ms: u64,
    /// Nothing is sent before this (Discord answered a global 429).
    #[serde(default)]
    paused_until_ms: u64,
    #[serde(default)]
    pub(crate) invalid: InvalidRequests,
    /// Process id → when it last drew.
    #[serde(default)]
    peers: BTreeMap<String, u64>,
}

impl GlobalRecord {
    /// A full bucket.
    pub(crate) fn new(rate: &GlobalRate, now_ms: u64) -> Self {
        GlobalRecord {
            tokens: rate.capacity,
            at_ms: now_ms,
            ..GlobalRecord::default()
        }
    }

    /// Takes up to `want` tokens for process `me`.
    pub(crate) fn lease(&mut self, rate: &GlobalRate, want: u32, now_ms: u64, me: &str) -> Lease {
        self.peers.insert(me.to_owned(), now_ms);
        self.peers
            .retain(|_, seen| seen.saturating_add(PEER_TTL_MS) > now_ms);
        if now_ms < self.paused_until_ms {
            return Lease::WaitUntil(self.paused_until_ms);
        }
        self.refill(rate, now_ms);
        let n = f64::from(want.min(rate.lease_max())).min(self.tokens.floor());
        if n >= 1.0 {
            self.tokens -= n;
            return Lease::Granted(n as u32);
        }
        let missing = 1.0 - self.tokens;
        let wait = if rate.refill_per_ms > 0.0 {
            (missing / rate.refill_per_ms).ceil() as u64
        } else {
            1_000
        };
        Lease::WaitUntil(now_ms + wait.max(1))
    }

    /// Discord answered a global 429: nobody sends until `retry_after` has
    /// passed, and the bucket starts empty then.
    pub(crate) fn pause(&mut self, retry_after: Duration, now_ms: u64) {
        let until = now_ms + u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX / 2);
        self.paused_until_ms = self.paused_until_ms.max(until);
        self.tokens = 0.0;
        self.at_ms = self.at_ms.max(until);
    }

    /// Processes that drew recently (at least this one).
    pub(crate) fn peers(&self) -> usize {
        self.peers.len().max(1)
    }

    fn refill(&mut self, rate: &GlobalRate, now_ms: u64) {
        // Another process's clock may be ahead: no refill until ours
        // catches up, rather than tokens from nowhere.
        if now_ms > self.at_ms {
            let elapsed = (now_ms - self.at_ms) as f64;
            self.tokens = (self.tokens + elapsed * rate.refill_per_ms).min(rate.capacity);
            self.at_ms = now_ms;
        }
        self.tokens = self.tokens.min(rate.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spends every token as soon as it exists for `millis`, as a flood of
    /// processes would; returns the most requests reaching Discord in any
    /// window of 1 s, when a request may arrive up to its lease's time to
    /// live plus `margin` after its lease.
    fn busiest_second(per_second: f64, margin: Duration, millis: u64) -> usize {
        let rate = GlobalRate::for_limit(per_second, margin);
        let mut record = GlobalRecord::new(&rate, 0);
        let mut leased_at = Vec::new();
        for now in 0..millis {
            if let Lease::Granted(n) = record.lease(&rate, u32::MAX, now, "p") {
                leased_at.extend(std::iter::repeat_n(now, n as usize));
            }
        }
        let late = (LEASE_TTL + margin).as_millis() as u64;
        // Worst case: the earliest leases arrive late, the latest at once.
        (0..millis)
            .map(|start| {
                leased_at
                    .iter()
                    .filter(|t| **t + late >= start && **t < start + 1_000)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_second_exceeds_the_limit_wherever_it_falls() {
        for margin in [Duration::ZERO, DEFAULT_MARGIN, Duration::from_millis(250)] {
            for limit in [2.0, 3.0, 10.0, 50.0, 120.0] {
                let busiest = busiest_second(limit, margin, 5_000);
                assert!(
                    busiest as f64 <= limit,
                    "limit {limit}, margin {margin:?}: {busiest} in one second"
                );
            }
        }
    }

    #[test]
    fn the_default_margin_gives_up_less_than_a_tenth_of_the_limit() {
        for limit in [50.0, 120.0, 1_000.0] {
            let rate = GlobalRate::for_limit(limit, DEFAULT_MARGIN);
            assert!(
                rate.per_second() >= 0.9 * limit,
                "limit {limit}: {} a second sustained",
                rate.per_second()
            );
            let busiest = busiest_second(limit, DEFAULT_MARGIN, 5_000);
            assert!(
                busiest as f64 >= 0.9 * limit,
                "limit {limit}: only {busiest}"
            );
        }
        // A wider margin costs rate, as the header says.
        let wide = GlobalRate::for_limit(50.0, Duration::from_millis(250));
        assert!(wide.per_second() < 40.0, "{}", wide.per_second());
    }

    #[test]
    fn a_lease_takes_a_few_tokens_and_says_when_the_next_comes() {
        let rate = GlobalRate::for_limit(100.0, DEFAULT_MARGIN);
        assert_eq!(rate.lease_max(), 4);
        let mut record = GlobalRecord::new(&rate, 1_000);
        assert_eq!(record.lease(&rate, 3, 1_000, "a"), Lease::Granted(3));
        assert_eq!(record.lease(&rate, 100, 1_000, "b"), Lease::Granted(1));
        let Lease::WaitUntil(at) = record.lease(&rate, 1, 1_000, "a") else {
            panic!("the bucket is empty");
        };
        // 92 a second refill: the next token after about 11 ms.
        assert!((1_010..=1_012).contains(&at), "{at}");
        assert_eq!(record.lease(&rate, 1, at, "a"), Lease::Granted(1));
        assert_eq!(record.peers(), 2);
        record.lease(&rate, 1, at + PEER_TTL_MS, "a");
        assert_eq!(record.peers(), 1, "b has not drawn for a minute");
    }

    #[test]
    fn a_global_429_pauses_everyone_until_its_retry_after() {
        let rate = GlobalRate::for_limit(50.0, DEFAULT_MARGIN);
        let mut record = GlobalRecord::new(&rate, 0);
        record.pause(Duration::from_millis(700), 100);
        assert_eq!(record.lease(&rate, 1, 500, "a"), Lease::WaitUntil(800));
        assert!(matches!(record.lease(&rate, 1, 800, "a"), Lease::WaitUntil(t) if t > 800));
    }

    #[test]
    fn a_clock_behind_the_record_gets_no_tokens_from_nowhere() {
        let rate = GlobalRate::for_limit(50.0, DEFAULT_MARGIN);
        let mut record = GlobalRecord::new(&rate, 10_000);
        assert_eq!(record.lease(&rate, 5, 10_000, "ahead"), Lease::Granted(2));
        assert!(matches!(
            record.lease(&rate, 5, 9_000, "behind"),
            Lease::WaitUntil(_)
        ));
    }
}
