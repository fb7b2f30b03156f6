//! `gatehouse bench roles`: a bulk eligibility change across many servers,
//! applied through Discord's REST within its limits.
//!
//! `--servers` servers (100; `--quick` 20) of `--members-per-server`
//! members each (100; `--quick` 10) are in the simulator before the gateway
//! connects, and every server's first member sync (GUILD_CREATE, the member
//! list requested, its chunks ingested by the worker) completes before
//! anything is measured. Then a rule every member meets is defined in every
//! server at once, so every member of every server is due a role grant:
//! 10,000 grants (`--quick` 200) that go out as fast as Discord allows.
//!
//! Measured from the first role change reaching the simulator until the
//! simulator's state shows every member holding the role: `seconds`,
//! `role_changes_per_s` against the limit that binds across the servers
//! (`limit_per_s`: per-route buckets are per server, so with many servers
//! Discord's global limit is the one that binds), their ratio
//! `rate_ratio_vs_limit` (target ≥ 0.9), and the 429s Discord answered, in
//! all and after the first second (`http_429`, target 0). The run fails if
//! any member lacks the role at the end.
//!
//! The demo's simulator keeps Discord's global 50/s and widens each
//! server's role route to 50/s; with Discord's own buckets (10 per 10 s per
//! server) 100 servers together would allow 100/s, so the global limit
//! binds either way. The worker holds itself below it on purpose (a burst
//! of 2 and 46/s sustained with the default 20 ms margin, so that no
//! one-second window can exceed 50 wherever it falls: see the worker's
//! `role_changes/global_bucket.rs`), which caps the ratio near 0.92.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use discord_sim::{RestLimits, SimControl};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;

use super::plot;
use crate::demo::scenario::{self, Community, World, WorldArgs};

#[derive(Debug, clap::Args)]
pub struct BenchRolesArgs {
    #[command(flatten)]
    pub world: WorldArgs,

    /// A short run (20 servers of 10 members: 200 grants, a few seconds of
    /// Discord's limit), as CI smoke-tests it.
    #[arg(long)]
    pub quick: bool,

    /// Servers the rule changes in [default: 100; --quick: 20].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub servers: Option<u32>,

    /// Members of each server, each due the role [default: 100; --quick: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub members_per_server: Option<u32>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw role changes per second and 429s over time as an SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// How long the servers' first syncs may take before the run fails.
const SYNC_WITHIN: Duration = Duration::from_secs(600);

/// How long the grants may stop progressing before the measurement ends
/// short (and the run fails): the worker's re-check scan reaches every
/// member well within it, so a stall this long is a fault, not pacing.
const STALL_WITHIN: Duration = Duration::from_secs(60);

/// How often the simulator's counters and state are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The window the rates over time are computed in: Discord's global limit
/// is counted per second.
const RATE_WINDOW_S: f64 = 1.0;

/// Servers per gateway shard. Each shard asks for its servers' member
/// lists within Discord's 120 gateway commands a minute per connection
/// (some kept for heartbeats), so this many all go out at once; more
/// shards shorten only the setup, never the measurement.
const SERVERS_PER_SHARD: u32 = 25;

#[derive(Debug, Serialize)]
pub struct RolesReport {
    pub machine: super::machine::Machine,
    pub servers: u32,
    pub members_per_server: u32,
    /// From starting the pipeline (the servers already full) to every
    /// server's member sync completed: setup, not the measurement.
    pub sync_seconds: f64,
    /// Grants applied: every member without the role when the rule was
    /// defined, unless the grants stalled.
    pub role_changes: u64,
    /// From the first role change reaching the simulator to the last
    /// grant applied.
    pub seconds: f64,
    pub role_changes_per_s: f64,
    /// The busiest one-second window of applied grants.
    pub peak_role_changes_per_s: f64,
    /// Role requests the simulator received, refused ones included.
    pub role_requests: u64,
    /// Discord's global limit (requests per second across all routes).
    pub global_limit_per_s: f64,
    /// The role route's bucket, per server.
    pub route_limit_per_s_per_server: f64,
    /// The limit that binds across `servers`: the lower of the global limit
    /// and the route buckets of all servers together.
    pub limit_per_s: f64,
    /// `role_changes_per_s` ÷ `limit_per_s`. Target ≥ 0.9.
    pub rate_ratio_vs_limit: f64,
    /// 429s while measured; and after its first second. Target 0.
    pub http_429: u64,
    pub http_429_after_first_window: u64,
    /// Of `http_429`, the ones Discord's global limit refused.
    pub http_429_global: u64,
    /// Members holding the role in the simulator at the end (must be
    /// `servers × members_per_server`).
    pub members_with_role: u64,
}

pub async fn run(args: BenchRolesArgs) -> anyhow::Result<ExitCode> {
    let servers = args.servers.unwrap_or(if args.quick { 20 } else { 100 });
    let members_per_server = args
        .members_per_server
        .unwrap_or(if args.quick { 10 } else { 100 });
    let plan = scenario::Plan {
        communities: servers,
        members_at_start: members_per_server,
        members: 0,
        join_rate: 1,
        shards: servers.div_ceil(SERVERS_PER_SHARD),
        recheck_period: scenario::DEMO_RECHECK_PERIOD,
        community_concurrency: None,
    };
    let (report, samples) = args
        .world
        .with_world("roles", 16, &plan, async |world, store, started| {
            measure(world, store, members_per_server, started).await
        })
        .await?;
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(path, &charts(&report, &samples))?;
    }
    let due = u64::from(servers) * u64::from(members_per_server);
    anyhow::ensure!(
        report.members_with_role == due,
        "only {} of {due} members hold the role in the simulator after the grants stopped",
        report.members_with_role
    );
    Ok(ExitCode::SUCCESS)
}

