//! `gatehouse keys …`: a community's admin API keys. What a key is and how
//! it is stored is `domain::keys`; this is the command line.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::keys::{self, KeyError, NewKey, Scope};
use domain::Actor;

use crate::community_args::Community;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once; only its hash is stored.
    Create(CreateArgs),
    /// List the community's keys (prefix, scopes, last use; never the secret).
    List(Community),
    /// Revoke a key: every `api` process refuses it from its next request on.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub community: Community,

    /// What the key is for, shown in listings (e.g. "dashboard", "ci").
    #[arg(long)]
    pub name: String,

    /// Comma-separated: read, rules:write, badges:write, members:write,
    /// webhooks:write.
    #[arg(long, default_value = "read")]
    pub scopes: String,

    /// When the key stops working: a duration from now (`90d`, `12h`) or an
    /// RFC 3339 time. Default: never.
    #[arg(long)]
    pub expires: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub community: Community,

    /// The key's id (`gatehouse keys list` shows it).
    #[arg(long)]
    pub id: String,
}

pub async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::List(community) => list(community).await,
        KeysCommand::Revoke(args) => revoke(args).await,
    }
}

fn parse_scopes(text: &str) -> anyhow::Result<BTreeSet<Scope>> {
    let mut scopes = BTreeSet::new();
    let mut bad = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word.parse::<Scope>() {
            Ok(scope) => {
                scopes.insert(scope);
            }
            Err(_) => bad.push(format!("{word:?}")),
        }
    }
    if !bad.is_empty() {
        anyhow::bail!(
            "--scopes: unknown scope(s) {}; expected a comma-separated list of read, rules:write, \
             badges:write, members:write, webhooks:write",
            bad.join(", ")
        );
    }
    if scopes.is_empty() {
        anyhow::bail!("--scopes: a key needs at least one scope, e.g. --scopes read");
    }
    // Every key may read what it may write.
    scopes.insert(Scope::Read);
    Ok(scopes)
}

fn parse_expiry(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let after = settings::parse_duration(text).map_err(|e| {
        anyhow::anyhow!("--expires {text:?}: {e}; expected a duration like 90d or an RFC 3339 time")
    })?;
    let after = chrono::Duration::from_std(after).context("--expires: too far in the future")?;
    now.checked_add_signed(after)
        .context("--expires: too far in the future")
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    // Validate before connecting.
    let scopes = parse_scopes(&args.scopes)?;
    let expires_at = args
        .expires
        .as_deref()
        .map(|e| parse_expiry(e, Utc::now()))
        .transpose()?;
    let (store, community) = args.community.open().await?;
    let created = keys::create(
        &store,
        community,
        &Actor::Admin(Some("operator".into())),
        &NewKey {
            name: args.name,
            scopes,
            expires_at,
        },
    )
    .await?;
    let key = &created.key;
    eprintln!(
        "key {} ({}) created for guild {} with scopes {}{}.",
        key.id,
        key.prefix,
        community.guild,
        key.scopes.join(","),
        key.expires_at
            .map(|at| format!(", expiring {}", at.to_rfc3339()))
            .unwrap_or_default()
    );
    eprintln!("It is shown once; store it now (only its hash is kept):");
    // The secret alone on stdout, so `KEY=$(gatehouse keys create …)` works.
    println!("{}", created.secret.expose());
    Ok(ExitCode::SUCCESS)
}

async fn list(community: Community) -> anyhow::Result<ExitCode> {
    let (store, community) = community.open().await?;
    let keys = keys::list(&store, community).await?;
    if keys.is_empty() {
        println!("guild {} has no API keys", community.guild);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<12}  {:<8}  {:<20}  {:<25}  {:<25}  scopes",
        "id", "prefix", "state", "name", "last used", "expires"
    );
    let now = Utc::now();
    for key in keys {
        let state = if key.revoked_at.is_some() {
            "revoked"
        } else if key.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let time = |t: Option<DateTime<Utc>>, none: &str| {
            t.map_or_else(
                || none.to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            )
        };
        println!(
            "{:<36}  {:<12}  {:<8}  {:<20}  {:<25}  {:<25}  {}",
            key.id,
            key.prefix,
            state,
            key.name,
            time(key.last_used_at, "never"),
            time(key.expires_at, "never"),
            key.scopes.join(","),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let id: store::ApiKeyId = args
        .id
        .parse()
        .with_context(|| format!("--id {:?} is not a key id (a UUID)", args.id))?;
    let (store, community) = args.community.open().await?;
    match keys::revoke(
        &store,
        community,
        &Actor::Admin(Some("operator".into())),
        id,
    )
    .await
    {
        Ok(key) => println!("key {} ({}) revoked", key.id, key.prefix),
        Err(KeyError::NotFound(_)) => anyhow::bail!(
            "guild {} has no API key {id}; `gatehouse keys list --guild {}` shows its keys",
            community.guild,
            community.guild
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
