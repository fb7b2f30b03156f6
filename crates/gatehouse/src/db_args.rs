//! Database settings shared by every verb that talks to the database as the
//! runtime role, and the translation of store errors into advice.

use settings::{Problems, Secret};
use store::{StoreConfig, StoreError};

use crate::config::Labels;

#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Runtime database URL (role gatehouse_app, normally through PgBouncer),
    /// e.g. postgres://gatehouse_app:PASSWORD@127.0.0.1:6432/gatehouse
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Connections this process keeps in its pool [default: 16; `bench db`: 64].
    #[arg(long = "db-pool-size", env = "DATABASE_POOL_SIZE")]
    pub pool_size: Option<String>,

    /// How long to wait for a new connection to be established (e.g. 5s, 500ms).
    #[arg(
        long = "db-connect-timeout",
        env = "DATABASE_CONNECT_TIMEOUT",
        default_value = "5s"
    )]
    pub connect_timeout: String,

    /// How long to wait for a free pooled connection.
    #[arg(
        long = "db-acquire-timeout",
        env = "DATABASE_ACQUIRE_TIMEOUT",
        default_value = "5s"
    )]
    pub acquire_timeout: String,
}

impl DbArgs {
    /// The store configuration, recording every bad setting in `problems`.
    pub fn validate(
        &self,
        default_pool_size: usize,
        problems: &mut Problems,
    ) -> Option<StoreConfig> {
        let l = Labels::of::<Self>();
        let connect_timeout = problems.duration(&l.get("connect_timeout"), &self.connect_timeout);
        let acquire_timeout = problems.duration(&l.get("acquire_timeout"), &self.acquire_timeout);
        let pool_size = match &self.pool_size {
            None => Some(default_pool_size),
            Some(text) => problems
                .parse::<usize>(&l.get("pool_size"), text, "a number of connections")
                .filter(|n| {
                    if *n == 0 {
                        problems.push(l.get("pool_size"), "must be at least 1");
                    }
                    *n > 0
                }),
        };
        let url = match self.database_url.as_ref().filter(|u| !u.is_blank()) {
            Some(url) => {
                problems.check(&l.get("database_url"), StoreConfig::from_url(url.expose()))
            }
            None => {
                problems.push(
                    l.get("database_url"),
                    "not set: set DATABASE_URL or pass --database-url (the runtime role through \
                     PgBouncer, e.g. postgres://gatehouse_app:PASSWORD@127.0.0.1:6432/gatehouse)",
                );
                None
            }
        };
        let config = url?
            .with_pool_size(pool_size?)
            .ok()?
            .with_connect_timeout(connect_timeout?)
            .with_acquire_timeout(acquire_timeout?);
        Some(config)
    }

    /// Validated settings, or every problem at once.
    pub fn store_config(&self, default_pool_size: usize) -> anyhow::Result<StoreConfig> {
        let mut problems = Problems::new();
        let config = self.validate(default_pool_size, &mut problems);
        problems.finish()?;
        config.ok_or_else(|| {
            anyhow::anyhow!("database settings: no configuration and no problem recorded")
        })
    }

    /// Connects and proves the database answers, or explains what to fix.
    pub async fn connect(&self, default_pool_size: usize) -> anyhow::Result<store::Store> {
        let config = self.store_config(default_pool_size)?;
        connect(config).await
    }
}

/// Connects with an already validated configuration.
pub async fn connect(config: StoreConfig) -> anyhow::Result<store::Store> {
    store::Store::connect(config)
        .await
        .map_err(|e| explain(e, "DATABASE_URL (--database-url)"))
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
        Some("28P01" | "28000") => {
            return Some("check the user name and password in the URL")
        }
        Some("3D000") => {
            return Some("the database does not exist: create it (deploy/postgres/bootstrap.sql) and run `gatehouse migrate`")
        }
        Some("42P01" | "42883") => {
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
