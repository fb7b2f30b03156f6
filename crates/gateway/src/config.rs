//! Gateway configuration: raw settings (from a TOML file, the environment or
//! command-line flags) validated into a [`GatewayConfig`].
//!
//! Every validation error names the setting the operator has to change, and
//! every bad setting is reported at once ([`settings::ConfigErrors`]), so one
//! run lists everything to fix. The bot token lives in a [`Token`] that never
//! prints itself.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use settings::{ConfigErrors, Problems};
use twilight_model::gateway::Intents;

/// The bot token: a [`settings::Secret`], whose `Debug` and `Display` print
/// `[redacted]`, so the token can sit in structs that are logged without
/// ever reaching a log line.
pub use settings::Secret as Token;

/// One bad setting: which one, and what is wrong with it (never its value
/// when the value is a secret). Validation gathers them into
/// [`ConfigErrors`].
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors::single(e.setting, e.problem)
    }
}

impl ConfigError {
    fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// Raw settings, every one optional. Built from the config file and then
/// overlaid with the environment / flags ([`Settings::overlay`]); validated by
/// [`GatewayConfig::from_settings`].
///
/// The token is deliberately not read from the file: secrets come from the
/// environment (or a secret manager that sets it).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    #[serde(skip)]
    pub discord_token: Option<Token>,
    /// Owned shard range, `FIRST-LAST` (inclusive) or one shard id.
    pub shards: Option<String>,
    /// This process's pool: shards `POOL_ID × SHARDS_PER_POOL` onwards. A
    /// number, or a pod name ending in `-N` (a StatefulSet's ordinal).
    pub pool_id: Option<String>,
    /// Shards per pool [default: 25].
    pub shards_per_pool: Option<u32>,
    /// Instead of a range: run up to this many of the bot's shards,
    /// whichever no other process holds.
    pub shard_count: Option<u32>,
    /// How long a dead process's shards wait before another takes them
    /// over, e.g. `10s`.
    pub shard_lease_ttl: Option<String>,
    /// A number, or `auto` for Discord's recommendation from `/gateway/bot`.
    pub total_shards: Option<String>,
    /// `GUILDS|GUILD_MEMBERS` style names, or the integer bit set.
    pub intents: Option<String>,
    pub discord_gateway_url: Option<String>,
    pub discord_api_url: Option<String>,
    /// `discord` (default: Discord's identify rate limit, from `/gateway/bot`)
    /// or `unlimited` (simulators and tests only).
    pub identify_queue: Option<String>,
    /// May carry a password (`nats://user:password@host`).
    pub nats_url: Option<settings::Secret>,
    /// Prefix for stream names, subjects and the session bucket, so that
    /// several deployments (or tests) can share one NATS server.
    pub nats_namespace: Option<String>,
    pub http_addr: Option<String>,
    /// Publishes awaiting their JetStream ack at once.
    pub publish_window: Option<usize>,
    /// Envelopes queued for publishing before the shards stop being read.
    pub publish_buffer: Option<usize>,
    /// How long to wait for one JetStream ack before retrying, e.g. `5s`.
    pub publish_ack_timeout: Option<String>,
    /// Whole shutdown budget, e.g. `10s`.
    pub shutdown_timeout: Option<String>,
    /// One guild's member updates admitted a second (see `admission`).
    pub guild_member_updates_per_s: Option<u32>,
    /// How many of them may come at once before the rate applies.
    pub guild_member_updates_burst: Option<u32>,
    /// One guild's slash commands published a second; past it, shed.
    pub guild_interactions_per_s: Option<u32>,
    /// How many of them may come at once before the rate applies.
    pub guild_interactions_burst: Option<u32>,
    /// Limits of every stream, parsed as the worker parses them.
    pub streams: bus::StreamSettings,
    pub sessions: SessionSettings,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// How long a stored session is offered for resuming, e.g. `5m`.
    pub max_age: Option<String>,
}

