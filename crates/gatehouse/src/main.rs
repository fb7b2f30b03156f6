//! The `gatehouse` command line. Each verb parses and validates its
//! configuration, then hands off to the library crates; no business logic
//! lives here.

mod api_cmd;
mod badges_cmd;
mod bench;
mod cli;
mod commands_cmd;
mod community_args;
mod config;
mod dashboard_args;
mod db_args;
mod dead_letters_cmd;
#[cfg(feature = "sim")]
mod demo;
mod discord_args;
mod gateway_cmd;
mod keys_cmd;
mod logging;
mod migrate;
mod nats_args;
mod nats_config_cmd;
mod otel;
mod rechecks;
mod rules_cmd;
#[cfg(feature = "sim")]
mod sim_cmd;
mod worker_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{BenchCommand, Cli, Command};

/// mimalloc rather than glibc malloc: per-thread free lists make the
/// gateway's many small, short-lived allocations (each event is allocated on
/// a shard's thread and freed on the publisher's) markedly cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    // The process's name in exported traces: gatehouse-worker, -gateway, …
    let service = format!("gatehouse-{}", matches.subcommand_name().unwrap_or("cli"));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Gateway(args) = &cli.command {
        builder.worker_threads(usize::from(args.threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: span export, when configured, runs on it.
    let export = {
        let _entered = runtime.enter();
        match logging::init(cli.log_format, &service) {
            Ok(export) => export,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // One line: what failed and, where we know it, how to fix it.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    if let Some(export) = export {
        let _entered = runtime.enter();
        export.shutdown();
    }
    code
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Bench(BenchCommand::Db(args)) => bench::db::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench(BenchCommand::Gateway(args)) => bench::gateway::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench(BenchCommand::Pipeline(args)) => bench::pipeline::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench(BenchCommand::Fairness(args)) => bench::fairness::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench(BenchCommand::Sync(args)) => bench::sync::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench(BenchCommand::Roles(args)) => bench::roles::run(args).await,
        Command::Worker(args) => worker_cmd::run(*args).await,
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::run(args).await,
        Command::Rules(command) => rules_cmd::run(command).await,
        Command::Badges(command) => badges_cmd::run(command).await,
        Command::Keys(command) => keys_cmd::run(command).await,
        Command::Api(args) => api_cmd::run(args).await,
        Command::Commands(command) => commands_cmd::run(command).await,
        Command::DeadLetters(command) => dead_letters_cmd::run(command).await,
        Command::Gateway(args) => gateway_cmd::run(args).await,
        Command::NatsConfig(args) => nats_config_cmd::run(args),
        #[cfg(feature = "sim")]
        Command::Sim(args) => sim_cmd::run(args).await,
    }
}
