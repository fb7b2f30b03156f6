//! The worker's Prometheus metrics: the names this module owns, the
//! recorder behind `/metrics`, and the gauges sampled on a timer (consumer
//! backlog, the database pool) rather than per message; waits for a
//! database connection are recorded as they end.
//!
//! Names are stable: dashboards and alerts use them. Every label comes from
//! a fixed set (stream, subject, outcome, reason class, status class), never
//! from a community, guild or user id: a label per tenant would make a
//! series per tenant, thousands of them.
//!
//! The `metrics` facade has one recorder per process, so the Prometheus
//! recorder is installed once and shared by every worker in the process
//! (tests run several). A program that installed a recorder of its own
//! first (the demo runs a gateway, whose recorder it is) gets the worker's
//! metrics there, and the worker's `/metrics` says so.

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use bus::Namespace;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use wire::subjects::{self, StreamSpec};

use crate::WorkerError;

/// Messages settled, by `stream` and `outcome` (`ok`, `retry`,
/// `dead_letter`).
pub const MESSAGES: &str = "worker_messages_total";
/// Time from a handler starting on a message to its outcome, by `subject`
/// (the event type). Messages handled in one batch each count the batch's
/// time: that is how long each waited for its outcome.
pub const HANDLER_SECONDS: &str = "worker_handler_seconds";
/// Time from JetStream storing a message to this worker receiving it, by
/// `stream`: its wait in the stream (a backlog, a deferral for fairness, a
/// retry's delay) and in delivery. Read against the NATS server's clock, so
/// it assumes the hosts' clocks agree.
pub const DELIVERY_SECONDS: &str = "worker_delivery_seconds";
/// Time from this worker receiving a message to a handler starting on it,
/// by `stream`: its wait in the worker's per-community queues. With
/// [`DELIVERY_SECONDS`] and [`HANDLER_SECONDS`], where a slow message spent
/// its time.
pub const QUEUED_SECONDS: &str = "worker_queued_seconds";
/// Messages dead-lettered, by `stream` and `reason`: `permanent` (the
/// message itself is wrong) or `attempts_exhausted` (it kept failing).
pub const DEAD_LETTERS: &str = "worker_dead_letters_total";
/// Messages in the stream not yet delivered to the durable consumer, by
/// `stream`: the backlog. The same for every worker sharing the consumer.
pub const CONSUMER_PENDING: &str = "worker_consumer_pending";
/// Messages delivered and not yet acknowledged, by `stream` (in flight,
/// held for fairness, or waiting out a retry delay), across all workers.
pub const CONSUMER_ACK_PENDING: &str = "worker_consumer_ack_pending";
/// Database connections open in this process's pool.
pub const DB_POOL_CONNECTIONS: &str = "worker_db_pool_connections";
/// Of those, the idle ones.
pub const DB_POOL_IDLE: &str = "worker_db_pool_idle_connections";
/// The most connections the pool opens (`DATABASE_POOL_SIZE`).
pub const DB_POOL_MAX: &str = "worker_db_pool_max_connections";
/// Connections asked of the pool (each transaction, each directory call).
pub const DB_POOL_ACQUIRES: &str = "worker_db_pool_acquires_total";
/// Of those, the ones that found every connection in use and waited for
/// one: the pool is too small for the work (or the database too slow).
pub const DB_POOL_WAITS: &str = "worker_db_pool_waits_total";
/// How long each of those waits lasted, up to `DATABASE_ACQUIRE_TIMEOUT`
/// (a wait that ran out is recorded too). A connection taken at once is
/// not recorded: `_count` is the number of waits.
pub const DB_POOL_WAIT_SECONDS: &str = "worker_db_pool_wait_seconds";
/// Discord's answers, by `request` (`role_change`) and `class` (`2xx`,
/// `429`, `4xx`, `5xx`, …, or `unreachable` when none came). A 429 (rate
/// limited) is a class of its own, the one alerts watch; `4xx` is every
/// other client error. `worker_discord_invalid_requests_total` has the
/// 401, 403 and 429s that count towards Discord's ban, by status.
pub const DISCORD_RESPONSES: &str = "worker_discord_responses_total";
/// Messages handled together in one batch (recorded by the handlers).
pub const BATCH_MESSAGES: &str = "worker_batch_messages";

