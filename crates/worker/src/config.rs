use std::time::Duration;

use bus::{DurableConsumer, Namespace, Topology};
use domain::webhooks::UrlPolicy;
use settings::{ConfigErrors, Problems};

/// How webhook deliveries are made and retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Attempts per delivery before it fails into the dead letters.
    pub max_attempts: u32,
    /// Delay before the next attempt after the n-th failed one (the last
    /// entry repeats). Longer than the worker's: a receiver that is down
    /// is often down for minutes, and every retry is a request to it.
    pub backoff: Vec<Duration>,
    /// One request's whole budget: connecting, sending, the response head.
    /// Capped at half the worker's `ack_wait` (see
    /// [`WorkerConfig::webhook_timeout`]).
    pub timeout: Duration,
    /// How often the dispatcher turns new audit rows into deliveries.
    pub dispatch_interval: Duration,
    /// Re-checked before every request, so a URL stored under a looser
    /// policy is not called under a stricter one.
    pub url_policy: UrlPolicy,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 6,
            backoff: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(5 * 60),
                Duration::from_secs(30 * 60),
                Duration::from_secs(2 * 3600),
            ],
            timeout: Duration::from_secs(10),
            dispatch_interval: Duration::from_secs(1),
            url_policy: UrlPolicy::default(),
        }
    }
}

impl WebhookConfig {
    /// Delay before the attempt after `attempt` (1-based) failed.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The namespace and the streams, ensured at start exactly as the
    /// gateway ensures them.
    pub topology: Topology,
    /// Durable consumer name; every worker process with the same name shares
    /// the work.
    pub consumer_name: String,
    /// Messages handled at once by this process, per stream.
    pub concurrency: usize,
    /// Messages of one community handled at once, per stream, where their
    /// order does not matter (commands, eligibility checks, webhooks);
    /// `None`: an eighth of `concurrency`. Membership events always go one
    /// batch at a time. See [`WorkerConfig::community_share`].
    pub community_concurrency: Option<usize>,
    /// Deliveries before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before redelivery after the n-th failed attempt (the last entry
    /// repeats).
    pub backoff: Vec<Duration>,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// How often processed-event ids older than the streams' max age are
    /// forgotten.
    pub prune_interval: Duration,
    pub webhooks: WebhookConfig,
    /// Where the wallet-link page is served (`PUBLIC_URL`): `/link-wallet`
    /// answers with a link there, and every message to sign names it.
    /// `None`: `/link-wallet` says linking is not set up.
    pub public_site: Option<domain::wallets::Site>,
    /// Slash commands per member and per community, and `/check`'s
    /// cooldown (per process; see `command_limits`).
    pub commands: crate::CommandLimits,
    /// Which servers Gatehouse serves: every one that adds the bot, or
    /// only those an operator approved.
    pub provisioning: Provisioning,
    /// Audit rows older than this are deleted (hourly, with the other
    /// housekeeping); `None`: kept forever. At least a day.
    pub audit_retention: Option<Duration>,
    /// How role changes are paced: Discord's global rate for the bot and
    /// the invalid-request breaker, shared by every worker process (see
    /// `role_changes`).
    pub discord: crate::discord::RoleChangeLimits,
}

/// Which Discord servers are served. With an allowlist, events of any
/// other server are acknowledged and dropped before they touch the
/// database: a server that adds the bot gets no community until approved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Provisioning {
    /// Every server that adds the bot.
    #[default]
    Open,
    /// Only these servers (list every server already served, too).
    Allowlist(std::collections::BTreeSet<wire::GuildId>),
}

impl Provisioning {
    pub fn allows(&self, guild: wire::GuildId) -> bool {
        match self {
            Provisioning::Open => true,
            Provisioning::Allowlist(guilds) => guilds.contains(&guild),
        }
    }

