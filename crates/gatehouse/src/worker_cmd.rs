//! `gatehouse worker`: run the JetStream consumers until SIGTERM/SIGINT.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use settings::{Problems, Secret};
use tokio_util::sync::CancellationToken;
use worker::WorkerConfig;

use crate::{
    config::Labels,
    db_args::DbArgs,
    discord_args::{check_api_url, DiscordTokenArgs},
    nats_args::{NatsArgs, StreamArgs},
};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Durable consumer name; worker processes with the same name share the work.
    #[arg(long, env = "WORKER_CONSUMER", default_value = "worker")]
    pub consumer: String,

    /// Messages this process handles at once, per stream.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "32")]
    pub concurrency: String,

    /// Messages of one community this process handles at once, per stream
    /// (commands, eligibility checks, webhooks; membership events go one
    /// batch at a time) [default: an eighth of the concurrency].
    #[arg(long, env = "WORKER_COMMUNITY_CONCURRENCY")]
    pub community_concurrency: Option<String>,

    /// Deliveries of a failing message before it is dead-lettered.
    #[arg(long, env = "WORKER_MAX_ATTEMPTS", default_value = "5")]
    pub max_attempts: String,

    /// Redelivery delays after successive failures, comma-separated.
    #[arg(long, env = "WORKER_BACKOFF", default_value = "1s,5s,30s,2m")]
    pub backoff: String,

    /// How long JetStream waits for an acknowledgement before redelivering.
    #[arg(long, env = "WORKER_ACK_WAIT", default_value = "30s")]
    pub ack_wait: String,

    #[command(flatten)]
    pub streams: StreamArgs,

    /// Bot token for role changes and interaction replies. Without it the
    /// worker applies events but syncs no roles.
    #[command(flatten)]
    pub token: DiscordTokenArgs,

    /// Override of Discord's REST API base URL (the simulator's); unset in production.
    #[arg(long, env = "DISCORD_API_URL")]
    pub discord_api_url: Option<String>,

    /// Discord's global request limit for the bot, per second, shared by
    /// every worker process through NATS key-value (Discord's default: 50).
    #[arg(long, env = "DISCORD_GLOBAL_RATE", default_value = "50")]
    pub discord_global_rate: String,

    /// How much later or more bunched than sent requests may reach
    /// Discord; the workers keep this much below the global limit (20ms
    /// keeps 0.92 of 50/s; raise it on a jittery path to Discord, at most 1s).
    #[arg(long, env = "DISCORD_GLOBAL_MARGIN", default_value = "20ms")]
    pub discord_global_margin: String,

    /// Invalid requests (401, 403, 429) within the window, across all
    /// workers, at which role changes stop (Discord bans at 10,000 in 10
    /// minutes).
    #[arg(long, env = "DISCORD_INVALID_REQUEST_LIMIT", default_value = "1000")]
    pub discord_invalid_request_limit: String,

    /// The sliding window over which invalid requests are counted.
    #[arg(long, env = "DISCORD_INVALID_REQUEST_WINDOW", default_value = "10m")]
    pub discord_invalid_request_window: String,

    /// EVM chains for eligibility rules: `name=url[,url…][;name=url…]`
    /// (several URLs per chain fail over in order). RPC URLs carry API keys,
    /// so the value is never shown.
    #[arg(
        long,
        env = "CHAINS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub chains: Secret,

    /// Each community's share of every chain's RPC calls, per worker
    /// process: `<calls per second>[,<burst>]`, or `off`. A call is one
    /// `eth_call` sent (each entry of a JSON-RPC batch counts); cached
    /// reads are free. A community over it has its reads answered from the
    /// cache or left undecided (never a role removed) and retried soon,
    /// while other communities' reads go straight through.
    #[arg(long, env = "CHAIN_READS_PER_COMMUNITY", default_value = "20,1000")]
    pub chain_reads_per_community: String,

    /// Interactive checks (`/check`, a join, a wallet linked) reuse chain
    /// reads younger than this instead of reading again; `0` always reads.
    #[arg(long, env = "CHECK_MIN_READ_AGE", default_value = "30s")]
    pub check_min_read_age: String,

    /// How long a member keeps a role while failing its rule.
    #[arg(long, env = "ROLE_GRACE_PERIOD", default_value = "24h")]
    pub role_grace_period: String,

    /// How often every member's eligibility is re-checked (spread over the period).
    #[arg(long, env = "RECHECK_PERIOD", default_value = "6h")]
    pub recheck_period: String,

    /// How often this worker looks for members due a re-check.
    #[arg(long, env = "RECHECK_SCAN_INTERVAL", default_value = "10s")]
    pub recheck_scan_interval: String,

    /// Attempts per webhook delivery before it fails into the dead letters.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value = "6")]
    pub webhook_max_attempts: String,

    /// Delays between webhook delivery attempts, comma-separated.
    #[arg(long, env = "WEBHOOK_BACKOFF", default_value = "10s,1m,5m,30m,2h")]
    pub webhook_backoff: String,

    /// The public base address of the wallet-link page, e.g.
    /// `https://gatehouse.example`. `/link-wallet` answers with links under
    /// it, and every message to sign names it (SIWE domain and URI), so it
    /// must be the address members' browsers see. Unset: `/link-wallet`
    /// says linking is not set up.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Which Discord servers are served: `open` (every server that adds
    /// the bot) or `allowlist:<guild id>,…` (only those; other servers'
    /// events are dropped before they reach the database).
    #[arg(long, env = "PROVISIONING", default_value = "open")]
    pub provisioning: String,

    /// Delete audit rows older than this (e.g. `400d`); at least a day.
    /// Unset or empty: the audit log is kept.
    #[arg(long, env = "AUDIT_RETENTION", default_value = "")]
    pub audit_retention: String,

    /// Lets webhooks call http(s) on this machine (127.0.0.1, ::1,
    /// localhost). For tests and the demo, never in production.
    #[arg(long, env = "WEBHOOK_ALLOW_INSECURE_LOOPBACK", default_value_t = false)]
    pub webhook_allow_insecure_loopback: bool,

    /// Address of /healthz, /readyz and /metrics, IP:PORT (0.0.0.0:9101 for
    /// probes from outside the host) [default: 127.0.0.1:9101, skipped with
    /// a warning if taken].
    #[arg(long, env = "HTTP_ADDR")]
    pub http_addr: Option<String>,
}

