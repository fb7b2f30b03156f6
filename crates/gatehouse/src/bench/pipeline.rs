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

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use discord_sim::NewMember;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::plot::{self, Chart};
use crate::demo::scenario::{self, Community, World, WorldArgs};

#[derive(Debug, clap::Args)]
pub struct BenchPipelineArgs {
    #[command(flatten)]
    pub world: WorldArgs,

    /// A short run (steps of 100 and 250 joins/s, 3 s each), as CI
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

    /// Draw p50 and p99 by offered rate, with the limit, as SVG to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// How long a step's joins may take to reach the database after the step
/// stopped sending; a step that needs longer saturated the pipeline.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

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
    let plan = scenario::Plan {
        communities: args.communities,
        members_at_start: 0,
        members: 0,
        join_rate: 1,
        shards: 2,
    };
    let report = args
        .world
        .with_world("pipe", 16, &plan, async |world, store, _| {
            measure(world, store, &rates, step_seconds, &args).await
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

async fn measure(
    world: &World,
    store: &store::Store,
    rates: &[u32],
    step_seconds: u64,
    args: &BenchPipelineArgs,
) -> anyhow::Result<PipelineReport> {
    let communities = world
        .wait_for_communities(store, Duration::from_secs(60))
        .await?;
    // Each join asks for a check and badges, as in production: with rules
    // and badges those do real work.
    let communities = world.define_rules_and_badges(store, &communities).await?;
    let max_p99_ms = args.max_p99.as_secs_f64() * 1000.0;
    let mut steps = Vec::new();
    let mut skipped_rates = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        let step = step(world, store, &communities, rate, step_seconds).await?;
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
    Ok(PipelineReport {
        machine: super::machine::Machine::here(),
        build: env!("GATEHOUSE_BUILD_PROFILE"),
        communities: args.communities,
        step_seconds,
        max_p99_ms,
        max_rate_p99_under_50ms: max_rate_under(&steps, max_p99_ms),
        steps,
        skipped_rates,
    })
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
    let mut histogram = latencies;
    histogram.sort_by(f64::total_cmp);
    Ok(Step {
        rate_per_s: rate,
        sent,
        sent_per_s: sent as f64 / sending,
        committed: histogram.len() as u64,
        p50_ms: percentile(&histogram, 0.50),
        p99_ms: percentile(&histogram, 0.99),
        max_ms: histogram.last().copied().unwrap_or(0.0),
        drain_seconds,
        drained,
    })
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
    vec![
        Chart::new(
            format!(
                "join → committed latency by offered rate ({} cores, {} build)",
                r.machine.cores, r.build
            ),
            "member joins per second (offered)",
            "latency (ms)",
        )
        .series("p99", points(|s| s.p99_ms))
        .series("p50", points(|s| s.p50_ms))
        .limit(format!("p99 limit {:.0} ms", r.max_p99_ms), r.max_p99_ms)
        .log_x()
        .log_y(),
        Chart::new(
            "joins sent per second by offered rate",
            "member joins per second (offered)",
            "joins per second (sent)",
        )
        .series("sent", points(|s| s.sent_per_s))
        .series("offered", points(|s| f64::from(s.rate_per_s)))
        .log_x()
        .log_y(),
    ]
}

fn render(r: &PipelineReport) -> String {
    let mut out = format!(
        "\npipeline: member joins through simulator → gateway → JetStream → worker → PostgreSQL\n\
         \x20 {} communities, {} s steps, {} cores, {:.1} GiB, {} build\n\n\
         \x20 {:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}\n",
        r.communities,
        r.step_seconds,
        r.machine.cores,
        r.machine.memory_gib,
        r.build,
        "offered/s",
        "sent/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "drained",
    );
    for s in &r.steps {
        out += &format!(
            "  {:>8}  {:>9.0}  {:>9.1}  {:>9.1}  {:>9.1}  {:>9}\n",
            s.rate_per_s,
            s.sent_per_s,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            if s.drained {
                "yes".to_owned()
            } else {
                format!("{} of {}", s.committed, s.sent)
            },
        );
    }
    for rate in &r.skipped_rates {
        out += &format!("  {rate:>8}  (not run: an earlier step saturated)\n");
    }
    out += &format!(
        "\n  max_rate_p99_under_50ms: {} joins/s (p99 under {:.0} ms; target: 2,000)\n",
        r.max_rate_p99_under_50ms, r.max_p99_ms
    );
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
}
