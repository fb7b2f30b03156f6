//! Gatehouse's gateway: Twilight shards → `wire` envelopes → NATS JetStream.
//!
//! [`Gateway::start`] resolves the shards this process owns, connects to
//! NATS, ensures the streams, starts the health/metrics HTTP server and one
//! task per shard. [`Gateway::shutdown`] (or a fatal close code) stops reading
//! the shards, closes them resumably, flushes in-flight publishes and stores
//! each shard's session for the next process, all within the configured
//! shutdown budget. See `docs/gateway.md`.

pub mod admission;
pub mod checkpoint;
pub mod config;
mod discord_api;
mod error;
mod http;
pub mod identify;
pub mod leases;
mod member_requests;
pub mod metrics;
mod outbox;
pub mod progress;
mod publisher;
pub mod sessions;
mod shard_runner;
pub mod status;
pub mod translate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use twilight_gateway::queue::InMemoryQueue;

pub use config::{ConfigError, GatewayConfig, Settings, ShardRange, Token};
pub use error::{is_fatal_close, GatewayError};
use identify::FleetQueue;
use leases::{Leases, Wanted};
pub use publisher::PublishReport;
pub use sessions::StoredSession;
pub use status::{Readiness, ShardPhase, Status};

use progress::ShardProgress;
use publisher::Publisher;
use sessions::SessionStore;
use shard_runner::{ShardExit, ShardRunner, ShardSetup};

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub shards: ShardRange,
    pub total_shards: u32,
    pub publish: PublishReport,
    /// Shards whose session was stored for the next process.
    pub sessions_saved: usize,
}

/// A running gateway.
pub struct Gateway {
    http_addr: SocketAddr,
    status: Arc<Status>,
    shards: ShardRange,
    total_shards: u32,
    stop: Arc<watch::Sender<bool>>,
    task: JoinHandle<Result<Summary, GatewayError>>,
}

/// Time kept back from the shutdown budget for storing sessions and exiting.
const SAVE_RESERVE: Duration = Duration::from_millis(1500);

impl Gateway {
    /// Connects everything, takes the leases of the shards it may run and
    /// starts them. Errors here are configuration or connectivity problems,
    /// each naming its setting.
    pub async fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        // rustls needs a process-wide crypto provider for wss:// and https://;
        // ring is the one async-nats builds. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        metrics::install();

        let bot = if discord_api::needed(&config) {
            match discord_api::gateway_bot(&config.token, config.api_proxy.as_ref()).await {
                Ok(info) => Some(info),
                Err(e @ GatewayError::TokenRejected { .. }) => return Err(e),
                Err(e) if config.total_shards.is_none() => return Err(e),
                Err(error) => {
                    tracing::warn!(%error, "cannot read identify limits; identifying one shard at a time every 5 s");
                    None
                }
            }
        } else {
            None
        };
        let total_shards = config
            .total_shards
            .or(bot.as_ref().map(|b| b.shards))
            .unwrap_or(1)
            .max(1);
        let (shards, wanted) = resolve_shards(&config, total_shards)?;
        let gateway_url = config
            .gateway_url
            .clone()
            .or_else(|| bot.as_ref().map(|b| b.url.trim_end_matches('/').to_owned()));
        let local_queue = match (config.identify_queue, &bot) {
            (config::IdentifyQueue::Unlimited, _) => {
                InMemoryQueue::new(0, 1000, Duration::from_secs(86_400), 1000)
            }
            (config::IdentifyQueue::Discord, Some(bot)) => {
                let limit = &bot.session_start_limit;
                InMemoryQueue::new(
                    limit.max_concurrency.max(1),
                    limit.remaining.min(limit.total),
                    Duration::from_millis(limit.reset_after),
                    limit.total,
                )
            }
            (config::IdentifyQueue::Discord, None) => InMemoryQueue::default(),
        };

