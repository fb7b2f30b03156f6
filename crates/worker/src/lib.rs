//! Gatehouse's workers: durable JetStream pull consumers that turn Discord
//! events into tenant data.
//!
//! A worker keeps no state a restart would lose. Every message is
//! acknowledged only after the database transaction carrying its effect has
//! committed, and that transaction also records the envelope id, so a
//! redelivered or re-published event is acknowledged without a second
//! effect. Messages that cannot be decoded, or that still fail after a
//! bounded number of attempts, are dead-lettered with the reason instead of
//! blocking the stream.

mod command_limits;
mod config;
mod consumer;
pub mod discord;
mod error;
mod fair_queue;
pub mod handlers;
mod housekeeping;
mod http;
mod role_changes;
pub mod slash_commands;
pub mod telemetry;
mod webhooks;

pub use command_limits::CommandLimits;
pub use config::{Provisioning, WebhookConfig, WorkerConfig};
pub use consumer::Delivery;
pub use error::{HandlerError, WorkerError};
pub use handlers::Handlers;
pub use http::HttpListener;
pub use webhooks::{dispatch_once as dispatch_webhooks, DispatchReport};

/// Role sync as the workers run it: the domain's, writing through Discord.
pub type RoleSync = domain::role_sync::RoleSync<discord::Discord>;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Where `gatehouse worker` serves `/healthz`, `/readyz` and `/metrics`
/// when `HTTP_ADDR` is unset: loopback, as the gateway's default
/// (127.0.0.1:9100), on the next port so that both run on one machine.
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9101);

/// Runs the worker until `shutdown` is cancelled, then finishes in-flight
/// messages and returns. Serves no HTTP; see [`Worker`] for that.
pub async fn run(
    config: WorkerConfig,
    jetstream: async_nats::jetstream::Context,
    store: store::Store,
    role_sync: Option<Arc<RoleSync>>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    Worker::new(config, jetstream, store, role_sync)
        .run(shutdown)
        .await
}

