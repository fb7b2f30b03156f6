//! `gatehouse badges …`: define a community's badges, list them, and grant
//! `manual_grant` badges by hand. Automatic badges (join order, tenure,
//! tier) are awarded by the workers when members join and in the periodic
//! re-check; every definition and grant is audited with actor `admin`.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use store::{
    repo::{BadgeEvaluator, NewBadge},
    Snowflake, Type,
};

use crate::community_args::{admin_entry, Community};

#[derive(Debug, clap::Subcommand)]
pub enum BadgesCommand {
    /// Define a badge, or update the one with the same slug, e.g.
    /// `gatehouse badges define --guild 123 --slug pioneer --name Pioneer
    /// --evaluator join_order --criteria '{"first":100}'`.
    Define(DefineArgs),
    /// List the community's badges and how many members hold each.
    List(Community),
    /// Grant a badge to a member by hand (how `manual_grant` badges are earned).
    Grant(GrantArgs),
}

#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    #[command(flatten)]
    pub community: Community,

    /// Short stable name, unique in the community.
    #[arg(long)]
    pub slug: String,

    /// What members see.
    #[arg(long)]
    pub name: String,

    #[arg(long, default_value = "")]
    pub description: String,

    /// join_order, tenure, tier_reached or manual_grant.
    #[arg(long)]
    pub evaluator: String,

    /// The evaluator's criteria as JSON (docs/badges.md lists them).
    #[arg(long, default_value = "{}")]
    pub criteria: String,
}

#[derive(Debug, clap::Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub community: Community,

    /// The badge's slug.
    #[arg(long)]
    pub slug: String,

    /// The member's Discord user id.
    #[arg(long)]
    pub user: String,

    /// Who grants it, for the audit log.
    #[arg(long)]
    pub granted_by: String,

    /// Why, for the member and the audit log [default: "granted by <admin>"].
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub async fn run(command: BadgesCommand) -> anyhow::Result<ExitCode> {
    match command {
        BadgesCommand::Define(args) => define(args).await,
        BadgesCommand::List(community) => list(community).await,
        BadgesCommand::Grant(args) => grant(args).await,
    }
}

async fn define(args: DefineArgs) -> anyhow::Result<ExitCode> {
    let evaluator: BadgeEvaluator = args.evaluator.parse().map_err(|_| {
        anyhow::anyhow!(
            "--evaluator {:?}: expected join_order, tenure, tier_reached or manual_grant",
            args.evaluator
        )
    })?;
    let criteria: serde_json::Value =
        serde_json::from_str(&args.criteria).context("--criteria is not JSON")?;
    // Validate before connecting: a bad definition never needs the database.
    worker::badges::parse_criteria(evaluator, &criteria)?;
    if args.slug.trim().is_empty() || args.name.trim().is_empty() {
        anyhow::bail!("--slug and --name must not be empty");
    }
    let (_store, tx, guild) = args.community.open().await?;
    let badge = worker::badges::define(
        &tx,
        &NewBadge {
            slug: args.slug.clone(),
            name: args.name.clone(),
            description: args.description.clone(),
            evaluator,
            criteria: criteria.clone(),
        },
    )
    .await?;
    tx.audit()
        .append(
            &admin_entry("badge.defined")
                .target("badge", badge.id.to_string())
                .metadata(json!({
                    "slug": badge.slug,
                    "evaluator": evaluator.as_str(),
                    "criteria": criteria,
                })),
        )
        .await?;
    tx.commit().await?;
    println!(
        "badge {} defined in guild {guild}; members earn it as they join and at their next periodic re-check",
        badge.slug
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(community: Community) -> anyhow::Result<ExitCode> {
    let (_store, tx, guild) = community.open().await?;
    let rows = tx
        .query(
            "listing badges with their holders",
            "SELECT b.slug, b.name, b.evaluator, b.criteria::text,
                    (SELECT count(*) FROM badge_awards a
                     WHERE a.community_id = b.community_id AND a.badge_id = b.id)
             FROM badges b WHERE b.community_id = $1 ORDER BY b.slug",
            &[(tx.tenant().as_uuid(), Type::UUID)],
        )
        .await?;
    tx.commit().await?;
    if rows.is_empty() {
        println!("guild {guild} has no badges");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20}  {:<24}  {:<12}  {:>7}  criteria",
        "slug", "name", "evaluator", "holders"
    );
    for row in rows {
        let slug: String = row.try_get(0).context("badge slug")?;
        let name: String = row.try_get(1).context("badge name")?;
        let evaluator: String = row.try_get(2).context("badge evaluator")?;
        let criteria: String = row.try_get(3).context("badge criteria")?;
        let holders: i64 = row.try_get(4).context("badge holders")?;
        println!("{slug:<20}  {name:<24}  {evaluator:<12}  {holders:>7}  {criteria}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn grant(args: GrantArgs) -> anyhow::Result<ExitCode> {
    let user: Snowflake = args
        .user
        .parse()
        .with_context(|| format!("--user {:?}", args.user))?;
    if args.granted_by.trim().is_empty() {
        anyhow::bail!("--granted-by must name who grants the badge (it goes in the audit log)");
    }
    let (_store, tx, guild) = args.community.open().await?;
    let granted = worker::badges::grant(&tx, &args.slug, user, &args.granted_by, &args.reason)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (guild {guild})"))?;
    tx.commit().await?;
    if granted {
        println!("badge {} granted to {user}", args.slug);
    } else {
        println!("{user} already holds badge {}", args.slug);
    }
    Ok(ExitCode::SUCCESS)
}