/// The simulator as sampled, `t` seconds after the first role change
/// reached it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    t: f64,
    /// Members holding the role.
    holders: u64,
    /// Role requests received.
    requests: u64,
    /// REST requests answered 429.
    refused: u64,
}

async fn measure(
    world: &World,
    store: &store::Store,
    members_per_server: u32,
    started: Instant,
) -> anyhow::Result<(RolesReport, Vec<Sample>)> {
    let communities = world
        .wait_for_communities(store, Duration::from_secs(120))
        .await?;
    let due_total = communities.len() as u64 * u64::from(members_per_server);
    wait_for_syncs(store, &communities, due_total, started).await?;
    let sync_seconds = started.elapsed().as_secs_f64();
    let tx_counts = futures::stream::iter(&communities)
        .map(|c| async move {
            let tx = store.begin(c.tenant).await?;
            let present = tx.stats().counts().await?.present;
            tx.commit().await?;
            anyhow::Ok(present)
        })
        .buffer_unordered(8)
        .try_collect::<Vec<i64>>()
        .await?;
    let present: i64 = tx_counts.iter().sum();
    anyhow::ensure!(
        u64::try_from(present).ok() == Some(due_total),
        "{present} members in the database after the syncs; the servers have {due_total}"
    );

    let control = world.sim.control();
    let holders_before = holders(control, &communities)?;
    let before = control.stats();
    // Every member meets a score of 0. Defined in every server at once, as
    // a bulk change would be: each server's re-check is queued before the
    // first grant goes out, so the dispatcher has every server to choose
    // from from the start.
    futures::stream::iter(&communities)
        .map(|c| {
            world.define_rule(
                store,
                c,
                c.holder_role,
                eligibility::RuleSpec::ScoreThreshold { min_score: 0 },
            )
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .context("defining the rule in every server")?;

    let limits = &world.sim.config().rest;
    let limit = Limit::of(limits, communities.len());
    let samples = sample_grants(control, &communities, due_total, &before, &limit).await?;
    let last = *samples
        .last()
        .context("no sample of the simulator was taken")?;
    // The measurement ends at the last grant: after a stall, not the
    // minute spent waiting for more.
    let ended = samples
        .iter()
        .find(|s| s.holders == last.holders)
        .unwrap_or(&last);
    let members_with_role = holders(control, &communities)?;
    let role_changes = last.holders.saturating_sub(holders_before);
    let seconds = ended.t;
    let role_changes_per_s = if seconds > 0.0 {
        role_changes as f64 / seconds
    } else {
        0.0
    };
    let holder_points: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.holders)).collect();
    let peak = windowed_rates(&holder_points, RATE_WINDOW_S)
        .into_iter()
        .map(|(_, r)| r)
        .fold(0.0, f64::max);
    let after_first_window = samples
        .iter()
        .find(|s| s.t >= RATE_WINDOW_S)
        .map_or(last.refused, |s| s.refused);
    let end = control.stats();
    Ok((
        RolesReport {
            machine: super::machine::Machine::here(),
            servers: u32::try_from(communities.len()).unwrap_or(u32::MAX),
            members_per_server,
            sync_seconds,
            role_changes,
            seconds,
            role_changes_per_s,
            peak_role_changes_per_s: peak,
            role_requests: last.requests,
            global_limit_per_s: limit.global,
            route_limit_per_s_per_server: limit.route_per_server,
            limit_per_s: limit.binding,
            rate_ratio_vs_limit: if limit.binding.is_finite() && limit.binding > 0.0 {
                role_changes_per_s / limit.binding
            } else {
                0.0
            },
            http_429: last.refused,
            http_429_after_first_window: last.refused - after_first_window,
            http_429_global: end.rest_global_rate_limited - before.rest_global_rate_limited,
            members_with_role,
        },
        samples,
    ))
}

