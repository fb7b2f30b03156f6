//! `gatehouse badges …`: define a community's badges, list them, and grant
//! `manual_grant` badges by hand. Automatic badges (join order, tenure,
//! tier) are awarded by the workers when members join and in the periodic
//! re-check; every definition and grant is audited with actor `admin`.

use std::process::ExitCode;

use anyhow::Context;
use domain::{badges, Actor};
use store::repo::{BadgeEvaluator, NewBadge};
use wire::UserId;

use crate::community_args::Community;

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
    pub user: UserId,

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
    let badge = NewBadge {
        slug: args.slug.clone(),
        name: args.name.clone(),
        description: args.description.clone(),
        evaluator,
        criteria,
    };
    // Validate before connecting: a bad definition never needs the database.
    badges::validate(&badge)?;
    let (store, community) = args.community.open().await?;
    let tx = store.begin(community.tenant).await?;
    let badge = badges::define(&tx, &Actor::Admin(None), &badge).await?;
    tx.commit().await?;
    println!(
        "badge {} defined in guild {}; members earn it as they join and at their next periodic re-check",
        badge.slug, community.guild
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(community: Community) -> anyhow::Result<ExitCode> {
    let (store, community) = community.open().await?;
    let tx = store.begin(community.tenant).await?;
    let listed = badges::list(&tx).await?;
    tx.commit().await?;
    if listed.is_empty() {
        println!("guild {} has no badges", community.guild);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20}  {:<24}  {:<12}  {:>7}  criteria",
        "slug", "name", "evaluator", "holders"
    );
    for entry in listed {
        let b = &entry.badge;
        println!(
            "{:<20}  {:<24}  {:<12}  {:>7}  {}",
            b.slug,
            b.name,
            b.evaluator.as_str(),
            entry.holders,
            b.criteria
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn grant(args: GrantArgs) -> anyhow::Result<ExitCode> {
    let user = args.user;
    if args.granted_by.trim().is_empty() {
        anyhow::bail!("--granted-by must name who grants the badge (it goes in the audit log)");
    }
    let (store, community) = args.community.open().await?;
    let tx = store.begin(community.tenant).await?;
    let granted = badges::grant(&tx, &args.slug, user, &args.granted_by, &args.reason)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (guild {})", community.guild))?;
    tx.commit().await?;
    if granted {
        println!("badge {} granted to {user}", args.slug);
    } else {
        println!("{user} already holds badge {}", args.slug);
    }
    Ok(ExitCode::SUCCESS)
}
