//! Role changes to Discord, fair between guilds and within Discord's limits
//! for the bot as a whole, however many worker processes send them.
//!
//! * **Per-guild queues** ([`queues`]): guilds that may send take turns, a
//!   member's own change (interactive) before any bulk re-check, in its
//!   guild and across guilds. A guild whose window is spent waits out of the
//!   round, holding no slot: one community's backlog delays only itself.
//! * **Guild windows** ([`guild_window`]) learned from Discord's
//!   `X-RateLimit-*` headers, so a change waits for the reset instead of
//!   drawing a 429.
//! * **The global limit** ([`global_bucket`]): a token bucket for Discord's
//!   requests per second per bot.
//! * **The invalid-request breaker** ([`invalid_requests`]): 401, 403 and
//!   429 answers counted over a sliding window; at the limit (far below the
//!   10,000 in 10 minutes at which Discord bans the bot) no role change is
//!   sent until enough of them are older than the window, and callers get
//!   an error that says to retry later.
//! * **Shared** ([`budget`]): the windows, the bucket and the count live in
//!   NATS key-value, so every worker process draws from the same ones; if
//!   NATS does not answer, a process falls back to a cautious share of its
//!   own.
//! * **The dispatcher** ([`dispatcher`]) puts these together; [`request`]
//!   sends one change and reads its answer.

mod budget;
mod dispatcher;
mod global_bucket;
mod guild_window;
mod invalid_requests;
mod queues;
mod request;

use std::time::Duration;

pub(crate) use budget::Budget;
pub use budget::Sharing;
pub(crate) use dispatcher::{run as dispatch, Job};
pub(crate) use request::RoleRequests;
use settings::Problems;

/// Discord's ban threshold: invalid requests in 10 minutes.
const DISCORD_BAN_AT: u32 = 10_000;

/// How role changes are paced. Every worker process must use the same
/// `global_rate` and invalid-request settings: they describe one bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChangeLimits {
    /// Role changes this process has in flight at once.
    pub in_flight: usize,
    /// Discord's global limit for the bot: requests per second, across
    /// every process (`DISCORD_GLOBAL_RATE`).
    pub global_rate: u32,
    /// How much later or more bunched than sent requests may reach Discord
    /// (`DISCORD_GLOBAL_MARGIN`): the global bucket keeps this much below
    /// the limit (see [`global_bucket`]).
    pub global_margin: Duration,
    /// Invalid requests (401, 403, 429 not of a shared limit) within
    /// `invalid_window`, across every process, that open the breaker
    /// (`DISCORD_INVALID_REQUEST_LIMIT`).
    pub invalid_limit: u32,
    /// The breaker's sliding window (`DISCORD_INVALID_REQUEST_WINDOW`);
    /// Discord's is 10 minutes.
    pub invalid_window: Duration,
}

impl Default for RoleChangeLimits {
    fn default() -> Self {
        RoleChangeLimits {
            in_flight: 8,
            global_rate: 50,
            global_margin: global_bucket::DEFAULT_MARGIN,
            invalid_limit: 1_000,
            invalid_window: Duration::from_secs(600),
        }
    }
}

impl RoleChangeLimits {
    /// Adds a problem per nonsensical value, named `discord_global_rate`,
    /// `discord_global_margin`, `discord_invalid_limit`, `discord_invalid_window` or
    /// `discord_in_flight`.
    pub fn check(&self, problems: &mut Problems) {
        if self.in_flight == 0 {
            problems.push("discord_in_flight", "must be at least 1");
        }
        if !(2..=100_000).contains(&self.global_rate) {
            problems.push(
                "discord_global_rate",
                "must be between 2 and 100000 requests per second (Discord's default for a bot is 50)",
            );
        }
        if self.global_margin > Duration::from_secs(1) {
            problems.push(
                "discord_global_margin",
                "must be at most 1s (the default, 20ms, covers a jittery network path; 250ms keeps four fifths of the rate)",
            );
        }
        if self.invalid_limit == 0 || self.invalid_limit >= DISCORD_BAN_AT {
            problems.push(
                "discord_invalid_limit",
                format!("must be between 1 and {} (Discord bans a bot at {DISCORD_BAN_AT} invalid requests in 10 minutes; the default is 1000)", DISCORD_BAN_AT - 1),
            );
        }
        if self.invalid_window < Duration::from_secs(1)
            || self.invalid_window > Duration::from_secs(1800)
        {
            problems.push(
                "discord_invalid_window",
                "must be between 1s and 30m (Discord counts over 10m; the shared record keeps an hour)",
            );
        }
    }
}