        let status = Arc::new(Status::new(shards.ids()));
        ::metrics::gauge!(metrics::SHARDS_TOTAL).set(f64::from(total_shards));
        ::metrics::gauge!(metrics::SHARDS_HELD).set(0.0);
        let client = connect_nats(&config, Arc::clone(&status)).await?;
        status.set_nats_connected(true);
        let admin = jetstream::new(client.clone());
        bus::ensure_streams(&admin, &config.topology).await?;
        let sessions = SessionStore::open(&admin, &config.topology).await?;
        let holder = leases::holder_name();
        let queue = match config.identify_queue {
            config::IdentifyQueue::Unlimited => FleetQueue::local(local_queue),
            config::IdentifyQueue::Discord => FleetQueue::shared(
                local_queue,
                sessions.store().clone(),
                holder.clone(),
                bot.as_ref()
                    .map_or(1, |b| u32::from(b.session_start_limit.max_concurrency)),
                bot.as_ref().map_or(
                    // Unknown: Discord's usual daily 1000, counted from now.
                    identify::StartLimit {
                        remaining: 1000,
                        reset_at_ms: now_ms() + 86_400_000,
                    },
                    |b| identify::StartLimit {
                        remaining: b.session_start_limit.remaining,
                        reset_at_ms: now_ms()
                            + i64::try_from(b.session_start_limit.reset_after).unwrap_or(0),
                    },
                ),
            ),
        };
        let mut leases = Leases::new(
            sessions.store().clone(),
            sessions.bucket().to_owned(),
            holder,
            config.lease_ttl,
            total_shards,
            wanted,
        );
        let publishing = publishing_context(
            client.clone(),
            config.publish_window,
            config.publish_ack_timeout,
        );

        let stop = Arc::new(watch::Sender::new(false));
        let (http_addr, http_task) =
            http::serve(config.http_addr, Arc::clone(&status), stop.subscribe()).await?;

        let (jobs_tx, jobs_rx) = mpsc::channel(config.publish_buffer);
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let publisher = Publisher {
            jetstream: publishing,
            window: config.publish_window,
        };
        let publisher_task = tokio::spawn(publisher.run(jobs_rx, abandon_rx));
        let running = Running::default();
        let checkpoint_task = tokio::spawn(checkpoint::run(
            running.clone(),
            leases.clock(),
            sessions.clone(),
            total_shards,
            stop.subscribe(),
        ));

        let mut fleet = Fleet {
            factory: ShardFactory {
                total: total_shards,
                token: config.token.clone(),
                intents: config.intents,
                gateway_url,
                queue,
                subject_prefix: config.topology.namespace.subject(""),
                jobs: jobs_tx,
                status: Arc::clone(&status),
                sessions: sessions.clone(),
                admission: config.admission,
            },
            running,
            shards: HashMap::new(),
            runners: JoinSet::new(),
            waiting: Vec::new(),
        };
        // The first look happens before start returns, so that a process
        // that may run shards is running them (or knows they are elsewhere)
        // by the time its caller looks at /readyz.
        let first = leases.tick(true).await;
        for shard_id in first.acquired {
            fleet.start(shard_id).await;
        }

        tracing::info!(
            shards = %shards,
            total_shards,
            held = fleet.shards.len(),
            holder = leases.holder(),
            http = %http_addr,
            nats = %config.nats.redacted_url(),
            "gateway started"
        );
        let task = tokio::spawn(supervise(Supervised {
            shards,
            total_shards,
            shutdown_timeout: config.shutdown_timeout,
            stop: Arc::clone(&stop),
            status: Arc::clone(&status),
            fleet,
            leases,
            publisher_task,
            checkpoint_task,
            abandon_tx,
            sessions,
            client,
            http_task,
        }));
        Ok(Self {
            http_addr,
            status,
            shards,
            total_shards,
            stop,
            task,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    pub fn shards(&self) -> ShardRange {
        self.shards
    }

    pub fn total_shards(&self) -> u32 {
        self.total_shards
    }

    /// Asks the gateway to stop; [`Gateway::wait`] returns when it has.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A handle that can stop the gateway from another task (a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.stop))
    }

    /// Waits until the gateway stops (after [`Gateway::stop`], or on its own
    /// after a fatal close code).
    pub async fn wait(&mut self) -> Result<Summary, GatewayError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(GatewayError::Internal(format!(
                "the gateway supervisor failed: {join}"
            ))),
        }
    }

    /// Stops and waits.
    pub async fn shutdown(mut self) -> Result<Summary, GatewayError> {
        self.stop();
        self.wait().await
    }
}

/// Stops a [`Gateway`] from elsewhere; cheap to clone.
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The JetStream context envelopes are published through: up to `window`
/// publishes awaiting their ack (the publisher's own window, plus a margin
/// so that it never trips async-nats' limit), waiting rather than failing
/// beyond that. Public so that `gatehouse bench gateway`'s bare publisher
/// runs with exactly the gateway's settings.
pub fn publishing_context(
    client: async_nats::Client,
    window: usize,
    ack_timeout: Duration,
) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(ack_timeout)
        .max_ack_inflight(window + 16)
        .backpressure_on_inflight(true)
        .build(client)
}