/// Where the HTTP endpoints go, and whether someone asked for that address.
#[derive(Debug, Clone, Copy)]
enum HttpAddr {
    /// `HTTP_ADDR` set: not being able to listen there is an error.
    Chosen(SocketAddr),
    /// Unset: the default. Taken (a second worker or another program on
    /// this machine), the worker runs without the endpoints and says so,
    /// as it ran before it had them.
    Default(SocketAddr),
}

/// Everything `gatehouse worker` needs, validated before anything connects.
#[derive(Debug)]
struct Settings {
    config: WorkerConfig,
    store: store::StoreConfig,
    chains: eligibility::EligibilityConfig,
    /// `None`: no token, so no role sync.
    discord: Option<Secret>,
    sync: domain::role_sync::RoleSyncConfig,
    http_addr: HttpAddr,
}

impl WorkerArgs {
    /// Every setting checked; every problem reported at once.
    fn validate(&self) -> Result<Settings, settings::ConfigErrors> {
        let l = Labels::of::<Self>();
        let mut p = Problems::new();
        let namespace = p.check(
            &Labels::of::<NatsArgs>().get("nats_namespace"),
            self.nats
                .namespace()
                .map_err(|e| e.root_cause().to_string()),
        );
        let concurrency = p.parse::<usize>(&l.get("concurrency"), &self.concurrency, "a number");
        // Blank counts as unset, as an empty variable in an env file means.
        let community_concurrency = match self.community_concurrency.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => {
                Some(p.parse::<usize>(&l.get("community_concurrency"), text, "a number"))
            }
            _ => None,
        };
        let max_attempts = p.parse::<u32>(&l.get("max_attempts"), &self.max_attempts, "a number");
        let backoff = p.check(&l.get("backoff"), settings::parse_durations(&self.backoff));
        let ack_wait = p.duration(&l.get("ack_wait"), &self.ack_wait);
        let topology = namespace
            .clone()
            .and_then(|namespace| self.streams.checked_topology(namespace, &mut p));
        let store = self.db.validate(concurrency.unwrap_or(1).max(4), &mut p);
        let discord = self.token.token(&mut p);
        if let Some(url) = &self.discord_api_url {
            p.check(&l.get("discord_api_url"), check_api_url(url));
        }
        let chains = chains_with_budget(
            &mut p,
            (&l.get("chains"), self.chains.expose()),
            (
                &l.get("chain_reads_per_community"),
                &self.chain_reads_per_community,
            ),
        );
        let check_min_read_age = p.duration(&l.get("check_min_read_age"), &self.check_min_read_age);
        let global_rate = p.parse::<u32>(
            &l.get("discord_global_rate"),
            &self.discord_global_rate,
            "a number of requests per second",
        );
        let global_margin =
            p.duration(&l.get("discord_global_margin"), &self.discord_global_margin);
        let invalid_limit = p.parse::<u32>(
            &l.get("discord_invalid_request_limit"),
            &self.discord_invalid_request_limit,
            "a number",
        );
        let invalid_window = p.duration(
            &l.get("discord_invalid_request_window"),
            &self.discord_invalid_request_window,
        );
        let defaults = worker::discord::RoleChangeLimits::default();
        let discord_limits = worker::discord::RoleChangeLimits {
            global_rate: global_rate.unwrap_or(defaults.global_rate),
            global_margin: global_margin.unwrap_or(defaults.global_margin),
            invalid_limit: invalid_limit.unwrap_or(defaults.invalid_limit),
            invalid_window: invalid_window.unwrap_or(defaults.invalid_window),
            ..defaults
        };
        let grace = p.duration(&l.get("role_grace_period"), &self.role_grace_period);
        let recheck_period = p.duration(&l.get("recheck_period"), &self.recheck_period);
        let scan_interval =
            p.duration(&l.get("recheck_scan_interval"), &self.recheck_scan_interval);
        let webhook_max_attempts = p.parse::<u32>(
            &l.get("webhook_max_attempts"),
            &self.webhook_max_attempts,
            "a number",
        );
        let webhook_backoff = p.check(
            &l.get("webhook_backoff"),
            settings::parse_durations(&self.webhook_backoff),
        );
        // Blank counts as unset, as an empty `PUBLIC_URL=` in an env file means.
        let public_site = self
            .public_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .and_then(|url| p.check(&l.get("public_url"), domain::wallets::Site::parse(url)));
        let provisioning = p
            .check(
                &l.get("provisioning"),
                worker::Provisioning::parse(&self.provisioning),
            )
            .unwrap_or_default();
        // Blank counts as unset, as an empty `HTTP_ADDR=` in an env file means.
        let http_addr = match self.http_addr.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => p
                .parse::<SocketAddr>(
                    &l.get("http_addr"),
                    text,
                    "an address: IP:PORT, e.g. 0.0.0.0:9101",
                )
                .map(HttpAddr::Chosen),
            _ => Some(HttpAddr::Default(worker::DEFAULT_HTTP_ADDR)),
        };
        let audit_retention = match self.audit_retention.trim() {
            "" => None,
            text => p.duration(&l.get("audit_retention"), text).and_then(|d| {
                if d < Duration::from_secs(24 * 3600) {
                    p.push(
                        l.get("audit_retention"),
                        "must be at least 1d (or unset, to keep the audit log)",
                    );
                    None
                } else {
                    Some(d)
                }
            }),
        };

        let config = WorkerConfig {
            topology: topology
                .clone()
                .unwrap_or_else(|| bus::Topology::new(bus::Namespace::root())),
            consumer_name: self.consumer.clone(),
            concurrency: concurrency.unwrap_or(1),
            community_concurrency: community_concurrency.flatten(),
            max_attempts: max_attempts.unwrap_or(1),
            backoff: backoff
                .clone()
                .unwrap_or_else(|| vec![Duration::from_secs(1)]),
            ack_wait: ack_wait.unwrap_or(Duration::from_secs(30)),
            webhooks: webhook_config(
                webhook_max_attempts,
                webhook_backoff.clone(),
                self.webhook_allow_insecure_loopback,
            ),
            public_site,
            provisioning,
            audit_retention,
            discord: discord_limits,
            ..WorkerConfig::default()
        };
        // Values that failed to parse were replaced above; only judge the
        // ones that did parse, so a bad value is not reported twice.
        let parsed = [
            ("concurrency", concurrency.is_some()),
            (
                "community_concurrency",
                concurrency.is_some() && community_concurrency.is_none_or(|c| c.is_some()),
            ),
            ("max_attempts", max_attempts.is_some()),
            ("backoff", backoff.is_some()),
            ("ack_wait", ack_wait.is_some()),
            ("consumer_name", true),
            ("webhook_max_attempts", webhook_max_attempts.is_some()),
            ("webhook_backoff", webhook_backoff.is_some()),
            ("discord_global_rate", global_rate.is_some()),
            ("discord_global_margin", global_margin.is_some()),
            ("discord_invalid_limit", invalid_limit.is_some()),
            ("discord_invalid_window", invalid_window.is_some()),
        ];
        if let Err(errors) = config.validate() {
            for problem in errors.problems() {
                if parsed.contains(&(problem.setting.as_str(), true)) {
                    let id = match problem.setting.as_str() {
                        "consumer_name" => "consumer",
                        "discord_invalid_limit" => "discord_invalid_request_limit",
                        "discord_invalid_window" => "discord_invalid_request_window",
                        other => other,
                    };
                    p.push(l.get(id), &problem.problem);
                }
            }
        }
        p.finish()?;
        match (
            topology,
            store,
            chains,
            grace,
            recheck_period,
            scan_interval,
            check_min_read_age,
            http_addr,
        ) {
            (
                Some(_),
                Some(store),
                Some(chains),
                Some(grace),
                Some(recheck_period),
                Some(scan_interval),
                Some(check_min_read_age),
                Some(http_addr),
            ) => Ok(Settings {
                config,
                store,
                chains,
                discord,
                sync: domain::role_sync::RoleSyncConfig {
                    grace,
                    recheck_period,
                    scan_interval,
                    check_min_read_age,
                    ..Default::default()
                },
                http_addr,
            }),
            _ => Err(settings::ConfigErrors::single(
                "worker settings",
                "refused without a reason (a bug)",
            )),
        }
    }
}

