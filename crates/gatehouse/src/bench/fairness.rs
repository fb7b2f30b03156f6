//! `gatehouse bench fairness`: does one community's flood slow the others?
//!
//! Quiet communities (50 by default) get normal traffic — members joining
//! and members running `/profile` — first alone, then next to one community
//! that floods slash commands (`/check` and `/profile`) and member updates
//! as fast as the simulator can send them. Both phases run through the whole
//! pipeline (simulator → Twilight gateway → JetStream → worker → PostgreSQL
//! → Discord REST). The figure is the quiet communities' p99 latency with
//! the flood ÷ without it (`quiet_p99_ratio`), measured in the same run, and
//! the 429s the simulator's Discord answered (`http_429`).
//!
//! Everything shares this machine's cores, the flood generator included, so
//! the ratio also holds what the flood costs in CPU; the report says how
//! much flood was sent and handled, so a ratio can be read against it.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use discord_sim::{MemberPatch, NewInteraction, NewMember};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use wire::{GuildId, InteractionId, UserId};

use crate::demo::scenario::{self, Community, World, WorldArgs};

#[derive(Debug, clap::Args)]
pub struct BenchFairnessArgs {
    #[command(flatten)]
    pub world: WorldArgs,

    /// A short run (10 quiet communities, 4 s phases), as CI smoke-tests it.
    #[arg(long)]
    pub quick: bool,

    /// Quiet communities [default: 50; --quick: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub quiet: Option<u32>,

    /// How long each phase sends traffic, in seconds [default: 20; --quick: 4].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: Option<u64>,

    /// Members joining per second in each quiet community.
    #[arg(long, default_value_t = 1.0)]
    pub quiet_joins_per_s: f64,

    /// Slash commands per second in each quiet community.
    #[arg(long, default_value_t = 1.0)]
    pub quiet_commands_per_s: f64,

    /// Flood rate (slash commands per second, and as many member updates);
    /// 0: as fast as the simulator takes them. A paced flood that leaves
    /// the machine's cores some room shows the queues' fairness apart from
    /// the flood's cost in CPU.
    #[arg(long, default_value_t = 0)]
    pub flood_per_s: u32,

    /// Rounds of both phases, one after the other in the same run: the
    /// ratio reported is their median. A 20 s phase's p99 turns on a handful
    /// of hiccups on a shared machine, so one round says little.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,

    /// The worker's `WORKER_COMMUNITY_CONCURRENCY` [default: the worker's
    /// own]: how much of its handler slots one community may hold.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=32), |n| n as usize)
    )]
    pub worker_community_concurrency: Option<usize>,

    /// Save the worker's metrics (its `/metrics` text, cumulative since
    /// the run started) in this directory once each phase has settled, as
    /// `<round>-alone.prom` and `<round>-flood.prom`: the difference of two
    /// is what a phase cost (handler times, queue and pool waits).
    #[arg(long, value_name = "DIR")]
    pub worker_metrics: Option<PathBuf>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw each round's ratios against the target of 2, and the median
    /// round's quiet latencies alone and with the flood, as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Members each quiet community starts with (who run its commands).
const QUIET_MEMBERS: u64 = 10;
/// Members of the flooding community (who run its flood of commands).
const FLOOD_MEMBERS: u64 = 200;
/// How long the pipeline may take to finish a phase's work.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize)]
pub struct FairnessReport {
    pub machine: super::machine::Machine,
    pub quiet_communities: u32,
    pub phase_seconds: u64,
    /// The flood's pace asked for (0: as fast as possible).
    pub flood_per_s_asked: u32,
    /// Messages of one community the worker handled at once per stream
    /// (`WORKER_COMMUNITY_CONCURRENCY`).
    pub worker_community_concurrency: usize,
    /// The phases of the median round (see `rounds`).
    pub alone: Phase,
    pub flooded: Phase,
    /// Quiet p99 with the flood ÷ without it: the worse of joins and
    /// commands, the median over the rounds. Target ≤ 2.
    pub quiet_p99_ratio: f64,
    pub quiet_join_p99_ratio: f64,
    pub quiet_command_p99_ratio: f64,
    /// Responses 429 from the simulator's Discord REST over the run.
    /// Target 0.
    pub http_429: u64,
    /// Each round's ratios, in the order run.
    pub rounds: Vec<RoundRatios>,
}

