//! `gatehouse demo`: the whole system on one machine.
//!
//! Starts a Discord simulator, a fake EVM chain, a gateway (real Twilight
//! shards against the simulator) and a worker, all in this process and all
//! talking over the real services (NATS JetStream, PgBouncer, PostgreSQL).
//! Then plays a scenario: communities are provisioned from GUILD_CREATE,
//! members join over time, rules gate roles on token balances, members
//! link wallets, and roles are synced back through the simulator's REST API.
//! Ends with a summary per community, checked against the simulator.

mod scenario;
mod summary;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use bus::Namespace;
use tokio_util::sync::CancellationToken;

use crate::{db_args::DbArgs, nats_args};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// A shortened scenario (300 members), as CI runs it.
    #[arg(long)]
    pub quick: bool,

    /// Leave everything running after the summary, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,

    /// Communities (Discord guilds) in the scenario.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub communities: u32,

    /// Members joining in total [default: 2000; --quick: 300].
    #[arg(long)]
    pub members: Option<u32>,

    /// Members joining per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub join_rate: u32,

    /// Gateway shards.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub shards: u32,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let members = args.members.unwrap_or(if args.quick { 300 } else { 2000 });
    let store = args.db.connect(32).await?;
    let nats = nats_args::connect(&args.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let run_id = chrono::Utc::now().timestamp_millis();
    let namespace = Namespace::prefixed(&format!("demo{run_id}"))
        .context("building the demo's NATS namespace")?;

    let plan = scenario::Plan {
        communities: args.communities,
        members,
        join_rate: args.join_rate,
        shards: args.shards,
    };
    let world = scenario::World::start(&plan, &store, &js, &args.nats_url, &namespace).await?;
    let shutdown = CancellationToken::new();
    let result = play(&plan, &world, &store, &shutdown).await;

    if result.is_ok() && args.keep_running {
        eprintln!(
            "\nstill running (Ctrl-C to stop): simulator gateway {}  REST/control {}  gateway health http://{}/readyz",
            world.sim.gateway_url(),
            world.sim.api_url(),
            world.gateway_http
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    world.stop(&js, &namespace).await;
    let report = result?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn play(
    plan: &scenario::Plan,
    world: &scenario::World,
    store: &store::Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<summary::Report> {
    let communities = world
        .wait_for_communities(store, Duration::from_secs(60))
        .await?;
    let communities = world.define_rules_and_badges(store, &communities).await?;
    let traffic = world.play_members(plan, store, shutdown.clone());
    let progress = summary::Progress::new(u64::from(plan.members));
    let traffic = tokio::spawn(traffic);
    // Live progress while members join and wallets are linked.
    let mut settled_for = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snapshot = summary::snapshot(store, &communities, world).await?;
        progress.update(&snapshot);
        if traffic.is_finished() {
            // Every message handled, twice in a row (a check may enqueue
            // another between two looks).
            settled_for = if snapshot.settled() {
                settled_for + 1
            } else {
                0
            };
            if settled_for >= 2 {
                break;
            }
        }
    }
    progress.finish();
    let traffic_report = traffic.await.context("scenario task")??;
    // Roles converge rather than match at every instant: a periodic
    // re-check may be between its Discord call and its commit when we look.
    // Give in-flight work a bounded time to land before calling a mismatch.
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        let report = summary::report(store, &communities, world, traffic_report.clone()).await?;
        if report.consistent || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long Discord and the database may disagree once the scenario is over.
const CONVERGE_WITHIN: Duration = Duration::from_secs(15);