impl Settings {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let setting = format!("config file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&setting, format!("cannot read it: {e}")))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans lines (it quotes the source); keep one.
            let message = e.message().to_owned();
            ConfigError::new(&setting, format!("invalid TOML: {message}"))
        })
    }

    /// `other`'s values win where set (the environment over the file).
    pub fn overlay(mut self, other: Settings) -> Self {
        fn pick<T>(base: &mut Option<T>, top: Option<T>) {
            if top.is_some() {
                *base = top;
            }
        }
        pick(&mut self.discord_token, other.discord_token);
        pick(&mut self.shards, other.shards);
        pick(&mut self.pool_id, other.pool_id);
        pick(&mut self.shards_per_pool, other.shards_per_pool);
        pick(&mut self.shard_count, other.shard_count);
        pick(&mut self.shard_lease_ttl, other.shard_lease_ttl);
        pick(&mut self.total_shards, other.total_shards);
        pick(&mut self.intents, other.intents);
        pick(&mut self.discord_gateway_url, other.discord_gateway_url);
        pick(&mut self.discord_api_url, other.discord_api_url);
        pick(&mut self.identify_queue, other.identify_queue);
        pick(&mut self.nats_url, other.nats_url);
        pick(&mut self.nats_namespace, other.nats_namespace);
        pick(&mut self.http_addr, other.http_addr);
        pick(&mut self.publish_window, other.publish_window);
        pick(&mut self.publish_buffer, other.publish_buffer);
        pick(
            &mut self.guild_member_updates_per_s,
            other.guild_member_updates_per_s,
        );
        pick(
            &mut self.guild_member_updates_burst,
            other.guild_member_updates_burst,
        );
        pick(
            &mut self.guild_interactions_per_s,
            other.guild_interactions_per_s,
        );
        pick(
            &mut self.guild_interactions_burst,
            other.guild_interactions_burst,
        );
        pick(&mut self.publish_ack_timeout, other.publish_ack_timeout);
        pick(&mut self.shutdown_timeout, other.shutdown_timeout);
        self.streams = self.streams.overlay(other.streams);
        pick(&mut self.sessions.max_age, other.sessions.max_age);
        self
    }
}

/// Which shards this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardRange {
    pub first: u32,
    pub last: u32,
}

impl ShardRange {
    pub fn ids(self) -> std::ops::RangeInclusive<u32> {
        self.first..=self.last
    }

    pub fn len(self) -> usize {
        (self.last - self.first) as usize + 1
    }

    pub fn is_empty(self) -> bool {
        false
    }

    pub fn contains(self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }

    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let id = text.parse().ok()?;
                (id, id)
            }
        };
        (first <= last).then_some(Self { first, last })
    }
}

impl fmt::Display for ShardRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// How identifies are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentifyQueue {
    /// Discord's rule: per `max_concurrency` bucket, one identify per 5 s,
    /// within the daily session start limit.
    Discord,
    /// No spacing: only for a simulator configured without the limit.
    Unlimited,
}

/// Validated configuration of one gateway process.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub token: Token,
    /// `None`: every shard of the total (resolved at start). From `SHARDS`,
    /// or the pool's range (`POOL_ID`).
    pub shards: Option<ShardRange>,
    /// Set when `shards` came from `POOL_ID`: the last pool may be cut
    /// short by the total rather than refused.
    pub pool: Option<u32>,
    /// `SHARD_COUNT`: up to this many of all shards instead of a range.
    pub shard_count: Option<u32>,
    pub lease_ttl: Duration,
    /// `None`: Discord's recommendation from `/gateway/bot`.
    pub total_shards: Option<u32>,
    pub intents: Intents,
    /// `ws(s)://host[:port]` without a path; `None` uses what `/gateway/bot`
    /// returns (or Discord's default).
    pub gateway_url: Option<String>,
    /// `(host[:port], plain_http)` for twilight-http's proxy setting.
    pub api_proxy: Option<(String, bool)>,
    pub identify_queue: IdentifyQueue,
    pub nats: bus::NatsSettings,
    /// The namespace, every stream and the session bucket: the same
    /// definition the worker ensures.
    pub topology: bus::Topology,
    pub http_addr: SocketAddr,
    pub publish_window: usize,
    pub publish_buffer: usize,
    pub publish_ack_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// How fast one guild's member updates and slash commands are
    /// published.
    pub admission: crate::admission::Limits,
}