async fn connect_nats(
    config: &GatewayConfig,
    status: Arc<Status>,
) -> Result<async_nats::Client, GatewayError> {
    let options = config
        .nats
        .options(bus::Process::Gateway)
        .max_reconnects(None)
        // Reconnect quickly: every second without NATS is a second of
        // events piling up in the buffer.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).clamp(100, 1000))
        })
        .event_callback(move |event| {
            let status = Arc::clone(&status);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected");
                        status.set_nats_connected(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; publishes wait and retry");
                        status.set_nats_connected(false);
                    }
                    async_nats::Event::Closed => status.set_nats_connected(false),
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        });
    Ok(config.nats.connect_with(options).await?)
}

/// Which shards this process may run (for `/readyz` and the summary) and
/// what it asks the leases for. A pool's range is cut to the total; a
/// `SHARD_COUNT` process may run any shard.
fn resolve_shards(
    config: &GatewayConfig,
    total_shards: u32,
) -> Result<(ShardRange, Wanted), GatewayError> {
    let all = ShardRange {
        first: 0,
        last: total_shards - 1,
    };
    if let Some(count) = config.shard_count {
        return Ok((all, Wanted::Count(count)));
    }
    let range = match (config.shards, config.pool) {
        (None, _) => all,
        (Some(range), Some(pool)) => {
            if range.first >= total_shards {
                return Err(ConfigError {
                    setting: "POOL_ID".into(),
                    problem: format!(
                        "pool {pool} starts at shard {} but the bot has {total_shards} shard(s); use a smaller POOL_ID or fewer SHARDS_PER_POOL",
                        range.first
                    ),
                }
                .into());
            }
            ShardRange {
                first: range.first,
                last: range.last.min(total_shards - 1),
            }
        }
        (Some(range), None) => {
            if range.last >= total_shards {
                return Err(ConfigError {
                    setting: "SHARDS".into(),
                    problem: format!(
                        "range {range} goes beyond the {total_shards} shard(s) Discord recommends; set TOTAL_SHARDS or a smaller range"
                    ),
                }
                .into());
            }
            range
        }
    };
    Ok((range, Wanted::Range(range)))
}

/// The shards running in this process and their progress, shared with the
/// session checkpoints.
#[derive(Clone, Default)]
pub(crate) struct Running(Arc<std::sync::Mutex<HashMap<u32, Arc<ShardProgress>>>>);

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<ShardProgress>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> Vec<(u32, Arc<ShardProgress>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (*k, Arc::clone(v)))
            .collect()
    }

    fn insert(&self, shard_id: u32, progress: Arc<ShardProgress>) {
        self.lock().insert(shard_id, progress);
    }

    fn remove(&self, shard_id: u32) -> Option<Arc<ShardProgress>> {
        self.lock().remove(&shard_id)
    }
}

/// What every shard of this process is built from.
struct ShardFactory {
    total: u32,
    token: Token,
    intents: twilight_model::gateway::Intents,
    gateway_url: Option<String>,
    queue: FleetQueue,
    subject_prefix: String,
    jobs: mpsc::Sender<publisher::Job>,
    status: Arc<Status>,
    sessions: SessionStore,
    admission: admission::Limits,
}

/// A shard running here.
struct RunningShard {
    stop: watch::Sender<bool>,
    /// Set when its lease was lost: it stops without its session being
    /// stored (the new holder stores its own).
    lost: bool,
}

/// The shards of this process, started and stopped as leases come and go.
struct Fleet {
    factory: ShardFactory,
    running: Running,
    shards: HashMap<u32, RunningShard>,
    runners: JoinSet<(u32, ShardExit)>,
    /// Acquired again while the previous runner of the same shard was still
    /// closing: started once it has.
    waiting: Vec<u32>,
}

