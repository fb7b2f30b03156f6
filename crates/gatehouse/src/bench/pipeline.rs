//! `gatehouse bench pipeline`: member events through the whole pipeline at
//! stepped, open-loop rates.
//!
//! Members join communities at a fixed rate per step (250, 500, 1,000,
//! 2,000, 4,000 a second by default), whatever the pipeline does with them:
//! an open loop, so a slow pipeline shows as latency instead of slowing the
//! load down. Each join goes simulator → Twilight gateway → JetStream →
//! worker → PostgreSQL and, as in production, asks for the member's
//! eligibility check and badge evaluation (the communities have the demo's
//! rules and badges). Latency runs from the simulator adding the member (its
//! `joined_at`) to the worker writing the profile; a step is measured once
//! every one of its joins is in the database, so a backlog counts in full.
//!
//! The figure is the highest rate whose p99 stays under `--max-p99` (50 ms):
//! `max_rate_p99_under_50ms`. Steps stop after the first one the pipeline
//! cannot drain within a minute: higher rates would measure the backlog.
//!
//! The limit it is read against is the database's, measured in the same
//! run before the steps (the world started and idle): pgbench running the
//! smallest tenant transaction (`deploy/bench/single_statement_tx.pgbench`:
//! BEGIN, the tenant setting, one profile upsert, COMMIT) through the same
//! PgBouncer with as many clients as the worker's pool has connections, at
//! each step's rate and at full speed (three runs spread among the steps;
//! the median is the ceiling). `events_per_db_tx` is the pipeline's
//! throughput (the most joins per second any step committed) divided by
//! that ceiling in transactions per second: how many member events
//! Gatehouse applies for each transaction the database can do.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use discord_sim::NewMember;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{
    db::{
        conninfo::ConnInfo,
        pgbench::{self, Load, Pgbench},
        progress_bar, workload,
    },
    plot::{self, Chart},
};
use crate::demo::scenario::{self, Community, World, WorldArgs};

/// The database's ceiling: one upsert per tenant transaction, as pgbench
/// runs it.
const SINGLE_STATEMENT_TX: pgbench::Script = pgbench::Script {
    file: "single_statement_tx.pgbench",
    text: include_str!("../../../../deploy/bench/single_statement_tx.pgbench"),
};

/// `RECHECK_PERIOD`'s default (`gatehouse worker --help`).
const PRODUCTION_RECHECK_PERIOD: Duration = Duration::from_secs(6 * 3600);

/// The pool of the run's store, which the worker shares: pgbench runs with
/// as many clients (`--db-pool-size` changes both).
const POOL_SIZE: usize = 16;

#[derive(Debug, clap::Args)]
pub struct BenchPipelineArgs {
    #[command(flatten)]
    pub world: WorldArgs,

    /// A short run (steps of 100 and 250 joins/s, 3 s each; pgbench's runs
    /// as long, one of them at full speed instead of three), as CI
    /// smoke-tests it.
    #[arg(long)]
    pub quick: bool,

    /// Offered rates, member joins per second, one step each [default:
    /// 250,500,1000,2000,4000; --quick: 100,250].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rates: Vec<u32>,

    /// How long each step sends, in seconds [default: 10; --quick: 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub step_seconds: Option<u64>,

    /// Communities the joins are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub communities: u32,

    /// The latency a rate must keep its p99 under to count as sustained.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw p50 and p99 by offered rate beside pgbench's, and throughput
    /// against the database's ceiling, as SVG to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// The pgbench that measures the database's ceiling.
    #[arg(long, default_value = "pgbench", value_name = "PATH")]
    pub pgbench: PathBuf,

    /// Save the worker's metrics (its `/metrics` text, cumulative since
    /// the run started) in this directory before the first step, as
    /// `start.prom`, and after each, as `<rate>.prom`: the difference of
    /// two is what a step cost (handler times, queue and pool waits).
    #[arg(long, value_name = "DIR")]
    pub worker_metrics: Option<PathBuf>,
}

/// How long a step's joins may take to reach the database after the step
/// stopped sending; a step that needs longer saturated the pipeline.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// The new rules' re-checks finish within this (the communities have no
/// members yet).
const SETTLE: Duration = Duration::from_secs(2);

