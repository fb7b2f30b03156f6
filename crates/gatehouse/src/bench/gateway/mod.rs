//! `gatehouse bench gateway`: one gateway process holding many simulated
//! guilds — its memory (RSS) after READY and GUILD_CREATE, and the events
//! per second JetStream accepts from it beside a bare async-nats publisher
//! pushing the same envelopes.
//!
//! For each guild count the simulator runs inside this process and the
//! gateway as a child (`gatehouse gateway`, the production binary and code
//! path), so that its RSS is its own. Once every guild is in JetStream its
//! RSS is read. Then a storm of member events is queued at the simulator
//! while the gateway is paused (SIGSTOP), so that generating it does not
//! compete with the gateway for the same cores, and the gateway drains it
//! once resumed; its rate is taken from JetStream's own timestamps. The
//! storm is read back and, with the gateway paused, pushed again by the bare
//! publisher into a stream of the same definition. That pair is a round; a
//! size runs several and reports their medians, because on a shared machine
//! one round can be slowed by what the host does meanwhile (each round's
//! steal time is reported too). Streams live under unique namespaces on the
//! NATS server given and are deleted afterwards.

mod baseline;
mod capture;
mod process;
mod report;
mod stream_counts;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use discord_sim::{GuildsSpec, SimConfig, Simulator, TrafficMix, TrafficSpec};
use indicatif::{ProgressBar, ProgressStyle};
use wire::subjects;

use process::{GatewayProcess, Launch};
use report::{BareStorm, GatewayReport, GatewayStorm, Loaded, Round, Setup, SizeRow};

#[derive(Debug, clap::Args)]
pub struct BenchGatewayArgs {
    /// NATS server to publish into (a unique namespace keeps the run apart).
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// The gateway's NATS user (the bare publisher logs in as it too), and
    /// the admin user that creates and removes the run's streams:
    /// `.stack/env` names them.
    #[command(flatten)]
    pub nats_logins: crate::nats_args::ProcessLogins,

    /// A short run as CI smoke-tests it: 1,000 and 5,000 guilds, storms of
    /// 20,000 events. Figures are printed, no target is enforced.
    #[arg(long)]
    pub quick: bool,

    /// Guild counts to measure, one gateway process each [default:
    /// 1000,10000,100000; --quick: 1000,5000].
    #[arg(long, value_delimiter = ',')]
    pub guilds: Vec<usize>,

    /// Members per guild (sent in GUILD_CREATE up to Discord's large threshold).
    #[arg(long, default_value_t = 10)]
    pub members: usize,

    /// Guilds per shard (Discord allows 2,500; shards = guilds / this, rounded up).
    #[arg(long = "guilds-per-shard", default_value_t = 2500,
          value_parser = clap::value_parser!(u32).range(1..=2500))]
    pub guilds_per_shard: u32,

    /// Member events in each storm [default: 100000; --quick: 20000].
    #[arg(long)]
    pub events: Option<u64>,

    /// Storms per guild count, each drained by the gateway and then pushed
    /// by the bare publisher; the figures are the rounds' medians, so that
    /// one disturbed round does not make them [default: 5; --quick: 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: Option<u32>,

    /// Publishes awaiting their ack at once, for the gateway and the bare
    /// publisher alike [default: the gateway's, 256].
    #[arg(long = "publish-window", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub publish_window: Option<u32>,

    /// Async runtime threads, for the gateway (`GATEWAY_THREADS`) and the
    /// bare publisher alike [default: the gateway's, 1].
    #[arg(long = "threads", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// EVENTS storage for the run: `memory` measures the gateway, `file`
    /// includes the disk.
    #[arg(long, default_value = "file", value_parser = ["file", "memory"])]
    pub storage: String,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also draw them into this SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

const TOKEN: &str = "bench-token";

/// Member events only: the storm's, which the envelopes read back are
/// picked by.
const STORM_SUBJECTS: [&str; 3] = [
    subjects::MEMBER_JOIN,
    subjects::MEMBER_LEAVE,
    subjects::MEMBER_UPDATE,
];

/// How long the gateway may take to get every GUILD_CREATE into JetStream.
const GUILDS_WITHIN: Duration = Duration::from_secs(900);
/// How long a storm may take.
const STORM_WITHIN: Duration = Duration::from_secs(900);
/// Between the last guild arriving and reading RSS: the GUILD_CREATE
/// burst's buffers are freed and the allocator has given back what it will.
const SETTLE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(200);