/// The webhook settings over their defaults (a value that failed to parse
/// is reported elsewhere and replaced here).
fn webhook_config(
    max_attempts: Option<u32>,
    backoff: Option<Vec<Duration>>,
    allow_insecure_loopback: bool,
) -> worker::WebhookConfig {
    let defaults = worker::WebhookConfig::default();
    worker::WebhookConfig {
        max_attempts: max_attempts.unwrap_or(1),
        backoff: backoff.unwrap_or_else(|| defaults.backoff.clone()),
        url_policy: domain::webhooks::UrlPolicy {
            allow_insecure_loopback,
        },
        ..defaults
    }
}

/// `CHAINS` with `CHAIN_READS_PER_COMMUNITY` applied to every chain, as
/// `(label, text)` pairs; each problem is reported under its own setting.
pub fn chains_with_budget(
    p: &mut Problems,
    (chains_label, chains): (&str, &str),
    (budget_label, budget): (&str, &str),
) -> Option<eligibility::EligibilityConfig> {
    let chains = p.check(chains_label, parse_chains(chains));
    let budget = p.check(budget_label, eligibility::CommunityBudget::parse(budget));
    let (mut chains, budget) = (chains?, budget?);
    for chain in chains.chains.values_mut() {
        chain.community_budget = budget;
    }
    // Checked again with the budget: its burst must cover each chain's
    // largest batch.
    p.check(budget_label, chains.validate().map(|()| chains))
}