/// Joins sent at the first rate before the first step, not measured, for
/// the reason pgbench warms up (see `db_ceiling`): the first joins find the
/// worker's pool connections, PgBouncer's server connections and each
/// connection's plans of the tenant functions not made yet. Without it the
/// first step's p99 was 25–45 ms where the same rate ten seconds later kept
/// 7–9 ms (2026-12-05, `--rates 250,260,270`).
const WARM_UP_SECONDS: u64 = 2;

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub machine: super::machine::Machine,
    /// The build the pipeline ran in (this process): figures of a debug
    /// build are not the product's.
    pub build: &'static str,
    pub communities: u32,
    pub step_seconds: u64,
    pub max_p99_ms: f64,
    pub steps: Vec<Step>,
    /// The highest offered rate whose p99 stayed under `max_p99_ms`
    /// (0: none did). Target: 2,000 at 50 ms.
    pub max_rate_p99_under_50ms: u32,
    /// Offered rates not run because an earlier step saturated.
    pub skipped_rates: Vec<u32>,
    /// The database's ceiling, measured in this run by pgbench.
    pub db: DbCeiling,
    /// The pipeline's throughput: the most joins per second any step
    /// committed (its `committed_per_s`). When every step kept up, this is
    /// about the highest offered rate, a lower bound of the capacity.
    pub events_per_s: f64,
    /// The offered rate of the step `events_per_s` comes from.
    pub events_per_s_at_rate: Option<u32>,
    /// `events_per_s` ÷ the database's full-speed single-statement
    /// transactions per second (`db.full_speed.tps`): member events
    /// Gatehouse applies per transaction the database can do (null: pgbench
    /// committed none).
    pub events_per_db_tx: Option<f64>,
}