impl Fleet {
    /// Starts a shard whose lease was just taken, resuming its stored
    /// session if there is one.
    async fn start(&mut self, shard_id: u32) {
        if self.shards.contains_key(&shard_id) {
            self.waiting.push(shard_id);
            return;
        }
        let f = &self.factory;
        let resume = match f.sessions.take(shard_id, f.total).await {
            Ok(resume) => resume,
            Err(error) => {
                tracing::warn!(shard = shard_id, %error, "cannot read the stored session; identifying afresh");
                None
            }
        };
        let progress = Arc::new(match &resume {
            Some(stored) => {
                tracing::info!(
                    shard = shard_id,
                    sequence = stored.sequence,
                    "resuming the stored session"
                );
                ShardProgress::resuming(
                    stored.session_id.clone(),
                    stored.sequence,
                    stored.resume_url.clone(),
                )
            }
            None => {
                tracing::info!(shard = shard_id, "no stored session; identifying");
                ShardProgress::default()
            }
        });
        let shard = shard_runner::build(ShardSetup {
            shard_id,
            total: f.total,
            token: f.token.clone(),
            intents: f.intents,
            gateway_url: f.gateway_url.clone(),
            queue: f.queue.clone(),
            resume,
        });
        let runner = ShardRunner {
            shard,
            progress: Arc::clone(&progress),
            jobs: f.jobs.clone(),
            status: Arc::clone(&f.status),
            subject_prefix: f.subject_prefix.clone(),
            last_session: None,
            last_resume_url: None,
            subjects: Vec::new(),
            received: metrics::CountersByType::default(),
            admission: admission::Admission::new(f.admission, std::time::Instant::now()),
            flood: shard_runner::FloodReport::new(shard_id),
        };
        f.status.set_held(shard_id, true);
        self.running.insert(shard_id, progress);
        let (stop, stop_rx) = watch::channel(false);
        self.shards
            .insert(shard_id, RunningShard { stop, lost: false });
        self.runners
            .spawn(async move { (shard_id, runner.run(stop_rx).await) });
    }

    /// Stops a shard whose lease was lost. It closes resumably, so the new
    /// holder resumes its session; nothing of it is stored from here.
    fn lose(&mut self, shard_id: u32) {
        self.running.remove(shard_id);
        self.waiting.retain(|id| *id != shard_id);
        if let Some(shard) = self.shards.get_mut(&shard_id) {
            shard.lost = true;
            shard.stop.send_replace(true);
        }
        self.factory.status.set_held(shard_id, false);
    }

    fn stop_all(&mut self) {
        self.waiting.clear();
        for shard in self.shards.values() {
            shard.stop.send_replace(true);
        }
    }

    /// A runner ended: forget it, and start the shard again if its lease
    /// was taken back meanwhile.
    async fn ended(&mut self, shard_id: u32, stopping: bool) -> bool {
        let lost = self.shards.remove(&shard_id).is_some_and(|s| s.lost);
        if let Some(at) = self.waiting.iter().position(|id| *id == shard_id) {
            self.waiting.remove(at);
            if !stopping {
                self.start(shard_id).await;
            }
        }
        lost
    }
}

struct Supervised {
    shards: ShardRange,
    total_shards: u32,
    shutdown_timeout: Duration,
    stop: Arc<watch::Sender<bool>>,
    status: Arc<Status>,
    fleet: Fleet,
    leases: Leases,
    publisher_task: JoinHandle<PublishReport>,
    /// Ends once the stop is signalled; awaited before the final save.
    checkpoint_task: JoinHandle<()>,
    abandon_tx: watch::Sender<bool>,
    sessions: SessionStore,
    client: async_nats::Client,
    http_task: JoinHandle<()>,
}

