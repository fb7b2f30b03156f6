//! `gatehouse bench sync`: the first sync of a large server, then its role
//! reconciliation against Discord's limits.
//!
//! A server with `--members` members (100,000; `--quick` 10,000) is in the
//! simulator before the gateway connects, as when an operator adds the bot
//! to an established community. Measured through the whole pipeline: the
//! gateway asks for the member list at GUILD_CREATE, publishes Discord's
//! chunks, the worker ingests them (a transaction per 1,000 members) until
//! the sync completes: `seconds` and `members_per_s` (target: 100,000 in
//! ≤ 60 s).
//!
//! Then a rule every member meets is defined, so every member is due a
//! role grant: the reconciliation runs as fast as Discord allows, and the
//! simulator's REST counts what arrives for `--reconcile-seconds`:
//! `role_changes_per_s` against the simulator's limit measured in the same
//! run (`rate_ratio_vs_limit`, target ≥ 0.9) and the 429s Discord answered,
//! in all and after the first second (target 0).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::demo::scenario::{self, World, WorldArgs};

#[derive(Debug, clap::Args)]
pub struct BenchSyncArgs {
    #[command(flatten)]
    pub world: WorldArgs,

    /// A short run (10,000 members, 5 s of reconciliation), as CI
    /// smoke-tests it.
    #[arg(long)]
    pub quick: bool,

    /// Members of the server [default: 100000; --quick: 10000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub members: Option<u32>,

    /// How long the role reconciliation is measured, in seconds [default:
    /// 20; --quick: 5].
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub reconcile_seconds: Option<u64>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw members synced over time, and role changes per second against
    /// the limit during the reconciliation, as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// How long the sync may take before the run fails.
const SYNC_WITHIN: Duration = Duration::from_secs(600);

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub machine: super::machine::Machine,
    pub members: u32,
    /// Chunks Discord (the simulator) sent.
    pub chunks: i32,
    /// From starting the pipeline (the server already full) to the last
    /// chunk committed.
    pub seconds: f64,
    pub members_per_s: f64,
    /// Present members in the database once synced (must be `members`).
    pub members_in_database: i64,
    pub reconcile_seconds: f64,
    /// Role changes Discord accepted while measured.
    pub role_changes: u64,
    pub role_changes_per_s: f64,
    /// The simulator's Discord limit for one server's role changes: the
    /// lower of the global limit and the route's.
    pub limit_per_s: f64,
    /// `role_changes_per_s` ÷ `limit_per_s`. Target ≥ 0.9.
    pub rate_ratio_vs_limit: f64,
    /// 429s while measured; and after its first second. Target 0.
    pub http_429: u64,
    pub http_429_after_first_window: u64,
    /// Members in the database by seconds since the start, as polled.
    pub sync_progress: Vec<(f64, i64)>,
    /// Role changes Discord accepted in each second of the
    /// reconciliation.
    pub role_changes_by_second: Vec<u64>,
}