pub const DEFAULT_NATS_URL: &str = bus::DEFAULT_URL;
pub const DEFAULT_SHARDS_PER_POOL: u32 = 25;
/// A dead process's shards are taken over this long after its last lease
/// renewal: long enough for a NATS hiccup, short against Discord's resume
/// window.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9100";
/// Publishes awaiting their JetStream ack at once (`PUBLISH_WINDOW`); the
/// gateway benchmark's baseline publisher uses the same window.
pub const DEFAULT_PUBLISH_WINDOW: usize = 256;
/// One guild's member updates a second, and at once. Far above what a
/// guild sends but in a flood: Discord's own REST limits keep bots that
/// edit members (Gatehouse among them) to ~50 changes a second.
pub const DEFAULT_GUILD_MEMBER_UPDATES_PER_S: u32 = 100;
pub const DEFAULT_GUILD_MEMBER_UPDATES_BURST: u32 = 1_000;
/// One guild's slash commands a second, and at once: five times what the
/// workers' default community limit answers (10 a second after a burst of
/// 300), so that shedding here never takes a command they would have run.
pub const DEFAULT_GUILD_INTERACTIONS_PER_S: u32 = 50;
pub const DEFAULT_GUILD_INTERACTIONS_BURST: u32 = 1_500;
/// How long one ack is awaited before the publish is retried.
pub const DEFAULT_PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

