//! `gatehouse rules …`: an operator's view of a community's eligibility
//! rules. Every change is validated before it is committed (each bad field
//! named; a custom rule may only refer to rules of the same community, and a
//! rule another one uses cannot be deleted), audited with actor `admin`, and
//! followed by a community-wide re-check so members' roles follow the rules.

use std::{collections::BTreeSet, process::ExitCode, time::Duration};

use anyhow::Context;
use store::{
    repo::{EligibilityRule, NewRule, RuleType},
    Snowflake, TenantTx, WalletAddress,
};
use uuid::Uuid;
use wire::check::{CheckPriority, EligibilityCheck};

use crate::{
    community_args::{admin_entry, Community},
    nats_args::NatsArgs,
};

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
    pub role: String,

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
    let role: Snowflake = args.role.parse().context("--role")?;
    let parameters: serde_json::Value =
        serde_json::from_str(&args.parameters).context("--parameters is not JSON")?;
    // Validate before anything is written, naming every bad field.
    let spec = eligibility::RuleSpec::parse(
        &args.rule_type,
        args.chain.as_deref(),
        args.contract.as_deref(),
        &parameters,
    )
    .map_err(|e| anyhow::anyhow!("the rule is invalid: {e}"))?;
    let columns = spec.to_columns();
    let rule_type: RuleType = columns.rule_type.parse().context("rule type")?;
    let contract = columns
        .contract_address
        .as_deref()
        .map(WalletAddress::parse)
        .transpose()
        .context("--contract")?;

    let (_store, tx, guild) = args.community.open().await?;
    let rule = tx
        .rules()
        .create(&NewRule {
            chain: columns.chain.clone(),
            contract_address: contract,
            rule_type,
            parameters: columns.parameters.clone(),
            role_discord_id: role,
            tier_mapping: None,
            priority: args.priority,
            enabled: true,
        })
        .await
        .context("storing the rule")?;
    // A custom rule's references can only be checked against the
    // community's rules, inside the transaction that adds it.
    let all = tx.rules().list_all().await?;
    if let Some(problem) = worker::sync::rule_set(&all)
        .problems()
        .into_iter()
        .find(|p| p.rule == rule.id)
    {
        anyhow::bail!(
            "the rule is invalid: parameters.rules {}; nothing was stored",
            problem.reason
        );
    }
    audit(
        &tx,
        "rule.created",
        &rule,
        serde_json::json!({ "rule_type": columns.rule_type }),
    )
    .await?;
    tx.commit().await?;
    request_recheck(&args.nats, guild, &format!("rule:{}:created", rule.id)).await?;
    println!("rule {} created; community re-check requested", rule.id);
    Ok(ExitCode::SUCCESS)
}

async fn list(community: Community) -> anyhow::Result<ExitCode> {
    let (_store, tx, guild) = community.open().await?;
    let rules = tx.rules().list_all().await?;
    tx.commit().await?;
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

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Enable => "rule.enabled",
            Change::Disable => "rule.disabled",
            Change::Delete => "rule.deleted",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Change::Enable => "enabled",
            Change::Disable => "disabled",
            Change::Delete => "deleted",
        }
    }
}

async fn change(args: ChangeArgs, change: Change) -> anyhow::Result<ExitCode> {
    let id: Uuid = args
        .id
        .parse()
        .with_context(|| format!("--id {:?} is not a rule id (a UUID)", args.id))?;
    let (_store, tx, guild) = args.community.open().await?;
    let all = tx.rules().list_all().await?;
    let Some(rule) = all.iter().find(|r| r.id == id).cloned() else {
        anyhow::bail!("guild {guild} has no rule {id}; `gatehouse rules list --guild {guild}` shows its rules");
    };
    match change {
        Change::Enable | Change::Disable => {
            let enabled = matches!(change, Change::Enable);
            if rule.enabled == enabled {
                tx.commit().await?;
                println!("rule {id} is already {}", change.past());
                return Ok(ExitCode::SUCCESS);
            }
            tx.rules()
                .set_enabled(id, enabled)
                .await?
                .with_context(|| format!("rule {id} disappeared meanwhile"))?;
        }
        Change::Delete => {
            let users = users_of(&all, id);
            if !users.is_empty() {
                let users: Vec<String> = users.iter().map(Uuid::to_string).collect();
                anyhow::bail!(
                    "rule {id} is used by custom rule {}: change or delete that first; nothing was deleted",
                    users.join(", ")
                );
            }
            tx.rules().delete(id).await?;
        }
    }
    audit(
        &tx,
        change.action(),
        &rule,
        serde_json::json!({ "rule_type": rule.rule_type.as_str() }),
    )
    .await?;
    tx.commit().await?;
    let check_id = format!("rule:{id}:{}:{}", change.past(), uuid::Uuid::new_v4());
    request_recheck(&args.nats, guild, &check_id).await?;
    println!("rule {id} {}; community re-check requested", change.past());
    Ok(ExitCode::SUCCESS)
}

/// The custom rules that would lose a reference if `id` went away.
fn users_of(all: &[EligibilityRule], id: Uuid) -> BTreeSet<Uuid> {
    let broken = |rules: &[EligibilityRule]| -> BTreeSet<Uuid> {
        worker::sync::rule_set(rules)
            .problems()
            .into_iter()
            .map(|p| p.rule)
            .collect()
    };
    let before = broken(all);
    let without: Vec<EligibilityRule> = all.iter().filter(|r| r.id != id).cloned().collect();
    broken(&without).difference(&before).copied().collect()
}

async fn audit(
    tx: &TenantTx,
    action: &str,
    rule: &EligibilityRule,
    mut metadata: serde_json::Value,
) -> anyhow::Result<()> {
    metadata["role_id"] = rule.role_discord_id.to_string().into();
    tx.audit()
        .append(
            &admin_entry(action)
                .target("eligibility_rule", rule.id.to_string())
                .metadata(metadata),
        )
        .await?;
    Ok(())
}

/// The rules changed who qualifies: ask the workers for a community-wide
/// re-check.
async fn request_recheck(nats: &NatsArgs, guild: Snowflake, id: &str) -> anyhow::Result<()> {
    let namespace = nats.namespace()?;
    let js = async_nats::jetstream::new(nats.connect().await?);
    let check = EligibilityCheck {
        id: id.to_owned(),
        guild_id: wire::Snowflake(guild.get()),
        user_id: None,
        reason: "rule.changed".into(),
        priority: CheckPriority::Bulk,
        requested_at: chrono::Utc::now().timestamp_millis(),
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        bus::publish_check(&js, &namespace, &check),
    )
    .await
    .context("no acknowledgement from JetStream for the re-check (is a worker's ELIGIBILITY stream there?)")?
    .context("requesting the community re-check")?;
    Ok(())
}
