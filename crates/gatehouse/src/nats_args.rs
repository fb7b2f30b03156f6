//! NATS settings shared by the verbs that talk to JetStream.

use std::time::Duration;

use anyhow::Context;
use wire::Namespace;

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
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
}

impl NatsArgs {
    pub fn namespace(&self) -> anyhow::Result<Namespace> {
        if self.nats_namespace.is_empty() {
            Ok(Namespace::root())
        } else {
            Namespace::prefixed(&self.nats_namespace).context("NATS_NAMESPACE (--nats-namespace)")
        }
    }

    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        connect(&self.nats_url).await
    }
}

/// Connects, or explains in one line what to fix. After this, async-nats
/// reconnects by itself when the server goes away.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
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
