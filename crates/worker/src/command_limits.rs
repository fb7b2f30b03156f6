//! How many slash commands one member and one community may send.
//!
//! A flood of commands from one server (or one member) must not take the
//! workers' connections and Discord budget from everyone else. Each worker
//! process keeps token buckets per member and per community (GCRA, from
//! `governor`); a command over the limit does no work. The member is told so
//! with a polite ephemeral answer once per member period; commands they send
//! after that within the period go unanswered (Discord shows "interaction
//! failed"): answering every command of a flood would spend the workers'
//! time and the REST connection every community shares on the flooder.
//! `/check` also has a per-member cooldown: it reads the chain fresh, which
//! costs every community's shared RPC budget.
//!
//! The buckets are per process: with N workers sharing the stream a member
//! may get up to N times the rate. That bounds a flood without a shared
//! store on the hot path; Discord's own limit on a user's interactions
//! bounds the rest.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use wire::{GuildId, UserId};

/// The limits, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLimits {
    /// Commands one member may send at once…
    pub member_burst: NonZeroU32,
    /// …and then one per this long.
    pub member_period: Duration,
    /// Commands one community's members may send at once…
    pub community_burst: NonZeroU32,
    /// …and then one per this long.
    pub community_period: Duration,
    /// Between two `/check`s of one member; zero: none.
    pub check_cooldown: Duration,
}

impl Default for CommandLimits {
    fn default() -> Self {
        CommandLimits {
            member_burst: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            member_period: Duration::from_secs(6),
            community_burst: NonZeroU32::new(300).unwrap_or(NonZeroU32::MIN),
            community_period: Duration::from_millis(100),
            check_cooldown: Duration::from_secs(30),
        }
    }
}

/// Why a command was not run, with how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    Member(Duration),
    Community(Duration),
    CheckCooldown(Duration),
}

impl Limited {
    /// The answer the member reads.
    pub fn text(self) -> String {
        let secs = |d: Duration| d.as_secs().max(1);
        match self {
            Limited::Member(wait) => format!(
                "You are sending commands faster than I can answer them. Try again in {} s.",
                secs(wait)
            ),
            Limited::Community(wait) => format!(
                "This server is sending more commands than I can answer right now. Try again in {} s.",
                secs(wait)
            ),
            Limited::CheckCooldown(wait) => format!(
                "You were checked moments ago; your roles also update by themselves. You can /check again in {} s.",
                secs(wait)
            ),
        }
    }
}

/// The buckets of one worker process.
pub struct CommandLimiter {
    member: DefaultKeyedRateLimiter<(GuildId, UserId)>,
    community: DefaultKeyedRateLimiter<GuildId>,
    check: Option<DefaultKeyedRateLimiter<(GuildId, UserId)>>,
    /// One polite answer per member per member period.
    told: DefaultKeyedRateLimiter<(GuildId, UserId)>,
    /// Commands seen, to forget idle members every [`FORGET_EVERY`].
    seen: AtomicU64,
}

/// Every this many commands, buckets back to full are dropped: each member
/// who ever sent a command would otherwise keep an entry for the life of
/// the process.
const FORGET_EVERY: u64 = 4096;

