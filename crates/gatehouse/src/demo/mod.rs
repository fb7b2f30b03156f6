//! `gatehouse demo`: the whole system on one machine.
//!
//! Starts a Discord simulator, a fake EVM chain, a gateway (real Twilight
//! shards against the simulator) and a worker, all in this process and all
//! talking over the real services (NATS JetStream, PgBouncer, PostgreSQL).
//! Then plays a scenario: communities are provisioned from GUILD_CREATE,
//! members join over time, rules gate roles on token balances, members
//! link wallets, and roles are synced back through the simulator's REST API.
//! Ends with a summary per community, checked against the simulator.

mod dashboard;
pub(crate) mod scenario;
mod summary;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use bus::{Namespace, Process};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    // The database and NATS, and the NATS users of the demo's gateway,
    // worker and API and of the demo itself.
    #[command(flatten)]
    pub world: scenario::WorldArgs,

    /// A shortened scenario (300 members), as CI runs it.
    #[arg(long)]
    pub quick: bool,

    /// Leave everything running after the summary, until Ctrl-C (or
    /// SIGTERM), with the admin dashboard served beside the API.
    #[arg(long)]
    pub keep_running: bool,

    /// With --keep-running: once everything is up, write the addresses a
    /// browser test needs (dashboard, simulator, servers, people) as JSON.
    #[arg(long, value_name = "FILE", requires = "keep_running")]
    pub ready_file: Option<PathBuf>,

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

    /// Where the demo serves the admin API (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api_addr: std::net::SocketAddr,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let members = args.members.unwrap_or(if args.quick { 300 } else { 2000 });
    let store = args.world.db.connect(32).await?;
    // The demo's own connection sets up, inspects and removes the run's
    // streams; each process it runs connects with its own user.
    let js = async_nats::jetstream::new(
        args.world
            .nats_logins
            .connect(&args.world.nats_url, Process::Admin)
            .await?,
    );
    let run_id = chrono::Utc::now().timestamp_millis();
    let namespace = Namespace::prefixed(&format!("demo{run_id}"))
        .context("building the demo's NATS namespace")?;

    let plan = scenario::Plan {
        members_at_start: 0,
        communities: args.communities,
        members,
        join_rate: args.join_rate,
        shards: args.shards,
        recheck_period: scenario::DEMO_RECHECK_PERIOD,
        community_concurrency: None,
    };
    // The API's address first: the workers' wallet-link replies point at it.
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("--api-addr: cannot listen on {}", args.api_addr))?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let site = domain::wallets::Site::parse(&api_url).context("the demo API's address")?;
    let world = scenario::World::start(
        &plan,
        &store,
        &js,
        (&args.world.nats_url, &args.world.nats_logins),
        &namespace,
        site.clone(),
    )
    .await?;
    let shutdown = CancellationToken::new();
    start_api(
        listener,
        &api_url,
        site,
        &args,
        &store,
        &namespace,
        &world,
        shutdown.clone(),
    )
    .await?;
    let result = play(&plan, &world, &store, &shutdown).await;
    let api_check = match &result {
        Ok(_) => Some(try_the_api(&store, &world, &api_url).await),
        Err(_) => None,
    };

    if result.is_ok() && args.keep_running {
        eprintln!(
            "\nstill running (Ctrl-C to stop): simulator gateway {}  REST/control {}  gateway health http://{}/readyz  admin API {api_url}",
            world.sim.gateway_url(),
            world.sim.api_url(),
            world.gateway_http
        );
        if let Some(Ok(curl)) = &api_check {
            eprintln!("try the admin API: {curl}");
        }
        // Whatever goes wrong here, the world below is still stopped.
        let ready = dashboard::register_people(&world, &api_url).and_then(|ready| {
            eprintln!("{}", ready.instructions());
            match &args.ready_file {
                Some(path) => ready.write(path),
                None => Ok(()),
            }
        });
        match ready {
            Ok(()) => wait_for_stop().await,
            Err(e) => eprintln!("the demo dashboard could not be set up: {e:#}"),
        }
        if let Some(path) = &args.ready_file {
            let _ = std::fs::remove_file(path);
        }
    }
    shutdown.cancel();
    world.stop(&js, &namespace).await;
    let report = result?;
    print!("{}", report.render());
    let api_ok = match api_check {
        Some(Ok(curl)) => {
            println!(
                "\n  admin API (answered 200; with --keep-running it stays up to try):\n    {curl}"
            );
            true
        }
        Some(Err(e)) => {
            println!("\n  admin API: FAILED: {e:#}");
            false
        }
        None => false,
    };
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.consistent && api_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Serves the admin API (and the wallet-link page) in this process, as
/// `gatehouse api` would.
#[allow(clippy::too_many_arguments)]
async fn start_api(
    listener: tokio::net::TcpListener,
    url: &str,
    site: domain::wallets::Site,
    args: &DemoArgs,
    store: &store::Store,
    namespace: &Namespace,
    world: &scenario::World,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let evaluator = eligibility::Evaluator::new(&scenario::chains(&world.chain))
        .context("the API's eligibility configuration")?;
    let mut state = api::AppState::new(
        store.clone(),
        args.world
            .nats_logins
            .connect(&args.world.nats_url, Process::Api)
            .await?,
        namespace.clone(),
        std::sync::Arc::new(evaluator),
        api::ApiSettings {
            webhooks_allow_insecure_loopback: true,
            public_site: Some(site),
            ..api::ApiSettings::default()
        },
    );
    if args.keep_running {
        state = state
            .with_dashboard(dashboard::settings(world, url)?)
            .context("the demo dashboard's settings")?;
    }
    tokio::spawn(async move {
        if let Err(e) = api::serve(listener, state, async move { shutdown.cancelled().await }).await
        {
            tracing::error!(error = %e, "the demo's admin API stopped");
        }
    });
    Ok(())
}

/// Registers an API key for the first community, as its admin would, and
/// makes the request the printed `curl` line makes.
async fn try_the_api(
    store: &store::Store,
    world: &scenario::World,
    url: &str,
) -> anyhow::Result<String> {
    let guild = *world.guilds.first().context("the demo has no community")?;
    let community = domain::community::resolve(store, guild).await?;
    let created = domain::keys::create(
        store,
        community,
        &domain::Actor::Admin(Some("demo".into())),
        &domain::keys::NewKey {
            name: "demo".into(),
            scopes: [domain::keys::Scope::Read].into_iter().collect(),
            expires_at: None,
        },
    )
    .await?;
    let key = created.secret.expose();
    let endpoint = format!("{url}/v1/members?limit=3&has_wallet=true");
    let response = reqwest::Client::new()
        .get(&endpoint)
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("GET {endpoint}"))?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::OK,
        "GET {endpoint} answered {}",
        response.status()
    );
    Ok(format!(
        "curl -s -H 'Authorization: Bearer {key}' '{endpoint}'"
    ))
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

/// Until Ctrl-C or SIGTERM (how scripts stop a demo they started).
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How long Discord and the database may disagree once the scenario is over.
const CONVERGE_WITHIN: Duration = Duration::from_secs(15);