pub async fn run(args: BenchSyncArgs) -> anyhow::Result<ExitCode> {
    let members = args
        .members
        .unwrap_or(if args.quick { 10_000 } else { 100_000 });
    let reconcile =
        Duration::from_secs(
            args.reconcile_seconds
                .unwrap_or(if args.quick { 5 } else { 20 }),
        );
    let plan = scenario::Plan {
        communities: 1,
        members_at_start: members,
        members: 0,
        join_rate: 1,
        shards: 1,
        recheck_period: scenario::DEMO_RECHECK_PERIOD,
        community_concurrency: None,
    };
    let report = args
        .world
        .with_world("sync", 16, &plan, async |world, store, started| {
            measure(world, store, members, started, reconcile).await
        })
        .await?;
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        super::plot::write_svg(path, &charts(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn charts(r: &SyncReport) -> Vec<super::plot::Chart> {
    use super::plot::Chart;
    let synced: Vec<(f64, f64)> = r
        .sync_progress
        .iter()
        .map(|&(t, n)| (t, n as f64))
        .collect();
    let per_second: Vec<(f64, f64)> = r
        .role_changes_by_second
        .iter()
        .enumerate()
        .map(|(i, &n)| ((i + 1) as f64, n as f64))
        .collect();
    vec![
        Chart::new(
            format!(
                "first sync of a {}-member server: {:.1} s ({} cores)",
                r.members, r.seconds, r.machine.cores
            ),
            "seconds since the pipeline started",
            "members in the database",
        )
        .series("members synced", synced)
        .limit("the server's members", f64::from(r.members)),
        Chart::new(
            format!(
                "role reconciliation: {:.1}/s = {:.2} of the limit, {} 429s",
                r.role_changes_per_s, r.rate_ratio_vs_limit, r.http_429
            ),
            "second of the reconciliation",
            "role changes accepted per second",
        )
        .series("role changes", per_second)
        .limit(
            format!("Discord's limit {:.0}/s", r.limit_per_s),
            r.limit_per_s,
        )
        .limit("0.9 of the limit (target)", 0.9 * r.limit_per_s),
    ]
}

async fn measure(
    world: &World,
    store: &store::Store,
    members: u32,
    started: tokio::time::Instant,
    reconcile: Duration,
) -> anyhow::Result<SyncReport> {
    let bar = ProgressBar::new(u64::from(members));
    bar.set_style(
        ProgressStyle::with_template("  syncing members [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let communities = world
        .wait_for_communities(store, Duration::from_secs(60))
        .await?;
    let community = communities
        .first()
        .context("the benchmark has no community")?;
    let deadline = started + SYNC_WITHIN;
    let mut sync_progress = vec![(0.0, 0)];
    let sync = loop {
        let tx = store.begin(community.tenant).await?;
        let latest = tx.member_syncs().latest().await?;
        tx.commit().await?;
        if let Some(sync) = &latest {
            bar.set_position(u64::try_from(sync.members_received).unwrap_or(0));
            sync_progress.push((started.elapsed().as_secs_f64(), sync.members_received));
        }
        if let Some(sync) = latest.filter(|s| s.completed_at.is_some()) {
            break sync;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the member list was not synced within {SYNC_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let tx = store.begin(community.tenant).await?;
    let present = tx.stats().counts().await?.present;
    tx.commit().await?;
    anyhow::ensure!(
        present == i64::from(members),
        "{present} members in the database after the sync; the server has {members}"
    );

    // Every member meets a score of 0: each is due a grant.
    world
        .define_rule(
            store,
            community,
            community.holder_role,
            eligibility::RuleSpec::ScoreThreshold { min_score: 0 },
        )
        .await?;
    let (changes, changes_per_s, http_429, late_429, measured, role_changes_by_second) =
        measure_reconciliation(world, reconcile).await?;
    let limits = &world.sim.config().rest;
    let route_per_s = if limits.route_limit > 0 && limits.route_window_ms > 0 {
        f64::from(limits.route_limit) * 1000.0 / limits.route_window_ms as f64
    } else {
        f64::INFINITY
    };
    let global_per_s = if limits.global_per_second > 0 {
        f64::from(limits.global_per_second)
    } else {
        f64::INFINITY
    };
    let limit_per_s = route_per_s.min(global_per_s);
    Ok(SyncReport {
        machine: super::machine::Machine::here(),
        members,
        chunks: sync.chunk_count,
        seconds,
        members_per_s: f64::from(members) / seconds,
        members_in_database: present,
        reconcile_seconds: measured,
        role_changes: changes,
        role_changes_per_s: changes_per_s,
        limit_per_s,
        rate_ratio_vs_limit: if limit_per_s.is_finite() {
            changes_per_s / limit_per_s
        } else {
            0.0
        },
        http_429,
        http_429_after_first_window: late_429,
        sync_progress,
        role_changes_by_second,
    })
}

/// Samples the simulator's REST counters for `window` from the first role
/// change that reaches it. Returns (changes accepted, per second, 429s,
/// 429s after the first second, seconds measured, changes accepted in
/// each whole second).
async fn measure_reconciliation(
    world: &World,
    window: Duration,
) -> anyhow::Result<(u64, f64, u64, u64, f64, Vec<u64>)> {
    let control = world.sim.control();
    let before = control.stats();
    let bar = ProgressBar::new(window.as_secs());
    bar.set_style(
        ProgressStyle::with_template("  reconciling roles [{bar:30}] {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The rule's re-check reaches the first member within a scan.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let first = loop {
        let now = control.stats();
        if now.role_requests > before.role_requests {
            break (tokio::time::Instant::now(), now);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no role change reached Discord within 60 s of the rule"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut after_first_second = None;
    let accepted_now =
        |stats: &discord_sim::SimStats| stats.role_requests.saturating_sub(stats.rest_rate_limited);
    let mut by_second = Vec::new();
    let mut last_second = accepted_now(&first.1);
    let end = first.0 + window;
    while tokio::time::Instant::now() < end {
        // Wake on each second's boundary since the first change, so each
        // sample closes one second of the chart.
        let next = first.0 + Duration::from_secs(by_second.len() as u64 + 1);
        tokio::time::sleep_until(next.min(end)).await;
        let elapsed = first.0.elapsed();
        bar.set_position(elapsed.as_secs());
        let stats = control.stats();
        if after_first_second.is_none() && elapsed >= Duration::from_secs(1) {
            after_first_second = Some(stats.rest_rate_limited);
        }
        if tokio::time::Instant::now() >= next {
            let accepted = accepted_now(&stats);
            by_second.push(accepted - last_second);
            last_second = accepted;
        }
    }
    let last = control.stats();
    bar.finish_and_clear();
    let measured = first.0.elapsed().as_secs_f64();
    let requests = last.role_requests - first.1.role_requests;
    let refused = last.rest_rate_limited - first.1.rest_rate_limited;
    let accepted = requests.saturating_sub(refused);
    let late = last.rest_rate_limited - after_first_second.unwrap_or(first.1.rest_rate_limited);
    Ok((
        accepted,
        accepted as f64 / measured,
        last.rest_rate_limited - before.rest_rate_limited,
        late,
        measured,
        by_second,
    ))
}

fn render(r: &SyncReport) -> String {
    format!(
        "\nsync: one server of {members} members ({cores} cores, {mem:.1} GiB)\n\
         \x20 first sync     {seconds:.1} s for {chunks} chunks: {per_s:.0} members/s (target: 100,000 in ≤ 60 s)\n\
         \x20 reconciliation {changes} role changes in {rs:.1} s: {cps:.1}/s of a {limit:.0}/s limit = {ratio:.2} (target ≥ 0.9)\n\
         \x20 Discord 429s   {h429} ({late} after the first second; target 0)\n",
        members = r.members,
        cores = r.machine.cores,
        mem = r.machine.memory_gib,
        seconds = r.seconds,
        chunks = r.chunks,
        per_s = r.members_per_s,
        changes = r.role_changes,
        rs = r.reconcile_seconds,
        cps = r.role_changes_per_s,
        limit = r.limit_per_s,
        ratio = r.rate_ratio_vs_limit,
        h429 = r.http_429,
        late = r.http_429_after_first_window,
    )
}