/// How often the consumers' backlog and the pool are sampled. Consumer
/// info is a request to JetStream per stream: every few seconds per worker
/// is plenty for a gauge that is scraped every 15–60 s.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// From a sub-millisecond duplicate skip to a batch waiting on Discord's
/// per-server limit for many seconds.
const HANDLER_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// From a connection returned a moment later to the acquire timeout (5 s
/// by default) and beyond.
const DB_POOL_WAIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Up to the consumer's largest batch (64).
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// The event types a `subject` label may take; anything else is `other`.
const SUBJECTS: [&str; 10] = [
    subjects::GUILD_JOIN,
    subjects::GUILD_LEAVE,
    subjects::GUILD_UNAVAILABLE,
    subjects::MEMBER_JOIN,
    subjects::MEMBER_LEAVE,
    subjects::MEMBER_UPDATE,
    subjects::MEMBER_CHUNK,
    subjects::INTERACTION,
    subjects::ELIGIBILITY_CHECK,
    subjects::WEBHOOK_DELIVER,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder behind the worker's `/metrics` unless
/// this process already has one; `false` if another recorder got there
/// first. [`Worker::with_http`](crate::Worker::with_http) does this too,
/// but a program should do it before it builds anything that records: a
/// gauge set once at construction (`worker_discord_budget_shared`, by the
/// Discord client) is lost if it was set before the recorder existed.
pub fn install_recorder() -> bool {
    install().is_some()
}

fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HANDLER_SECONDS.to_owned()), &HANDLER_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_MESSAGES.to_owned()), &BATCH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_SECONDS.to_owned()),
                        &HANDLER_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(QUEUED_SECONDS.to_owned()),
                        &HANDLER_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DB_POOL_WAIT_SECONDS.to_owned()),
                        &DB_POOL_WAIT_BUCKETS,
                    )
                });
            let installed = builder.and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the worker's metrics recorder is not installed (the process has another); /metrics will say so");
                    None
                }
            }
        })
        .as_ref()
}

/// The Prometheus text exposition `/metrics` serves, or `None` if the
/// recorder is another's (or not installed). Public for programs that run a
/// worker in process and want its figures without serving HTTP (`gatehouse
/// bench fairness --worker-metrics`).
pub fn render() -> Option<String> {
    let handle = HANDLE.get().and_then(Option::as_ref)?;
    // Without upkeep, histogram samples pile up until a render drains them.
    handle.run_upkeep();
    Some(handle.render())
}

/// The `stream` and `subject` labels of a message on `subject` (as
/// published, in `namespace`).
pub(crate) fn labels(namespace: &Namespace, subject: &str) -> (&'static str, &'static str) {
    let Some(contract) = namespace.strip(subject) else {
        return ("other", "other");
    };
    let stream = subjects::stream_for(contract).map_or("other", stream_label);
    let kind = SUBJECTS
        .into_iter()
        .find(|known| *known == contract)
        .unwrap_or("other");
    (stream, kind)
}

/// A stream's `stream` label: its contract name, lower case.
pub(crate) fn stream_label(spec: StreamSpec) -> &'static str {
    [
        (subjects::EVENTS, "events"),
        (subjects::COMMANDS, "commands"),
        (subjects::ELIGIBILITY, "eligibility"),
        (subjects::WEBHOOKS, "webhooks"),
        (subjects::DEAD_LETTER, "dead_letter"),
    ]
    .into_iter()
    .find(|(known, _)| known.name == spec.name)
    .map_or("other", |(_, label)| label)
}

/// The `class` label of an HTTP status.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        // Rate limited: the answer that matters most, kept apart.
        429 => "429",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Has `store` record each wait for a connection in
/// [`DB_POOL_WAIT_SECONDS`] as it ends. Several workers sharing one store
/// (tests) share its one observer, this same function.
pub(crate) fn observe_pool_waits(store: &store::Store) {
    fn record(waited: Duration) {
        metrics::histogram!(DB_POOL_WAIT_SECONDS).record(waited.as_secs_f64());
    }
    store.observe_pool_waits(record);
}

