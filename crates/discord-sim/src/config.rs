//! Simulator settings. Defaults are Discord's own values where Discord has
//! one, so that a client tuned against the simulator behaves on Discord.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};
use wire::{ApplicationId, UserId};

/// Gateway intents the simulator knows about.
pub mod intents {
    pub const GUILDS: u64 = 1 << 0;
    pub const GUILD_MEMBERS: u64 = 1 << 1;
    pub const GUILD_PRESENCES: u64 = 1 << 8;
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// Intents Discord makes an application enable in its settings first.
    pub const PRIVILEGED: u64 = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT;
    /// Every intent bit Discord currently defines (0..=25, with gaps it ignores).
    pub const ALL_DEFINED: u64 = (1 << 26) - 1;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Address both listeners bind to; loopback unless told otherwise.
    pub bind: IpAddr,
    /// 0 picks a free port.
    pub gateway_port: u16,
    /// Port of the REST API and the control API (`/_sim/...`); 0 picks a free port.
    pub api_port: u16,
    /// The bot token clients must present (with or without the `Bot ` prefix).
    pub token: String,
    pub application_id: ApplicationId,
    pub bot_user_id: UserId,
    pub bot_username: String,
    /// What `GET /gateway/bot` recommends.
    pub shard_count: u32,
    /// Identify concurrency: shards `id % max_concurrency` share a bucket.
    pub max_concurrency: u32,
    /// Minimum time between two identifies in one bucket (Discord: 5 s).
    pub identify_interval_ms: u64,
    /// Identifies allowed a day, as `GET /gateway/bot`'s
    /// `session_start_limit.total` (Discord: 1000); `remaining` counts the
    /// identifies seen since the simulator started.
    pub session_start_total: u64,
    /// Sent in Hello (Discord: 41.25 s).
    pub heartbeat_interval_ms: u64,
    /// Privileged intents the application "enabled"; asking for others closes with 4014.
    pub allowed_privileged_intents: u64,
    /// Dispatches kept per session for Resume; a resume from further back is refused.
    pub resume_buffer: usize,
    /// How long a disconnected session may still be resumed.
    pub session_ttl_ms: u64,
    /// Frames remembered per shard for inspection.
    pub transcript_limit: usize,
    /// Guild counts at which GUILD_CREATE stops listing members (Identify's
    /// `large_threshold` lowers it further).
    pub large_threshold: u32,
    /// After a request for all of a guild's members (op 8 with an empty
    /// `query` and `limit` 0), how long another such request for that guild
    /// is answered RATE_LIMITED instead (Discord: 30 s, since 2025-08).
    pub member_request_window_ms: u64,
    pub rest: RestLimits,
    /// The application as an OAuth2 client (dashboard logins).
    pub oauth2: OAuth2Config,
}

const DEFAULT_APPLICATION_ID: NonZeroU64 =
    NonZeroU64::MIN.saturating_add(1_100_000_000_000_000_000);

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            gateway_port: 0,
            api_port: 0,
            token: "sim-token".into(),
            application_id: ApplicationId::from_nonzero(DEFAULT_APPLICATION_ID),
            // A bot user shares its application's id.
            bot_user_id: UserId::from_nonzero(DEFAULT_APPLICATION_ID),
            bot_username: "gatehouse-sim".into(),
            shard_count: 1,
            max_concurrency: 1,
            identify_interval_ms: 5_000,
            session_start_total: 1000,
            heartbeat_interval_ms: 41_250,
            allowed_privileged_intents: intents::GUILD_MEMBERS,
            resume_buffer: 50_000,
            session_ttl_ms: 300_000,
            transcript_limit: 10_000,
            large_threshold: 250,
            member_request_window_ms: 30_000,
            rest: RestLimits::default(),
            oauth2: OAuth2Config::default(),
        }
    }
}

/// REST rate limits. A route bucket is per method, path template and major
/// parameter (guild, channel, webhook or interaction), as on Discord.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestLimits {
    /// Requests per second across all routes (Discord: 50). 0 disables it.
    pub global_per_second: u32,
    /// Requests per bucket window. 0 disables route limits.
    pub route_limit: u32,
    pub route_window_ms: u64,
}

impl Default for RestLimits {
    fn default() -> Self {
        Self {
            global_per_second: 50,
            route_limit: 10,
            route_window_ms: 10_000,
        }
    }
}

/// The simulated application's OAuth2 settings. Its client id is
/// [`SimConfig::application_id`], as on Discord.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuth2Config {
    pub client_secret: String,
    /// Redirect URIs registered for the application, matched exactly as
    /// Discord does. Empty accepts any `http://127.0.0.1:<port>/…` or
    /// `http://localhost:<port>/…`, since a test's dashboard listens on a
    /// port chosen at run time.
    pub redirect_uris: Vec<String>,
    /// How long an authorization code may be exchanged (Discord: 10 minutes).
    pub code_ttl_ms: u64,
    /// `expires_in` of access tokens (Discord: 7 days).
    pub access_token_ttl_secs: u64,
}

impl Default for OAuth2Config {
    fn default() -> Self {
        Self {
            client_secret: "sim-client-secret".into(),
            redirect_uris: Vec::new(),
            code_ttl_ms: 600_000,
            access_token_ttl_secs: 604_800,
        }
    }
}