impl GatewayConfig {
    /// Validates `settings`, reporting every bad value at once.
    pub fn from_settings(s: Settings) -> Result<Self, ConfigErrors> {
        let mut p = Problems::new();
        let token = take(
            &mut p,
            match s.discord_token {
                Some(t) if !t.is_blank() => Ok(t),
                _ => Err(ConfigError::new(
                    "DISCORD_TOKEN",
                    "not set: set DISCORD_TOKEN (or DISCORD_BOT_TOKEN) to the bot's token",
                )),
            },
        );
        let shards = s
            .shards
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                ShardRange::parse(v).ok_or_else(|| {
                    ConfigError::new(
                        "SHARDS",
                        format!(
                            "{v:?} is not a shard range; use FIRST-LAST (inclusive), \
                             e.g. 0-24, or one shard id"
                        ),
                    )
                })
            })
            .transpose();
        let shards = take(&mut p, shards);
        let shards_per_pool = s.shards_per_pool.unwrap_or(DEFAULT_SHARDS_PER_POOL);
        if shards_per_pool == 0 {
            p.push("SHARDS_PER_POOL", "must be at least 1");
        }
        let pool = take(
            &mut p,
            s.pool_id
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(parse_pool_id)
                .transpose(),
        );
        let shard_count = s.shard_count.filter(|n| *n > 0);
        if s.shard_count == Some(0) {
            p.push("SHARD_COUNT", "must be at least 1");
        }
        let range_given = matches!(shards, Some(Some(_)));
        if range_given && matches!(pool, Some(Some(_))) {
            p.push(
                "POOL_ID",
                "set either SHARDS (a range) or POOL_ID (a pool of SHARDS_PER_POOL shards), not both",
            );
        }
        if shard_count.is_some() && (range_given || matches!(pool, Some(Some(_)))) {
            p.push(
                "SHARD_COUNT",
                "asks for any free shards; it cannot be combined with SHARDS or POOL_ID",
            );
        }
        let shards = match (shards, pool) {
            (Some(None), Some(Some(pool))) if shards_per_pool > 0 => {
                let first = pool.saturating_mul(shards_per_pool);
                Some(Some(ShardRange {
                    first,
                    last: first.saturating_add(shards_per_pool - 1),
                }))
            }
            (shards, _) => shards,
        };
        let pool = pool.flatten();
        let lease_ttl = take(
            &mut p,
            duration(
                s.shard_lease_ttl.as_deref(),
                DEFAULT_LEASE_TTL,
                "SHARD_LEASE_TTL",
            )
            .and_then(|d| {
                if d < Duration::from_secs(1) {
                    Err(ConfigError::new(
                        "SHARD_LEASE_TTL",
                        "must be at least 1s: leases are renewed every quarter of it",
                    ))
                } else {
                    Ok(d)
                }
            }),
        );
        let total_shards = take(
            &mut p,
            match s.total_shards.as_deref().map(str::trim) {
                None | Some("" | "auto") => Ok(None),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "TOTAL_SHARDS",
                            format!("{v:?} is not a shard count; use a positive number or `auto`"),
                        )
                    }),
            },
        );
        if let (Some(Some(range)), Some(Some(total)), None) = (shards, total_shards, pool) {
            if range.last >= total {
                p.push(
                    "SHARDS",
                    format!(
                        "range {range} goes beyond TOTAL_SHARDS={total} (shard ids are 0 to {})",
                        total - 1
                    ),
                );
            }
        }
        let intents = take(
            &mut p,
            match s.intents.as_deref() {
                None => Ok(Intents::GUILDS | Intents::GUILD_MEMBERS),
                Some(v) => parse_intents(v).map_err(|p| ConfigError::new("INTENTS", p)),
            },
        );
        let gateway_url = take(
            &mut p,
            s.discord_gateway_url
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(parse_gateway_url)
                .transpose(),
        );
        let api_proxy = take(
            &mut p,
            s.discord_api_url
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(parse_api_url)
                .transpose(),
        );
        let identify_queue = take(
            &mut p,
            match s.identify_queue.as_deref().map(str::trim) {
                None | Some("" | "discord") => Ok(IdentifyQueue::Discord),
                Some("unlimited") => Ok(IdentifyQueue::Unlimited),
                Some(v) => Err(ConfigError::new(
                    "IDENTIFY_QUEUE",
                    format!("{v:?} is not a queue; use `discord` or `unlimited` (simulators only)"),
                )),
            },
        );
        let nats = bus::NatsSettings::new(
            s.nats_url
                .filter(|v| !v.is_blank())
                .map_or_else(|| DEFAULT_NATS_URL.to_owned(), |v| v.expose().to_owned()),
        );
        take(&mut p, nats.validate().map_err(bus_setting));
        let namespace = take(
            &mut p,
            match s.nats_namespace.as_deref().filter(|v| !v.is_empty()) {
                None => Ok(bus::Namespace::root()),
                Some(prefix) => bus::Namespace::prefixed(prefix)
                    .map_err(|e| ConfigError::new("NATS_NAMESPACE", e.to_string())),
            },
        );
        let http_addr_text = s.http_addr.unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
        let http_addr = take(
            &mut p,
            http_addr_text.trim().parse().map_err(|_| {
                ConfigError::new(
                    "HTTP_ADDR",
                    format!("{http_addr_text:?} is not an address; use IP:PORT, e.g. 0.0.0.0:9100"),
                )
            }),
        );
        let publish_window = take(
            &mut p,
            positive(
                s.publish_window.unwrap_or(DEFAULT_PUBLISH_WINDOW),
                "PUBLISH_WINDOW",
            ),
        );
        let publish_buffer = take(
            &mut p,
            positive(s.publish_buffer.unwrap_or(4096), "PUBLISH_BUFFER"),
        );
        let publish_ack_timeout = take(
            &mut p,
            duration(
                s.publish_ack_timeout.as_deref(),
                DEFAULT_PUBLISH_ACK_TIMEOUT,
                "PUBLISH_ACK_TIMEOUT",
            )
            .and_then(|d| {
                if d.is_zero() {
                    Err(ConfigError::new(
                        "PUBLISH_ACK_TIMEOUT",
                        "must be above zero",
                    ))
                } else {
                    Ok(d)
                }
            }),
        );
        let mut limit = |value: Option<u32>, default: u32, setting: &str| {
            take(&mut p, positive(value.unwrap_or(default) as usize, setting))
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let member_updates = limit(
            s.guild_member_updates_per_s,
            DEFAULT_GUILD_MEMBER_UPDATES_PER_S,
            "GUILD_MEMBER_UPDATES_PER_S",
        )
        .zip(limit(
            s.guild_member_updates_burst,
            DEFAULT_GUILD_MEMBER_UPDATES_BURST,
            "GUILD_MEMBER_UPDATES_BURST",
        ));
        let interactions = limit(
            s.guild_interactions_per_s,
            DEFAULT_GUILD_INTERACTIONS_PER_S,
            "GUILD_INTERACTIONS_PER_S",
        )
        .zip(limit(
            s.guild_interactions_burst,
            DEFAULT_GUILD_INTERACTIONS_BURST,
            "GUILD_INTERACTIONS_BURST",
        ));
        let shutdown_timeout = take(
            &mut p,
            duration(
                s.shutdown_timeout.as_deref(),
                Duration::from_secs(10),
                "SHUTDOWN_TIMEOUT",
            )
            .and_then(|d| {
                if d < Duration::from_secs(1) {
                    Err(ConfigError::new(
                        "SHUTDOWN_TIMEOUT",
                        "must be at least 1s: publishes have to be flushed and sessions stored",
                    ))
                } else {
                    Ok(d)
                }
            }),
        );
        // The same limits, parsed the same way, as the worker's: both
        // processes ensure one definition of every stream.
        let topology = namespace.and_then(|namespace| {
            let mut topology = bus::Topology::new(namespace);
            take(&mut p, s.streams.apply(&mut topology).map_err(bus_setting)).map(|()| topology)
        });
        let session_max_age = take(
            &mut p,
            duration(
                s.sessions.max_age.as_deref(),
                Duration::from_secs(300),
                "sessions.max_age",
            )
            .and_then(|d| {
                if d.is_zero() {
                    Err(ConfigError::new("sessions.max_age", "must be above zero"))
                } else {
                    Ok(d)
                }
            }),
        );
        p.finish()?;
        // Every `None` above recorded a problem, so after `finish` all are set.
        let (
            Some(token),
            Some(shards),
            Some(total_shards),
            Some(intents),
            Some(gateway_url),
            Some(api_proxy),
            Some(identify_queue),
            Some(http_addr),
            Some(publish_window),
            Some(publish_buffer),
            Some(publish_ack_timeout),
            Some(shutdown_timeout),
            Some(mut topology),
            Some(session_max_age),
            Some(lease_ttl),
            Some((updates_per_s, updates_burst)),
            Some((interactions_per_s, interactions_burst)),
        ) = (
            token,
            shards,
            total_shards,
            intents,
            gateway_url,
            api_proxy,
            identify_queue,
            http_addr,
            publish_window,
            publish_buffer,
            publish_ack_timeout,
            shutdown_timeout,
            topology,
            session_max_age,
            lease_ttl,
            member_updates,
            interactions,
        )
        else {
            return Err(ConfigErrors::single(
                "gateway settings",
                "refused without a reason (a bug)",
            ));
        };
        topology.sessions.max_age = session_max_age;
        Ok(Self {
            token,
            shards,
            pool,
            shard_count,
            lease_ttl,
            total_shards,
            intents,
            gateway_url,
            api_proxy,
            identify_queue,
            nats,
            topology,
            http_addr,
            publish_window,
            publish_buffer,
            publish_ack_timeout,
            shutdown_timeout,
            admission: crate::admission::Limits {
                member_updates: crate::admission::Limit {
                    per_second: updates_per_s,
                    burst: updates_burst,
                },
                interactions: crate::admission::Limit {
                    per_second: interactions_per_s,
                    burst: interactions_burst,
                },
            },
        })
    }
}

