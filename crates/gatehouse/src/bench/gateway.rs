//! `gatehouse bench gateway`: one gateway process holding many simulated
//! guilds — its memory (RSS) and the events per second it gets acknowledged
//! by JetStream.
//!
//! The simulator runs inside this process; the gateway runs as a child
//! (`gatehouse gateway`, the production binary and code path) so that its
//! RSS is its own. Streams live under a unique namespace on the NATS server
//! given and are deleted afterwards.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use discord_sim::{GuildsSpec, SimConfig, Simulator, TrafficMix, TrafficSpec};
use serde::Serialize;
use tokio::process::{Child, Command};

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

    /// The gateway's NATS user, and the admin user that removes the run's
    /// streams: `.stack/env` names them.
    #[command(flatten)]
    pub nats_logins: crate::nats_args::ProcessLogins,

    /// Guild counts to measure, one gateway run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub guilds: Vec<usize>,

    /// Members per guild (sent in GUILD_CREATE up to Discord's large threshold).
    #[arg(long, default_value_t = 10)]
    pub members: usize,

    /// Guilds per shard (Discord allows 2,500; shards = guilds / this, rounded up).
    #[arg(long = "guilds-per-shard", default_value_t = 1000)]
    pub guilds_per_shard: usize,

    /// Member events in the storm after the guilds have arrived.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,

    /// EVENTS storage for the run: `memory` measures the gateway, `file`
    /// includes the disk.
    #[arg(long, default_value = "file")]
    pub storage: String,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The figures of one guild count.
