//! `gatehouse sim`: run the bundled Discord simulator on its own, print its
//! gateway and API URLs, and serve until Ctrl-C (or SIGTERM).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use discord_sim::{GuildsSpec, Scenario, SimConfig, Simulator};

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address both listeners bind to.
    #[arg(long, env = "SIM_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Gateway WebSocket port (0 picks a free one).
    #[arg(long = "gateway-port", env = "SIM_GATEWAY_PORT", default_value_t = 0)]
    pub gateway_port: u16,

    /// REST and control API port (0 picks a free one).
    #[arg(long = "api-port", env = "SIM_API_PORT", default_value_t = 0)]
    pub api_port: u16,

    /// The bot token the simulator accepts.
    #[arg(
        long,
        env = "SIM_TOKEN",
        default_value = "sim-token",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub token: String,

    /// Guilds to create at start.
    #[arg(long, default_value_t = 10)]
    pub guilds: usize,

    /// Members per guild.
    #[arg(long, default_value_t = 20)]
    pub members: usize,

    /// Roles per guild besides @everyone.
    #[arg(long, default_value_t = 3)]
    pub roles: usize,

    /// Shard count GET /gateway/bot recommends.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,

    /// Identify concurrency (max_concurrency).
    #[arg(long = "max-concurrency", default_value_t = 1)]
    pub max_concurrency: u32,

    /// Minimum time between identifies per bucket, ms (Discord: 5000; 0 for tests).
    #[arg(long = "identify-interval-ms", default_value_t = 5_000)]
    pub identify_interval_ms: u64,

    /// Heartbeat interval sent in Hello, ms (Discord: 41250).
    #[arg(long = "heartbeat-interval-ms", default_value_t = 41_250)]
    pub heartbeat_interval_ms: u64,

    /// Scenario file (.toml or .json): its `[sim]` settings replace the
    /// flags above, its guilds and steps run once the simulator is up.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
}

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(path) => Some(
            Scenario::load(path)
                .map_err(|e| anyhow::anyhow!("--scenario {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut config = match scenario.as_ref().and_then(|s| s.sim.clone()) {
        Some(config) => config,
        None => SimConfig {
            token: args.token.clone(),
            shard_count: args.shards,
            max_concurrency: args.max_concurrency,
            identify_interval_ms: args.identify_interval_ms,
            heartbeat_interval_ms: args.heartbeat_interval_ms,
            ..SimConfig::default()
        },
    };
    config.bind = args.bind;
    config.gateway_port = args.gateway_port;
    config.api_port = args.api_port;
    let sim = Simulator::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("--gateway-port/--api-port: {e}"))?;
    if scenario.as_ref().and_then(|s| s.guilds.as_ref()).is_none() && args.guilds > 0 {
        sim.control().create_guilds(&GuildsSpec {
            count: args.guilds,
            members_per_guild: args.members,
            roles_per_guild: args.roles,
        });
    }
    // stdout carries exactly what a script needs to point a gateway at it.
    println!("DISCORD_GATEWAY_URL={}", sim.gateway_url());
    println!("DISCORD_API_URL={}", sim.api_url());
    println!("DISCORD_APPLICATION_ID={}", sim.config().application_id);
    println!("control API: {}/_sim/stats", sim.api_url());
    let stats = sim.control().stats();
    tracing::info!(
        guilds = stats.guilds,
        members = stats.members,
        "simulator ready; Ctrl-C to stop"
    );

    let control = sim.control().clone();
    let scenario_task = scenario.map(|scenario| {
        tokio::spawn(async move {
            match control.run_scenario(&scenario).await {
                Ok(report) => tracing::info!(steps = report.steps_run, "scenario finished"),
                Err(error) => tracing::error!(%error, "scenario failed"),
            }
        })
    });

    wait_for_signal().await;
    if let Some(task) = scenario_task {
        task.abort();
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