/// Runs the shards as their leases come and go until a stop request or a
/// fatal close, then shuts down in order: shards stop and close resumably,
/// publishes flush, sessions are stored, leases are handed over.
async fn supervise(mut s: Supervised) -> Result<Summary, GatewayError> {
    let mut fatal: Option<GatewayError> = None;
    let mut resume_urls: HashMap<u32, Option<String>> = HashMap::new();
    let mut stop_rx = s.stop.subscribe();
    let mut look = tokio::time::interval(s.leases.look_every());
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    look.reset();
    loop {
        tokio::select! {
            biased;
            // Mapped to (): the watch guard must not live across the arms' awaits.
            () = async { let _ = stop_rx.wait_for(|stop| *stop).await; } => break,
            joined = s.fleet.runners.join_next(), if !s.fleet.runners.is_empty() => match joined {
                Some(Ok((shard_id, ShardExit::Fatal { code }))) => {
                    fatal = Some(GatewayError::fatal_close(shard_id, s.total_shards, code));
                    break;
                }
                Some(Ok((shard_id, ShardExit::Stopped { .. }))) => {
                    s.fleet.ended(shard_id, false).await;
                }
                Some(Err(join)) => {
                    fatal = Some(GatewayError::Internal(format!("a shard task failed: {join}")));
                    break;
                }
                None => {}
            },
            _ = look.tick() => {
                let changes = s.leases.tick(true).await;
                for shard_id in changes.lost {
                    s.fleet.lose(shard_id);
                }
                for shard_id in changes.acquired {
                    s.fleet.start(shard_id).await;
                }
            }
        }
    }
    let started = Instant::now();
    let deadline = started + s.shutdown_timeout;
    let flush_deadline = deadline - SAVE_RESERVE.min(s.shutdown_timeout / 2);
    tracing::info!("stopping: closing shards resumably and flushing publishes");
    s.status.set_stopping();
    s.stop.send_replace(true);
    s.fleet.stop_all();
    // Only the shards (and the factory) hold senders: when they are gone the
    // publisher knows nothing more will come and finishes once flushed.
    let (closed_jobs, _) = mpsc::channel(1);
    drop(std::mem::replace(&mut s.fleet.factory.jobs, closed_jobs));

    // Leases are renewed (never taken) until the sessions are stored: a
    // shutdown longer than the lease TTL must not let another process take
    // a shard whose final session is still to come.
    loop {
        tokio::select! {
            joined = tokio::time::timeout_at(flush_deadline, s.fleet.runners.join_next()) => match joined {
                Ok(Some(Ok((shard_id, ShardExit::Stopped { resume_url })))) => {
                    if !s.fleet.ended(shard_id, true).await {
                        resume_urls.insert(shard_id, resume_url);
                    }
                }
                Ok(Some(Ok((shard_id, ShardExit::Fatal { code })))) => {
                    s.fleet.ended(shard_id, true).await;
                    if fatal.is_none() {
                        fatal = Some(GatewayError::fatal_close(shard_id, s.total_shards, code));
                    }
                }
                Ok(Some(Err(join))) => tracing::error!(error = %join, "a shard task failed"),
                Ok(None) | Err(_) => break,
            },
            _ = look.tick() => {
                for shard_id in s.leases.tick(false).await.lost {
                    s.fleet.lose(shard_id);
                }
            }
        }
    }
    // Shards that did not finish in time hold job senders; abort them so
    // the publisher can see the end of its input.
    s.fleet.runners.abort_all();

    let publish = match tokio::time::timeout_at(flush_deadline, &mut s.publisher_task).await {
        Ok(report) => report.unwrap_or_default(),
        Err(_) => {
            s.abandon_tx.send_replace(true);
            (&mut s.publisher_task).await.unwrap_or_default()
        }
    };

    // No checkpoint may land after (and so over) the final save below.
    if tokio::time::timeout_at(deadline, &mut s.checkpoint_task)
        .await
        .is_err()
    {
        s.checkpoint_task.abort();
    }
    let mut sessions_saved = 0;
    for (shard_id, progress) in s.fleet.running.snapshot() {
        // A shard whose lease was lost meanwhile belongs to its new holder.
        if !s.leases.holds(shard_id) {
            continue;
        }
        let Some(point) = progress.safe_point() else {
            continue;
        };
        let stored = StoredSession {
            session_id: point.session_id,
            sequence: point.sequence,
            resume_url: resume_urls
                .get(&shard_id)
                .cloned()
                .flatten()
                .or(point.resume_url),
            saved_at: now_ms(),
        };
        let save = s.sessions.save(shard_id, s.total_shards, &stored);
        match tokio::time::timeout_at(deadline, save).await {
            Ok(Ok(())) => {
                sessions_saved += 1;
                tracing::info!(
                    shard = shard_id,
                    sequence = stored.sequence,
                    "session stored for the next process"
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(shard = shard_id, %error, "session not stored; the next process identifies afresh");
            }
            Err(_) => {
                tracing::warn!(
                    shard = shard_id,
                    "no time left to store the session; the next process identifies afresh"
                );
            }
        }
    }
    // Then the shards are handed over: a waiting process takes them at its
    // next look and resumes the sessions just stored.
    let handed_over: usize = tokio::time::timeout_at(deadline, s.leases.release_all())
        .await
        .unwrap_or_default();
    for shard_id in s.shards.ids() {
        s.status.set_held(shard_id, false);
    }
    let _ = tokio::time::timeout_at(deadline, s.client.flush()).await;
    let _ = tokio::time::timeout_at(deadline, &mut s.http_task).await;
    tracing::info!(
        published = publish.published,
        unacknowledged = publish.abandoned,
        sessions_saved,
        handed_over,
        took_ms = started.elapsed().as_millis() as u64,
        "gateway stopped"
    );
    match fatal {
        Some(error) => Err(error),
        None => Ok(Summary {
            shards: s.shards,
            total_shards: s.total_shards,
            publish,
            sessions_saved,
        }),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
