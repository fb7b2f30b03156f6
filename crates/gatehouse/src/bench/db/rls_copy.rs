//! The throwaway copy of the bench database with row-level security off, for
//! `rls_overhead_pct`: the same schema, indexes and data, so the difference
//! in throughput is the policies' cost and nothing else.
//!
//! Made with `CREATE DATABASE … TEMPLATE` as an administrator (the runtime
//! and owner roles may not create databases), through `psql` so the
//! password goes in its environment like pgbench's. The copy is dropped
//! when the run ends, failed or not; a run killed outright leaves a
//! database named `<original>_rls_off_<pid>` behind.

use std::{path::PathBuf, process::Stdio};

use anyhow::{bail, Context};
use tokio::{io::AsyncWriteExt, process::Command};

use super::conninfo::ConnInfo;

/// PostgreSQL's identifier limit, in bytes.
const MAX_IDENTIFIER: usize = 63;

/// A copy that exists until [`RlsOffCopy::drop_database`].
pub struct RlsOffCopy {
    psql: PathBuf,
    admin: ConnInfo,
    pub name: String,
    /// Tables whose row-level security was turned off.
    pub tables: u32,
}

// The scripts psql runs, beside the pgbench script they serve: SQL that an
// administrator's tool runs against the server, not the application's (which
// lives in the store).
const CREATE: &str = include_str!("../../../../../deploy/bench/rls_off_create.psql");
const DISABLE_RLS: &str = include_str!("../../../../../deploy/bench/rls_off_disable.psql");
const DROP: &str = include_str!("../../../../../deploy/bench/rls_off_drop.psql");

/// The copy's name: the original's (shortened to fit), a marker and our pid,
/// so concurrent runs on one server do not collide.
pub fn copy_name(original: &str, pid: u32) -> String {
    let suffix = format!("_rls_off_{pid}");
    let mut keep = MAX_IDENTIFIER
        .saturating_sub(suffix.len())
        .min(original.len());
    while !original.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &original[..keep])
}

impl RlsOffCopy {
    /// Copies `original` and turns row-level security off in the copy.
    pub async fn create(psql: PathBuf, admin: ConnInfo, original: &str) -> anyhow::Result<Self> {
        let name = copy_name(original, std::process::id());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let vars = [
                ("original", original),
                ("copy", name.as_str()),
                ("end_idle", if attempt > 1 { "true" } else { "false" }),
            ];
            let created = run_psql(&psql, &admin, CREATE, &vars).await;
            match created {
                Ok(out) if out.lines().last() == Some("1") => break,
                Ok(_) => bail!("no database {original:?} to copy (is --database-url's database the server's name for it?)"),
                Err(e) if attempt < 5 && format!("{e:#}").contains("is being accessed by other users") => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.context(format!("copying {original} to {name}"))),
            }
        }
        let mut copy = RlsOffCopy {
            psql,
            admin,
            name,
            tables: 0,
        };
        match copy.disable_rls().await {
            Ok(tables) => {
                copy.tables = tables;
                Ok(copy)
            }
            Err(e) => {
                copy.drop_database().await;
                Err(e)
            }
        }
    }

    async fn disable_rls(&self) -> anyhow::Result<u32> {
        let out = run_psql(
            &self.psql,
            &self.admin.with_dbname(&self.name),
            DISABLE_RLS,
            &[],
        )
        .await
        .with_context(|| format!("turning row-level security off in {}", self.name))?;
        let counts: Vec<u32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        match counts[..] {
            [before, 0] if before > 0 => Ok(before),
            [0, 0] => bail!(
                "{} has no table under row-level security: is it migrated?",
                self.name
            ),
            _ => bail!(
                "row-level security still on in {} after turning it off: {out:?}",
                self.name
            ),
        }
    }

    /// Drops the copy; a failure is reported, not raised: the figures are
    /// measured by then, and the operator can drop it by name.
    pub async fn drop_database(self) {
        if let Err(e) = run_psql(&self.psql, &self.admin, DROP, &[("copy", &self.name)]).await {
            eprintln!(
                "warning: could not drop the throwaway database {}: {e:#}",
                self.name
            );
        }
    }
}

/// Runs `sql` through psql, `vars` as psql variables (quoted by psql where
/// the script interpolates them), and returns its unaligned output.
async fn run_psql(
    psql: &PathBuf,
    conn: &ConnInfo,
    sql: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut cmd = Command::new(psql);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for (name, value) in vars {
        cmd.arg("-v").arg(format!("{name}={value}"));
    }
    cmd.args(conn.args());
    if let Some(db) = conn.database() {
        cmd.arg("-d").arg(db);
    }
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    conn.apply_env(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", psql.display()))?;
    let mut stdin = child.stdin.take().context("psql's stdin")?;
    stdin
        .write_all(sql.as_bytes())
        .await
        .context("writing to psql")?;
    drop(stdin);
    let out = child.wait_with_output().await.context("waiting for psql")?;
    if !out.status.success() {
        bail!(
            "psql {}: {}",
            out.status,
            settings::redact(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_fit_postgres_and_name_their_run() {
        assert_eq!(copy_name("bench_db", 4242), "bench_db_rls_off_4242");
        let long = "x".repeat(80);
        let name = copy_name(&long, 4_000_000);
        assert_eq!(name.len(), MAX_IDENTIFIER);
        assert!(name.ends_with("_rls_off_4000000"));
        // Never cut inside a character.
        let name = copy_name(&"é".repeat(40), 1);
        assert!(name.len() <= MAX_IDENTIFIER && name.ends_with("_rls_off_1"));
    }
}
