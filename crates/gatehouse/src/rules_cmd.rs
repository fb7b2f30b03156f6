//! `gatehouse rules add`: write an eligibility rule for a community,
//! validated first, then ask the workers to re-check the whole community.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use store::{
    repo::{AuditEntry, NewRule, RuleType},
    Snowflake, WalletAddress,
};
use wire::check::{CheckPriority, EligibilityCheck};

use crate::{db_args::DbArgs, nats_args::NatsArgs};

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Add a rule that grants a Discord role, e.g.
    /// `gatehouse rules add --guild 123 --role 456 --type token_balance --chain ethereum
    /// --contract 0x… --parameters '{"min_balance":"1000"}'`.
    Add(AddArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Where the community re-check is requested.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// The community's Discord guild id.
    #[arg(long)]
    pub guild: String,

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

pub async fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Add(args) => add(args).await,
    }
}

async fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let guild: Snowflake = args.guild.parse().context("--guild")?;
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

    let store = args.db.connect(2).await?;
    let tenant = store
        .directory()
        .resolve_guild(guild)
        .await
        .map_err(|e| crate::db_args::explain(e, "DATABASE_URL"))?
        .with_context(|| format!("no community for guild {guild}: has the bot joined it?"))?;
    let tx = store.begin(tenant).await?;
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
    tx.audit()
        .append(
            &AuditEntry {
                actor_type: store::repo::ActorType::Admin,
                ..AuditEntry::system("rule.created")
            }
            .target("eligibility_rule", rule.id.to_string())
            .metadata(
                serde_json::json!({ "role_id": role.to_string(), "rule_type": columns.rule_type }),
            ),
        )
        .await?;
    tx.commit().await?;

    // The rule changed who qualifies: ask for a community-wide re-check.
    let namespace = args.nats.namespace()?;
    let js = async_nats::jetstream::new(args.nats.connect().await?);
    let check = EligibilityCheck {
        id: format!("rule:{}", rule.id),
        guild_id: wire::Snowflake(guild.get()),
        user_id: None,
        reason: "rule.changed".into(),
        priority: CheckPriority::Bulk,
        requested_at: chrono::Utc::now().timestamp_millis(),
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        worker::publish_check(&js, &namespace, &check),
    )
    .await
    .context("no acknowledgement from JetStream for the re-check (is a worker's ELIGIBILITY stream there?)")?
    .context("requesting the community re-check")?;
    println!("rule {} created; community re-check requested", rule.id);
    Ok(ExitCode::SUCCESS)
}
