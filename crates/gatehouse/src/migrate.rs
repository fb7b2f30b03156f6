use std::{process::ExitCode, time::Duration};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Owner database URL (role gatehouse_owner, directly to PostgreSQL, not
    /// through PgBouncer), e.g. postgres://gatehouse_owner@127.0.0.1:5432/gatehouse
    #[arg(
        long = "database-url",
        env = "DATABASE_OWNER_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// How long to wait for the connection.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = args.database_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "DATABASE_OWNER_URL is not set: set it or pass --database-url \
             (the owner role straight to PostgreSQL, e.g. postgres://gatehouse_owner:PASSWORD@127.0.0.1:5432/gatehouse)"
        )
    })?;
    let report = store::migrate::run(url, args.connect_timeout)
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