/// A bad stream or connection setting, named as `bus` names it.
fn bus_setting(error: bus::BusError) -> ConfigError {
    match error {
        bus::BusError::Setting { setting, problem } => ConfigError::new(setting, problem),
        other => ConfigError::new("NATS", other.to_string()),
    }
}

/// The value, or `None` after recording the problem.
/// `3`, or a pod name ending in its ordinal (`gatehouse-gateway-3`).
fn parse_pool_id(text: &str) -> Result<u32, ConfigError> {
    let text = text.trim();
    let digits = text.rsplit_once('-').map_or(text, |(_, n)| n);
    digits.parse().map_err(|_| {
        ConfigError::new(
            "POOL_ID",
            format!(
                "{text:?} is neither a pool number nor a pod name ending in -N (a StatefulSet ordinal)"
            ),
        )
    })
}

fn take<T>(problems: &mut Problems, result: Result<T, ConfigError>) -> Option<T> {
    result.map_err(|e| problems.push(e.setting, e.problem)).ok()
}

fn positive(value: usize, setting: &str) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(setting, "must be at least 1"));
    }
    Ok(value)
}

fn duration(text: Option<&str>, default: Duration, setting: &str) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => {
            settings::parse_duration(t).map_err(|e| ConfigError::new(setting, e.to_string()))
        }
    }
}

