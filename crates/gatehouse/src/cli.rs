use clap::{Parser, Subcommand};

use crate::gateway_cmd::GatewayArgs;
use crate::{
    bench::db::BenchDbArgs, logging::LogFormat, migrate::MigrateArgs, worker_cmd::WorkerArgs,
};
#[cfg(feature = "sim")]
use crate::{demo::DemoArgs, sim_cmd::SimArgs};

/// Gatehouse: token-gated Discord communities on Twilight, NATS JetStream and
/// PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, propagate_version = true)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log pipelines, `auto` picks
    /// text on a terminal and JSON otherwise.
    #[arg(long, env = "LOG_FORMAT", default_value = "auto", global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (connects directly, as the owner role).
    Migrate(MigrateArgs),
    /// Consume events from JetStream and apply them to tenant data.
    // Boxed: the worker has by far the most settings, and every other
    // variant would otherwise be as large.
    Worker(Box<WorkerArgs>),
    #[cfg(feature = "sim")]
    /// Run everything on this machine: simulator → gateway → NATS → worker
    /// → PostgreSQL and back, with live progress and a summary.
    Demo(DemoArgs),
    /// Manage a community's eligibility rules.
    #[command(subcommand)]
    Rules(crate::rules_cmd::RulesCommand),
    /// Define, list and grant a community's badges.
    #[command(subcommand)]
    Badges(crate::badges_cmd::BadgesCommand),
    /// Create, list and revoke a community's admin API keys.
    #[command(subcommand)]
    Keys(crate::keys_cmd::KeysCommand),
    /// Serve the admin REST API (`/v1`, per-community keys, OpenAPI).
    Api(crate::api_cmd::ApiArgs),
    /// Register the slash commands the workers answer with Discord.
    #[command(subcommand)]
    Commands(crate::commands_cmd::CommandsCommand),
    /// List, show, replay or drop the messages workers gave up on (the
    /// DEAD_LETTER stream), as the NATS admin user.
    #[command(subcommand)]
    DeadLetters(crate::dead_letters_cmd::DeadLettersCommand),
    /// Run Discord gateway shards and publish their events to JetStream.
    Gateway(GatewayArgs),
    /// Print the NATS server's users and permissions: one user per process
    /// (gateway, worker, api, admin), each allowed only what it does.
    NatsConfig(crate::nats_config_cmd::NatsConfigArgs),
    #[cfg(feature = "sim")]
    /// Run the bundled Discord simulator (gateway + REST) until Ctrl-C.
    Sim(SimArgs),
    /// Measure performance; prints a report and exits non-zero when a
    /// threshold fails.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load-test tenant transactions against the database (through PgBouncer).
    Db(BenchDbArgs),
    #[cfg(feature = "sim")]
    /// One gateway process holding many simulated guilds: RSS and events/s
    /// into JetStream.
    Gateway(crate::bench::gateway::BenchGatewayArgs),
    #[cfg(feature = "sim")]
    /// Member joins through the whole pipeline at stepped open-loop rates:
    /// latency from the simulator adding a member to the worker committing
    /// the profile, `max_rate_p99_under_50ms` (needs a fresh database).
    Pipeline(crate::bench::pipeline::BenchPipelineArgs),
    #[cfg(feature = "sim")]
    /// Quiet communities' latency alone and next to one community flooding
    /// slash commands and member updates: `quiet_p99_ratio`, `http_429`.
    Fairness(crate::bench::fairness::BenchFairnessArgs),
    #[cfg(feature = "sim")]
    /// First sync of one large server (100,000 members) through the whole
    /// pipeline, then its role reconciliation against Discord's limits:
    /// `seconds`, `members_per_s`, `rate_ratio_vs_limit`, `http_429`.
    Sync(crate::bench::sync::BenchSyncArgs),
    #[cfg(feature = "sim")]
    /// A rule every member meets defined in 100 servers at once: 10,000
    /// role grants through Discord's limits, `rate_ratio_vs_limit`,
    /// `http_429`, `seconds`.
    Roles(crate::bench::roles::BenchRolesArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_in_the_environment_are_not_shown_in_help() {
        // clap prints `[env: NAME=value]` unless told not to; for URLs with
        // passwords that would put a secret on the terminal.
        let mut cmd = Cli::command();
        let migrate = cmd.find_subcommand_mut("migrate").unwrap();
        let arg = migrate
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .unwrap();
        assert!(arg.is_hide_env_values_set());
        let bench = cmd.find_subcommand_mut("bench").unwrap();
        let db = bench.find_subcommand_mut("db").unwrap();
        let arg = db
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .unwrap();
        assert!(arg.is_hide_env_values_set());
    }
}
