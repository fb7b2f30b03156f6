//! `gatehouse rules …`: an operator's view of a community's eligibility
//! rules. What a change does (validation, audit with actor `admin`, the
//! community re-check) is `domain::rules`; this is the command line.

use std::process::ExitCode;

use anyhow::Context;
use domain::{rules, Actor};
use wire::RoleId;

use crate::{community_args::Community, nats_args::NatsArgs, rechecks};

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Add a rule that grants a Discord role, e.g.
    /// `gatehouse rules add --guild 123 --role 456 --type token_balance --chain ethereum
    /// --contract 0x… --parameters '{"min_balance":"1000"}'`.
    Add(AddArgs),
    /// List the community's rules.
    List(Community),
    /// Let a disabled rule grant and remove its role again.
    Enable(ChangeArgs),
    /// Stop a rule from granting or removing its role. Members keep the role
    /// they hold; a custom rule that uses this one still evaluates it.
    Disable(ChangeArgs),
    /// Delete a rule. Refused while a custom rule uses it. Members keep the
    /// role it granted (it is no longer managed by Gatehouse).
    Delete(ChangeArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub community: Community,

    /// Where the community re-check is requested.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// The Discord role the rule grants.
    #[arg(long)]
    pub role: RoleId,

    /// token_balance, nft_ownership, score_threshold or custom.
    #[arg(long = "type")]
    pub rule_type: String,

    #[arg(long)]
    pub chain: Option<String>,

    #[arg(long)]
    pub contract: Option<String>,

    /// The rule's parameters as JSON (docs/eligibility.md lists them per type).
    #[arg(long, default_value = "{}")]
    pub parameters: String,

    #[arg(long, default_value_t = 0)]
    pub priority: i32,
}

#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub community: Community,

    /// Where the community re-check is requested.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// The rule's id (`gatehouse rules list` shows them).
    #[arg(long)]
    pub id: String,
}

pub async fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Add(args) => add(args).await,
        RulesCommand::List(community) => list(community).await,
        RulesCommand::Enable(args) => change(args, Change::Enable).await,
        RulesCommand::Disable(args) => change(args, Change::Disable).await,
        RulesCommand::Delete(args) => change(args, Change::Delete).await,
    }
}

async fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let role = args.role;
    let parameters: serde_json::Value =
        serde_json::from_str(&args.parameters).context("--parameters is not JSON")?;
    // Validate before connecting, naming every bad field.
    let spec = eligibility::RuleSpec::parse(
        &args.rule_type,
        args.chain.as_deref(),
        args.contract.as_deref(),
        &parameters,
    )
    .map_err(|e| anyhow::anyhow!("the rule is invalid: {e}"))?;
    let (store, community) = args.community.open().await?;
    let rechecks = rechecks::connect(&args.nats).await?;
    let rule = rules::create(
        &store,
        &rechecks,
        community,
        &Actor::Admin(None),
        &rules::NewRule {
            role,
            spec,
            priority: args.priority,
        },
    )
    .await?;
    println!("rule {} created; community re-check requested", rule.id);
    Ok(ExitCode::SUCCESS)
}

async fn list(community: Community) -> anyhow::Result<ExitCode> {
    let (store, community) = community.open().await?;
    let guild = community.guild;
    let rules = rules::list(&store, community).await?;
    if rules.is_empty() {
        println!("guild {guild} has no rules");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<8}  {:<15}  {:>20}  {:>8}  parameters",
        "id", "state", "type", "role", "priority"
    );
    for rule in rules {
        let mut target = String::new();
        if let Some(chain) = &rule.chain {
            target.push_str(chain);
            target.push(' ');
        }
        if let Some(contract) = &rule.contract_address {
            target.push_str(contract.as_str());
            target.push(' ');
        }
        println!(
            "{:<36}  {:<8}  {:<15}  {:>20}  {:>8}  {target}{}",
            rule.id,
            if rule.enabled { "enabled" } else { "disabled" },
            rule.rule_type.as_str(),
            rule.role_discord_id,
            rule.priority,
            rule.parameters,
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy)]
enum Change {
    Enable,
    Disable,
    Delete,
}

async fn change(args: ChangeArgs, change: Change) -> anyhow::Result<ExitCode> {
    let id: store::RuleId = args
        .id
        .parse()
        .with_context(|| format!("--id {:?} is not a rule id (a UUID)", args.id))?;
    let (store, community) = args.community.open().await?;
    let guild = community.guild;
    let rechecks = rechecks::connect(&args.nats).await?;
    let actor = Actor::Admin(None);
    let result = match change {
        Change::Enable | Change::Disable => {
            let enabled = matches!(change, Change::Enable);
            let past = if enabled { "enabled" } else { "disabled" };
            rules::set_enabled(&store, &rechecks, community, &actor, id, enabled)
                .await
                .map(|t| {
                    if t.changed {
                        format!("rule {id} {past}; community re-check requested")
                    } else {
                        format!("rule {id} is already {past}")
                    }
                })
        }
        Change::Delete => rules::delete(&store, &rechecks, community, &actor, id)
            .await
            .map(|_| format!("rule {id} deleted; community re-check requested")),
    };
    match result {
        Ok(message) => println!("{message}"),
        Err(rules::RuleError::NotFound(_)) => anyhow::bail!(
            "guild {guild} has no rule {id}; `gatehouse rules list --guild {guild}` shows its rules"
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