/// `GUILDS|GUILD_MEMBERS` (also `,` `+` or spaces between names), or bits.
pub fn parse_intents(text: &str) -> Result<Intents, String> {
    let text = text.trim();
    if let Ok(bits) = text.parse::<u64>() {
        return Intents::from_bits(bits)
            .ok_or_else(|| format!("{bits} has bits that are not gateway intents"));
    }
    let mut intents = Intents::empty();
    for name in text
        .split(['|', ',', '+', ' '])
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let upper = name.to_ascii_uppercase();
        let flag = Intents::from_name(&upper).ok_or_else(|| {
            format!("{name:?} is not an intent; use names like GUILDS|GUILD_MEMBERS or the integer bits")
        })?;
        intents |= flag;
    }
    if intents.is_empty() {
        return Err("is empty; the gateway needs at least GUILDS".into());
    }
    Ok(intents)
}

fn parse_gateway_url(text: &str) -> Result<String, ConfigError> {
    let bad = |problem: String| ConfigError::new("DISCORD_GATEWAY_URL", problem);
    let url = url::Url::parse(text.trim())
        .map_err(|e| bad(format!("not a URL ({e}); use e.g. ws://127.0.0.1:8765")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(bad(format!(
            "scheme {:?} is not ws or wss; use e.g. wss://gateway.discord.gg",
            url.scheme()
        )));
    }
    if url.host_str().is_none() {
        return Err(bad("has no host".into()));
    }
    if url.query().is_some() || !matches!(url.path(), "" | "/") {
        return Err(bad(
            "must be the base URL without path or query (Twilight adds ?v=10&encoding=json)".into(),
        ));
    }
    Ok(text.trim().trim_end_matches('/').to_owned())
}

fn parse_api_url(text: &str) -> Result<(String, bool), ConfigError> {
    let bad = |problem: String| ConfigError::new("DISCORD_API_URL", problem);
    let url = url::Url::parse(text.trim())
        .map_err(|e| bad(format!("not a URL ({e}); use e.g. http://127.0.0.1:8766")))?;
    let plain_http = match url.scheme() {
        "http" => true,
        "https" => false,
        other => {
            return Err(bad(format!(
                "scheme {other:?} is not http or https; use e.g. https://discord.com"
            )))
        }
    };
    let host = url.host_str().ok_or_else(|| bad("has no host".into()))?;
    if !matches!(url.path().trim_end_matches('/'), "" | "/api" | "/api/v10") {
        return Err(bad(
            "must be the API's base URL (routes are under /api/v10 below it)".into(),
        ));
    }
    // twilight-http takes `host[:port]` and a flag for plain HTTP.
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Ok((authority, plain_http))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings {
            discord_token: Some(Token::new("secret-token")),
            ..Settings::default()
        }
    }

    fn err(s: Settings) -> String {
        GatewayConfig::from_settings(s).unwrap_err().to_string()
    }

    #[test]
    fn a_guilds_admission_is_a_rate_and_a_burst_of_at_least_one() {
        let c = GatewayConfig::from_settings(base()).unwrap();
        assert_eq!(
            c.admission.member_updates,
            crate::admission::Limit {
                per_second: DEFAULT_GUILD_MEMBER_UPDATES_PER_S,
                burst: DEFAULT_GUILD_MEMBER_UPDATES_BURST,
            }
        );
        assert_eq!(
            c.admission.interactions.per_second,
            DEFAULT_GUILD_INTERACTIONS_PER_S
        );
        let e = GatewayConfig::from_settings(Settings {
            guild_member_updates_per_s: Some(0),
            guild_interactions_burst: Some(0),
            ..base()
        })
        .unwrap_err();
        let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(
            named,
            ["GUILD_MEMBER_UPDATES_PER_S", "GUILD_INTERACTIONS_BURST"]
        );
        assert!(e.to_string().contains("must be at least 1"), "{e}");
    }

    #[test]
    fn defaults_are_discords_and_the_stacks() {
        let c = GatewayConfig::from_settings(base()).unwrap();
        assert_eq!(c.intents, Intents::GUILDS | Intents::GUILD_MEMBERS);
        assert_eq!(c.nats.url, DEFAULT_NATS_URL);
        assert_eq!(c.shards, None);
        assert_eq!(c.total_shards, None);
        assert_eq!(c.topology.events.storage, bus::Storage::File);
        assert_eq!(c.identify_queue, IdentifyQueue::Discord);
        assert_eq!(c.topology.namespace, bus::Namespace::root());
    }

    #[test]
    fn pools_come_from_a_number_or_a_pod_name_and_exclude_other_choices() {
        let c = GatewayConfig::from_settings(Settings {
            pool_id: Some("gatehouse-gateway-2".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            c.shards,
            Some(ShardRange {
                first: 50,
                last: 74
            })
        );
        assert_eq!(c.pool, Some(2));
        let c = GatewayConfig::from_settings(Settings {
            pool_id: Some("1".into()),
            shards_per_pool: Some(4),
            total_shards: Some("6".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            c.shards,
            Some(ShardRange { first: 4, last: 7 }),
            "the last pool is cut to the total at start, not refused"
        );
        let e = err(Settings {
            pool_id: Some("gateway".into()),
            ..base()
        });
        assert!(e.starts_with("POOL_ID:") && e.contains("-N"), "{e}");
        let e = err(Settings {
            pool_id: Some("0".into()),
            shards: Some("0-3".into()),
            ..base()
        });
        assert!(e.contains("POOL_ID: set either SHARDS"), "{e}");
        let e = err(Settings {
            shard_count: Some(3),
            shards: Some("0-3".into()),
            ..base()
        });
        assert!(e.contains("SHARD_COUNT:"), "{e}");
        let e = err(Settings {
            shard_lease_ttl: Some("100ms".into()),
            ..base()
        });
        assert!(e.starts_with("SHARD_LEASE_TTL: must be at least 1s"), "{e}");
        let c = GatewayConfig::from_settings(Settings {
            shard_count: Some(3),
            ..base()
        })
        .unwrap();
        assert_eq!((c.shard_count, c.lease_ttl), (Some(3), DEFAULT_LEASE_TTL));
    }

    #[test]
    fn the_token_is_required_and_never_printed() {
        assert!(err(Settings::default()).starts_with("DISCORD_TOKEN: not set"));
        let c = GatewayConfig::from_settings(base()).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn shard_ranges_parse_and_must_fit_the_total() {
        assert_eq!(
            ShardRange::parse("0-24"),
            Some(ShardRange { first: 0, last: 24 })
        );
        assert_eq!(
            ShardRange::parse("3"),
            Some(ShardRange { first: 3, last: 3 })
        );
        assert_eq!(ShardRange::parse("5-2"), None);
        let e = err(Settings {
            shards: Some("0-x".into()),
            ..base()
        });
        assert!(e.starts_with("SHARDS:") && e.contains("e.g. 0-24"), "{e}");
        let e = err(Settings {
            shards: Some("0-4".into()),
            total_shards: Some("4".into()),
            ..base()
        });
        assert!(e.contains("TOTAL_SHARDS=4"), "{e}");
        let e = err(Settings {
            total_shards: Some("zero".into()),
            ..base()
        });
        assert!(e.starts_with("TOTAL_SHARDS:"), "{e}");
    }

    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let mut s = Settings {
            shards: Some("0-x".into()),
            intents: Some("GUILDZ".into()),
            http_addr: Some("nowhere".into()),
            publish_window: Some(0),
            ..Settings::default()
        };
        s.streams.events.max_age = Some("soon".into());
        let e = GatewayConfig::from_settings(s).unwrap_err();
        let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(
            named,
            [
                "DISCORD_TOKEN",
                "SHARDS",
                "INTENTS",
                "HTTP_ADDR",
                "PUBLISH_WINDOW",
                "EVENTS_MAX_AGE"
            ]
        );
        assert!(e
            .to_string()
            .starts_with("6 configuration problems: DISCORD_TOKEN: not set"));
    }

    #[test]
    fn intents_by_name_or_bits() {
        assert_eq!(
            parse_intents("guilds | GUILD_MEMBERS").unwrap(),
            Intents::GUILDS | Intents::GUILD_MEMBERS
        );
        assert_eq!(parse_intents("3").unwrap(), Intents::from_bits(3).unwrap());
        assert!(err(Settings {
            intents: Some("GUILDZ".into()),
            ..base()
        })
        .starts_with("INTENTS:"));
    }

    #[test]
    fn urls_are_checked_and_split_for_twilight() {
        let c = GatewayConfig::from_settings(Settings {
            discord_gateway_url: Some("ws://127.0.0.1:4000/".into()),
            discord_api_url: Some("http://127.0.0.1:4001".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(c.gateway_url.as_deref(), Some("ws://127.0.0.1:4000"));
        assert_eq!(c.api_proxy, Some(("127.0.0.1:4001".into(), true)));
        assert!(err(Settings {
            discord_gateway_url: Some("http://x".into()),
            ..base()
        })
        .starts_with("DISCORD_GATEWAY_URL:"));
        assert!(err(Settings {
            discord_api_url: Some("ftp://x".into()),
            ..base()
        })
        .starts_with("DISCORD_API_URL:"));
    }

    #[test]
    fn a_bad_nats_url_is_named_without_echoing_it() {
        let e = err(Settings {
            nats_url: Some(settings::Secret::new("http://user:hunter2@host")),
            ..base()
        });
        assert!(e.starts_with("NATS_URL:"), "{e}");
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn stream_limits_validate() {
        let mut s = base();
        s.streams.events.storage = Some("disk".into());
        assert!(err(s).starts_with("EVENTS_STORAGE:"));
        let mut s = base();
        s.streams.commands.max_age = Some("10x".into());
        assert!(err(s).starts_with("COMMANDS_MAX_AGE:"));
        let mut s = base();
        s.streams.events.max_age = Some("1m".into());
        s.streams.events.duplicate_window = Some("2m".into());
        assert!(err(s).contains("max_age"));
        let mut s = base();
        s.publish_ack_timeout = Some("7d".into());
        s.shutdown_timeout = Some("1h 30m".into());
        let c = GatewayConfig::from_settings(s).unwrap();
        assert_eq!(c.publish_ack_timeout, Duration::from_secs(604_800));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5_400));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let file: Settings = toml::from_str(
            r#"
            shards = "0-1"
            total_shards = "4"
            [streams.events]
            storage = "memory"
            "#,
        )
        .unwrap();
        let env = Settings {
            shards: Some("2-3".into()),
            ..base()
        };
        let c = GatewayConfig::from_settings(file.overlay(env)).unwrap();
        assert_eq!(c.shards, Some(ShardRange { first: 2, last: 3 }));
        assert_eq!(c.total_shards, Some(4));
        assert_eq!(c.topology.events.storage, bus::Storage::Memory);
    }

    #[test]
    fn namespaces_prefix_streams_and_subjects() {
        let c = GatewayConfig::from_settings(Settings {
            nats_namespace: Some("t1".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            c.topology.namespace.stream_name(&wire::subjects::EVENTS),
            "t1_EVENTS"
        );
        assert_eq!(
            c.topology.namespace.subject("events.guild.join"),
            "t1.events.guild.join"
        );
        assert!(err(Settings {
            nats_namespace: Some("a.b".into()),
            ..base()
        })
        .starts_with("NATS_NAMESPACE:"));
    }
}