/// Parses `name=url[,url…][;name=url…]`. Problems never quote a URL: RPC
/// URLs carry API keys.
pub fn parse_chains(spec: &str) -> Result<eligibility::EligibilityConfig, String> {
    let mut chains = std::collections::BTreeMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, urls)) = entry.split_once('=') else {
            return Err(format!(
                "{} should look like name=https://rpc.example",
                settings::redact(entry)
            ));
        };
        // `name@chain_id`: the EIP-155 id, checked against every RPC
        // answer and needed to ask contract wallets (EIP-1271) on it.
        let (name, chain_id) = match name.split_once('@') {
            Some((name, id)) => {
                let id = id.trim().parse::<u64>().map_err(|_| {
                    format!("chain {name}: {id:?} after @ is not a chain id (a number, e.g. ethereum@1)")
                })?;
                (name, Some(id))
            }
            None => (name, None),
        };
        let urls = urls
            .split(',')
            .map(|u| {
                url::Url::parse(u.trim())
                    .map_err(|e| format!("chain {name}: an RPC URL is not a URL: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = eligibility::ChainConfig::new(urls);
        config.chain_id = chain_id;
        chains.insert(name.trim().to_owned(), config);
    }
    let config = eligibility::EligibilityConfig { chains };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let Settings {
        config,
        store,
        chains,
        discord,
        sync,
        http_addr,
    } = args.validate()?;
    // Said before connecting, so a forgotten token shows at once.
    if discord.is_none() {
        tracing::warn!("DISCORD_TOKEN is not set: events are applied but no roles are synced");
    }
    if config.public_site.is_none() {
        tracing::warn!(
            "PUBLIC_URL is not set: /link-wallet answers that wallet linking is not set up"
        );
    }
    // Before connecting: a taken or foreign address fails at once.
    let http = listen(http_addr).await?;
    if http.is_some() {
        // Before the Discord client is built: it sets a gauge at once.
        worker::telemetry::install_recorder();
    }
    let store = crate::db_args::connect(store).await?;
    let nats = args.nats.connect(bus::Process::Worker).await?;
    let jetstream = async_nats::jetstream::new(nats);

    let role_sync = match discord {
        Some(token) => {
            let evaluator = eligibility::Evaluator::new(&chains)
                .map_err(|e| anyhow::anyhow!("CHAINS (--chains): {e}"))?;
            // Every worker on this namespace draws from one budget.
            let sharing = worker::discord::Sharing::Nats {
                jetstream: jetstream.clone(),
                topology: config.topology.clone(),
            };
            let discord = worker::discord::Discord::new(
                token.expose(),
                args.discord_api_url.as_deref(),
                config.discord.clone(),
                sharing,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(Arc::new(worker::RoleSync::new(
                store.clone(),
                Arc::new(evaluator),
                discord,
                sync,
            )))
        }
        None => None,
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut worker = worker::Worker::new(config.clone(), jetstream, store, role_sync);
    if let Some(http) = http {
        worker = worker.with_http(http);
    }
    tracing::info!(
        consumer = %config.consumer_name,
        concurrency = config.concurrency,
        community_concurrency = config.community_share(),
        http = ?worker.http_addr(),
        "worker started"
    );
    worker.run(shutdown).await.context("worker stopped")?;
    tracing::info!("worker stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Binds the address of /healthz, /readyz and /metrics.
async fn listen(addr: HttpAddr) -> anyhow::Result<Option<worker::HttpListener>> {
    match addr {
        HttpAddr::Chosen(addr) => worker::HttpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| Labels::of::<WorkerArgs>().get("http_addr")),
        HttpAddr::Default(addr) => match worker::HttpListener::bind(addr).await {
            Ok(listener) => Ok(Some(listener)),
            Err(e) => {
                tracing::warn!(error = %e, "HTTP_ADDR is not set and its default is taken: no /healthz, /readyz or /metrics; set HTTP_ADDR to serve them");
                Ok(None)
            }
        },
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight messages");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn a_chain_may_name_its_chain_id() {
        let config = parse_chains("eth@1=https://rpc.example;test=http://127.0.0.1:8545")
            .expect("valid chains");
        assert_eq!(config.chains["eth"].chain_id, Some(1));
        assert_eq!(config.chains["test"].chain_id, None);
        let err = parse_chains("eth@one=https://rpc.example").expect_err("a bad chain id");
        assert!(err.contains("not a chain id"), "{err}");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    /// The worker's settings from these flags (flags win over the
    /// environment the tests run in).
    fn validated(flags: &[&str]) -> Result<Settings, settings::ConfigErrors> {
        let mut argv = vec!["worker", "--database-url", "postgres://app@127.0.0.1:1/db"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .worker
            .validate()
    }

    #[test]
    fn http_addr_defaults_to_loopback_and_a_bad_one_is_named() {
        let chosen = validated(&["--http-addr", "0.0.0.0:9200"]).expect("valid");
        assert!(
            matches!(chosen.http_addr, HttpAddr::Chosen(a) if a.to_string() == "0.0.0.0:9200"),
            "{:?}",
            chosen.http_addr
        );
        // Blank is unset, as in an env file.
        let blank = validated(&["--http-addr", " "]).expect("valid");
        assert!(
            matches!(blank.http_addr, HttpAddr::Default(a) if a == worker::DEFAULT_HTTP_ADDR),
            "{:?}",
            blank.http_addr
        );
        let e = validated(&["--http-addr", "localhost"])
            .expect_err("a host name is not an address")
            .to_string();
        assert!(e.contains("HTTP_ADDR (--http-addr)"), "{e}");
        assert!(e.contains("\"localhost\" is not an address"), "{e}");

        // What --help promises is what the worker does.
        let help = Cli::try_parse_from(["worker", "--help"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            help.contains(&format!("default: {}", worker::DEFAULT_HTTP_ADDR)),
            "{help}"
        );
    }

    #[tokio::test]
    async fn a_taken_http_addr_fails_only_if_it_was_chosen() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = taken.local_addr().expect("bound");

        let e = listen(HttpAddr::Chosen(addr))
            .await
            .expect_err("the address is taken");
        let text = format!("{e:#}");
        assert!(text.starts_with("HTTP_ADDR (--http-addr): "), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert_eq!(text.matches("in use").count(), 1, "the cause once: {text}");

        let fallback = listen(HttpAddr::Default(addr))
            .await
            .expect("the default being taken is not an error");
        assert!(fallback.is_none());
    }
}
