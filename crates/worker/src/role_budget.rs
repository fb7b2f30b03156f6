//! Per-guild pacing of role changes, from Discord's rate-limit headers.
//!
//! twilight-http learns which rate-limit bucket a request belongs to per
//! request path, and a role change's path names the member and the role, so
//! every change is a path it has not seen: once a guild's bucket is spent,
//! the next change would go out blind and come back 429. Discord counts
//! those against the bot (10,000 invalid requests in 10 minutes is a ban),
//! so the budget each guild has left is tracked here and changes wait for
//! the window to reset instead.
//!
//! When a window resets, a member's own change (interactive) goes before the
//! bulk changes that were waiting for the same guild: the dispatcher's lanes
//! choose what starts, but several started changes can be parked here, and
//! without this a re-check of thousands would still make a member wait.

use std::{collections::HashMap, sync::Mutex, time::Duration};

// tokio's clock, so the waits follow it (and tests can pause it).
use tokio::time::Instant;
use wire::{check::CheckPriority, GuildId};

/// Above this many tracked guilds, expired entries are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// How far apart two reports of one window's reset may be.
const SAME_WINDOW_SLACK: Duration = Duration::from_millis(250);

/// How long a bulk change stands aside, at a time, for a waiting member's.
const YIELD_TO_INTERACTIVE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy)]
struct Budget {
    remaining: u32,
    reset_at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct RoleBudgets {
    guilds: Mutex<HashMap<GuildId, Budget>>,
    /// Interactive changes waiting in [`RoleBudgets::take`], per guild.
    interactive_waiting: Mutex<HashMap<GuildId, usize>>,
}

impl RoleBudgets {
    /// Waits until `guild` may make another role change, and takes it.
    /// A guild Discord has said nothing about yet may go ahead.
    pub(crate) async fn take(&self, guild: GuildId, priority: CheckPriority) {
        let interactive = matches!(priority, CheckPriority::Interactive);
        let _waiting = interactive.then(|| Waiting::enter(self, guild));
        loop {
            let wait = {
                let mut guilds = self.lock();
                let now = Instant::now();
                match guilds.get(&guild) {
                    Some(budget) if now < budget.reset_at && budget.remaining == 0 => {
                        Some(budget.reset_at - now)
                    }
                    // A change could go now; a bulk one lets a waiting
                    // member's change take the slot first.
                    _ if !interactive && self.interactive_waits(guild) => {
                        Some(YIELD_TO_INTERACTIVE)
                    }
                    None => None,
                    Some(budget) if now >= budget.reset_at => {
                        guilds.remove(&guild);
                        None
                    }
                    Some(_) => {
                        if let Some(budget) = guilds.get_mut(&guild) {
                            budget.remaining -= 1;
                        }
                        None
                    }
                }
            };
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn interactive_waits(&self, guild: GuildId) -> bool {
        self.waiting_lock().get(&guild).is_some_and(|n| *n > 0)
    }

    fn waiting_lock(&self) -> std::sync::MutexGuard<'_, HashMap<GuildId, usize>> {
        // Plain counts: a panic elsewhere cannot leave one half-written.
        self.interactive_waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what a role change's response said about the guild's bucket.
    pub(crate) fn observe<'a>(
        &self,
        guild: GuildId,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) {
        let Some((remaining, reset_after)) = parse(headers) else {
            return;
        };
        let now = Instant::now();
        let mut guilds = self.lock();
        if guilds.len() > PRUNE_ABOVE {
            guilds.retain(|_, b| b.reset_at > now);
        }
        let observed = Budget {
            remaining,
            reset_at: now + reset_after,
        };
        guilds
            .entry(guild)
            .and_modify(|known| {
                // Two responses from one window agree on its reset (up to
                // network jitter); a later reset means Discord opened a new
                // window, whatever our clock says about the old one.
                let same_window =
                    known.reset_at > now && observed.reset_at <= known.reset_at + SAME_WINDOW_SLACK;
                if same_window {
                    // Changes taken since this request left are not in the
                    // header's count yet: keep the lower of the two.
                    known.remaining = known.remaining.min(observed.remaining);
                    known.reset_at = known.reset_at.max(observed.reset_at);
                } else {
                    *known = observed;
                }
            })
            .or_insert(observed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GuildId, Budget>> {
        // The map holds plain numbers; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.guilds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An interactive change inside [`RoleBudgets::take`], counted while it
/// waits (also when its future is dropped).
struct Waiting<'a> {
    budgets: &'a RoleBudgets,
    guild: GuildId,
}

impl<'a> Waiting<'a> {
    fn enter(budgets: &'a RoleBudgets, guild: GuildId) -> Self {
        *budgets.waiting_lock().entry(guild).or_insert(0) += 1;
        Waiting { budgets, guild }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.budgets.waiting_lock();
        if let Some(n) = waiting.get_mut(&self.guild) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.guild);
            }
        }
    }
}

/// `x-ratelimit-remaining` and `x-ratelimit-reset-after`, when both are there.
fn parse<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Option<(u32, Duration)> {
    let (mut remaining, mut reset_after) = (None, None);
    for (name, value) in headers {
        let value = std::str::from_utf8(value).ok();
        if name.eq_ignore_ascii_case("x-ratelimit-remaining") {
            remaining = value.and_then(|v| v.parse::<u32>().ok());
        } else if name.eq_ignore_ascii_case("x-ratelimit-reset-after") {
            reset_after = value
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        }
    }
    Some((remaining?, reset_after?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guild(n: u64) -> GuildId {
        GuildId::new(n).expect("test ids are not 0")
    }

    fn headers(
        remaining: &'static str,
        reset_after: &'static str,
    ) -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("x-ratelimit-limit", b"10".as_slice()),
            ("x-ratelimit-remaining", remaining.as_bytes()),
            ("x-ratelimit-reset-after", reset_after.as_bytes()),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_guild_waits_for_its_window_and_others_do_not() {
        let budgets = RoleBudgets::default();
        budgets.observe(guild(1), headers("1", "2.000").into_iter());
        let start = tokio::time::Instant::now();
        budgets.take(guild(1), CheckPriority::Bulk).await; // the one left
        budgets.take(guild(2), CheckPriority::Bulk).await; // unknown guild: no wait
        assert_eq!(start.elapsed(), Duration::ZERO);
        budgets.take(guild(1), CheckPriority::Bulk).await; // spent: waits for the reset
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_header_does_not_hand_back_changes_already_taken() {
        let budgets = RoleBudgets::default();
        budgets.observe(guild(1), headers("3", "5").into_iter());
        for _ in 0..3 {
            budgets.take(guild(1), CheckPriority::Bulk).await;
        }
        // A response to a request sent before those three says 2 remain.
        budgets.observe(guild(1), headers("2", "5").into_iter());
        let start = tokio::time::Instant::now();
        budgets.take(guild(1), CheckPriority::Bulk).await;
        assert!(
            start.elapsed() >= Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_window_from_discord_replaces_the_spent_one() {
        let budgets = RoleBudgets::default();
        budgets.observe(guild(1), headers("0", "1").into_iter());
        tokio::time::advance(Duration::from_millis(900)).await;
        // Discord reset a little early by our clock and says so.
        budgets.observe(guild(1), headers("9", "10").into_iter());
        let start = tokio::time::Instant::now();
        budgets.take(guild(1), CheckPriority::Bulk).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn at_a_reset_a_members_change_goes_before_the_bulk_ones_that_waited_longer() {
        let budgets = std::sync::Arc::new(RoleBudgets::default());
        budgets.observe(guild(1), headers("0", "1").into_iter());
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("bulk-1", CheckPriority::Bulk),
            ("bulk-2", CheckPriority::Bulk),
            ("bulk-3", CheckPriority::Bulk),
            ("interactive", CheckPriority::Interactive),
        ] {
            let (budgets, order) = (budgets.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                budgets.take(guild(1), priority).await;
                order.lock().unwrap().push(name);
            }));
            // The bulk changes were parked first.
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.first(), Some(&"interactive"), "{order:?}");
        assert_eq!(order.len(), 4, "{order:?}");
    }

    #[test]
    fn missing_or_malformed_headers_change_nothing() {
        assert_eq!(parse(headers("x", "1").into_iter()), None);
        assert_eq!(parse(headers("1", "-1").into_iter()), None);
        assert_eq!(
            parse(vec![("x-ratelimit-remaining", b"1".as_slice())].into_iter()),
            None
        );
        assert_eq!(
            parse(headers("0", "0.250").into_iter()),
            Some((0, Duration::from_millis(250)))
        );
    }
}
