//! Prometheus metrics. Names are stable: dashboards and alerts use them.
//!
//! The recorder is process-global (the `metrics` facade has one), so it is
//! installed once; several gateways in one process (tests) share it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS_RECEIVED: &str = "gateway_events_received_total";
pub const EVENTS_PUBLISHED: &str = "gateway_events_published_total";
pub const PUBLISH_DUPLICATES: &str = "gateway_publish_duplicates_total";
pub const PUBLISH_ERRORS: &str = "gateway_publish_errors_total";
pub const PUBLISH_LATENCY: &str = "gateway_publish_latency_seconds";
pub const BUFFER_DEPTH: &str = "gateway_publish_buffer_depth";
pub const SHARD_STATE: &str = "gateway_shard_state";
pub const SHARD_RECONNECTS: &str = "gateway_shard_reconnects_total";
pub const SHARD_RESUMES: &str = "gateway_shard_resumes_total";
pub const SHARD_IDENTIFIES: &str = "gateway_shard_identifies_total";
/// Sessions that could not be stored while running (see `checkpoint`).
pub const SESSION_CHECKPOINT_FAILURES: &str = "gateway_session_checkpoint_failures_total";
pub const SHARD_ERRORS: &str = "gateway_shard_errors_total";
/// Request Guild Members sent (a guild's member list asked for).
pub const MEMBER_REQUESTS: &str = "gateway_member_requests_total";
/// Member requests given up after Discord refused them as rate limited.
pub const MEMBER_REQUESTS_ABANDONED: &str = "gateway_member_requests_abandoned_total";
pub const NATS_CONNECTED: &str = "gateway_nats_connected";
/// Member updates waiting for their guild's turn (see `admission`), by shard.
pub const MEMBER_UPDATES_WAITING: &str = "gateway_member_updates_waiting";
/// Waiting member updates replaced by a newer one of the same member.
pub const MEMBER_UPDATES_REPLACED: &str = "gateway_member_updates_replaced_total";
/// Slash commands shed: their guild sent more than its limit.
pub const INTERACTIONS_SHED: &str = "gateway_interactions_shed_total";
/// Shards whose lease this process holds (and so runs).
pub const SHARDS_HELD: &str = "gateway_shards_held";
/// The bot's shard count: the fleet's `sum(gateway_shards_held)` must reach it.
pub const SHARDS_TOTAL: &str = "gateway_shards_total";
/// Shards taken over from a process whose lease expired.
pub const SHARD_TAKEOVERS: &str = "gateway_shard_takeovers_total";
/// Shards stopped here because their lease was lost (taken or not renewable).
pub const SHARD_LEASES_LOST: &str = "gateway_shard_leases_lost_total";

/// One shard's counter of a metric labelled by envelope type, each handle
/// looked up once. `counter!` with owned labels allocates and hashes a key
/// on every call; per event, at tens of thousands of events a second, that
/// showed in the gateway's profile (`gatehouse bench gateway`).
#[derive(Default)]
pub(crate) struct CountersByType {
    counters: Vec<(&'static str, metrics::Counter)>,
}

impl CountersByType {
    pub(crate) fn get(
        &mut self,
        name: &'static str,
        shard: &str,
        kind: &'static str,
    ) -> &metrics::Counter {
        // A handful of types: a scan beats hashing.
        let at = match self.counters.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                let counter = metrics::counter!(name, "shard" => shard.to_owned(), "type" => kind);
                self.counters.push((kind, counter));
                self.counters.len() - 1
            }
        };
        &self.counters[at].1
    }
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder if no recorder is installed yet.
/// `None` if another recorder got there first (metrics then go there).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // Publish latency from enqueue to JetStream ack: sub-millisecond on
            // loopback, seconds while NATS is down and publishes are retried.
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.to_owned()), &buckets)
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The text exposition format, or a note that metrics go elsewhere.
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => "# metrics are recorded by another recorder in this process\n".to_owned(),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS_RECEIVED,
        "Dispatches received from Discord that map to an envelope type, by shard and type"
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        "Envelopes acknowledged by JetStream, by shard and type"
    );
    describe_counter!(
        PUBLISH_DUPLICATES,
        "Publishes JetStream recognised as duplicates by Nats-Msg-Id (replays, retries)"
    );
    describe_counter!(
        PUBLISH_ERRORS,
        "Failed publish attempts (each is retried), by kind"
    );
    describe_histogram!(
        PUBLISH_LATENCY,
        Unit::Seconds,
        "Time from receiving a dispatch to its JetStream ack"
    );
    describe_gauge!(
        MEMBER_UPDATES_WAITING,
        "Member updates waiting for their guild's turn (past its rate), by shard"
    );
    describe_counter!(
        MEMBER_UPDATES_REPLACED,
        "Waiting member updates replaced by a newer update of the same member, by shard"
    );
    describe_counter!(
        INTERACTIONS_SHED,
        "Slash commands never published because their guild sent more than its limit, by shard"
    );
    describe_gauge!(
        BUFFER_DEPTH,
        "Envelopes queued, in flight or waiting for a retry"
    );
    describe_gauge!(
        SHARD_STATE,
        "Shard state: 0 disconnected, 1 identifying, 2 resuming, 3 active, 4 fatally closed, 5 standby (its lease is held by another process)"
    );
    describe_gauge!(SHARDS_HELD, "Shards whose lease this process holds");
    describe_gauge!(
        SHARDS_TOTAL,
        "The bot's shard count (every shard must be held by one process)"
    );
    describe_counter!(
        SHARD_TAKEOVERS,
        "Shards taken over after another process's lease expired"
    );
    describe_counter!(
        SHARD_LEASES_LOST,
        "Shards stopped because their lease was taken or could not be renewed"
    );
    describe_counter!(
        SHARD_RECONNECTS,
        "Connections lost or closed by the gateway"
    );
    describe_counter!(SHARD_RESUMES, "Sessions resumed (RESUMED received)");
    describe_counter!(SHARD_IDENTIFIES, "New sessions (READY received)");
    describe_counter!(SHARD_ERRORS, "Errors reading from a shard, by kind");
    describe_gauge!(NATS_CONNECTED, "1 while the NATS connection is up");
    describe_counter!(
        SESSION_CHECKPOINT_FAILURES,
        "Sessions that could not be stored while running (a crash would then identify afresh)"
    );
    describe_counter!(
        MEMBER_REQUESTS,
        "Request Guild Members sent (a guild's member list asked for), by shard"
    );
    describe_counter!(
        MEMBER_REQUESTS_ABANDONED,
        "Member requests given up after Discord refused them as rate limited, by shard"
    );
}
