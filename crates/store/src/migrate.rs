//! The schema migration runner.
//!
//! Migrations are the SQL files in the repository's `migrations/` folder,
//! compiled into the binary. Each runs in its own transaction and is recorded
//! in `gatehouse_migrations` with a SHA-256 of its text, so that
//!
//! * re-running applies nothing,
//! * a migration edited after it was applied is refused (the database no
//!   longer matches the file, and silently skipping it would hide that),
//! * a database that has migrations this binary does not know is refused
//!   (an older binary must not run against a newer schema),
//! * two runners at once are safe: the second waits on an advisory lock and
//!   then finds nothing to do.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};

use crate::names;
use settings::redact as redact_url;

/// One migration file.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../migrations/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. A test checks this matches `migrations/`.
pub static MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_schema"),
    migration!(2, "0002_row_level_security"),
    migration!(3, "0003_functions"),
    migration!(4, "0004_event_processing"),
    migration!(5, "0005_role_sync"),
    migration!(6, "0006_wallet_link_nonces"),
    migration!(7, "0007_check_lease"),
    migration!(8, "0008_decision_inputs"),
    migration!(9, "0009_api_keys"),
    migration!(10, "0010_webhooks"),
    migration!(11, "0011_sync_counters"),
    migration!(12, "0012_member_wallets"),
    migration!(13, "0013_web_sessions"),
    migration!(14, "0014_column_grants_and_composite_keys"),
    migration!(15, "0015_audit_retention"),
    migration!(16, "0016_interaction_replies"),
    migration!(17, "0017_member_syncs"),
    migration!(18, "0018_direct_tenant_policies"),
    migration!(19, "0019_planned_once"),
    migration!(20, "0020_checks_planned_once"),
    migration!(21, "0021_membership_audited_with_its_write"),
    migration!(22, "0022_audit_key_indexed_once"),
];

/// Key of the session advisory lock that serialises runners ("gatehous").
const LOCK_KEY: i64 = 0x6761_7465_686f_7573;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("invalid database URL {url} for migrations: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("could not connect to {target} to run migrations: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("role {role} does not exist; create the roles first with deploy/postgres/bootstrap.sql (as a superuser)")]
    MissingRole { role: &'static str },

    #[error("migrations must run as {owner}, not as superuser {user}: the tables would belong to the wrong role; connect as {owner}")]
    Superuser { user: String, owner: &'static str },

    #[error("migration {version} ({name}) was changed after it was applied (database has checksum {applied}, file has {file}); restore the file and add a new migration instead")]
    Modified {
        version: i32,
        name: String,
        applied: String,
        file: String,
    },

    #[error("the database has migration {version} ({name}) which this gatehouse binary does not know; run a newer gatehouse")]
    Unknown { version: i32, name: String },

    #[error("migration {version} ({name}) failed: {source}")]
    Apply {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("database error while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn q(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MigrateError {
    move |source| MigrateError::Query { context, source }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<(i32, &'static str)>,
    pub already_applied: usize,
}

/// Connects directly (not through PgBouncer: advisory locks and DDL want a
/// session) and applies what is missing.
pub async fn run(
    owner_url: &str,
    connect_timeout: Duration,
) -> Result<MigrationReport, MigrateError> {
    let mut config: tokio_postgres::Config =
        owner_url
            .parse()
            .map_err(|e: tokio_postgres::Error| MigrateError::InvalidUrl {
                url: redact_url(owner_url),
                reason: e.to_string(),
            })?;
    config
        .connect_timeout(connect_timeout)
        .application_name("gatehouse migrate");
    let (mut client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|source| MigrateError::Connect {
                target: redact_url(owner_url),
                source,
            })?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection closed with an error");
        }
    });
    let result = apply(&mut client, MIGRATIONS).await;
    drop(client);
    let _ = driver.await;
    result
}

/// Applies `migrations` over an open connection.
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    check_roles(client).await?;
    client
        .query("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(q("waiting for the migration lock"))?;
    let result = apply_locked(client, migrations).await;
    // Closing the session would release it too; unlock anyway so a caller
    // that keeps the connection does not hold it.
    client
        .query("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(q("releasing the migration lock"))?;
    result
}

async fn check_roles(client: &Client) -> Result<(), MigrateError> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(q("checking the connected role"))?;
    let user: String = row
        .try_get(0)
        .map_err(q("reading the connected role's name"))?;
    let superuser: bool = row
        .try_get(1)
        .map_err(q("reading whether the connected role is a superuser"))?;
    if superuser {
        return Err(MigrateError::Superuser {
            user,
            owner: names::OWNER_ROLE,
        });
    }
    for role in [names::APP_ROLE, names::DEFINER_ROLE] {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(q("checking that the Gatehouse roles exist"))?
            .is_some();
        if !exists {
            return Err(MigrateError::MissingRole { role });
        }
    }
    Ok(())
}

async fn apply_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS gatehouse_migrations (
                version     integer     PRIMARY KEY,
                name        text        NOT NULL,
                checksum    text        NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now(),
                duration_ms bigint      NOT NULL
            )",
        )
        .await
        .map_err(q("creating the migrations table"))?;
    let applied = client
        .query(
            "SELECT version, name, checksum FROM gatehouse_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(q("reading applied migrations"))?;

    let applied: Vec<(i32, String, String)> = applied
        .iter()
        .map(|row| {
            Ok((
                row.try_get("version")?,
                row.try_get("name")?,
                row.try_get("checksum")?,
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(q("reading gatehouse_migrations (version, name, checksum)"))?;

    let mut report = MigrationReport::default();
    for (version, name, checksum) in applied.iter().cloned() {
        match migrations.iter().find(|m| m.version == version) {
            None => return Err(MigrateError::Unknown { version, name }),
            Some(m) if m.checksum() != checksum => {
                return Err(MigrateError::Modified {
                    version,
                    name,
                    applied: checksum,
                    file: m.checksum(),
                })
            }
            Some(_) => report.already_applied += 1,
        }
    }

    for m in migrations {
        if applied.iter().any(|(version, ..)| *version == m.version) {
            continue;
        }
        let started = Instant::now();
        let tx = client
            .transaction()
            .await
            .map_err(q("starting a migration transaction"))?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrateError::Apply {
                version: m.version,
                name: m.name,
                source,
            })?;
        let elapsed = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO gatehouse_migrations (version, name, checksum, duration_ms)
             VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &m.checksum(), &elapsed],
        )
        .await
        .map_err(q("recording an applied migration"))?;
        tx.commit().await.map_err(q("committing a migration"))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            ms = elapsed,
            "applied migration"
        );
        report.applied.push((m.version, m.name));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                std::path::Path::new(n)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
            })
            .map(|n| n.trim_end_matches(".sql").to_owned())
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        let mut previous = 0;
        for m in MIGRATIONS {
            assert_eq!(m.version, previous + 1, "{} is out of sequence", m.name);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            previous = m.version;
        }
    }
}
