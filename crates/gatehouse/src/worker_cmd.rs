//! `gatehouse worker`: run the JetStream consumers until SIGTERM/SIGINT.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use worker::WorkerConfig;

use crate::{
    db_args::DbArgs,
    nats_args::{NatsArgs, StreamArgs},
};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Durable consumer name; worker processes with the same name share the work.
    #[arg(long, env = "WORKER_CONSUMER", default_value = "worker")]
    pub consumer: String,

    /// Messages this process handles at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// Deliveries of a failing message before it is dead-lettered.
    #[arg(long, env = "WORKER_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// Redelivery delays after successive failures, comma-separated.
    #[arg(long, env = "WORKER_BACKOFF", default_value = "1s,5s,30s,2m", value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub backoff: Vec<Duration>,

    /// How long JetStream waits for an acknowledgement before redelivering.
    #[arg(long, env = "WORKER_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    #[command(flatten)]
    pub streams: StreamArgs,

    /// Bot token for role changes and interaction replies. Without it the
    /// worker applies events but syncs no roles.
    #[arg(long, env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: Option<String>,

    /// Override of Discord's REST API base URL (the simulator's); unset in production.
    #[arg(long, env = "DISCORD_API_URL")]
    pub discord_api_url: Option<String>,

    /// EVM chains for eligibility rules: `name=url[,url…][;name=url…]`
    /// (several URLs per chain fail over in order).
    #[arg(long, env = "CHAINS", default_value = "", hide_env_values = true)]
    pub chains: String,

    /// How long a member keeps a role while failing its rule.
    #[arg(long, env = "ROLE_GRACE_PERIOD", default_value = "24h", value_parser = humantime::parse_duration)]
    pub role_grace_period: Duration,

    /// How often every member's eligibility is re-checked (spread over the period).
    #[arg(long, env = "RECHECK_PERIOD", default_value = "6h", value_parser = humantime::parse_duration)]
    pub recheck_period: Duration,

    /// How often this worker looks for members due a re-check.
    #[arg(long, env = "RECHECK_SCAN_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub recheck_scan_interval: Duration,
}

/// Parses `name=url[,url…][;name=url…]`.
pub fn parse_chains(spec: &str) -> anyhow::Result<eligibility::EligibilityConfig> {
    let mut chains = std::collections::BTreeMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, urls) = entry.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("CHAINS: {entry:?} should look like name=https://rpc.example")
        })?;
        let urls = urls
            .split(',')
            .map(|u| {
                url::Url::parse(u.trim()).map_err(|e| {
                    anyhow::anyhow!("CHAINS: chain {name}: an RPC URL is not a URL: {e}")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        chains.insert(name.trim().to_owned(), eligibility::ChainConfig::new(urls));
    }
    let config = eligibility::EligibilityConfig { chains };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("CHAINS: {e}"))?;
    Ok(config)
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let topology = args.streams.topology(args.nats.namespace()?)?;
    let config = WorkerConfig {
        topology,
        consumer_name: args.consumer.clone(),
        concurrency: args.concurrency,
        max_attempts: args.max_attempts,
        backoff: args.backoff.clone(),
        ack_wait: args.ack_wait,
    };
    config.validate().context("worker configuration")?;
    let store = args.db.connect(args.concurrency.max(4)).await?;
    let nats = args.nats.connect().await?;
    let jetstream = async_nats::jetstream::new(nats);

    let role_sync = match &args.discord_token {
        Some(token) => {
            let evaluator = eligibility::Evaluator::new(&parse_chains(&args.chains)?)
                .map_err(|e| anyhow::anyhow!("CHAINS: {e}"))?;
            let discord = worker::discord::Discord::new(token, args.discord_api_url.as_deref(), 8)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(std::sync::Arc::new(worker::sync::RoleSync::new(
                store.clone(),
                std::sync::Arc::new(evaluator),
                discord,
                worker::sync::RoleSyncConfig {
                    grace: args.role_grace_period,
                    recheck_period: args.recheck_period,
                    scan_interval: args.recheck_scan_interval,
                    ..Default::default()
                },
            )))
        }
        None => {
            tracing::warn!("DISCORD_TOKEN is not set: events are applied but no roles are synced");
            None
        }
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tracing::info!(consumer = %config.consumer_name, concurrency = config.concurrency, "worker started");
    worker::run(config, jetstream, store, role_sync, shutdown)
        .await
        .context("worker stopped")?;
    tracing::info!("worker stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight messages");
    token.cancel();
}
