//! Discord's REST rate limits: a fixed window per route bucket (method, path
//! template and major parameter) and a global requests-per-second limit, with
//! the `X-RateLimit-*` headers Discord sends and 429s carrying `retry_after`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::RestLimits;

/// The headers Discord puts on every rate-limited route's response.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset_after: Duration,
    pub bucket: String,
}

impl RateHeaders {
    /// Header pairs. Times are rounded up to the millisecond: a client that
    /// waits exactly the advertised time must find the bucket reset.
    /// `x-ratelimit-scope` is sent on every response because twilight-http
    /// 0.18 reads the other headers only when it is present.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let reset_after = Duration::from_millis(ceil_millis(self.reset_after));
        let reset_at = SystemTime::now()
            .checked_add(reset_after)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, ceil_millis);
        vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", seconds(reset_at)),
            ("x-ratelimit-reset-after", seconds(ceil_millis(reset_after))),
            ("x-ratelimit-bucket", self.bucket.clone()),
            ("x-ratelimit-scope", "user".into()),
        ]
    }
}

pub(crate) fn ceil_millis(duration: Duration) -> u64 {
    duration.as_nanos().div_ceil(1_000_000) as u64
}

/// Milliseconds as Discord's decimal seconds, e.g. `1.250`.
pub(crate) fn seconds(millis: u64) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    Allowed(Option<RateHeaders>),
    Limited {
        headers: Option<RateHeaders>,
        retry_after: Duration,
        global: bool,
    },
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
}

impl Window {
    fn roll(&mut self, now: Instant, length: Duration) {
        if now.duration_since(self.started) >= length {
            self.started = now;
            self.count = 0;
        }
    }

    fn reset_after(&self, now: Instant, length: Duration) -> Duration {
        length.saturating_sub(now.duration_since(self.started))
    }
}

#[derive(Debug)]
pub(crate) struct RestLimiter {
    limits: RestLimits,
    global: Window,
    routes: HashMap<String, Window>,
    /// Requests answered 429, for inspection.
    pub(crate) rejected: u64,
    /// Of those, the ones the global limit refused.
    pub(crate) rejected_global: u64,
}

/// A stable bucket id for a route template, like Discord's opaque hashes.
fn bucket_hash(template: &str) -> String {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl RestLimiter {
    pub(crate) fn new(limits: RestLimits) -> Self {
        Self {
            limits,
            global: Window {
                started: Instant::now(),
                count: 0,
            },
            routes: HashMap::new(),
            rejected: 0,
            rejected_global: 0,
        }
    }

    /// Counts one request to `template` (e.g. `PUT /guilds/{}/members/{}/roles/{}`)
    /// with major parameter `major`. Interaction endpoints pass
    /// `global_applies = false`: Discord exempts them from the global limit.
    pub(crate) fn check(
        &mut self,
        template: &str,
        major: &str,
        global_applies: bool,
        now: Instant,
    ) -> Verdict {
        let second = Duration::from_secs(1);
        if global_applies && self.limits.global_per_second > 0 {
            self.global.roll(now, second);
            if self.global.count >= self.limits.global_per_second {
                self.rejected += 1;
                self.rejected_global += 1;
                return Verdict::Limited {
                    headers: None,
                    retry_after: self.global.reset_after(now, second),
                    global: true,
                };
            }
        }
        let headers = if self.limits.route_limit > 0 {
            let length = Duration::from_millis(self.limits.route_window_ms.max(1));
            let bucket = bucket_hash(template);
            let window = self
                .routes
                .entry(format!("{bucket}:{major}"))
                .or_insert(Window {
                    started: now,
                    count: 0,
                });
            window.roll(now, length);
            let reset_after = window.reset_after(now, length);
            if window.count >= self.limits.route_limit {
                self.rejected += 1;
                return Verdict::Limited {
                    headers: Some(RateHeaders {
                        limit: self.limits.route_limit,
                        remaining: 0,
                        reset_after,
                        bucket,
                    }),
                    retry_after: reset_after,
                    global: false,
                };
            }
            window.count += 1;
            Some(RateHeaders {
                limit: self.limits.route_limit,
                remaining: self.limits.route_limit - window.count,
                reset_after,
                bucket,
            })
        } else {
            None
        };
        if global_applies {
            self.global.count += 1;
        }
        Verdict::Allowed(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(global: u32, route: u32) -> RestLimiter {
        RestLimiter::new(RestLimits {
            global_per_second: global,
            route_limit: route,
            route_window_ms: 10_000,
        })
    }

    #[test]
    fn route_bucket_counts_down_then_limits_until_reset() {
        let mut limiter = limiter(0, 2);
        let t0 = Instant::now();
        let Verdict::Allowed(Some(first)) = limiter.check("PUT /r", "1", true, t0) else {
            panic!("first request must pass");
        };
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert!(matches!(
            limiter.check("PUT /r", "1", true, t0),
            Verdict::Allowed(Some(RateHeaders { remaining: 0, .. }))
        ));
        let Verdict::Limited {
            retry_after,
            global,
            ..
        } = limiter.check("PUT /r", "1", true, t0 + Duration::from_secs(4))
        else {
            panic!("third request must be limited");
        };
        assert!(!global);
        assert_eq!(retry_after, Duration::from_secs(6));
        assert!(
            matches!(limiter.check("PUT /r", "2", true, t0), Verdict::Allowed(_)),
            "another major parameter has its own bucket"
        );
        assert!(matches!(
            limiter.check("PUT /r", "1", true, t0 + Duration::from_secs(10)),
            Verdict::Allowed(_)
        ));
        assert_eq!(limiter.rejected, 1);
    }

    #[test]
    fn global_limit_spans_routes_but_not_interactions() {
        let mut limiter = limiter(3, 0);
        let t0 = Instant::now();
        for route in ["A", "B", "C"] {
            assert!(matches!(
                limiter.check(route, "1", true, t0),
                Verdict::Allowed(_)
            ));
        }
        assert!(matches!(
            limiter.check("D", "1", true, t0),
            Verdict::Limited { global: true, .. }
        ));
        assert!(matches!(
            limiter.check("callback", "1", false, t0),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            limiter.check("D", "1", true, t0 + Duration::from_secs(1)),
            Verdict::Allowed(_)
        ));
        assert_eq!((limiter.rejected, limiter.rejected_global), (1, 1));
    }
}