#[derive(Debug, Serialize)]
pub struct GatewayRun {
    pub guilds: usize,
    pub shards: u32,
    /// From process start until every guild.join was acked by JetStream.
    pub guilds_in_jetstream_s: f64,
    /// Gateway RSS once all guilds are in, MiB.
    pub rss_after_guilds_mib: f64,
    pub storm_events: u64,
    pub storm_s: f64,
    /// Member events acknowledged by JetStream per second during the storm.
    pub events_per_second: f64,
    /// Peak RSS of the gateway over the whole run (VmHWM), MiB.
    pub peak_rss_mib: f64,
    pub shutdown_s: f64,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct GatewayReport {
    pub command: String,
    pub storage: String,
    pub members_per_guild: usize,
    pub runs: Vec<GatewayRun>,
}

const TOKEN: &str = "bench-token";

pub async fn run(args: BenchGatewayArgs) -> anyhow::Result<ExitCode> {
    let client = args
        .nats_logins
        .connect(&args.nats_url, bus::Process::Admin)
        .await?;
    let jetstream = async_nats::jetstream::new(client);
    let mut runs = Vec::new();
    for &guilds in &args.guilds {
        let run = one_run(&args, &jetstream, guilds).await?;
        print_run(&run);
        runs.push(run);
    }
    let report = GatewayReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        storage: args.storage.clone(),
        members_per_guild: args.members,
        runs,
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("serialising the report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("--json {}: cannot write", path.display()))?;
    }
    let failed = report.runs.iter().any(|r| r.exit_code != Some(0));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_run(run: &GatewayRun) {
    println!(
        "{} guilds on {} shard(s): all guild.join in JetStream after {:.1} s, RSS {:.1} MiB",
        run.guilds, run.shards, run.guilds_in_jetstream_s, run.rss_after_guilds_mib
    );
    println!(
        "  storm: {} member events in {:.1} s = {:.0} events/s acked by JetStream; peak RSS {:.1} MiB; SIGTERM to exit {:.2} s (code {:?})",
        run.storm_events, run.storm_s, run.events_per_second, run.peak_rss_mib, run.shutdown_s, run.exit_code
    );
}

async fn one_run(
    args: &BenchGatewayArgs,
    jetstream: &async_nats::jetstream::Context,
    guilds: usize,
) -> anyhow::Result<GatewayRun> {
    let per_shard = args.guilds_per_shard.clamp(1, 2_500);
    let shards = guilds.div_ceil(per_shard).max(1) as u32;
    let sim = Simulator::start(SimConfig {
        token: TOKEN.into(),
        identify_interval_ms: 0,
        max_concurrency: 16,
        shard_count: shards,
        transcript_limit: 0,
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")?;
    let created = Instant::now();
    sim.control().create_guilds(&GuildsSpec {
        count: guilds,
        members_per_guild: args.members,
        roles_per_guild: 3,
    });
    tracing::info!(
        guilds,
        took_ms = created.elapsed().as_millis() as u64,
        "guilds created"
    );

    let namespace = format!("bench_{}_{}", std::process::id(), guilds);
    // The gateway ensures every stream of this definition; all are deleted after.
    let topology = bus::Topology::new(crate::nats_args::namespace(&namespace)?);
    let events_stream = topology.namespace.stream_name(&wire::subjects::EVENTS);
    let exe = std::env::current_exe().context("locating the gatehouse binary")?;
    let mut child = Command::new(exe);
    child
        .arg("gateway")
        .env_remove("DISCORD_BOT_TOKEN")
        .env_remove("GATEWAY_CONFIG")
        .env("DISCORD_TOKEN", TOKEN)
        .env("TOTAL_SHARDS", shards.to_string())
        .env("IDENTIFY_QUEUE", "unlimited")
        .env("DISCORD_GATEWAY_URL", sim.gateway_url())
        .env("DISCORD_API_URL", sim.api_url())
        .env("NATS_URL", &args.nats_url)
        .env("NATS_NAMESPACE", &namespace)
        .env("EVENTS_STORAGE", &args.storage)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("NATS_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // The production gateway, as production runs it: with its own user.
    if let Some((user, password)) = args.nats_logins.login(bus::Process::Gateway)? {
        child
            .env("NATS_USER", user)
            .env("NATS_PASSWORD", password.expose());
    }
    let mut child = child.spawn().context("starting `gatehouse gateway`")?;
    let pid = child.id().context("gateway pid")?;

    let result = measure(
        args,
        jetstream,
        &sim,
        &mut child,
        pid,
        guilds,
        &events_stream,
    )
    .await;
    let stopping = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit_code = match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = child.kill().await;
            None
        }
    };
    let shutdown_s = stopping.elapsed().as_secs_f64();
    for stream in topology
        .stream_configs()
        .into_iter()
        .chain([topology.sessions_stream_config()])
    {
        let _ = jetstream.delete_stream(&stream.name).await;
    }
    sim.shutdown().await;
    let mut run = result?;
    run.shards = shards;
    run.shutdown_s = shutdown_s;
    run.exit_code = exit_code;
    Ok(run)
}

async fn measure(
    args: &BenchGatewayArgs,
    jetstream: &async_nats::jetstream::Context,
    sim: &Simulator,
    child: &mut Child,
    pid: u32,
    guilds: usize,
    stream: &str,
) -> anyhow::Result<GatewayRun> {
    let started = Instant::now();
    wait_for_messages(
        jetstream,
        child,
        stream,
        guilds as u64,
        Duration::from_secs(600),
    )
    .await
    .context("waiting for every guild.join")?;
    let guilds_in_jetstream_s = started.elapsed().as_secs_f64();
    // Let allocations settle (buffers freed after the GUILD_CREATE burst).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_guilds_mib = proc_status_mib(pid, "VmRSS:").unwrap_or(0.0);

    let storm = Instant::now();
    let traffic = sim.control().start_traffic(TrafficSpec {
        events: args.events,
        rate_per_second: None,
        mix: TrafficMix {
            member_join: 1,
            member_leave: 1,
            member_update: 3,
            interaction: 0,
        },
        ..TrafficSpec::default()
    });
    // The storm is done when the generator has finished and JetStream holds
    // every event it emitted.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (emitted, _, done) = sim
            .control()
            .traffic_progress(traffic.id)
            .unwrap_or((0, 0, false));
        if done {
            wait_for_messages(
                jetstream,
                child,
                stream,
                guilds as u64 + emitted,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await
            .context("waiting for the storm's events")?;
            break;
        }
        if let Some(status) = child.try_wait().context("checking the gateway")? {
            anyhow::bail!("the gateway exited during the storm ({status})");
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the storm did not finish in 900 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let storm_s = storm.elapsed().as_secs_f64();
    let report = traffic.wait().await;
    let peak_rss_mib = proc_status_mib(pid, "VmHWM:").unwrap_or(0.0);
    Ok(GatewayRun {
        guilds,
        shards: 0,
        guilds_in_jetstream_s,
        rss_after_guilds_mib,
        storm_events: report.emitted,
        storm_s,
        events_per_second: report.emitted as f64 / storm_s.max(f64::EPSILON),
        peak_rss_mib,
        shutdown_s: 0.0,
        exit_code: None,
    })
}

/// Polls the stream until it holds `count` messages.
async fn wait_for_messages(
    jetstream: &async_nats::jetstream::Context,
    child: &mut Child,
    stream: &str,
    count: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().context("checking the gateway")? {
            anyhow::bail!("the gateway exited early ({status})");
        }
        let stored = match jetstream.get_stream(stream).await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        };
        if stored >= count {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{stored} of {count} messages after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `/proc/<pid>/status` size line (kB) in MiB.
fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
