//! One guild's role-change window, learned from Discord's rate-limit headers.
//!
//! twilight-http learns which rate-limit bucket a request belongs to per
//! request path, and a role change's path names the member and the role, so
//! every change is a path it has not seen: once a guild's bucket is spent,
//! the next change would go out blind and come back 429. Discord counts
//! those against the bot (10,000 invalid requests in 10 minutes is a ban),
//! so what each guild has left is tracked here, and a change waits for the
//! window to reset instead.
//!
//! The record is shared by every worker process (see `budget`): the
//! eligibility stream's consumer hands one guild's bulk re-check to all of
//! them, and two processes each spending "their" view of one bucket would
//! draw a 429 per process and window. Times are therefore Unix
//! milliseconds, the clock the processes have in common.
//!
//! A window moves through three states. Unknown (Discord has said nothing,
//! or the last window ended long ago): one change goes out as a probe and
//! every other waits for its answer, which says how many changes the window
//! allows and when it resets. Known: each change takes one of the remaining
//! ones; at zero, changes wait for the reset. Over: the next change starts a
//! new window, assumed as long as the last one and as large, until its
//! answer confirms it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long the other changes of a guild wait for a probe's answer before
/// one of them probes again (a probe that got no answer at all).
const PROBE_MS: u64 = 2_000;

/// How far apart two reports of one window's reset may be.
const SAME_WINDOW_SLACK_MS: u64 = 250;

/// The longest window believed; a header saying more is clamped.
const LONGEST_WINDOW: Duration = Duration::from_secs(3600);

/// What Discord said about a guild's bucket in one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Changes per window (`x-ratelimit-limit`); a 429 does not say.
    pub limit: Option<u32>,
    pub remaining: u32,
    pub reset_after: Duration,
}

/// Whether a change may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    Go,
    /// Not before this Unix millisecond.
    WaitUntil(u64),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GuildWindow {
    /// Changes per window as Discord last said; 0 while unknown (a probe
    /// is out, or nothing was ever sent).
    limit: u32,
    /// Changes left before `reset_at_ms`.
    remaining: u32,
    reset_at_ms: u64,
    /// How long the guild's windows last, as last measured.
    window_ms: u64,
    /// Started by a change of ours and not yet confirmed by Discord.
    estimated: bool,
}

impl GuildWindow {
    /// Takes one change from the window, or says until when to wait.
    pub(crate) fn take(&mut self, now_ms: u64) -> Take {
        if now_ms < self.reset_at_ms {
            if self.remaining == 0 {
                return Take::WaitUntil(self.reset_at_ms);
            }
            self.remaining -= 1;
            return Take::Go;
        }
        if self.limit > 0 && self.window_ms > 0 {
            // Discord opens the next window with the next request.
            self.remaining = self.limit - 1;
            self.reset_at_ms = now_ms + self.window_ms;
        } else {
            // Nothing known: this change is the probe.
            self.limit = 0;
            self.remaining = 0;
            self.reset_at_ms = now_ms + PROBE_MS;
        }
        self.estimated = true;
        Take::Go
    }

    /// Records what a response said; returns whether that changed what is
    /// known (only then is the shared record written).
    pub(crate) fn observe(&mut self, seen: Observed, now_ms: u64) -> bool {
        let before = self.clone();
        let reset_after = millis(seen.reset_after.min(LONGEST_WINDOW));
        let reset_at = now_ms + reset_after;
        let probing = self.limit == 0;
        if let Some(limit) = seen.limit {
            self.limit = limit;
            // The first change of a window sees all of it ahead.
            if seen.remaining.saturating_add(1) >= limit {
                self.window_ms = reset_after;
            } else {
                self.window_ms = self.window_ms.max(reset_after);
            }
        }
        // Two responses from one window agree on its reset (up to network
        // jitter); a later reset means Discord opened a new window,
        // whatever our clock says about the old one.
        let same_window =
            self.reset_at_ms > now_ms && reset_at <= self.reset_at_ms + SAME_WINDOW_SLACK_MS;
        if same_window && !probing {
            // Changes taken since this request left are not in the header's
            // count yet: keep the lower of the two.
            self.remaining = self.remaining.min(seen.remaining);
            self.reset_at_ms = if self.estimated {
                reset_at
            } else {
                self.reset_at_ms.max(reset_at)
            };
        } else {
            // A probe's answer, or a window we knew nothing about.
            self.remaining = seen.remaining;
            self.reset_at_ms = reset_at;
        }
        self.estimated = false;
        if self.limit == 0 {
            // A 429 to a probe: limited until the reset, size still unknown.
            self.window_ms = 0;
        }
        *self != before
    }

