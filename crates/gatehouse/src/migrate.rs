use std::process::ExitCode;

use anyhow::Context;
use settings::{Problems, Secret};

use crate::config::Labels;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Owner database URL (role gatehouse_owner, directly to PostgreSQL, not
    /// through PgBouncer), e.g. postgres://gatehouse_owner@127.0.0.1:5432/gatehouse
    #[arg(
        long = "database-url",
        env = "DATABASE_OWNER_URL",
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,

    /// How long to wait for the connection.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: String,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let l = Labels::of::<MigrateArgs>();
    let mut problems = Problems::new();
    let timeout = problems.duration(&l.get("connect_timeout"), &args.connect_timeout);
    let url = args.database_url.filter(|u| !u.is_blank());
    if url.is_none() {
        problems.push(
            l.get("database_url"),
            "not set: set DATABASE_OWNER_URL or pass --database-url (the owner role straight to \
             PostgreSQL, e.g. postgres://gatehouse_owner:PASSWORD@127.0.0.1:5432/gatehouse)",
        );
    }
    problems.finish()?;
    let (Some(url), Some(timeout)) = (url, timeout) else {
        anyhow::bail!("migrate settings: refused without a reason (a bug)");
    };
    let report = store::migrate::run(url.expose(), timeout)
        .await
        .context("gatehouse migrate (DATABASE_OWNER_URL / --database-url)")?;
    if report.applied.is_empty() {
        println!(
            "database is up to date ({} migrations already applied)",
            report.already_applied
        );
    } else {
        for (version, name) in &report.applied {
            println!("applied {version:04} {name}");
        }
        println!(
            "{} applied, {} already present",
            report.applied.len(),
            report.already_applied
        );
    }
    Ok(ExitCode::SUCCESS)
}