/// A worker about to run, with or without its HTTP endpoints.
pub struct Worker {
    config: WorkerConfig,
    jetstream: async_nats::jetstream::Context,
    store: store::Store,
    role_sync: Option<Arc<RoleSync>>,
    http: Option<HttpListener>,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        jetstream: async_nats::jetstream::Context,
        store: store::Store,
        role_sync: Option<Arc<RoleSync>>,
    ) -> Worker {
        Worker {
            config,
            jetstream,
            store,
            role_sync,
            http: None,
        }
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `listener` while the
    /// worker runs, and installs the process's Prometheus recorder unless
    /// it has one already.
    pub fn with_http(mut self, listener: HttpListener) -> Worker {
        telemetry::install_recorder();
        self.http = Some(listener);
        self
    }

    /// The address of the HTTP endpoints, if served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpListener::local_addr)
    }

    /// Runs until `shutdown` is cancelled, then finishes in-flight messages
    /// and returns. The HTTP endpoints stop with `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker {
            config,
            jetstream,
            store,
            role_sync,
            http,
        } = self;
        config.validate()?;
        telemetry::observe_pool_waits(&store);
        // Every task lives in this set, the HTTP server too: dropping the
        // worker's future (a killed worker, in tests) ends them all.
        let mut tasks = tokio::task::JoinSet::new();
        let readiness = Arc::new(http::Readiness::new(
            jetstream.client(),
            store.clone(),
            shutdown.clone(),
        ));
        if let Some(listener) = http {
            // Up before the streams are ensured: live (and saying why it is
            // not ready) while it waits for NATS.
            tasks.spawn(http::serve(listener, readiness.clone(), shutdown.clone()));
        }
        bus::ensure_streams(&jetstream, &config.topology).await?;
        let handlers = Arc::new(
            Handlers::new(
                store.clone(),
                jetstream.clone(),
                config.namespace().clone(),
                role_sync.clone(),
                config.public_site.clone(),
            )
            .with_command_limits(&config.commands)
            .with_follow_ups((config.concurrency / 4).max(1))
            .with_provisioning(config.provisioning.clone())
            .with_shutdown(shutdown.clone()),
        );
        if let Some(keep) = housekeeping::dedupe_horizon(&config.topology) {
            tasks.spawn(housekeeping::prune_processed_events(
                store.background(),
                keep,
                config.prune_interval,
                shutdown.clone(),
            ));
        }
        if let Some(retention) = config.audit_retention {
            tasks.spawn(housekeeping::prune_audit(
                store.background(),
                retention,
                config.prune_interval,
                shutdown.clone(),
            ));
        }
        let syncs_roles = role_sync.is_some();
        if let Some(sync) = role_sync {
            tasks.spawn(periodic_rechecks(sync, shutdown.clone()));
        }
        // Without Discord a worker could only acknowledge and drop eligibility
        // checks that its peers could have handled: it leaves that stream alone.
        let streams = [
            Some(wire::subjects::EVENTS),
            Some(wire::subjects::COMMANDS),
            syncs_roles.then_some(wire::subjects::ELIGIBILITY),
        ];
        // Each bound consumer, for the backlog gauges.
        let mut bound = Vec::with_capacity(4);
        for stream in streams.into_iter().flatten() {
            let consumer =
                bus::ensure_consumer(&jetstream, config.namespace(), &stream, &config.consumer())
                    .await?;
            let label = telemetry::stream_label(stream);
            bound.push((label, consumer.clone()));
            // Guild and membership events change what later ones find; a
            // community's member checks go best together (see `Order`).
            let order = if stream.name == wire::subjects::EVENTS.name {
                consumer::Order::PerCommunity
            } else if stream.name == wire::subjects::ELIGIBILITY.name {
                consumer::Order::OneBatch
            } else {
                consumer::Order::Any
            };
            tasks.spawn(consumer::consume(
                consumer,
                label,
                jetstream.clone(),
                handlers.clone(),
                config.clone(),
                order,
                shutdown.clone(),
            ));
        }
        let sender = Arc::new(webhooks::WebhookSender::new(
            store.clone(),
            config.namespace().clone(),
            &config,
        )?);
        let consumer = bus::ensure_consumer(
            &jetstream,
            config.namespace(),
            &wire::subjects::WEBHOOKS,
            &config.consumer(),
        )
        .await?;
        let label = telemetry::stream_label(wire::subjects::WEBHOOKS);
        bound.push((label, consumer.clone()));
        tasks.spawn(consumer::consume(
            consumer,
            label,
            jetstream.clone(),
            sender,
            config.clone(),
            consumer::Order::Any,
            shutdown.clone(),
        ));
        tasks.spawn(webhooks::dispatch_loop(
            store.clone(),
            jetstream.clone(),
            config.namespace().clone(),
            config.webhooks.dispatch_interval,
            shutdown.clone(),
        ));
        readiness.consumers_bound();
        tasks.spawn(telemetry::sample(bound, store.clone(), shutdown.clone()));
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined
                .map_err(|e| WorkerError::Task(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = outcome {
                // One consumer failing stops the others: a half-working worker
                // is harder to notice than one that exits.
                shutdown.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        // The last batches' checks and badges: best effort, briefly.
        handlers.finish(std::time::Duration::from_secs(5)).await;
        // Acks and NAKs are buffered by the client: send the last ones before
        // the process goes, or their messages come back after `ack_wait`.
        if let Err(e) = jetstream.client().flush().await {
            tracing::warn!(error = %e, "could not flush the last acknowledgements; their messages will be redelivered");
        }
        result
    }
}

/// Every `scan_interval`, re-check the members whose turn has come. Errors
/// are logged and the next tick tries again: a database or chain outage must
/// not stop the worker.
async fn periodic_rechecks(
    sync: Arc<RoleSync>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let mut tick = tokio::time::interval(sync.scan_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // Stopping abandons a pass midway rather than waiting for it: a pass
        // over a big backlog lasts as long as Discord's limits make its role
        // changes take (minutes for a newly synced server), far past any
        // shutdown grace. That is safe: members are claimed for a short
        // while only, so those not reached are due again soon, for a peer
        // or a successor; a check cut off midway is what a crash leaves,
        // and the next check of that member repairs it.
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            outcome = sync.scan_due() => outcome,
        };
        match outcome {
            Ok(report) if report.members > 0 => {
                tracing::info!(
                    members = report.members,
                    granted = report.granted,
                    removed = report.removed,
                    badges = report.badges_awarded,
                    "periodic re-check"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "periodic re-check failed; retrying next tick"),
        }
    }
}