fn quota(burst: NonZeroU32, period: Duration) -> Quota {
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl CommandLimiter {
    pub fn new(limits: &CommandLimits) -> Self {
        CommandLimiter {
            member: RateLimiter::keyed(quota(limits.member_burst, limits.member_period)),
            community: RateLimiter::keyed(quota(limits.community_burst, limits.community_period)),
            check: (!limits.check_cooldown.is_zero())
                .then(|| RateLimiter::keyed(quota(NonZeroU32::MIN, limits.check_cooldown))),
            told: RateLimiter::keyed(quota(NonZeroU32::MIN, limits.member_period)),
            seen: AtomicU64::new(0),
        }
    }

    /// Drops the buckets that are full again (as good as new), so that
    /// memory follows the members active lately, not all ever seen.
    pub fn forget_idle(&self) {
        self.member.retain_recent();
        self.member.shrink_to_fit();
        self.community.retain_recent();
        self.community.shrink_to_fit();
        if let Some(check) = &self.check {
            check.retain_recent();
            check.shrink_to_fit();
        }
        self.told.retain_recent();
        self.told.shrink_to_fit();
    }

    /// Members (and communities) with a bucket held in memory.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.member.len() + self.community.len()
    }

    /// Whether a member whose command was refused should be told why: the
    /// first refusal in a member period is answered, later ones are not.
    pub fn tell(&self, guild: GuildId, user: UserId) -> bool {
        self.told.check_key(&(guild, user)).is_ok()
    }

    /// Spends one command of `user` in `guild`, or says why not. The member
    /// is asked first: one member's flood should not spend their server's
    /// budget.
    pub fn admit(&self, guild: GuildId, user: UserId, is_check: bool) -> Result<(), Limited> {
        if self.seen.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.forget_idle();
        }
        let now = DefaultClock::default().now();
        self.member
            .check_key(&(guild, user))
            .map_err(|n| Limited::Member(n.wait_time_from(now)))?;
        self.community
            .check_key(&guild)
            .map_err(|n| Limited::Community(n.wait_time_from(now)))?;
        if is_check {
            if let Some(check) = &self.check {
                check
                    .check_key(&(guild, user))
                    .map_err(|n| Limited::CheckCooldown(n.wait_time_from(now)))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(g: u64, u: u64) -> (GuildId, UserId) {
        (GuildId::new(g).unwrap(), UserId::new(u).unwrap())
    }

    #[tokio::test]
    async fn members_whose_buckets_refilled_are_forgotten() {
        let limiter = CommandLimiter::new(&CommandLimits {
            member_period: Duration::from_millis(5),
            community_period: Duration::from_millis(1),
            ..CommandLimits::default()
        });
        for n in 1..=100 {
            let (g, u) = ids(n, n);
            assert_eq!(limiter.admit(g, u, false), Ok(()));
        }
        assert_eq!(limiter.tracked(), 200, "each member and each community");
        // Once their buckets are full again, a pass drops them.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            limiter.forget_idle();
            if limiter.tracked() == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} still tracked",
                limiter.tracked()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_refused_member_is_told_once_per_member_period() {
        let limiter = CommandLimiter::new(&CommandLimits {
            member_period: Duration::from_secs(60),
            ..CommandLimits::default()
        });
        let (g, u) = ids(1, 2);
        assert!(limiter.tell(g, u), "the first refusal is answered");
        assert!(!limiter.tell(g, u), "a second in the same period is not");
        let (_, other) = ids(1, 3);
        assert!(limiter.tell(g, other), "each member is told for themselves");
    }

    #[test]
    fn a_member_over_their_burst_waits_and_others_do_not() {
        let limiter = CommandLimiter::new(&CommandLimits {
            member_burst: NonZeroU32::new(3).unwrap(),
            member_period: Duration::from_secs(60),
            ..CommandLimits::default()
        });
        let (g, u) = ids(1, 2);
        for _ in 0..3 {
            assert_eq!(limiter.admit(g, u, false), Ok(()));
        }
        assert!(
            matches!(limiter.admit(g, u, false), Err(Limited::Member(w)) if w > Duration::from_secs(50))
        );
        let (_, other) = ids(1, 3);
        assert_eq!(
            limiter.admit(g, other, false),
            Ok(()),
            "another member is not held up"
        );
    }

    #[test]
    fn a_community_over_its_burst_waits_and_other_communities_do_not() {
        let limiter = CommandLimiter::new(&CommandLimits {
            community_burst: NonZeroU32::new(2).unwrap(),
            community_period: Duration::from_secs(60),
            ..CommandLimits::default()
        });
        assert_eq!(limiter.admit(ids(1, 1).0, ids(1, 1).1, false), Ok(()));
        assert_eq!(limiter.admit(ids(1, 2).0, ids(1, 2).1, false), Ok(()));
        assert!(matches!(
            limiter.admit(ids(1, 3).0, ids(1, 3).1, false),
            Err(Limited::Community(_))
        ));
        assert_eq!(limiter.admit(ids(2, 3).0, ids(2, 3).1, false), Ok(()));
    }

    #[test]
    fn check_has_a_cooldown_per_member_and_zero_means_none() {
        let limiter = CommandLimiter::new(&CommandLimits::default());
        let (g, u) = ids(1, 2);
        assert_eq!(limiter.admit(g, u, true), Ok(()));
        assert!(matches!(
            limiter.admit(g, u, true),
            Err(Limited::CheckCooldown(_))
        ));
        assert_eq!(
            limiter.admit(g, u, false),
            Ok(()),
            "other commands are not cooled down"
        );
        let none = CommandLimiter::new(&CommandLimits {
            check_cooldown: Duration::ZERO,
            ..CommandLimits::default()
        });
        assert_eq!(none.admit(g, u, true), Ok(()));
        assert_eq!(none.admit(g, u, true), Ok(()));
        assert!(Limited::CheckCooldown(Duration::from_millis(10))
            .text()
            .contains("1 s"));
    }
}