/// Every [`SAMPLE_EVERY`], until `shutdown`: each consumer's backlog and
/// the database pool's state, as gauges, and its acquisitions and waits as
/// counters.
pub(crate) async fn sample(
    consumers: Vec<(&'static str, PullConsumer)>,
    store: store::Store,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    metrics::gauge!(DB_POOL_MAX).set(store.config().pool_size as f64);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Warned once per outage, not every tick of it.
    let mut failing = vec![false; consumers.len()];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let (open, idle) = store.pool_status();
        metrics::gauge!(DB_POOL_CONNECTIONS).set(open as f64);
        metrics::gauge!(DB_POOL_IDLE).set(idle as f64);
        // The store counts since it was built; a counter never goes back.
        let waits = store.pool_waits();
        metrics::counter!(DB_POOL_ACQUIRES).absolute(waits.acquisitions);
        metrics::counter!(DB_POOL_WAITS).absolute(waits.waits);
        for ((stream, consumer), failing) in consumers.iter().zip(failing.iter_mut()) {
            let info = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                info = consumer.get_info() => info,
            };
            match info {
                Ok(info) => {
                    metrics::gauge!(CONSUMER_PENDING, "stream" => *stream)
                        .set(info.num_pending as f64);
                    metrics::gauge!(CONSUMER_ACK_PENDING, "stream" => *stream)
                        .set(info.num_ack_pending as f64);
                    if *failing {
                        tracing::info!(stream, "reading the consumer's backlog again");
                    }
                    *failing = false;
                }
                Err(e) => {
                    if !*failing {
                        tracing::warn!(stream, error = %e, "cannot read the consumer's backlog; its gauges keep their last value until it can");
                    }
                    *failing = true;
                }
            }
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        MESSAGES,
        "Messages settled, by stream and outcome (ok, retry, dead_letter)"
    );
    describe_histogram!(
        HANDLER_SECONDS,
        Unit::Seconds,
        "Time from a handler starting on a message to its outcome, by subject"
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from JetStream storing a message to this worker receiving it, by stream"
    );
    describe_histogram!(
        QUEUED_SECONDS,
        Unit::Seconds,
        "Time from this worker receiving a message to a handler starting on it, by stream"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Messages dead-lettered, by stream and reason (permanent, attempts_exhausted)"
    );
    describe_gauge!(
        CONSUMER_PENDING,
        "Messages not yet delivered to the durable consumer, by stream"
    );
    describe_gauge!(
        CONSUMER_ACK_PENDING,
        "Messages delivered and not yet acknowledged, by stream"
    );
    describe_gauge!(DB_POOL_CONNECTIONS, "Database connections open in the pool");
    describe_gauge!(DB_POOL_IDLE, "Database connections open and idle");
    describe_gauge!(DB_POOL_MAX, "The most connections the pool opens");
    describe_counter!(DB_POOL_ACQUIRES, "Database connections asked of the pool");
    describe_counter!(
        DB_POOL_WAITS,
        "Database connections asked for while every one was in use: the caller waited"
    );
    describe_histogram!(
        DB_POOL_WAIT_SECONDS,
        Unit::Seconds,
        "How long each wait for a database connection lasted (connections taken at once are not recorded)"
    );
    describe_counter!(
        DISCORD_RESPONSES,
        "Discord's answers, by request and status class (429 apart from the other 4xx; unreachable: no answer)"
    );
    describe_histogram!(BATCH_MESSAGES, "Messages handled together in one batch");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_sets() {
        let ns = Namespace::prefixed("t1").expect("a valid prefix");
        assert_eq!(
            labels(&ns, "t1.events.member.join"),
            ("events", "events.member.join")
        );
        assert_eq!(
            labels(&ns, "t1.commands.interaction"),
            ("commands", "commands.interaction")
        );
        // A subject no one defined, or another namespace's, adds no series.
        assert_eq!(labels(&ns, "t1.events.guild.u123"), ("events", "other"));
        assert_eq!(labels(&ns, "t2.events.member.join"), ("other", "other"));
        assert_eq!(
            labels(&Namespace::root(), "eligibility.check"),
            ("eligibility", "eligibility.check")
        );
    }

    #[test]
    fn statuses_fall_into_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(
            status_class(429),
            "429",
            "rate limited, apart from the other 4xx"
        );
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(400), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(42), "other");
        assert_eq!(stream_label(subjects::WEBHOOKS), "webhooks");
    }
}