/// Waits until every server's latest member sync has completed.
async fn wait_for_syncs(
    store: &store::Store,
    communities: &[Community],
    members: u64,
    started: Instant,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new(members);
    bar.set_style(
        ProgressStyle::with_template("  syncing members [{bar:30}] {pos}/{len} ({msg} servers)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut received = vec![0u64; communities.len()];
    let mut done = vec![false; communities.len()];
    let deadline = started + SYNC_WITHIN;
    loop {
        for (i, c) in communities.iter().enumerate() {
            if done[i] {
                continue;
            }
            let tx = store.begin(c.tenant).await?;
            let latest = tx.member_syncs().latest().await?;
            tx.commit().await?;
            if let Some(sync) = latest {
                received[i] = u64::try_from(sync.members_received).unwrap_or(0);
                done[i] = sync.completed_at.is_some();
            }
        }
        let synced = done.iter().filter(|d| **d).count();
        bar.set_position(received.iter().sum());
        bar.set_message(format!("{synced}/{}", communities.len()));
        if synced == communities.len() {
            bar.finish_and_clear();
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{synced} of {} servers' member lists were synced within {SYNC_WITHIN:?}",
            communities.len()
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// Samples the simulator from the first role change that reaches it
/// until every member holds the role, or no grant has been applied for
/// [`STALL_WITHIN`]. Counts are relative to `before`.
async fn sample_grants(
    control: &SimControl,
    communities: &[Community],
    due_total: u64,
    before: &discord_sim::SimStats,
    limit: &Limit,
) -> anyhow::Result<Vec<Sample>> {
    let bar = ProgressBar::new(due_total);
    bar.set_style(
        ProgressStyle::with_template("  granting roles [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The re-check reaches the first member within a scan of the worker.
    let deadline = Instant::now() + STALL_WITHIN;
    let first = loop {
        if control.stats().role_requests > before.role_requests {
            break Instant::now();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no role change reached Discord within {STALL_WITHIN:?} of the rule"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let take = || -> anyhow::Result<Sample> {
        let stats = control.stats();
        Ok(Sample {
            t: first.elapsed().as_secs_f64(),
            holders: holders(control, communities)?,
            requests: stats.role_requests - before.role_requests,
            refused: stats.rest_rate_limited - before.rest_rate_limited,
        })
    };
    let mut samples = vec![take()?];
    let mut progressed = Instant::now();
    loop {
        let last = samples[samples.len() - 1];
        if last.holders >= due_total {
            break;
        }
        // Near the end, look more often: the last grant's time is the
        // measurement's end, and a quarter second late would be 1 % of a
        // --quick run.
        let remaining = (due_total - last.holders) as f64;
        let pause = if remaining <= limit.binding * SAMPLE_EVERY.as_secs_f64() {
            Duration::from_millis(10)
        } else {
            SAMPLE_EVERY
        };
        tokio::time::sleep(pause).await;
        let now = take()?;
        if now.holders > last.holders {
            progressed = Instant::now();
        }
        bar.set_position(now.holders);
        bar.set_message(format!("{} 429s", now.refused));
        samples.push(now);
        if progressed.elapsed() >= STALL_WITHIN {
            // The report still says how far the grants got; the run fails
            // on the members left without the role.
            tracing::warn!(
                applied = now.holders,
                due = due_total,
                "no role granted for {STALL_WITHIN:?}: ending the measurement"
            );
            break;
        }
    }
    bar.finish_and_clear();
    Ok(samples)
}

/// Members of `communities` holding its gated role in the simulator.
fn holders(control: &SimControl, communities: &[Community]) -> anyhow::Result<u64> {
    let mut n = 0;
    for c in communities {
        let members = control
            .members(c.guild)
            .with_context(|| format!("reading guild {}'s members from the simulator", c.guild))?;
        n += members
            .iter()
            .filter(|m| m.roles.contains(&c.holder_role))
            .count() as u64;
    }
    Ok(n)
}

/// Discord's limits on role changes spread over `servers` servers, in
/// requests per second (infinite where the simulator sets none).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limit {
    global: f64,
    route_per_server: f64,
    binding: f64,
}

impl Limit {
    fn of(limits: &RestLimits, servers: usize) -> Limit {
        let global = if limits.global_per_second > 0 {
            f64::from(limits.global_per_second)
        } else {
            f64::INFINITY
        };
        let route_per_server = if limits.route_limit > 0 && limits.route_window_ms > 0 {
            f64::from(limits.route_limit) * 1000.0 / limits.route_window_ms as f64
        } else {
            f64::INFINITY
        };
        // A route's bucket is keyed by its major parameter, the guild: each
        // server has its own, and only the global limit is shared.
        let routes = route_per_server * servers as f64;
        Limit {
            global,
            route_per_server,
            binding: global.min(routes),
        }
    }
}

/// The rate of a growing count over trailing windows of `window` seconds:
/// for each point at least a window after the first, the count gained
/// since the latest point a whole window or more before it, divided by the
/// time between the two. Points must be in time order.
fn windowed_rates(points: &[(f64, u64)], window: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut from = 0;
    for &(t, count) in points {
        while from + 1 < points.len() && points[from + 1].0 <= t - window {
            from += 1;
        }
        let (t0, c0) = points[from];
        if t - t0 >= window {
            out.push((t, count.saturating_sub(c0) as f64 / (t - t0)));
        }
    }
    out
}

fn charts(r: &RolesReport, samples: &[Sample]) -> Vec<plot::Chart> {
    let rate = |f: fn(&Sample) -> u64| {
        let points: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, f(s))).collect();
        windowed_rates(&points, RATE_WINDOW_S)
    };
    // One panel: the 429s next to the rate that drew them, on an axis
    // from 0 so the gap to the limit reads as the ratio.
    let chart = plot::Chart::new(
        format!(
            "Role grants across {} servers: {:.1}/s of a {:.0}/s limit ({:.2}), {} 429s",
            r.servers, r.role_changes_per_s, r.limit_per_s, r.rate_ratio_vs_limit, r.http_429
        ),
        "seconds since the first role change",
        "per second (1 s windows)",
    )
    // Requests first so that grants, equal to them when none is refused,
    // are drawn on top.
    .series("role requests received", rate(|s| s.requests))
    .series("grants applied", rate(|s| s.holders))
    .series("429s", rate(|s| s.refused));
    vec![if r.limit_per_s.is_finite() {
        chart.limit(
            format!("Discord's limit ({:.0}/s)", r.limit_per_s),
            r.limit_per_s,
        )
    } else {
        chart
    }]
}

fn render(r: &RolesReport) -> String {
    format!(
        "\nroles: a rule every member meets, in {servers} servers of {per} members ({cores} cores, {mem:.1} GiB)\n\
         \x20 setup          first syncs of {members} members in {sync:.1} s\n\
         \x20 grants         {changes} in {seconds:.1} s: {cps:.1}/s of a {limit:.0}/s limit = {ratio:.2} (target ≥ 0.9); busiest second {peak:.0}\n\
         \x20 requests       {requests} role requests for {changes} grants\n\
         \x20 Discord 429s   {h429} ({late} after the first second, {global} global; target 0)\n\
         \x20 holding role   {holding} of {members} members\n",
        servers = r.servers,
        per = r.members_per_server,
        cores = r.machine.cores,
        mem = r.machine.memory_gib,
        members = u64::from(r.servers) * u64::from(r.members_per_server),
        sync = r.sync_seconds,
        changes = r.role_changes,
        seconds = r.seconds,
        cps = r.role_changes_per_s,
        limit = r.limit_per_s,
        ratio = r.rate_ratio_vs_limit,
        peak = r.peak_role_changes_per_s,
        requests = r.role_requests,
        h429 = r.http_429,
        late = r.http_429_after_first_window,
        global = r.http_429_global,
        holding = r.members_with_role,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_count_has_its_rate_in_every_full_window() {
        // 40 a second, sampled every quarter second.
        let points: Vec<(f64, u64)> = (0..=12u32)
            .map(|i| (f64::from(i) * 0.25, u64::from(i) * 10))
            .collect();
        let rates = windowed_rates(&points, 1.0);
        // The first full window ends at 1 s: 9 points from there to 3 s.
        assert_eq!(rates.len(), 9);
        assert_eq!(rates[0].0, 1.0);
        assert!(
            rates.iter().all(|(_, r)| (r - 40.0).abs() < 1e-9),
            "{rates:?}"
        );
    }

    #[test]
    fn a_burst_shows_in_the_windows_that_hold_it_only() {
        let points = [
            (0.0, 0),
            (0.5, 0),
            (1.0, 0),
            (1.5, 50),
            (2.0, 50),
            (2.5, 50),
        ];
        let rates = windowed_rates(&points, 1.0);
        let at = |t: f64| rates.iter().find(|(x, _)| *x == t).map(|(_, r)| *r);
        assert_eq!(at(1.0), Some(0.0));
        assert_eq!(at(1.5), Some(50.0));
        assert_eq!(at(2.0), Some(50.0));
        assert_eq!(at(2.5), Some(0.0));
    }

    #[test]
    fn uneven_samples_divide_by_the_time_they_span() {
        // Sampled late: the window behind 1.3 s starts at 0.2 s.
        let points = [(0.0, 0), (0.2, 10), (1.3, 65)];
        assert_eq!(
            windowed_rates(&points, 1.0),
            vec![(1.3, 55.0 / (1.3 - 0.2))]
        );
    }

    #[test]
    fn the_global_limit_binds_across_many_servers() {
        // Discord's own: 50/s globally, 10 per 10 s per server's route.
        let limits = RestLimits::default();
        assert_eq!(Limit::of(&limits, 100).binding, 50.0);
        // One server alone is held to its route's bucket.
        assert_eq!(Limit::of(&limits, 1).binding, 1.0);
        assert_eq!(Limit::of(&limits, 1).route_per_server, 1.0);
    }

    #[test]
    fn a_disabled_limit_does_not_bind() {
        let limits = RestLimits {
            global_per_second: 0,
            route_limit: 50,
            route_window_ms: 1_000,
        };
        let limit = Limit::of(&limits, 3);
        assert!(limit.global.is_infinite());
        assert_eq!(limit.binding, 150.0);
    }
}
