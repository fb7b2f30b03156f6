//! `gatehouse worker`: run the JetStream consumers until SIGTERM/SIGINT.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wire::Namespace;
use worker::{StorageKind, StreamLimits, WorkerConfig};

use crate::db_args::DbArgs;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// Prefix for every subject, stream and consumer name, so several
    /// deployments can share one NATS server. Empty: the standard names.
    #[arg(long, env = "NATS_NAMESPACE", default_value = "")]
    pub nats_namespace: String,

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

    /// Stream storage for streams this process creates: file or memory.
    #[arg(long, env = "STREAM_STORAGE", default_value = "file", value_parser = ["file", "memory"])]
    pub stream_storage: String,

    /// Maximum age of messages in streams this process creates.
    #[arg(long, env = "STREAM_MAX_AGE", default_value = "7days", value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let namespace = if args.nats_namespace.is_empty() {
        Namespace::root()
    } else {
        Namespace::prefixed(&args.nats_namespace).context("NATS_NAMESPACE (--nats-namespace)")?
    };
    let config = WorkerConfig {
        namespace,
        consumer_name: args.consumer.clone(),
        concurrency: args.concurrency,
        max_attempts: args.max_attempts,
        backoff: args.backoff.clone(),
        ack_wait: args.ack_wait,
        stream_limits: StreamLimits {
            storage: if args.stream_storage == "memory" {
                StorageKind::Memory
            } else {
                StorageKind::File
            },
            max_age: args.stream_max_age,
            ..StreamLimits::default()
        },
    };
    config.validate().context("worker configuration")?;
    let store = args.db.connect(args.concurrency.max(4)).await?;
    let nats = connect_nats(&args.nats_url).await?;
    let jetstream = async_nats::jetstream::new(nats);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tracing::info!(consumer = %config.consumer_name, concurrency = config.concurrency, "worker started");
    worker::run(config, jetstream, store, shutdown)
        .await
        .context("worker stopped")?;
    tracing::info!("worker stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Connects, or explains in one line what to fix. After this, async-nats
/// reconnects by itself when the server goes away.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("gatehouse")
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "NATS_URL (--nats-url): cannot connect to {}: {e}; is NATS running with JetStream? `scripts/stack up` starts one",
                store::redact_url(url)
            )
        })
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
