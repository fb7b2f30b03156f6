//! Database settings shared by every verb that talks to the database as the
//! runtime role, and the translation of store errors into advice.

use std::time::Duration;

use store::{StoreConfig, StoreError};

#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Runtime database URL (role gatehouse_app, normally through PgBouncer),
    /// e.g. postgres://gatehouse_app:PASSWORD@127.0.0.1:6432/gatehouse
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connections this process keeps in its pool [default: 16; `bench db`: 64].
    #[arg(long = "db-pool-size", env = "DATABASE_POOL_SIZE")]
    pub pool_size: Option<usize>,

    /// How long to wait for a new connection to be established (e.g. 5s, 500ms).
    #[arg(long = "db-connect-timeout", env = "DATABASE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// How long to wait for a free pooled connection.
    #[arg(long = "db-acquire-timeout", env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,
}

impl DbArgs {
    pub fn store_config(&self, default_pool_size: usize) -> anyhow::Result<StoreConfig> {
        let url = self.database_url.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "DATABASE_URL is not set: set it or pass --database-url \
                 (the runtime role through PgBouncer, e.g. postgres://gatehouse_app:PASSWORD@127.0.0.1:6432/gatehouse)"
            )
        })?;
        let config = StoreConfig::from_url(url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL (--database-url): {e}"))?
            .with_pool_size(self.pool_size.unwrap_or(default_pool_size))
            .map_err(|e| anyhow::anyhow!("DATABASE_POOL_SIZE (--db-pool-size): {e}"))?
            .with_connect_timeout(self.connect_timeout)
            .with_acquire_timeout(self.acquire_timeout);
        Ok(config)
    }

    /// Connects and proves the database answers, or explains what to fix.
    pub async fn connect(&self, default_pool_size: usize) -> anyhow::Result<store::Store> {
        let config = self.store_config(default_pool_size)?;
        store::Store::connect(config)
            .await
            .map_err(|e| explain(e, "DATABASE_URL (--database-url)"))
    }
}

/// Turns a connection-level store error into one line: the setting, what
/// happened, and what usually fixes it.
pub fn explain(error: StoreError, setting: &str) -> anyhow::Error {
    let message = with_causes(&error);
    match hint(&error, &message) {
        Some(hint) => anyhow::anyhow!("{setting}: {message}; {hint}"),
        None => anyhow::anyhow!("{setting}: {message}"),
    }
}

/// The error and every cause not already spelled out by the one above it
/// ("error connecting to server" alone says nothing; its io cause does).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

fn hint(error: &StoreError, text: &str) -> Option<&'static str> {
    match error.sql_state() {
        Some("28P01") | Some("28000") => {
            return Some("check the user name and password in the URL")
        }
        Some("3D000") => {
            return Some("the database does not exist: create it (deploy/postgres/bootstrap.sql) and run `gatehouse migrate`")
        }
        Some("42P01") | Some("42883") => {
            return Some("the schema is missing or old: run `gatehouse migrate`")
        }
        _ => {}
    }
    if text.contains("Connection refused") || matches!(error, StoreError::ConnectTimeout { .. }) {
        Some("is the server running at that host and port? `scripts/stack up` starts a local one")
    } else if matches!(error, StoreError::Connect { .. }) {
        Some("check the host, port and database name in the URL")
    } else {
        None
    }
}
