//! `gatehouse api`: serve the admin REST API until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use settings::{Problems, Secret};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Labels, dashboard_args::DashboardArgs, db_args::DbArgs, nats_args::NatsArgs, worker_cmd,
};

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Where re-check requests go (rule changes, scores, member re-checks).
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Address to listen on. Behind a load balancer any number of `api`
    /// processes serve the same communities.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,

    /// Abandon a request after this long (503, nothing half-done).
    #[arg(long, env = "API_REQUEST_TIMEOUT", default_value = "10s")]
    pub request_timeout: String,

    /// Sustained requests per second allowed per API key.
    #[arg(long, env = "API_RATE_LIMIT", default_value = "20")]
    pub rate_limit: String,

    /// Requests a key may send at once above the sustained rate.
    #[arg(long, env = "API_RATE_BURST", default_value = "40")]
    pub rate_burst: String,

    /// The workers' re-check period: outcomes older than this are shown as stale.
    #[arg(long, env = "RECHECK_PERIOD", default_value = "6h")]
    pub recheck_period: String,

    /// EVM chains, as for `gatehouse worker`: the rule preview reads them
    /// (through the same cache) to say what a change would do.
    #[arg(
        long,
        env = "CHAINS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub chains: Secret,

    /// Each community's share of every chain's RPC calls in this process,
    /// as for `gatehouse worker`: the rule preview's reads are paid from it.
    #[arg(long, env = "CHAIN_READS_PER_COMMUNITY", default_value = "20,1000")]
    pub chain_reads_per_community: String,

    /// Lets webhooks be registered to http(s) on this machine (127.0.0.1,
    /// ::1, localhost), as the worker's flag of the same name lets it send
    /// to them. For tests and the demo, never in production.
    #[arg(long, env = "WEBHOOK_ALLOW_INSECURE_LOOPBACK", default_value_t = false)]
    pub webhook_allow_insecure_loopback: bool,

    /// The dashboard (Discord login for community admins), on the same
    /// address as /v1; off unless its OAuth2 settings are given.
    #[command(flatten)]
    pub dashboard: DashboardArgs,
}

struct Settings {
    addr: SocketAddr,
    store: store::StoreConfig,
    chains: eligibility::EligibilityConfig,
    api: api::ApiSettings,
    dashboard: Option<api::DashboardSettings>,
}

impl ApiArgs {
    fn validate(&self) -> Result<Settings, settings::ConfigErrors> {
        let l = Labels::of::<Self>();
        let mut p = Problems::new();
        p.check(
            &Labels::of::<NatsArgs>().get("nats_namespace"),
            self.nats
                .namespace()
                .map_err(|e| e.root_cause().to_string()),
        );
        let addr =
            p.parse::<SocketAddr>(&l.get("addr"), &self.addr, "host:port, e.g. 127.0.0.1:8080");
        let timeout = p.duration(&l.get("request_timeout"), &self.request_timeout);
        let rate = p.parse::<NonZeroU32>(
            &l.get("rate_limit"),
            &self.rate_limit,
            "a number of requests per second, at least 1",
        );
        let burst = p.parse::<NonZeroU32>(
            &l.get("rate_burst"),
            &self.rate_burst,
            "a number of requests, at least 1",
        );
        let recheck_period = p.duration(&l.get("recheck_period"), &self.recheck_period);
        let chains = worker_cmd::chains_with_budget(
            &mut p,
            (&l.get("chains"), self.chains.expose()),
            (
                &l.get("chain_reads_per_community"),
                &self.chain_reads_per_community,
            ),
        );
        let store = self.db.validate(16, &mut p);
        let dashboard = self.dashboard.validate(&mut p);
        // The wallet-link page needs only the public address.
        let public_site = self
            .dashboard
            .public_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .and_then(|u| {
                p.check(
                    &Labels::of::<crate::dashboard_args::DashboardArgs>().get("public_url"),
                    domain::wallets::Site::parse(u).map_err(|e| e.to_string()),
                )
            });
        p.finish()?;
        match (addr, timeout, rate, burst, recheck_period, chains, store) {
            (
                Some(addr),
                Some(request_timeout),
                Some(rate),
                Some(burst),
                Some(recheck_period),
                Some(chains),
                Some(store),
            ) => Ok(Settings {
                addr,
                store,
                chains,
                api: api::ApiSettings {
                    request_timeout,
                    rate_per_second: rate,
                    burst,
                    recheck_period,
                    public_site,
                    ..api::ApiSettings::default()
                },
                dashboard,
            }),
            _ => Err(settings::ConfigErrors::single(
                "api settings",
                "refused without a reason (a bug)",
            )),
        }
    }
}

pub async fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let Settings {
        addr,
        store,
        chains,
        api: settings,
        dashboard,
    } = args.validate()?;
    let store = crate::db_args::connect(store).await?;
    let nats = args.nats.connect(bus::Process::Api).await?;
    let evaluator = eligibility::Evaluator::new(&chains)
        .map_err(|e| anyhow::anyhow!("CHAINS (--chains): {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("API_ADDR (--addr): cannot listen on {addr}"))?;
    let mut state = api::AppState::new(
        store,
        nats,
        args.nats.namespace()?,
        Arc::new(evaluator),
        settings,
    );
    if let Some(dashboard) = dashboard {
        let public = dashboard.public("/");
        state = state
            .with_dashboard(dashboard)
            .context("the dashboard's settings")?;
        tracing::info!(%public, "dashboard enabled");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(worker_cmd::cancel_on_signal(shutdown.clone()));
    tracing::info!(%addr, "api listening");
    api::serve(listener, state, async move { shutdown.cancelled().await })
        .await
        .context("api server stopped")?;
    tracing::info!("api stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