    /// `open`, or `allowlist:<guild id>,<guild id>,…`.
    pub fn parse(text: &str) -> Result<Provisioning, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("open") {
            return Ok(Provisioning::Open);
        }
        let Some(list) = text.strip_prefix("allowlist:") else {
            return Err(format!(
                "{text:?} is neither `open` nor `allowlist:<guild id>,…`"
            ));
        };
        list.split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| {
                id.parse::<u64>()
                    .ok()
                    .and_then(wire::GuildId::new)
                    .ok_or_else(|| format!("{id:?} in the allowlist is not a Discord server id"))
            })
            .collect::<Result<_, _>>()
            .map(Provisioning::Allowlist)
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            topology: Topology::new(Namespace::root()),
            consumer_name: "worker".into(),
            concurrency: 32,
            community_concurrency: None,
            max_attempts: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            ack_wait: Duration::from_secs(30),
            prune_interval: Duration::from_secs(3600),
            webhooks: WebhookConfig::default(),
            public_site: None,
            commands: crate::CommandLimits::default(),
            provisioning: Provisioning::Open,
            audit_retention: None,
            discord: crate::discord::RoleChangeLimits::default(),
        }
    }
}

/// JetStream's pending-acknowledgement bound for the workers' consumers.
const MAX_ACK_PENDING: i64 = 65_536;

impl WorkerConfig {
    /// Messages of one community handled at once on an unordered stream.
    ///
    /// Small by default, because the slots are not what is scarce: a
    /// handler that does work spends the database's and the machine's
    /// cores, and a community's messages that hold most of the slots (a
    /// flood's burst of commands, admitted by the command limits) make
    /// every other community's handlers wait for those cores, whichever
    /// slots are free. An eighth still runs a community's commands faster
    /// than its command limit lets them come (4 slots at ~12 ms a command
    /// is ~300 a second); a burst beyond that waits in its own lane.
    pub fn community_share(&self) -> usize {
        let slots = self.concurrency.max(1);
        self.community_concurrency
            .unwrap_or(slots / 8)
            .clamp(1, slots)
    }

