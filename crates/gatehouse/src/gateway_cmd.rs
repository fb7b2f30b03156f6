//! `gatehouse gateway`: run the Discord gateway (a shard range) until
//! SIGTERM/SIGINT. Configuration comes from an optional TOML file, then the
//! environment and flags; see docs/gateway.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use gateway::{Gateway, GatewayConfig, GatewayError, Settings};
use settings::Problems;

use crate::discord_args::DiscordTokenArgs;

use crate::nats_args::{NatsLoginArgs, StreamArgs};

/// One: an event's work (read, decompress, parse, publish) is a chain of
/// small tasks handing it on, and on a thread of their own each hand-over is
/// a queue push rather than a wake-up of another thread, which cost more
/// than a second thread won (`gatehouse bench gateway` on two cores shared
/// with NATS: 15-25 % more events/s). To use more cores, run more gateway
/// processes: the fleet spreads the shards over them.
pub const DEFAULT_THREADS: u16 = 1;

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Optional TOML config file (stream limits and everything below);
    /// the environment and flags override it.
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub token: DiscordTokenArgs,

    /// Shards this process runs, FIRST-LAST inclusive (e.g. 0-24) [default: all].
    #[arg(long, env = "SHARDS")]
    pub shards: Option<String>,

    /// This process's pool of shards: POOL_ID × SHARDS_PER_POOL onwards. A
    /// number, or a pod name ending in -N (a StatefulSet's ordinal).
    #[arg(long = "pool-id", env = "POOL_ID")]
    pub pool_id: Option<String>,

    /// Shards per pool [default: 25].
    #[arg(long = "shards-per-pool", env = "SHARDS_PER_POOL")]
    pub shards_per_pool: Option<u32>,

    /// Instead of SHARDS or POOL_ID: run up to this many of the bot's
    /// shards, whichever no other gateway process holds.
    #[arg(long = "shard-count", env = "SHARD_COUNT")]
    pub shard_count: Option<u32>,

    /// How long a dead process's shards wait before another process takes
    /// them over [default: 10s].
    #[arg(long = "shard-lease-ttl", env = "SHARD_LEASE_TTL")]
    pub shard_lease_ttl: Option<String>,

    /// Total shard count of the bot, or `auto` for Discord's recommendation
    /// (GET /gateway/bot) [default: auto].
    #[arg(long = "total-shards", env = "TOTAL_SHARDS")]
    pub total_shards: Option<String>,

    /// Gateway intents, names joined by `|` or the integer bits
    /// [default: GUILDS|GUILD_MEMBERS].
    #[arg(long, env = "INTENTS")]
    pub intents: Option<String>,

    /// NATS server(s) [default: nats://127.0.0.1:4222].
    #[arg(long = "nats-url", env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<settings::Secret>,

    /// Prefix for stream names (NS_EVENTS), subjects (NS.events.…) and the
    /// session bucket, to share one NATS between deployments [default: none].
    #[arg(long = "nats-namespace", env = "NATS_NAMESPACE")]
    pub nats_namespace: Option<String>,

    #[command(flatten)]
    pub nats_login: NatsLoginArgs,

    /// Address of /healthz, /readyz and /metrics [default: 127.0.0.1:9100].
    #[arg(long = "http-addr", env = "HTTP_ADDR")]
    pub http_addr: Option<String>,

    /// Gateway WebSocket base URL override, e.g. the simulator's
    /// ws://127.0.0.1:PORT. Unset in production.
    #[arg(long = "discord-gateway-url", env = "DISCORD_GATEWAY_URL")]
    pub discord_gateway_url: Option<String>,

    /// REST API base URL override, e.g. http://127.0.0.1:PORT. Unset in production.
    #[arg(long = "discord-api-url", env = "DISCORD_API_URL")]
    pub discord_api_url: Option<String>,

    /// `discord` (Discord's identify rate limit) or `unlimited` (simulators
    /// only) [default: discord].
    #[arg(long = "identify-queue", env = "IDENTIFY_QUEUE")]
    pub identify_queue: Option<String>,

    /// Publishes awaiting a JetStream ack at once [default: 256].
    #[arg(long = "publish-window", env = "PUBLISH_WINDOW")]
    pub publish_window: Option<usize>,

    /// Envelopes buffered before shards stop being read [default: 4096].
    #[arg(long = "publish-buffer", env = "PUBLISH_BUFFER")]
    pub publish_buffer: Option<usize>,

    /// Wait for one JetStream ack before retrying [default: 5s].
    #[arg(long = "publish-ack-timeout", env = "PUBLISH_ACK_TIMEOUT")]
    pub publish_ack_timeout: Option<String>,

    /// One guild's member updates published a second; past it a member's
    /// updates wait and the newest replaces the one waiting [default: 100].
    #[arg(
        long = "guild-member-updates-per-s",
        env = "GUILD_MEMBER_UPDATES_PER_S"
    )]
    pub guild_member_updates_per_s: Option<u32>,

    /// One guild's member updates published at once before the rate
    /// applies [default: 1000].
    #[arg(
        long = "guild-member-updates-burst",
        env = "GUILD_MEMBER_UPDATES_BURST"
    )]
    pub guild_member_updates_burst: Option<u32>,

    /// One guild's slash commands published a second; past it they are
    /// shed, unanswered and counted [default: 50].
    #[arg(long = "guild-interactions-per-s", env = "GUILD_INTERACTIONS_PER_S")]
    pub guild_interactions_per_s: Option<u32>,

    /// One guild's slash commands published at once before the rate
    /// applies [default: 1500].
    #[arg(long = "guild-interactions-burst", env = "GUILD_INTERACTIONS_BURST")]
    pub guild_interactions_burst: Option<u32>,

    /// Budget for a graceful shutdown [default: 10s].
    #[arg(long = "shutdown-timeout", env = "SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,

    /// Threads of the process's async runtime. Read before the runtime
    /// starts, so not from the file.
    #[arg(
        long = "threads",
        env = "GATEWAY_THREADS",
        default_value_t = DEFAULT_THREADS,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub threads: u16,

    /// Stream limits, read exactly as `gatehouse worker` reads them.
    #[command(flatten)]
    pub streams: StreamArgs,
}

