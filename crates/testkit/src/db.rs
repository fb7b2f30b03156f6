//! Throwaway databases on the services `scripts/stack up` runs.
//!
//! Each [`TestDb`] is a fresh database, migrated, owned by `gatehouse_owner`
//! and reachable as `gatehouse_app` both directly and through PgBouncer. It
//! is dropped (with `FORCE`) when the value is dropped, so tests run in
//! parallel and leave nothing behind.
//!
//! Connection settings come from the environment `scripts/stack up` writes
//! (`.stack/env`); variables already set in the process win.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio_postgres::{Client, NoTls};

/// Where the stack is and how to log in.
#[derive(Clone, Debug)]
pub struct StackEnv {
    pub admin_url: String,
    pub owner_password: String,
    pub app_password: String,
    pub pg_port: u16,
    pub pgbouncer_port: u16,
    /// The stack's NATS server and each process's login on it.
    pub nats: crate::nats::NatsAccess,
}

impl StackEnv {
    /// Reads the stack's environment. Panics with instructions when the
    /// stack has not been started: a test cannot do anything useful then.
    pub fn load() -> StackEnv {
        let file = read_env_file(&workspace_root().join(".stack/env"));
        let get = |key: &str| -> Option<String> {
            std::env::var(key).ok().or_else(|| file.get(key).cloned())
        };
        let need = |key: &str| -> String {
            get(key).unwrap_or_else(|| {
                panic!("{key} is not set and .stack/env does not exist: run `scripts/stack up` first (scripts/test does)")
            })
        };
        let port = |key: &str, default: u16| -> u16 {
            get(key).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{key}={v} is not a port"))
            })
        };
        StackEnv {
            admin_url: get("GATEHOUSE_ADMIN_URL")
                .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/postgres".into()),
            owner_password: need("GATEHOUSE_OWNER_PASSWORD"),
            app_password: need("GATEHOUSE_APP_PASSWORD"),
            pg_port: port("GATEHOUSE_PG_PORT", 5432),
            pgbouncer_port: port("GATEHOUSE_PGBOUNCER_PORT", 6432),
            nats: nats_access(&get),
        }
    }
}

/// The stack's NATS: NATS_URL, and each process's user and password
/// (`GATEHOUSE_NATS_GATEWAY_USER`, `GATEHOUSE_NATS_GATEWAY_PASSWORD`, …).
/// A stack that names no admin user is a server without users, reached
/// without credentials.
fn nats_access(get: &dyn Fn(&str) -> Option<String>) -> crate::nats::NatsAccess {
    let url = get("NATS_URL").unwrap_or_else(|| bus::DEFAULT_URL.into());
    if get(bus::Process::Admin.user_variable()).is_none() {
        return crate::nats::NatsAccess::anonymous(url);
    }
    let logins = bus::Process::ALL
        .into_iter()
        .map(|process| {
            let need = |key: &str| {
                get(key).unwrap_or_else(|| {
                    panic!("{key} is not set but {} is: run `scripts/stack up` again to rewrite .stack/env", bus::Process::Admin.user_variable())
                })
            };
            let login = (
                need(process.user_variable()),
                need(process.password_variable()),
            );
            (process, login)
        })
        .collect();
    crate::nats::NatsAccess::new(url, logins)
}

/// The workspace root (this crate lives in crates/testkit).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn read_env_file(path: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

/// A fresh, migrated database that is dropped with the value.
pub struct TestDb {
    pub env: StackEnv,
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// Creates and migrates a database named after the test (`label`).
    pub async fn create(label: &str) -> TestDb {
        Self::create_on(StackEnv::load(), label).await
    }

    /// Creates and migrates a database named after the test on the server
    /// `env` describes (the stack's, or a test's own cluster).
    pub async fn create_on(env: StackEnv, label: &str) -> TestDb {
        let db = Self::create_empty_on(env, label).await;
        store::migrate::run(&db.owner_url(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("migrating {}: {e}", db.name));
        db
    }

    /// Creates a database with no migrations applied.
    pub async fn create_empty(label: &str) -> TestDb {
        Self::create_empty_on(StackEnv::load(), label).await
    }

    async fn create_empty_on(env: StackEnv, label: &str) -> TestDb {
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(24)
            .collect();
        let name = format!(
            "gh_test_{clean}_{}_{}_{:04x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let admin = connect(&env.admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\" OWNER gatehouse_owner"))
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        TestDb { env, name }
    }

    pub fn owner_url(&self) -> String {
        format!(
            "postgresql://gatehouse_owner:{}@127.0.0.1:{}/{}",
            self.env.owner_password, self.env.pg_port, self.name
        )
    }

    /// The runtime role, straight to PostgreSQL.
    pub fn app_direct_url(&self) -> String {
        format!(
            "postgresql://gatehouse_app:{}@127.0.0.1:{}/{}",
            self.env.app_password, self.env.pg_port, self.name
        )
    }

    /// The runtime role through PgBouncer (transaction pooling).
    pub fn app_pgbouncer_url(&self) -> String {
        format!(
            "postgresql://gatehouse_app:{}@127.0.0.1:{}/{}",
            self.env.app_password, self.env.pgbouncer_port, self.name
        )
    }

    /// A superuser connection to this database, for arranging fixtures that
    /// no Gatehouse role could write (and checking what really is stored).
    pub async fn admin(&self) -> Client {
        let url = self.env.admin_url.rsplit_once('/').map_or_else(
            || panic!("GATEHOUSE_ADMIN_URL has no database part"),
            |(base, _)| format!("{base}/{}", self.name),
        );
        connect(&url).await
    }

    /// A plain session as the runtime role, directly to PostgreSQL.
    pub async fn app_direct(&self) -> Client {
        connect(&self.app_direct_url()).await
    }

    /// A plain session as the runtime role through PgBouncer.
    pub async fn app_pgbouncer(&self) -> Client {
        connect(&self.app_pgbouncer_url()).await
    }

    /// A store (pool) for the runtime role through PgBouncer.
    pub async fn store(&self, pool_size: usize) -> store::Store {
        let config = store::StoreConfig::from_url(&self.app_pgbouncer_url())
            .and_then(|c| c.with_pool_size(pool_size))
            .unwrap_or_else(|e| panic!("store config: {e}"));
        store::Store::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connecting the store to {}: {e}", self.name))
    }

    /// The single `bigint` that `query` returns, run as superuser: tests
    /// count effects in tables no Gatehouse role may read across tenants.
    pub async fn count(&self, query: &str) -> i64 {
        self.admin()
            .await
            .query_one(query, &[])
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .get(0)
    }

    /// The first column of every row `query` returns, run as superuser.
    pub async fn column<T>(&self, query: &str) -> Vec<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        self.admin()
            .await
            .query(query, &[])
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Polls [`count`](Self::count) until it returns `want` or `within`
    /// passes; returns the last value, so `assert_eq!` on it shows both.
    pub async fn wait_for_count(&self, query: &str, want: i64, within: Duration) -> i64 {
        let admin = self.admin().await;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let n: i64 = admin
                .query_one(query, &[])
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"))
                .get(0);
            if n == want || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.env.admin_url.clone();
        let name = self.name.clone();
        crate::block_on_aside(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&admin_url, NoTls).await {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        });
    }
}

/// Connects and drives the connection in the background; panics with the
/// reason on failure (tests only).
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", store::redact_url(url)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