    /// A response without rate-limit headers, or no response at all: a
    /// probe out for it is over, so the next change probes again at once
    /// instead of after [`PROBE_MS`]. Returns whether anything changed.
    pub(crate) fn unanswered(&mut self, now_ms: u64) -> bool {
        if self.limit == 0 && self.reset_at_ms > now_ms {
            self.reset_at_ms = now_ms;
            return true;
        }
        false
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `x-ratelimit-remaining` and `x-ratelimit-reset-after` (and the limit,
/// when sent), when both are there and make sense.
pub(crate) fn parse<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Option<Observed> {
    let (mut limit, mut remaining, mut reset_after) = (None, None, None);
    for (name, value) in headers {
        let value = std::str::from_utf8(value).ok();
        if name.eq_ignore_ascii_case("x-ratelimit-limit") {
            limit = value.and_then(|v| v.parse::<u32>().ok()).filter(|l| *l > 0);
        } else if name.eq_ignore_ascii_case("x-ratelimit-remaining") {
            remaining = value.and_then(|v| v.parse::<u32>().ok());
        } else if name.eq_ignore_ascii_case("x-ratelimit-reset-after") {
            reset_after = value
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(LONGEST_WINDOW.as_secs_f64())));
        }
    }
    Some(Observed {
        limit,
        remaining: remaining?,
        reset_after: reset_after?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(limit: u32, remaining: u32, reset_after_ms: u64) -> Observed {
        Observed {
            limit: Some(limit),
            remaining,
            reset_after: Duration::from_millis(reset_after_ms),
        }
    }

    #[test]
    fn an_unknown_guild_sends_one_probe_and_waits_for_its_answer() {
        let mut w = GuildWindow::default();
        assert_eq!(w.take(0), Take::Go);
        assert_eq!(w.take(1), Take::WaitUntil(PROBE_MS));
        // Discord: 10 per 10 s, 9 left.
        assert!(w.observe(seen(10, 9, 10_000), 50));
        for _ in 0..9 {
            assert_eq!(w.take(60), Take::Go);
        }
        assert_eq!(w.take(60), Take::WaitUntil(10_050));
    }

    #[test]
    fn a_spent_window_waits_for_its_reset_then_starts_a_new_one_of_the_same_size() {
        let mut w = GuildWindow::default();
        w.take(0);
        w.observe(seen(2, 1, 2_000), 0);
        assert_eq!(w.take(10), Take::Go);
        assert_eq!(w.take(20), Take::WaitUntil(2_000));
        // After the reset: a new window, assumed 2 per 2 s until confirmed.
        assert_eq!(w.take(2_000), Take::Go);
        assert_eq!(w.take(2_001), Take::Go);
        assert_eq!(w.take(2_002), Take::WaitUntil(4_000));
    }

    #[test]
    fn a_stale_header_does_not_hand_back_changes_already_taken() {
        let mut w = GuildWindow::default();
        w.take(0);
        w.observe(seen(10, 4, 5_000), 0);
        for _ in 0..4 {
            assert_eq!(w.take(10), Take::Go);
        }
        // A response to a request sent before those four says 3 remain.
        assert!(!w.observe(seen(10, 3, 4_980), 20));
        assert_eq!(w.take(30), Take::WaitUntil(5_000));
    }

    #[test]
    fn a_new_window_from_discord_replaces_the_spent_one() {
        let mut w = GuildWindow::default();
        w.take(0);
        w.observe(seen(10, 0, 1_000), 0);
        // Discord reset a little early by our clock and says so.
        assert!(w.observe(seen(10, 9, 10_000), 900));
        assert_eq!(w.take(900), Take::Go);
    }

    #[test]
    fn a_429_spends_the_window_until_its_retry_after() {
        let mut w = GuildWindow::default();
        w.take(0);
        w.observe(seen(10, 5, 10_000), 0);
        let limited = Observed {
            limit: None,
            remaining: 0,
            reset_after: Duration::from_millis(3_000),
        };
        assert!(w.observe(limited, 100));
        assert_eq!(w.take(200), Take::WaitUntil(10_000));
    }

    #[test]
    fn an_unanswered_probe_lets_the_next_change_probe_at_once() {
        let mut w = GuildWindow::default();
        w.take(0);
        assert!(w.unanswered(5));
        assert_eq!(w.take(5), Take::Go);
        // A known window is not reopened by a lost answer.
        w.observe(seen(1, 0, 1_000), 6);
        assert!(!w.unanswered(7));
        assert_eq!(w.take(8), Take::WaitUntil(1_006));
    }

    #[test]
    fn missing_or_malformed_headers_change_nothing() {
        let headers = |remaining: &'static str, reset_after: &'static str| {
            vec![
                ("x-ratelimit-limit", b"10".as_slice()),
                ("x-ratelimit-remaining", remaining.as_bytes()),
                ("x-ratelimit-reset-after", reset_after.as_bytes()),
            ]
        };
        assert_eq!(parse(headers("x", "1").into_iter()), None);
        assert_eq!(parse(headers("1", "-1").into_iter()), None);
        assert_eq!(
            parse(vec![("x-ratelimit-remaining", b"1".as_slice())].into_iter()),
            None
        );
        assert_eq!(
            parse(headers("0", "0.250").into_iter()),
            Some(seen(10, 0, 250))
        );
    }
}