impl GatewayArgs {
    /// The settings from flags and environment; a token conflict is recorded
    /// in `problems` (reported together with the gateway's own checks).
    fn settings(&self, problems: &mut Problems) -> Settings {
        let token = self.token.token(problems);
        Settings {
            discord_token: token,
            shards: self.shards.clone(),
            pool_id: self.pool_id.clone(),
            shards_per_pool: self.shards_per_pool,
            shard_count: self.shard_count,
            shard_lease_ttl: self.shard_lease_ttl.clone(),
            total_shards: self.total_shards.clone(),
            intents: self.intents.clone(),
            discord_gateway_url: self.discord_gateway_url.clone(),
            discord_api_url: self.discord_api_url.clone(),
            identify_queue: self.identify_queue.clone(),
            nats_url: self.nats_url.clone(),
            nats_namespace: self.nats_namespace.clone(),
            http_addr: self.http_addr.clone(),
            publish_window: self.publish_window,
            publish_buffer: self.publish_buffer,
            publish_ack_timeout: self.publish_ack_timeout.clone(),
            shutdown_timeout: self.shutdown_timeout.clone(),
            guild_member_updates_per_s: self.guild_member_updates_per_s,
            guild_member_updates_burst: self.guild_member_updates_burst,
            guild_interactions_per_s: self.guild_interactions_per_s,
            guild_interactions_burst: self.guild_interactions_burst,
            streams: self.streams.settings(),
            ..Settings::default()
        }
    }
}

/// `SHARDS` → `SHARDS (--shards)`: the variable and the flag that set it.
/// File-only settings (`streams.events.retention`) are named as in the file.
fn name_setting(setting: &str) -> String {
    let is_env_name = setting
        .chars()
        .all(|c| c.is_ascii_uppercase() || c == '_' || c == '/');
    if !is_env_name || setting.contains('/') {
        return setting.to_owned();
    }
    let flag = setting.to_ascii_lowercase().replace('_', "-");
    format!("{setting} (--{flag})")
}

fn explain(error: GatewayError) -> anyhow::Error {
    match error {
        GatewayError::Config(e) => e.rename(name_setting).into(),
        other => anyhow::anyhow!("{other}"),
    }
}

/// The file (if any) overlaid with flags and environment, validated; every
/// problem, from either source, reported at once.
fn validate(args: &GatewayArgs) -> Result<GatewayConfig, settings::ConfigErrors> {
    let mut problems = Problems::new();
    let file = match &args.config {
        Some(path) => problems
            .check("GATEWAY_CONFIG (--config)", Settings::from_file(path))
            .unwrap_or_default(),
        None => Settings::default(),
    };
    let overlaid = file.overlay(args.settings(&mut problems));
    let result = GatewayConfig::from_settings(overlaid).map_err(|e| e.rename(name_setting));
    if let Err(errors) = &result {
        problems.extend(errors.clone());
    }
    problems.finish()?;
    result
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let mut config = validate(&args)?;
    config.nats = args.nats_login.settings(&config.nats.url)?;
    let mut gateway = Gateway::start(config).await.map_err(explain)?;

    let stopper = gateway.stopper();
    tokio::spawn(async move {
        let first = shutdown_signal().await;
        tracing::info!(
            signal = first,
            "shutting down: stop reading, flush, store sessions"
        );
        stopper.stop();
        // A second signal means "now": skip the graceful part.
        let second = shutdown_signal().await;
        tracing::warn!(
            signal = second,
            "second signal: exiting without finishing the shutdown"
        );
        std::process::exit(130);
    });

    let summary = gateway.wait().await.map_err(explain)?;
    tracing::info!(
        published = summary.publish.published,
        sessions_saved = summary.sessions_saved,
        "gateway exited cleanly"
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler");
    let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler");
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_named_with_their_flag() {
        assert_eq!(name_setting("SHARDS"), "SHARDS (--shards)");
        assert_eq!(
            name_setting("EVENTS_MAX_AGE"),
            "EVENTS_MAX_AGE (--events-max-age)"
        );
        assert_eq!(
            name_setting("streams.events.retention"),
            "streams.events.retention"
        );
        assert_eq!(name_setting("SHARDS/TOTAL_SHARDS"), "SHARDS/TOTAL_SHARDS");
    }
}