/// One round's quiet p99 with ÷ without the flood.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RoundRatios {
    pub quiet_p99_ratio: f64,
    pub quiet_join_p99_ratio: f64,
    pub quiet_command_p99_ratio: f64,
}

/// What one phase sent and how the quiet communities fared.
#[derive(Debug, Default, Serialize)]
pub struct Phase {
    pub quiet_joins: u64,
    pub quiet_commands: u64,
    /// Simulator added the member → worker committed the profile.
    pub quiet_join_p50_ms: f64,
    pub quiet_join_p99_ms: f64,
    /// Interaction created → the bot's first answer reached Discord.
    pub quiet_command_p50_ms: f64,
    pub quiet_command_p99_ms: f64,
    /// Quiet commands never answered (dropped as too old, or lost).
    pub quiet_commands_unanswered: u64,
    pub flood_commands_sent: u64,
    pub flood_member_updates_sent: u64,
    pub flood_commands_per_s: f64,
    pub flood_member_updates_per_s: f64,
    pub flood_commands_answered: u64,
}

pub async fn run(args: BenchFairnessArgs) -> anyhow::Result<ExitCode> {
    let quiet = args.quiet.unwrap_or(if args.quick { 10 } else { 50 });
    let seconds = args.seconds.unwrap_or(if args.quick { 4 } else { 20 });
    anyhow::ensure!(
        args.quiet_joins_per_s > 0.0 && args.quiet_commands_per_s > 0.0,
        "--quiet-joins-per-s and --quiet-commands-per-s must be more than 0"
    );
    super::worker_metrics::start(args.worker_metrics.as_deref())?;
    let plan = scenario::Plan {
        members_at_start: 0,
        communities: quiet + 1,
        members: 0,
        join_rate: 1,
        shards: 2,
        recheck_period: scenario::DEMO_RECHECK_PERIOD,
        community_concurrency: args.worker_community_concurrency,
    };
    let report = args
        .world
        .with_world("fair", 32, &plan, async |world, store, _| {
            measure(world, store, quiet, seconds, &args).await
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

fn charts(r: &FairnessReport) -> Vec<super::plot::Chart> {
    use super::plot::Chart;
    let by_round = |f: fn(&RoundRatios) -> f64| {
        r.rounds
            .iter()
            .enumerate()
            .map(|(i, round)| ((i + 1) as f64, f(round)))
            .collect::<Vec<_>>()
    };
    let phases = |f: fn(&Phase) -> f64| vec![(1.0, f(&r.alone)), (2.0, f(&r.flooded))];
    vec![
        Chart::new(
            format!(
                "quiet p99 with ÷ without the flood, by round ({} quiet communities, {} cores)",
                r.quiet_communities, r.machine.cores
            ),
            "round",
            "quiet_p99_ratio",
        )
        .series("worse of the two", by_round(|x| x.quiet_p99_ratio))
        .series("joins", by_round(|x| x.quiet_join_p99_ratio))
        .series("commands", by_round(|x| x.quiet_command_p99_ratio))
        .limit("target 2", 2.0)
        .log_y(),
        Chart::new(
            "quiet latencies of the median round: 1 = alone, 2 = with the flood",
            "phase",
            "latency (ms)",
        )
        .series("join p99", phases(|p| p.quiet_join_p99_ms))
        .series("join p50", phases(|p| p.quiet_join_p50_ms))
        .series("command p99", phases(|p| p.quiet_command_p99_ms))
        .series("command p50", phases(|p| p.quiet_command_p50_ms))
        .log_y(),
    ]
}

async fn measure(
    world: &World,
    store: &store::Store,
    quiet: u32,
    seconds: u64,
    args: &BenchFairnessArgs,
) -> anyhow::Result<FairnessReport> {
    let communities = world
        .wait_for_communities(store, Duration::from_secs(60))
        .await?;
    // Rules make `/check` read the chain and change roles, as it would.
    let communities = world.define_rules_and_badges(store, &communities).await?;
    let (flood, quiet_ones) = communities
        .split_last()
        .context("the benchmark has no communities")?;
    let control = world.sim.control();
    let quiet_members = populate(world, quiet_ones, QUIET_MEMBERS)?;
    let flood_members = populate(world, std::slice::from_ref(flood), FLOOD_MEMBERS)?;
    let expected = QUIET_MEMBERS * quiet_ones.len() as u64 + FLOOD_MEMBERS;
    settle(world, store, &communities, expected).await?;
    let rejected_before = control.stats().rest_rate_limited;

    let quiet_traffic = QuietTraffic {
        communities: quiet_ones.to_vec(),
        members: quiet_members,
        joins_per_s: args.quiet_joins_per_s * f64::from(quiet),
        commands_per_s: args.quiet_commands_per_s * f64::from(quiet),
    };
    let length = Duration::from_secs(seconds);
    let flood_traffic = FloodTraffic {
        guild: flood.guild,
        members: flood_members.into_iter().map(|(_, user)| user).collect(),
        per_s: args.flood_per_s,
    };
    let repeat = args.repeat.max(1);
    let mut rounds = Vec::new();
    for round in 1..=repeat {
        let label = |phase: &str| {
            if repeat > 1 {
                format!("{phase} {round}/{repeat}")
            } else {
                phase.to_owned()
            }
        };
        let alone = phase(world, store, &quiet_traffic, None, length, &label("alone")).await?;
        super::worker_metrics::save(args.worker_metrics.as_deref(), &format!("{round}-alone"))?;
        let flooded = phase(
            world,
            store,
            &quiet_traffic,
            Some(&flood_traffic),
            length,
            &label("with the flood"),
        )
        .await?;
        super::worker_metrics::save(args.worker_metrics.as_deref(), &format!("{round}-flood"))?;
        let ratio = |with: f64, without: f64| if without > 0.0 { with / without } else { 0.0 };
        let join = ratio(flooded.quiet_join_p99_ms, alone.quiet_join_p99_ms);
        let command = ratio(flooded.quiet_command_p99_ms, alone.quiet_command_p99_ms);
        let ratios = RoundRatios {
            quiet_p99_ratio: join.max(command),
            quiet_join_p99_ratio: join,
            quiet_command_p99_ratio: command,
        };
        rounds.push((ratios, alone, flooded));
    }
    let http_429 = control.stats().rest_rate_limited - rejected_before;
    let ratios: Vec<RoundRatios> = rounds.iter().map(|(r, _, _)| *r).collect();
    // The median round (the lower middle one of an even count).
    rounds.sort_by(|a, b| a.0.quiet_p99_ratio.total_cmp(&b.0.quiet_p99_ratio));
    let (median, alone, flooded) = rounds.swap_remove((rounds.len() - 1) / 2);
    Ok(FairnessReport {
        machine: super::machine::Machine::here(),
        quiet_communities: quiet,
        phase_seconds: seconds,
        flood_per_s_asked: args.flood_per_s,
        worker_community_concurrency: worker::WorkerConfig {
            community_concurrency: args.worker_community_concurrency,
            ..worker::WorkerConfig::default()
        }
        .community_share(),
        alone,
        flooded,
        quiet_p99_ratio: median.quiet_p99_ratio,
        quiet_join_p99_ratio: median.quiet_join_p99_ratio,
        quiet_command_p99_ratio: median.quiet_command_p99_ratio,
        http_429,
        rounds: ratios,
    })
}

/// Adds `count` members to each community; returns (guild, user) pairs.
fn populate(
    world: &World,
    communities: &[Community],
    count: u64,
) -> anyhow::Result<Vec<(GuildId, UserId)>> {
    let control = world.sim.control();
    let mut out = Vec::new();
    for c in communities {
        for _ in 0..count {
            let user = control.add_member(c.guild, NewMember::default())?;
            out.push((c.guild, user));
        }
    }
    Ok(out)
}

/// Waits until the database holds `members` present members over
/// `communities` and the streams are drained.
async fn settle(
    world: &World,
    store: &store::Store,
    communities: &[Community],
    members: u64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        let mut present = 0;
        for c in communities {
            let tx = store.begin(c.tenant).await?;
            present += tx.stats().counts().await?.present;
            tx.commit().await?;
        }
        // The setup's own work (its members' joins, and the checks that
        // the new rules and joins asked for) is done before measuring.
        let pending = world.pending(&wire::subjects::EVENTS).await
            + world.pending(&wire::subjects::COMMANDS).await
            + world.pending(&wire::subjects::ELIGIBILITY).await;
        if present as u64 >= members && pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the pipeline did not settle within {SETTLE_WITHIN:?}: {present} of {members} members, {pending} messages pending"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct QuietTraffic {
    communities: Vec<Community>,
    members: Vec<(GuildId, UserId)>,
    joins_per_s: f64,
    commands_per_s: f64,
}

struct FloodTraffic {
    guild: GuildId,
    members: Vec<UserId>,
    /// 0: unpaced.
    per_s: u32,
}

/// Runs one phase and measures it once the pipeline has caught up.
async fn phase(
    world: &World,
    store: &store::Store,
    quiet: &QuietTraffic,
    flood: Option<&FloodTraffic>,
    length: Duration,
    label: &str,
) -> anyhow::Result<Phase> {
    // Discord's join times have millisecond precision: so must the start.
    let since = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .context("the phase's start time")?;
    let stop = CancellationToken::new();
    let progress = ProgressBar::new(length.as_secs());
    progress.set_style(
        ProgressStyle::with_template("  {msg:<16} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message(label.to_owned());
    let flood_task = flood.map(|f| {
        let control = world.sim.control().clone();
        let (guild, members, per_s, stop) = (f.guild, f.members.clone(), f.per_s, stop.clone());
        tokio::spawn(async move { send_flood(&control, guild, &members, per_s, &stop).await })
    });
    let control = world.sim.control().clone();
    let (joins, commands) = {
        let started = tokio::time::Instant::now();
        let mut joins_sent = 0u64;
        let mut commands: Vec<(InteractionId, i64)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut next = 0usize;
        while started.elapsed() < length {
            tick.tick().await;
            let elapsed = started.elapsed().as_secs_f64();
            progress.set_position(elapsed as u64);
            while (joins_sent as f64) < elapsed * quiet.joins_per_s {
                let c = &quiet.communities[joins_sent as usize % quiet.communities.len()];
                control.add_member(c.guild, NewMember::default())?;
                joins_sent += 1;
            }
            while (commands.len() as f64) < elapsed * quiet.commands_per_s {
                let (guild, user) = quiet.members[next % quiet.members.len()];
                next += 1;
                let at = chrono::Utc::now().timestamp_millis();
                let created = control.create_interaction(NewInteraction {
                    guild_id: guild,
                    user_id: user,
                    command_name: "profile".into(),
                    options: Vec::new(),
                    locale: None,
                })?;
                commands.push((created.id, at));
            }
        }
        (joins_sent, commands)
    };
    stop.cancel();
    progress.finish_and_clear();
    let sent = match flood_task {
        Some(task) => task.await.context("the flood task")??,
        None => FloodSent::default(),
    };
    // Let the pipeline finish what the phase sent before measuring it.
    let communities: Vec<Community> = quiet.communities.clone();
    settle_phase(world, store, &communities, since, joins, &commands).await?;

    let mut join_latencies = Vec::new();
    for c in &communities {
        let tx = store.begin(c.tenant).await?;
        join_latencies.extend(tx.stats().join_latencies_ms_since(since).await?);
        tx.commit().await?;
    }
    let mut command_latencies = Vec::new();
    let mut unanswered = 0;
    for (id, at) in &commands {
        match control
            .interaction(*id)
            .and_then(|i| i.responses.first().map(|r| r.at_ms))
        {
            Some(answered) => command_latencies.push((answered - at) as f64),
            None => unanswered += 1,
        }
    }
    let flood_answered = sent
        .commands
        .iter()
        .filter(|id| {
            control
                .interaction(**id)
                .is_some_and(|i| !i.responses.is_empty())
        })
        .count() as u64;
    let seconds = length.as_secs_f64();
    Ok(Phase {
        quiet_joins: joins,
        quiet_commands: commands.len() as u64,
        quiet_join_p50_ms: percentile(&mut join_latencies, 0.50),
        quiet_join_p99_ms: percentile(&mut join_latencies, 0.99),
        quiet_command_p50_ms: percentile(&mut command_latencies, 0.50),
        quiet_command_p99_ms: percentile(&mut command_latencies, 0.99),
        quiet_commands_unanswered: unanswered,
        flood_commands_sent: sent.commands.len() as u64,
        flood_member_updates_sent: sent.member_updates,
        flood_commands_per_s: sent.commands.len() as f64 / seconds,
        flood_member_updates_per_s: sent.member_updates as f64 / seconds,
        flood_commands_answered: flood_answered,
    })
}

/// Waits until every quiet join of the phase is in the database and every
/// quiet command was answered or can no longer be (Discord's window has
/// passed). The flood's own backlog may still be draining: it is not what
/// is measured.
async fn settle_phase(
    world: &World,
    store: &store::Store,
    communities: &[Community],
    since: chrono::DateTime<chrono::Utc>,
    joins: u64,
    commands: &[(InteractionId, i64)],
) -> anyhow::Result<()> {
    /// Discord's 3 s response window, and a margin.
    const ANSWER_WITHIN_MS: i64 = 4_000;
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    let control = world.sim.control();
    loop {
        let mut seen = 0;
        // Communities short of their joins (sent round-robin), for the
        // message should they never arrive: one stuck community and a
        // stalled stream look alike in a total.
        let mut short = Vec::new();
        for (i, c) in communities.iter().enumerate() {
            let tx = store.begin(c.tenant).await?;
            let here = tx.stats().join_latencies_ms_since(since).await?.len() as u64;
            tx.commit().await?;
            let sent = joins_sent_to(i, communities.len(), joins);
            if here < sent {
                short.push(format!("guild {}: {here} of {sent}", c.guild));
            }
            seen += here;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let open = commands
            .iter()
            .filter(|(id, at)| {
                now - at < ANSWER_WITHIN_MS
                    && control
                        .interaction(*id)
                        .is_some_and(|i| i.responses.is_empty())
            })
            .count();
        if seen >= joins && open == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the pipeline did not catch up within {SETTLE_WITHIN:?}: {seen} of {joins} quiet joins \
             ({}), {open} quiet commands still open",
            short.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many of `joins`, sent round-robin over `communities`, went to the
/// `i`-th.
fn joins_sent_to(i: usize, communities: usize, joins: u64) -> u64 {
    let n = communities.max(1) as u64;
    joins / n + u64::from((i as u64) < joins % n)
}

#[derive(Default)]
struct FloodSent {
    commands: Vec<InteractionId>,
    member_updates: u64,
}

/// Slash commands and member updates in one guild, alternating, `per_s` of
/// each a second (0: as fast as the simulator takes them), until `stop`.
async fn send_flood(
    control: &discord_sim::SimControl,
    guild: GuildId,
    members: &[UserId],
    per_s: u32,
    stop: &CancellationToken,
) -> anyhow::Result<FloodSent> {
    let mut sent = FloodSent::default();
    let mut n = 0usize;
    let started = tokio::time::Instant::now();
    while !stop.is_cancelled() {
        if per_s > 0 {
            // Open loop: catch up to the pace, then wait a tick.
            let due = started.elapsed().as_secs_f64() * f64::from(per_s);
            if n as f64 >= due {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        let user = members[n % members.len()];
        let command = if n.is_multiple_of(2) {
            "check"
        } else {
            "profile"
        };
        let created = control.create_interaction(NewInteraction {
            guild_id: guild,
            user_id: user,
            command_name: command.into(),
            options: Vec::new(),
            locale: None,
        })?;
        sent.commands.push(created.id);
        control.update_member(
            guild,
            user,
            MemberPatch {
                nick: Some(Some(format!("flood {n}"))),
                ..MemberPatch::default()
            },
        )?;
        sent.member_updates += 1;
        n += 1;
        // Let the rest of this process (the gateway, the worker) run: the
        // generator shares the machine with what it floods.
        if n.is_multiple_of(16) {
            tokio::task::yield_now().await;
        }
    }
    Ok(sent)
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[i.min(values.len() - 1)]
}

fn render(r: &FairnessReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nfairness: {} quiet communities, {} s per phase, flood {}, {} of a community's messages at once ({} cores, {:.1} GiB)",
        r.quiet_communities,
        r.phase_seconds,
        if r.flood_per_s_asked == 0 {
            "as fast as the simulator sends".to_owned()
        } else {
            format!("paced at {}/s", r.flood_per_s_asked)
        },
        r.worker_community_concurrency,
        r.machine.cores,
        r.machine.memory_gib
    );
    let _ = writeln!(
        out,
        "  {:<16} {:>12} {:>12} {:>14} {:>14} {:>16} {:>16}",
        "phase",
        "join p50 ms",
        "join p99 ms",
        "command p50",
        "command p99",
        "flood cmds/s",
        "flood updates/s"
    );
    for (name, p) in [("alone", &r.alone), ("with the flood", &r.flooded)] {
        let _ = writeln!(
            out,
            "  {:<16} {:>12.1} {:>12.1} {:>14.1} {:>14.1} {:>16.0} {:>16.0}",
            name,
            p.quiet_join_p50_ms,
            p.quiet_join_p99_ms,
            p.quiet_command_p50_ms,
            p.quiet_command_p99_ms,
            p.flood_commands_per_s,
            p.flood_member_updates_per_s
        );
    }
    if r.rounds.len() > 1 {
        let each: Vec<String> = r
            .rounds
            .iter()
            .map(|round| format!("{:.2}", round.quiet_p99_ratio))
            .collect();
        let _ = writeln!(
            out,
            "  rounds: {} (the phases above are the median round's)",
            each.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  quiet p99 with ÷ without the flood: {:.2} (joins {:.2}, commands {:.2}){}; target ≤ 2",
        r.quiet_p99_ratio,
        r.quiet_join_p99_ratio,
        r.quiet_command_p99_ratio,
        if r.rounds.len() > 1 {
            ", median of the rounds"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  quiet commands unanswered: {} alone, {} with the flood; flood commands answered: {} of {}",
        r.alone.quiet_commands_unanswered,
        r.flooded.quiet_commands_unanswered,
        r.flooded.flood_commands_answered,
        r.flooded.flood_commands_sent
    );
    let _ = writeln!(out, "  Discord 429s: {} (target 0)", r.http_429);
    out
}

#[cfg(test)]
mod tests {
    use super::joins_sent_to;

    #[test]
    fn round_robin_joins_are_counted_per_community_and_add_up() {
        // 41 joins over 10 communities: the first gets 5, the others 4.
        let per: Vec<u64> = (0..10).map(|i| joins_sent_to(i, 10, 41)).collect();
        assert_eq!(per[0], 5);
        assert!(per[1..].iter().all(|&n| n == 4), "{per:?}");
        assert_eq!(per.iter().sum::<u64>(), 41);
        assert_eq!(joins_sent_to(0, 3, 2) + joins_sent_to(2, 3, 2), 1);
    }
}