/// pgbench running the single-statement tenant transaction.
#[derive(Debug, Serialize)]
pub struct DbCeiling {
    pub pgbench_version: String,
    /// In `deploy/bench/`.
    pub script: &'static str,
    /// The worker's pool size.
    pub clients: u32,
    pub threads: u32,
    /// Bench communities the transactions are spread over (as many as the
    /// pipeline's).
    pub communities: u32,
    pub seconds_per_run: u64,
    /// As fast as the clients go: the ceiling. The run of median throughput
    /// among `full_speed_runs`.
    pub full_speed: DbRun,
    /// Every full-speed run, in order: before the first rate step, between
    /// them and after the last (one with `--quick`).
    pub full_speed_runs: Vec<DbRun>,
    /// At each offered rate of the pipeline's (also those it skipped),
    /// open loop: latency from each transaction's scheduled start.
    pub steps: Vec<DbStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbStep {
    pub rate_per_s: u32,
    #[serde(flatten)]
    pub run: DbRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbRun {
    /// Transactions committed, and failed.
    pub transactions: u64,
    pub failed: u64,
    /// pgbench's own, without connecting.
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl DbRun {
    fn of(run: &pgbench::Run) -> DbRun {
        let ms = |micros: u64| micros as f64 / 1000.0;
        DbRun {
            transactions: run.summary.processed,
            failed: run.summary.failed,
            tps: run.summary.tps,
            p50_ms: ms(run.latency.value_at_quantile(0.50)),
            p99_ms: ms(run.latency.value_at_quantile(0.99)),
            max_ms: ms(run.latency.max()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Step {
    /// Joins per second asked for.
    pub rate_per_s: u32,
    /// Joins the generator sent, and per second (below the rate when the
    /// generator itself could not keep up).
    pub sent: u64,
    pub sent_per_s: f64,
    /// Joins in the database when measured (all of them unless saturated).
    pub committed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// From the step's last join to its last commit (to within 0.1 s).
    pub drain_seconds: f64,
    /// Every join reached the database within the drain limit.
    pub drained: bool,
    /// Joins committed per second, from the step's first join sent to its
    /// last committed (or to the drain limit): `committed` ÷ (the sending
    /// time plus `drain_seconds`). Below capacity, about the offered rate;
    /// above it, the pipeline's capacity.
    pub committed_per_s: f64,
}

pub async fn run(args: BenchPipelineArgs) -> anyhow::Result<ExitCode> {
    let rates = if !args.rates.is_empty() {
        args.rates.clone()
    } else if args.quick {
        vec![100, 250]
    } else {
        vec![250, 500, 1000, 2000, 4000]
    };
    let step_seconds = args.step_seconds.unwrap_or(if args.quick { 3 } else { 10 });
    // Before the world starts, so a missing pgbench costs nothing.
    let clients = args.world.db.store_config(POOL_SIZE)?.pool_size;
    let url = args
        .world
        .db
        .database_url
        .as_ref()
        .context("--database-url is required")?;
    let conn = ConnInfo::parse(url.expose()).context("--database-url, for pgbench")?;
    let (mut pgbench, pgbench_version) = Pgbench::prepare(
        args.pgbench.clone(),
        conn,
        u32::try_from(clients).context("the pool size, as pgbench's clients")?,
        SINGLE_STATEMENT_TX,
        vec![("communities", args.communities.to_string())],
    )
    .await?;
    super::worker_metrics::start(args.worker_metrics.as_deref())?;
    let plan = scenario::Plan {
        communities: args.communities,
        members_at_start: 0,
        members: 0,
        join_rate: 1,
        shards: 2,
        // Production's period, not the demo's 30 s: with the demo's, every
        // member the steps add is checked again every 30 s, and by the last
        // step those re-checks outweigh the joins being measured.
        recheck_period: PRODUCTION_RECHECK_PERIOD,
        community_concurrency: None,
    };
    let report = args
        .world
        .with_world("pipe", POOL_SIZE, &plan, async |world, store, _| {
            let pgbench = (&mut pgbench, pgbench_version);
            measure(world, store, &rates, step_seconds, &args, pgbench).await
        })
        .await?;
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(path, &charts(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// pgbench at full speed, then at each rate, on bench communities of the
/// pipeline's database. Run while the world is idle, before the steps: the
/// database's figures are its own, not shared with the pipeline's
/// processes or a backlog a saturated step left.
async fn db_ceiling(
    store: &store::Store,
    pgbench: &mut Pgbench,
    pgbench_version: String,
    communities: u32,
    rates: &[u32],
    seconds: u64,
    rounds: u32,
) -> anyhow::Result<DbCeiling> {
    let bench_communities = workload::provision(store, communities)
        .await
        .map_err(|e| crate::db_args::explain(e, "provisioning pgbench's bench communities"))?;
    // No bot serves them: inactive, the worker's periodic scan leaves alone
    // the tens of thousands of profiles pgbench writes. Active, it would
    // still be checking them during the steps, and the pipeline would be
    // measured beside a backlog of checks that is pgbench's, not its own.
    for tenant in bench_communities {
        let deactivate = async {
            let tx = store.begin(tenant).await?;
            tx.communities().set_active(false).await?;
            tx.commit().await
        };
        deactivate
            .await
            .map_err(|e| crate::db_args::explain(e, "deactivating pgbench's bench communities"))?;
    }
    eprintln!(
        "  database ceiling: {pgbench_version}, {} clients, {} (single-statement tenant transactions)",
        pgbench.clients, SINGLE_STATEMENT_TX.file
    );
    let runs = schedule(rates, rounds);
    let run_ms = seconds * 1000;
    let bar = progress_bar(
        1000 + runs.len() as u64 * run_ms,
        "  {prefix:<22} [{bar:30}] {percent:>3}% {msg}",
    );
    // PgBouncer opens server connections on demand: the first transactions
    // would wait for them, and that is not the database's speed.
    bar.set_prefix("pgbench: warm-up");
    pgbench
        .run(Load::FullSpeed, 1, &bar, 0)
        .await
        .context("pgbench warming up")?;
    let mut full_speed_runs = Vec::new();
    let mut steps = Vec::with_capacity(rates.len());
    for (i, load) in runs.into_iter().enumerate() {
        let base = 1000 + i as u64 * run_ms;
        match load {
            Load::FullSpeed => {
                bar.set_prefix("pgbench: full speed");
                let run = DbRun::of(
                    &pgbench
                        .run(load, seconds, &bar, base)
                        .await
                        .context("pgbench at full speed")?,
                );
                eprintln!(
                    "  pgbench at full speed: {:.0} tx/s, p50 {:.2} ms, p99 {:.2} ms",
                    run.tps, run.p50_ms, run.p99_ms
                );
                full_speed_runs.push(run);
            }
            Load::Rate(rate) => {
                bar.set_prefix(format!("pgbench: {rate}/s"));
                let run = DbRun::of(
                    &pgbench
                        .run(load, seconds, &bar, base)
                        .await
                        .with_context(|| format!("pgbench at {rate}/s"))?,
                );
                eprintln!(
                    "  pgbench at {rate}/s offered: {:.0} tx/s, p50 {:.2} ms, p99 {:.2} ms",
                    run.tps, run.p50_ms, run.p99_ms
                );
                steps.push(DbStep {
                    rate_per_s: rate,
                    run,
                });
            }
        }
    }
    bar.finish_and_clear();
    Ok(DbCeiling {
        pgbench_version,
        script: SINGLE_STATEMENT_TX.file,
        clients: pgbench.clients,
        threads: pgbench.threads(),
        communities,
        seconds_per_run: seconds,
        full_speed: median_run(&full_speed_runs).context("no full-speed pgbench run")?,
        full_speed_runs,
        steps,
    })
}

/// pgbench's runs in order: the rate steps ascending, with `rounds`
/// full-speed runs spread from before the first to after the last, so a
/// neighbour's burst on the shared cores meets at most one of them.
fn schedule(rates: &[u32], rounds: u32) -> Vec<Load> {
    let (n, rounds) = (rates.len(), rounds.max(1) as usize);
    // Round k goes before step `at[k]` (`n`: after the last).
    let at: Vec<usize> = (0..rounds)
        .map(|k| {
            if rounds == 1 {
                0
            } else {
                (k * n + (rounds - 1) / 2) / (rounds - 1)
            }
        })
        .collect();
    let mut out = Vec::with_capacity(n + rounds);
    for i in 0..=n {
        out.extend(at.iter().filter(|&&a| a == i).map(|_| Load::FullSpeed));
        if let Some(&rate) = rates.get(i) {
            out.push(Load::Rate(rate));
        }
    }
    out
}

/// The run with the median throughput (the lower middle of an even count).
fn median_run(runs: &[DbRun]) -> Option<DbRun> {
    let mut sorted: Vec<&DbRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.tps.total_cmp(&b.tps));
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .map(|r| (*r).clone())
}

async fn measure(
    world: &World,
    store: &store::Store,
    rates: &[u32],
    step_seconds: u64,
    args: &BenchPipelineArgs,
    (pgbench, pgbench_version): (&mut Pgbench, String),
) -> anyhow::Result<PipelineReport> {
    let communities = world
        .wait_for_communities(store, Duration::from_secs(60))
        .await?;
    // Each join asks for a check and badges, as in production: with rules
    // and badges those do real work.
    let communities = world.define_rules_and_badges(store, &communities).await?;
    // Once the world is up and idle: while it starts (shards connecting,
    // communities provisioned, new rules re-checked) the database is busy
    // with that, and the ceiling would be the leftover.
    tokio::time::sleep(SETTLE).await;
    let db = db_ceiling(
        store,
        pgbench,
        pgbench_version,
        args.communities,
        rates,
        step_seconds,
        if args.quick { 1 } else { 3 },
    )
    .await?;
    let max_p99_ms = args.max_p99.as_secs_f64() * 1000.0;
    let mut steps = Vec::new();
    let mut skipped_rates = Vec::new();
    let metrics = args.worker_metrics.as_deref();
    if let Some(&first) = rates.first() {
        let warm_up = step(world, store, &communities, first, WARM_UP_SECONDS).await?;
        eprintln!(
            "  warm-up: {} joins at {first}/s, not measured",
            warm_up.sent
        );
    }
    super::worker_metrics::save(metrics, "start")?;
    for (i, &rate) in rates.iter().enumerate() {
        let step = step(world, store, &communities, rate, step_seconds).await?;
        super::worker_metrics::save(metrics, &rate.to_string())?;
        let saturated = !step.drained;
        eprintln!(
            "  {rate:>6}/s offered: {:.0}/s sent, p50 {:.1} ms, p99 {:.1} ms{}",
            step.sent_per_s,
            step.p50_ms,
            step.p99_ms,
            if saturated { " — saturated" } else { "" }
        );
        steps.push(step);
        if saturated {
            skipped_rates.extend_from_slice(&rates[i + 1..]);
            break;
        }
    }
    let (events_per_s, events_per_s_at_rate) = throughput(&steps);
    Ok(PipelineReport {
        machine: super::machine::Machine::here(),
        build: env!("GATEHOUSE_BUILD_PROFILE"),
        communities: args.communities,
        step_seconds,
        max_p99_ms,
        max_rate_p99_under_50ms: max_rate_under(&steps, max_p99_ms),
        steps,
        skipped_rates,
        events_per_s,
        events_per_s_at_rate,
        events_per_db_tx: events_per_db_tx(events_per_s, db.full_speed.tps),
        db,
    })
}

/// The most joins per second any step committed, and that step's offered
/// rate. Saturated steps count too: what they committed within the drain
/// limit is exactly the capacity this measures.
fn throughput(steps: &[Step]) -> (f64, Option<u32>) {
    steps
        .iter()
        .filter(|s| s.committed_per_s.is_finite())
        .max_by(|a, b| a.committed_per_s.total_cmp(&b.committed_per_s))
        .map_or((0.0, None), |s| (s.committed_per_s, Some(s.rate_per_s)))
}

/// Events per database transaction; `None` without a ceiling to divide by.
fn events_per_db_tx(events_per_s: f64, db_tps: f64) -> Option<f64> {
    (db_tps > 0.0 && db_tps.is_finite()).then(|| events_per_s / db_tps)
}

/// The highest offered rate that drained and kept its p99 under the limit.
fn max_rate_under(steps: &[Step], max_p99_ms: f64) -> u32 {
    steps
        .iter()
        .filter(|s| s.drained && s.p99_ms < max_p99_ms)
        .map(|s| s.rate_per_s)
        .max()
        .unwrap_or(0)
}

/// One step: `rate` joins a second for `seconds`, spread over the
/// communities, then measured once they are all in the database.
async fn step(
    world: &World,
    store: &store::Store,
    communities: &[Community],
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Step> {
    // Discord's join times have millisecond precision: so must the start.
    let since = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .context("the step's start time")?;
    let length = Duration::from_secs(seconds);
    let progress = ProgressBar::new(seconds);
    progress.set_style(
        ProgressStyle::with_template("  {msg:<14} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message(format!("{rate} joins/s"));
    let control = world.sim.control();
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    // A 1 ms tick and catching up to the schedule on each: tokio's timer
    // cannot wait 250 µs, and an open loop must not fall behind its rate
    // because one tick came late.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started.elapsed() < length {
        tick.tick().await;
        let elapsed = started.elapsed().min(length).as_secs_f64();
        progress.set_position(elapsed as u64);
        while (sent as f64) < elapsed * f64::from(rate) {
            let c = &communities[(sent % communities.len() as u64) as usize];
            control.add_member(c.guild, NewMember::default())?;
            sent += 1;
        }
    }
    let sending = started.elapsed().as_secs_f64();
    progress.finish_and_clear();

    let sent_at = tokio::time::Instant::now();
    let drain = ProgressBar::new(sent);
    drain.set_style(
        ProgressStyle::with_template("  {msg:<14} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    drain.set_message("committing");
    let (latencies, drained) = loop {
        let mut latencies = Vec::with_capacity(sent as usize);
        for c in communities {
            let tx = store.begin(c.tenant).await?;
            latencies.extend(tx.stats().join_latencies_ms_since(since).await?);
            tx.commit().await?;
        }
        drain.set_position(latencies.len() as u64);
        if latencies.len() as u64 >= sent {
            break (latencies, true);
        }
        if sent_at.elapsed() > DRAIN_WITHIN {
            break (latencies, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drain.finish_and_clear();
    // To within the polling interval.
    let drain_seconds = sent_at.elapsed().as_secs_f64();
    let committed = latencies.len() as u64;
    let mut histogram = latencies;
    histogram.sort_by(f64::total_cmp);
    Ok(Step {
        rate_per_s: rate,
        sent,
        sent_per_s: sent as f64 / sending,
        committed,
        p50_ms: percentile(&histogram, 0.50),
        p99_ms: percentile(&histogram, 0.99),
        max_ms: histogram.last().copied().unwrap_or(0.0),
        drain_seconds,
        drained,
        committed_per_s: per_second(committed, sending + drain_seconds),
    })
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The nearest-rank percentile of sorted values (0 for none).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn charts(r: &PipelineReport) -> Vec<Chart> {
    let points = |f: fn(&Step) -> f64| {
        r.steps
            .iter()
            .map(|s| (f64::from(s.rate_per_s), f(s)))
            .collect::<Vec<_>>()
    };
    let db_points = |f: fn(&DbRun) -> f64| {
        r.db.steps
            .iter()
            .map(|s| (f64::from(s.rate_per_s), f(&s.run)))
            .collect::<Vec<_>>()
    };
    vec![
        Chart::new(
            format!(
                "join → committed latency by offered rate, beside pgbench's single-statement \
                 transactions ({} cores, {} build)",
                r.machine.cores, r.build
            ),
            "member joins (pgbench: transactions) per second, offered",
            "latency (ms)",
        )
        .series("joins p99", points(|s| s.p99_ms))
        .series("joins p50", points(|s| s.p50_ms))
        .series("pgbench p99", db_points(|d| d.p99_ms))
        .series("pgbench p50", db_points(|d| d.p50_ms))
        .limit(format!("p99 limit {:.0} ms", r.max_p99_ms), r.max_p99_ms)
        .log_x()
        .log_y(),
        Chart::new(
            format!(
                "throughput by offered rate: {:.2} events per database transaction",
                r.events_per_db_tx.unwrap_or(0.0)
            ),
            "member joins (pgbench: transactions) per second, offered",
            "per second",
        )
        .series("joins sent", points(|s| s.sent_per_s))
        .series("joins committed", points(|s| s.committed_per_s))
        .series("pgbench tx", db_points(|d| d.tps))
        .series(
            "offered",
            r.db.steps
                .iter()
                .map(|s| (f64::from(s.rate_per_s), f64::from(s.rate_per_s)))
                .collect(),
        )
        .limit(
            format!("pgbench full speed {:.0} tx/s", r.db.full_speed.tps),
            r.db.full_speed.tps,
        )
        .log_x()
        .log_y(),
    ]
}

fn render(r: &PipelineReport) -> String {
    let mut out = format!(
        "\npipeline: member joins through simulator → gateway → JetStream → worker → PostgreSQL,\n\
         \x20 beside pgbench's single-statement tenant transactions ({}, {} clients) at the same rates\n\
         \x20 {} communities, {} s steps, {} cores, {:.1} GiB, {} build\n\n\
         \x20 {:>9}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}  {:>10}  |  {:>8}  {:>8}  {:>8}\n",
        r.db.script,
        r.db.clients,
        r.communities,
        r.step_seconds,
        r.machine.cores,
        r.machine.memory_gib,
        r.build,
        "offered/s",
        "sent/s",
        "commit/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "drained",
        "db tx/s",
        "db p50",
        "db p99",
    );
    let mut rates: Vec<u32> = r
        .steps
        .iter()
        .map(|s| s.rate_per_s)
        .chain(r.skipped_rates.iter().copied())
        .chain(r.db.steps.iter().map(|d| d.rate_per_s))
        .collect();
    rates.sort_unstable();
    rates.dedup();
    for rate in rates {
        let pipeline = match r.steps.iter().find(|s| s.rate_per_s == rate) {
            Some(s) => format!(
                "{:>8.0}  {:>9.0}  {:>8.1}  {:>8.1}  {:>8.1}  {:>10}",
                s.sent_per_s,
                s.committed_per_s,
                s.p50_ms,
                s.p99_ms,
                s.max_ms,
                if s.drained {
                    "yes".to_owned()
                } else {
                    format!("{} of {}", s.committed, s.sent)
                },
            ),
            None => format!("{:<61}", "(not run: an earlier step saturated)"),
        };
        let db = match r.db.steps.iter().find(|d| d.rate_per_s == rate) {
            Some(d) => format!(
                "{:>8.0}  {:>8.2}  {:>8.2}",
                d.run.tps, d.run.p50_ms, d.run.p99_ms
            ),
            None => String::new(),
        };
        out += &format!("  {rate:>9}  {pipeline}  |  {db}\n");
    }
    let f = &r.db.full_speed;
    out += &format!(
        "  {:>9}  {:<61}  |  {:>8.0}  {:>8.2}  {:>8.2}\n",
        "full", "(pgbench only: as fast as its clients go)", f.tps, f.p50_ms, f.p99_ms
    );
    out += &format!(
        "\n  max_rate_p99_under_50ms: {} joins/s (p99 under {:.0} ms; target: 2,000)\n",
        r.max_rate_p99_under_50ms, r.max_p99_ms
    );
    out += &match (r.events_per_db_tx, r.events_per_s_at_rate) {
        (Some(ratio), Some(rate)) => format!(
            "  events_per_db_tx: {ratio:.3} ({:.0} joins/s committed, in the {rate}/s step, ÷ {:.0} \
             single-statement tx/s)\n",
            r.events_per_s, f.tps
        ),
        _ => "  events_per_db_tx: not measured (no step committed, or pgbench none)\n".to_owned(),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: u32, p99: f64, drained: bool) -> Step {
        Step {
            rate_per_s: rate,
            sent: 10,
            sent_per_s: f64::from(rate),
            committed: 10,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99,
            drain_seconds: 0.0,
            drained,
            committed_per_s: f64::from(rate),
        }
    }

    #[test]
    fn the_sustained_rate_is_the_highest_under_the_limit_that_drained() {
        let steps = [
            step(250, 4.0, true),
            step(500, 12.0, true),
            step(1000, 49.0, true),
            step(2000, 900.0, true),
            step(4000, 3.0, false),
        ];
        assert_eq!(max_rate_under(&steps, 50.0), 1000);
        assert_eq!(max_rate_under(&steps, 10.0), 250);
        assert_eq!(max_rate_under(&steps, 1.0), 0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn throughput_is_the_most_any_step_committed_saturated_or_not() {
        let mut saturated = step(4000, 900.0, false);
        saturated.committed_per_s = 850.0;
        let mut kept_up = step(1000, 40.0, true);
        kept_up.committed_per_s = 980.0;
        let steps = [step(250, 4.0, true), kept_up, saturated];
        assert_eq!(throughput(&steps), (980.0, Some(1000)));
        let mut faster = step(2000, 700.0, true);
        faster.committed_per_s = 1_400.0;
        assert_eq!(
            throughput(&[step(250, 4.0, true), faster]),
            (1_400.0, Some(2000))
        );
        assert_eq!(throughput(&[]), (0.0, None));
    }

    #[test]
    fn events_per_db_tx_divides_the_throughput_by_the_ceiling() {
        assert_eq!(events_per_db_tx(850.0, 1700.0), Some(0.5));
        assert_eq!(events_per_db_tx(850.0, 0.0), None);
        assert_eq!(events_per_db_tx(0.0, 1700.0), Some(0.0));
        // From the first join to the last commit: a backlog lowers it.
        assert_eq!(per_second(2500, 10.0), 250.0);
        assert_eq!(per_second(40_000, 47.0 + 10.0).round(), 702.0);
        assert_eq!(per_second(5, 0.0), 0.0);
    }

    #[test]
    fn the_script_is_one_statement_in_a_tenant_transaction() {
        let text = SINGLE_STATEMENT_TX.text;
        let statements: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("--") && !l.starts_with('\\'))
            .collect();
        assert_eq!(statements.len(), 4, "{statements:#?}");
        assert_eq!(statements[0], "BEGIN;");
        assert!(statements[1].contains(&format!("set_config('{}', ", store::names::TENANT_SETTING)));
        assert!(statements[1].ends_with(", true);"), "transaction-local");
        // The profile upsert, through the function the store calls.
        assert!(statements[2].starts_with("SELECT * FROM save_member_profile("));
        assert_eq!(statements[3], "COMMIT;");
        // The communities `workload::provision` creates.
        assert!(text.contains(&format!(
            "\\set g {} + random(0, :communities - 1)",
            workload::BENCH_GUILD_BASE
        )));
        assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/bench")
            .join(SINGLE_STATEMENT_TX.file)
            .exists());
    }

    #[test]
    fn full_speed_rounds_spread_over_the_rate_steps() {
        use super::Load::{FullSpeed as F, Rate as R};
        assert_eq!(schedule(&[100, 250], 1), [F, R(100), R(250)]);
        assert_eq!(
            schedule(&[250, 500, 1000, 2000, 4000], 3),
            [F, R(250), R(500), R(1000), F, R(2000), R(4000), F]
        );
        assert_eq!(schedule(&[250], 2), [F, R(250), F]);
        assert_eq!(schedule(&[], 3), [F, F, F]);
        assert_eq!(schedule(&[250], 0), [F, R(250)]);
    }

    #[test]
    fn the_ceiling_is_the_run_of_median_throughput() {
        let run = |tps: f64| DbRun {
            transactions: 1,
            failed: 0,
            tps,
            p50_ms: tps / 1000.0,
            p99_ms: 1.0,
            max_ms: 1.0,
        };
        let median = median_run(&[run(1500.0), run(600.0), run(1400.0)]).unwrap();
        // Its own latency comes with it.
        assert_eq!((median.tps, median.p50_ms), (1400.0, 1.4));
        assert_eq!(median_run(&[run(900.0), run(1000.0)]).unwrap().tps, 900.0);
        assert!(median_run(&[]).is_none());
    }

    fn report(steps: Vec<Step>, skipped_rates: Vec<u32>) -> PipelineReport {
        let run = |tps: f64, p99: f64| DbRun {
            transactions: 100,
            failed: 0,
            tps,
            p50_ms: p99 / 5.0,
            p99_ms: p99,
            max_ms: p99,
        };
        let db_steps = [250, 500, 1000]
            .into_iter()
            .map(|rate| DbStep {
                rate_per_s: rate,
                run: run(f64::from(rate), 2.5),
            })
            .collect();
        let (events_per_s, events_per_s_at_rate) = throughput(&steps);
        PipelineReport {
            machine: super::super::machine::Machine::here(),
            build: "test",
            communities: 10,
            step_seconds: 10,
            max_p99_ms: 50.0,
            max_rate_p99_under_50ms: max_rate_under(&steps, 50.0),
            steps,
            skipped_rates,
            events_per_s,
            events_per_s_at_rate,
            events_per_db_tx: events_per_db_tx(events_per_s, 2000.0),
            db: DbCeiling {
                pgbench_version: "pgbench (PostgreSQL) 15".into(),
                script: SINGLE_STATEMENT_TX.file,
                clients: 16,
                threads: 2,
                communities: 10,
                seconds_per_run: 10,
                full_speed: run(2000.0, 12.0),
                full_speed_runs: vec![run(2000.0, 12.0)],
                steps: db_steps,
            },
        }
    }

    #[test]
    fn the_table_puts_pgbench_beside_each_step_even_a_skipped_one() {
        let mut saturated = step(500, 900.0, false);
        saturated.committed_per_s = 400.0;
        let r = report(vec![step(250, 30.0, true), saturated], vec![1000]);
        let text = render(&r);
        let row = |rate: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(rate))
                .unwrap_or_else(|| panic!("no row for {rate} in\n{text}"))
                .to_owned()
        };
        assert!(row("250 ").ends_with("250      0.50      2.50"), "{text}");
        assert!(row("1000 ").contains("not run"), "{text}");
        assert!(row("1000 ").ends_with("1000      0.50      2.50"), "{text}");
        assert!(row("full ").ends_with("2000      2.40     12.00"), "{text}");
        // 400 committed/s in the saturated step ÷ 2,000 tx/s.
        assert!(
            text.contains("events_per_db_tx: 0.200 (400 joins/s committed, in the 500/s step"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["events_per_db_tx"], 0.2);
        assert_eq!(json["db"]["full_speed"]["tps"], 2000.0);
        assert_eq!(json["db"]["steps"][2]["rate_per_s"], 1000);
        assert_eq!(json["db"]["steps"][2]["p99_ms"], 2.5);
        assert_eq!(json["steps"][1]["committed_per_s"], 400.0);
    }

    #[test]
    fn the_charts_draw_pgbench_beside_the_joins() {
        let r = report(vec![step(250, 30.0, true), step(500, 45.0, true)], vec![]);
        let charts = charts(&r);
        let names: Vec<&str> = charts
            .iter()
            .flat_map(|c| c.series.iter().map(|s| s.name.as_str()))
            .collect();
        for name in [
            "joins p99",
            "pgbench p99",
            "pgbench p50",
            "joins committed",
            "pgbench tx",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(charts[1].limits[0].name.contains("2000 tx/s"));
    }
}