    /// Every problem at once, each named by its field (`concurrency`,
    /// `max_attempts`, `backoff`, `ack_wait`, `consumer_name`,
    /// `webhook_max_attempts`, `discord_global_rate`, ...); the command line
    /// renames them to the variables that set them.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Problems::new();
        if self.concurrency == 0 {
            problems.push("concurrency", "must be at least 1");
        }
        match self.community_concurrency {
            Some(0) => problems.push("community_concurrency", "must be at least 1"),
            Some(share) if share > self.concurrency.max(1) => problems.push(
                "community_concurrency",
                format!(
                    "must be at most the concurrency ({}): one community cannot hold more slots than there are",
                    self.concurrency
                ),
            ),
            _ => {}
        }
        if self.max_attempts == 0 {
            problems.push("max_attempts", "must be at least 1");
        }
        if self.backoff.is_empty() {
            problems.push("backoff", "needs at least one delay");
        }
        if self.prune_interval.is_zero() {
            problems.push("prune_interval", "must be more than 0");
        }
        if self.ack_wait < Duration::from_secs(1) {
            problems.push("ack_wait", "must be at least 1s");
        }
        if self
            .audit_retention
            .is_some_and(|r| r < Duration::from_secs(24 * 3600))
        {
            problems.push(
                "audit_retention",
                "must be at least 1d (or unset, to keep the audit log)",
            );
        }
        let name_ok = !self.consumer_name.is_empty()
            && self
                .consumer_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            problems.push(
                "consumer_name",
                "use letters, digits, '_' and '-' (it names a durable JetStream consumer)",
            );
        }
        let hooks = &self.webhooks;
        if hooks.max_attempts == 0 {
            problems.push("webhook_max_attempts", "must be at least 1");
        }
        if hooks.backoff.is_empty() {
            problems.push("webhook_backoff", "needs at least one delay");
        }
        if hooks.timeout.is_zero() {
            problems.push("webhook_timeout", "must be more than 0");
        }
        if hooks.dispatch_interval.is_zero() {
            problems.push("webhook_dispatch_interval", "must be more than 0");
        }
        self.discord.check(&mut problems);
        if let Err(e) = self.topology.validate() {
            problems.push("streams", e);
        }
        problems.finish()
    }

    pub fn namespace(&self) -> &Namespace {
        &self.topology.namespace
    }

    /// The durable consumer every worker with this consumer name shares.
    pub fn consumer(&self) -> DurableConsumer {
        DurableConsumer {
            name: self.consumer_name.clone(),
            ack_wait: self.ack_wait,
            // Each worker pulls only what it has room for, so this is not
            // what bounds its work; it bounds the messages deferred for
            // fairness (see `consumer`), which JetStream counts as pending
            // until they come back. Too low, and a flood's deferred backlog
            // stops the stream again.
            max_ack_pending: MAX_ACK_PENDING,
        }
    }

    /// The webhook request timeout in force: at most half of `ack_wait`, so
    /// JetStream never hands a delivery to a second worker while the first
    /// is still waiting for a slow endpoint.
    pub fn webhook_timeout(&self) -> Duration {
        self.webhooks.timeout.min(self.ack_wait / 2)
    }

    /// Delay before the next delivery after `attempt` (1-based) failed.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_steps_then_repeats_the_last_delay() {
        let c = WorkerConfig::default();
        assert_eq!(c.backoff_after(1), Duration::from_secs(1));
        assert_eq!(c.backoff_after(2), Duration::from_secs(5));
        assert_eq!(c.backoff_after(9), Duration::from_secs(120));
    }

    #[test]
    fn nonsense_settings_are_refused() {
        let ok = WorkerConfig::default();
        assert!(ok.validate().is_ok());
        for broken in [
            WorkerConfig {
                concurrency: 0,
                ..ok.clone()
            },
            WorkerConfig {
                max_attempts: 0,
                ..ok.clone()
            },
            WorkerConfig {
                backoff: vec![],
                ..ok.clone()
            },
            WorkerConfig {
                consumer_name: "a.b".into(),
                ..ok.clone()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn webhook_settings_are_checked_with_the_rest() {
        let mut broken = WorkerConfig::default();
        broken.webhooks.max_attempts = 0;
        broken.webhooks.timeout = Duration::ZERO;
        let e = broken.validate().unwrap_err();
        let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(named, ["webhook_max_attempts", "webhook_timeout"]);
        let short = WorkerConfig {
            ack_wait: Duration::from_secs(4),
            ..WorkerConfig::default()
        };
        assert_eq!(short.webhook_timeout(), Duration::from_secs(2));
        assert_eq!(
            WorkerConfig::default().webhook_timeout(),
            Duration::from_secs(10)
        );
        let hooks = WebhookConfig::default();
        assert_eq!(hooks.backoff_after(1), Duration::from_secs(10));
        assert_eq!(hooks.backoff_after(40), Duration::from_secs(7200));
    }

    #[test]
    fn a_community_gets_an_eighth_of_the_slots_unless_told() {
        let with = |concurrency, community_concurrency| WorkerConfig {
            concurrency,
            community_concurrency,
            ..WorkerConfig::default()
        };
        assert_eq!(WorkerConfig::default().community_share(), 4);
        assert_eq!(with(3, None).community_share(), 1);
        assert_eq!(with(32, Some(32)).community_share(), 32);
        assert_eq!(with(32, Some(2)).community_share(), 2);
        for (broken, problem) in [
            (with(8, Some(0)), "must be at least 1"),
            (with(8, Some(9)), "must be at most the concurrency (8)"),
        ] {
            let e = broken.validate().unwrap_err();
            let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
            assert_eq!(named, ["community_concurrency"]);
            assert!(e.to_string().contains(problem), "{e}");
        }
        assert!(with(8, Some(8)).validate().is_ok());
    }

    #[test]
    fn discord_limits_are_checked_with_the_rest() {
        let mut broken = WorkerConfig::default();
        broken.discord.global_rate = 1;
        broken.discord.global_margin = Duration::from_secs(2);
        broken.discord.invalid_limit = 10_000;
        broken.discord.invalid_window = Duration::from_secs(3600);
        let e = broken.validate().unwrap_err();
        let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(
            named,
            [
                "discord_global_rate",
                "discord_global_margin",
                "discord_invalid_limit",
                "discord_invalid_window"
            ]
        );
        assert!(e.to_string().contains("bans a bot at 10000"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let broken = WorkerConfig {
            concurrency: 0,
            ack_wait: Duration::ZERO,
            consumer_name: "a.b".into(),
            ..WorkerConfig::default()
        };
        let e = broken.validate().unwrap_err();
        let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(named, ["concurrency", "ack_wait", "consumer_name"]);
    }
}