struct Plan {
    sizes: Vec<usize>,
    events: u64,
    rounds: usize,
    per_shard: usize,
    window: usize,
    threads: u16,
}

pub async fn run(args: BenchGatewayArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        sizes: match (&args.guilds[..], args.quick) {
            ([], false) => vec![1_000, 10_000, 100_000],
            ([], true) => vec![1_000, 5_000],
            (given, _) => given.to_vec(),
        },
        events: args
            .events
            .unwrap_or(if args.quick { 20_000 } else { 100_000 }),
        rounds: args
            .rounds
            .map_or(if args.quick { 2 } else { 5 }, |r| r as usize),
        per_shard: args.guilds_per_shard as usize,
        window: args
            .publish_window
            .map_or(gateway::config::DEFAULT_PUBLISH_WINDOW, |w| w as usize),
        threads: args.threads.unwrap_or(crate::gateway_cmd::DEFAULT_THREADS),
    };
    anyhow::ensure!(
        plan.sizes.iter().all(|&g| g > 0),
        "--guilds: every guild count must be above zero"
    );
    let admin = async_nats::jetstream::new(
        args.nats_logins
            .connect(&args.nats_url, bus::Process::Admin)
            .await?,
    );

    eprintln!("idle gateway: one shard, no guilds");
    let idle_rss_mb = idle_rss(&args, &plan, &admin)
        .await
        .context("measuring an idle gateway")?;
    let mut sizes = Vec::new();
    for &guilds in &plan.sizes {
        eprintln!("{guilds} guilds:");
        let row = one_size(&args, &plan, &admin, guilds)
            .await
            .with_context(|| format!("measuring the gateway with {guilds} guilds"))?;
        eprintln!(
            "  RSS {:.1} MB ({:.2} MB per 1,000 guilds); {:.0} events/s, bare publisher {:.0}/s: ratio {:.2}",
            row.rss_mb,
            row.rss_mb_per_1k_guilds,
            row.events_per_s,
            row.baseline_events_per_s,
            row.throughput_ratio_vs_baseline
        );
        sizes.push(row);
    }

    let setup = Setup {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: super::machine::Machine::here(),
        quick: args.quick,
        storage: args.storage.clone(),
        members_per_guild: args.members,
        guilds_per_shard: plan.per_shard,
        publish_window: plan.window,
        runtime_threads: plan.threads,
    };
    let report =
        GatewayReport::new(setup, idle_rss_mb, sizes).context("no guild count was measured")?;
    print!("{}", report::render(&report));
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        super::plot::write_svg(path, &report::charts(&report))?;
    }
    let mut failed = false;
    for row in report.sizes.iter().filter(|r| r.exit_code != Some(0)) {
        failed = true;
        eprintln!(
            "the gateway with {} guilds did not exit cleanly on SIGTERM (exit code {:?})",
            row.guilds, row.exit_code
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A run's simulator, gateway and namespace.
struct Rig {
    sim: Simulator,
    gateway: GatewayProcess,
    topology: bus::Topology,
    shards: u32,
}

impl Rig {
    async fn start(
        args: &BenchGatewayArgs,
        plan: &Plan,
        guilds: usize,
        name: &str,
    ) -> anyhow::Result<Rig> {
        let shards = u32::try_from(guilds.div_ceil(plan.per_shard).max(1))
            .context("too many shards for one gateway")?;
        let sim = Simulator::start(SimConfig {
            token: TOKEN.into(),
            // Every shard identifies at once: Discord's 5 s pacing would
            // make 40 shards take minutes and measure nothing of the gateway.
            identify_interval_ms: 0,
            max_concurrency: shards,
            shard_count: shards,
            transcript_limit: 0,
            ..SimConfig::default()
        })
        .await
        .context("starting the simulator")?;
        if guilds > 0 {
            sim.control().create_guilds(&GuildsSpec {
                count: guilds,
                members_per_guild: args.members,
                roles_per_guild: 3,
            });
        }
        let namespace = format!("bench_{}_{name}", std::process::id());
        let topology = topology(&namespace, &args.storage)?;
        let gateway = GatewayProcess::spawn(&Launch {
            token: TOKEN,
            shards,
            gateway_url: sim.gateway_url(),
            api_url: sim.api_url(),
            nats_url: &args.nats_url,
            namespace: &namespace,
            storage: &args.storage,
            publish_window: plan.window,
            threads: plan.threads,
            login: args.nats_logins.login(bus::Process::Gateway)?,
        });
        let gateway = match gateway {
            Ok(g) => g,
            Err(e) => {
                sim.shutdown().await;
                return Err(e);
            }
        };
        Ok(Rig {
            sim,
            gateway,
            topology,
            shards,
        })
    }

    /// Stops the gateway, then the simulator (in that order, so the gateway
    /// does not spend its shutdown reconnecting), and removes the streams.
    async fn stop(self, admin: &async_nats::jetstream::Context) -> process::Stopped {
        let stopped = self.gateway.stop().await;
        self.sim.shutdown().await;
        delete_streams(admin, &self.topology).await;
        stopped
    }
}

/// The streams as the gateway defines them from `EVENTS_STORAGE=storage`
/// (the same settings path), in `namespace`.
fn topology(namespace: &str, storage: &str) -> anyhow::Result<bus::Topology> {
    let mut topology = bus::Topology::new(crate::nats_args::namespace(namespace)?);
    let settings = bus::StreamSettings {
        events: bus::StreamLimitSettings {
            storage: Some(storage.to_owned()),
            ..bus::StreamLimitSettings::default()
        },
        ..bus::StreamSettings::default()
    };
    settings
        .apply(&mut topology)
        .context("--storage: the EVENTS stream's storage")?;
    Ok(topology)
}

async fn delete_streams(admin: &async_nats::jetstream::Context, topology: &bus::Topology) {
    for stream in topology.stream_configs().into_iter().chain([
        topology.sessions_stream_config(),
        topology.discord_budget_stream_config(),
    ]) {
        // Absent streams (never created) are fine; anything else is left
        // for the operator, named in the log.
        if let Err(error) = admin.delete_stream(&stream.name).await {
            tracing::debug!(stream = %stream.name, %error, "stream not deleted");
        }
    }
}

/// RSS of a gateway connected with one shard and no guilds: the fixed cost
/// every guild count includes.
async fn idle_rss(
    args: &BenchGatewayArgs,
    plan: &Plan,
    admin: &async_nats::jetstream::Context,
) -> anyhow::Result<f64> {
    let mut rig = Rig::start(args, plan, 0, "idle").await?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while rig
            .sim
            .control()
            .shards()
            .iter()
            .all(|s| s.connections == 0 || s.sessions == 0)
        {
            rig.gateway.check_running()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway did not identify within 60 s"
            );
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(SETTLE).await;
        rig.gateway.rss_mb()
    }
    .await;
    rig.stop(admin).await;
    result
}

async fn one_size(
    args: &BenchGatewayArgs,
    plan: &Plan,
    admin: &async_nats::jetstream::Context,
    guilds: usize,
) -> anyhow::Result<SizeRow> {
    let mut rig = Rig::start(args, plan, guilds, &guilds.to_string()).await?;
    let measured = measure(args, plan, admin, &mut rig, guilds).await;
    let shards = rig.shards;
    let stopped = rig.stop(admin).await;
    let (loaded, rounds, peak_rss_mb) = measured?;
    Ok(SizeRow::new(
        guilds,
        shards,
        loaded,
        rounds,
        peak_rss_mb,
        stopped,
    ))
}

/// Guilds in and RSS, then `plan.rounds` storms, each drained by the
/// gateway and then pushed by the bare publisher; and the gateway's peak
/// RSS over all of it.
async fn measure(
    args: &BenchGatewayArgs,
    plan: &Plan,
    admin: &async_nats::jetstream::Context,
    rig: &mut Rig,
    guilds: usize,
) -> anyhow::Result<(Loaded, Vec<Round>, f64)> {
    let namespace = rig.topology.namespace.clone();
    let stream = namespace.stream_name(&subjects::EVENTS);
    let mut watch = stream_counts::Watch::new(admin, &stream, &namespace);
    let loaded = load_guilds(rig, &mut watch, guilds).await?;
    let mut rounds = Vec::with_capacity(plan.rounds);
    for round in 1..=plan.rounds {
        if plan.rounds > 1 {
            eprintln!("  round {round} of {}", plan.rounds);
        }
        let (gateway, storm) =
            gateway_storm(plan, admin, rig, &mut watch, &stream, &namespace).await?;
        // Frozen, so that the bare publisher has the cores as the gateway
        // had them: the simulator is idle too.
        rig.gateway.pause()?;
        let bare = bare_storm(args, plan, admin, &format!("{guilds}_bare{round}"), storm).await?;
        rounds.push(Round::new(gateway, bare));
    }
    Ok((loaded, rounds, rig.gateway.peak_rss_mb()?))
}

/// Until every guild's GUILD_CREATE is in JetStream, then the gateway's RSS.
async fn load_guilds(
    rig: &mut Rig,
    watch: &mut stream_counts::Watch<'_>,
    guilds: usize,
) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let bar = phase_bar(guilds as u64, "GUILD_CREATE in JetStream");
    let deadline = started + GUILDS_WITHIN;
    let joined = loop {
        rig.gateway.check_running()?;
        let joined = watch.poll().await?.of(subjects::GUILD_JOIN);
        bar.set_position(joined);
        if joined >= guilds as u64 {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "{joined} of {guilds} guilds in JetStream after {GUILDS_WITHIN:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    joined?;
    let guilds_in_jetstream_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    Ok(Loaded {
        guilds_in_jetstream_s,
        rss_mb: rig.gateway.rss_mb()?,
        peak_rss_guilds_mb: rig.gateway.peak_rss_mb()?,
    })
}

/// One storm queued at the simulator and drained by the gateway, and the
/// storm read back from the gateway's `stream` as JetStream stored it.
async fn gateway_storm(
    plan: &Plan,
    admin: &async_nats::jetstream::Context,
    rig: &mut Rig,
    watch: &mut stream_counts::Watch<'_>,
    stream: &str,
    namespace: &bus::Namespace,
) -> anyhow::Result<(GatewayStorm, capture::Storm)> {
    // Read rather than polled: the storm's start must be exact.
    let before = watch.fresh().await?;
    let emitted = queue_storm(plan, rig).await?;
    let sessions_before = sessions_started(&rig.sim);
    let cpu_before = (
        rig.gateway.cpu_s()?,
        process::cpu_s("self")?,
        process::MachineCpu::now()?,
    );
    let storm_started = Instant::now();
    rig.gateway.resume()?;
    let bar = phase_bar(emitted, "storm in JetStream");
    let deadline = storm_started + STORM_WITHIN;
    let stored = loop {
        rig.gateway.check_running()?;
        let stored = watch
            .poll()
            .await?
            .sum(&STORM_SUBJECTS)
            .saturating_sub(before.sum(&STORM_SUBJECTS));
        bar.set_position(stored);
        if stored >= emitted {
            break Ok(stored);
        }
        if Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "{stored} of {emitted} storm events in JetStream after {STORM_WITHIN:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    let stored = stored?;
    let wall_s = storm_started.elapsed().as_secs_f64();
    let reconnects = sessions_started(&rig.sim).saturating_sub(sessions_before);
    let gateway_cpu_s = rig.gateway.cpu_s()? - cpu_before.0;
    let simulator_cpu_s = process::cpu_s("self")? - cpu_before.1;
    let steal_pct = process::MachineCpu::now()?.steal_pct_since(&cpu_before.2);

    let bar = phase_bar(stored, "reading the storm back");
    let storm = capture::read_storm(
        admin,
        stream,
        namespace,
        before.last_sequence,
        stored,
        &STORM_SUBJECTS,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    let storm = storm?;
    let messages = storm.envelopes.len() as u64;
    let gateway = GatewayStorm {
        events: emitted,
        messages,
        events_per_s: report::per_second(messages, storm.span_s),
        wall_s,
        reconnects,
        cpu_us_per_event: report::micros_per(gateway_cpu_s, messages),
        simulator_cpu_us_per_event: report::micros_per(simulator_cpu_s, messages),
        steal_pct,
    };
    Ok((gateway, storm))
}

/// The storm pushed again by the bare publisher, into streams of its own
/// named `name`.
async fn bare_storm(
    args: &BenchGatewayArgs,
    plan: &Plan,
    admin: &async_nats::jetstream::Context,
    name: &str,
    storm: capture::Storm,
) -> anyhow::Result<BareStorm> {
    let topology = topology(
        &format!("bench_{}_{name}", std::process::id()),
        &args.storage,
    )?;
    let bar = phase_bar(storm.envelopes.len() as u64, "bare publisher");
    let storm = Arc::new(storm);
    let before = (process::cpu_s("self")?, process::MachineCpu::now()?);
    let settings = args
        .nats_logins
        .settings(&args.nats_url, bus::Process::Gateway)?;
    let bare = {
        // Owned: the publisher runs as a task of its own runtime. The storm
        // is shared, so that freeing it is not counted as the publisher's.
        let (admin, topology, bar, window) =
            (admin.clone(), topology.clone(), bar.clone(), plan.window);
        let storm = Arc::clone(&storm);
        baseline::on_own_runtime(plan.threads, async move {
            // Connected from the runtime it publishes on, so that its
            // connection runs there too.
            let client = settings
                .connect(bus::Process::Gateway)
                .await
                .context("connecting the bare publisher as the gateway's user")?;
            baseline::publish(client, &admin, &topology, &storm.envelopes, window, &bar).await
        })
    };
    let after = (process::cpu_s("self"), process::MachineCpu::now());
    bar.finish_and_clear();
    delete_streams(admin, &topology).await;
    let bare = bare?;
    Ok(BareStorm {
        events_per_s: report::per_second(bare.published, bare.span_s),
        cpu_us_per_event: report::micros_per(after.0? - before.0, bare.published),
        wall_s: bare.wall_s,
        duplicates: bare.duplicates,
        steal_pct: after.1?.steal_pct_since(&before.1),
    })
}

/// Generates the storm while the gateway is paused, and waits until the
/// simulator has encoded all of it for the sockets, so that it is queued at
/// the simulator when the gateway resumes: what is then measured is the
/// gateway draining it as fast as it can, not the simulator generating and
/// compressing it on the same cores. Returns the events generated; the
/// gateway is left paused.
async fn queue_storm(plan: &Plan, rig: &mut Rig) -> anyhow::Result<u64> {
    rig.gateway.pause()?;
    let sent_before = dispatches_sent(&rig.sim);
    let traffic = rig.sim.control().start_traffic(TrafficSpec {
        events: plan.events,
        rate_per_second: None,
        mix: TrafficMix {
            member_join: 1,
            member_leave: 1,
            member_update: 3,
            interaction: 0,
        },
        // Generation must not wait for the paused reader.
        max_lag: 0,
        ..TrafficSpec::default()
    });
    let bar = phase_bar(plan.events, "storm queued at Discord");
    let deadline = Instant::now() + STORM_WITHIN;
    while !traffic.progress.done.load(Ordering::Relaxed) {
        bar.set_position(traffic.progress.emitted.load(Ordering::Relaxed));
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            anyhow::bail!("the simulator did not generate the storm in {STORM_WITHIN:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    bar.finish_and_clear();
    let emitted = traffic.wait().await.emitted;

    // Generated is not yet sent: each connection compresses its share and
    // queues it for the socket. Resuming before that is done would have the
    // simulator's compression compete with the gateway for the cores.
    let bar = phase_bar(emitted, "storm encoded at Discord");
    loop {
        let encoded = dispatches_sent(&rig.sim).saturating_sub(sent_before);
        bar.set_position(encoded);
        if encoded >= emitted {
            break;
        }
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            anyhow::bail!(
                "the simulator encoded {encoded} of the storm's {emitted} events in {STORM_WITHIN:?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
    bar.finish_and_clear();
    Ok(emitted)
}

/// Identifies and resumes the simulator has seen so far.
fn sessions_started(sim: &Simulator) -> u64 {
    sim.control()
        .shards()
        .iter()
        .map(|shard| shard.identifies + shard.resumes)
        .sum()
}

/// Dispatches the simulator has encoded for its connections so far.
fn dispatches_sent(sim: &Simulator) -> u64 {
    sim.control()
        .shards()
        .iter()
        .map(|shard| shard.dispatches_sent)
        .sum()
}

/// One phase's progress bar, on stderr when it is a terminal.
fn phase_bar(len: u64, phase: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "  {msg:<26} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} {per_sec}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(phase.to_owned());
    bar
}
