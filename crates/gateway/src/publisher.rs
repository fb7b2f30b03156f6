//! Publishes envelopes to JetStream: pipelined, acked, retried, never dropped.
//!
//! Shards hand envelopes over a bounded channel. Up to `window` publishes are
//! in flight at once, each awaited for its ack. A failed publish (NATS down,
//! ack timeout) is retried with exponential backoff, before any newer
//! envelope, with the same `Nats-Msg-Id` so that JetStream drops the copy if
//! the first attempt did land. While retries are pending no new envelopes are
//! taken, the channel fills, and the shards block on it: backpressure reaches
//! Discord's connection instead of anything being dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::metrics as m;
use crate::progress::ShardProgress;

/// One envelope on its way to JetStream.
#[derive(Debug)]
pub struct Job {
    pub shard_id: u32,
    /// The shard's progress, told of the ack. Carried rather than looked up:
    /// shards come and go as leases move, and a lookup per ack would sit on
    /// the publish path.
    pub progress: Arc<ShardProgress>,
    /// Session epoch from [`ShardProgress::observe`].
    pub epoch: u64,
    pub sequence: u64,
    /// Prefixed with the namespace; cloning it does not copy it.
    pub subject: async_nats::Subject,
    /// The envelope id, sent as `Nats-Msg-Id`.
    pub id: String,
    pub kind: &'static str,
    pub body: Bytes,
    pub received: Instant,
}

/// What the publisher did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    pub published: u64,
    pub duplicates: u64,
    /// Envelopes still unacknowledged when the flush deadline passed. Their
    /// sessions' stored sequence stops before them, so a resume replays them.
    pub abandoned: u64,
}

pub struct Publisher {
    pub jetstream: Context,
    pub window: usize,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type InFlight = FuturesUnordered<BoxFuture<'static, (Job, Result<PublishAck, PublishError>)>>;

/// Metric handles of the publish loop, each looked up once rather than per
/// publish: building and hashing a labelled key every time showed in the
/// gateway's profile (`gatehouse bench gateway`).
struct Handles {
    published: HashMap<(u32, &'static str), metrics::Counter>,
    latency: metrics::Histogram,
    depth: metrics::Gauge,
}

impl Handles {
    fn new() -> Self {
        Handles {
            published: HashMap::new(),
            latency: metrics::histogram!(m::PUBLISH_LATENCY),
            depth: metrics::gauge!(m::BUFFER_DEPTH),
        }
    }

    fn published(&mut self, shard_id: u32, kind: &'static str) -> &metrics::Counter {
        self.published.entry((shard_id, kind)).or_insert_with(|| {
            metrics::counter!(m::EVENTS_PUBLISHED, "shard" => shard_id.to_string(), "type" => kind)
        })
    }
}

impl Publisher {
    /// Runs until every sender of `jobs` is gone and everything is acked, or
    /// until `abandon` turns true (the shutdown deadline).
    pub async fn run(
        self,
        mut jobs: mpsc::Receiver<Job>,
        mut abandon: watch::Receiver<bool>,
    ) -> PublishReport {
        let mut report = PublishReport::default();
        let mut handles = Handles::new();
        let mut inflight: InFlight = FuturesUnordered::new();
        // Failed publishes, in shard and sequence order so that a recovery
        // republishes each shard's events in the order Discord sent them.
        let mut retry: BTreeMap<(u32, u64, u64), Job> = BTreeMap::new();
        let mut ready: VecDeque<Job> = VecDeque::new();
        let mut retry_at = Instant::now();
        let mut backoff = Duration::ZERO;
        let mut closed = false;
        let mut failing = false;

        'run: loop {
            // Fill the window: due retries first, then new envelopes.
            while inflight.len() < self.window {
                let job = if !retry.is_empty() {
                    if Instant::now() < retry_at {
                        break;
                    }
                    match retry.pop_first() {
                        Some((_, job)) => job,
                        None => break,
                    }
                } else if let Some(job) = ready.pop_front() {
                    job
                } else if closed {
                    break;
                } else {
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                };
                if *abandon.borrow() {
                    ready.push_front(job);
                    break 'run;
                }
                // A send is usually accepted at once; racing it against
                // `abandon` only when it has to wait saves registering with
                // the watch channel for every envelope. Dropping a send that
                // is not ready sends nothing, so it is simply made again.
                let sent = match self.send(&job).now_or_never() {
                    Some(sent) => sent,
                    None => tokio::select! {
                        biased;
                        _ = abandon.wait_for(|a| *a) => {
                            ready.push_front(job);
                            break 'run;
                        }
                        sent = self.send(&job) => sent,
                    },
                };
                match sent {
                    Ok(ack) => inflight.push(async move { (job, ack.await) }.boxed()),
                    Err(error) => {
                        self.failed(job, &error, &mut retry, &mut failing);
                        backoff = next_backoff(backoff);
                        retry_at = Instant::now() + backoff;
                        break;
                    }
                }
            }
            let depth = jobs.len() + ready.len() + inflight.len() + retry.len();
            handles.depth.set(depth as f64);
            if closed && inflight.is_empty() && retry.is_empty() && ready.is_empty() {
                break;
            }

            let can_take = !closed && retry.is_empty() && inflight.len() < self.window;
            let retry_due = !retry.is_empty() && inflight.len() < self.window;
            let mut settled = tokio::select! {
                biased;
                _ = abandon.wait_for(|a| *a) => break,
                Some(settled) = inflight.next(), if !inflight.is_empty() => Some(settled),
                job = jobs.recv(), if can_take => {
                    match job {
                        Some(job) => ready.push_back(job),
                        None => closed = true,
                    }
                    None
                }
                () = tokio::time::sleep_until(retry_at.into()), if retry_due => None,
            };
            // Acks arrive in batches (one read of the connection holds
            // many): the first woke the select, the rest are taken here.
            // Each pass through the select registers with `abandon` and
            // refills the window one envelope at a time.
            while let Some((job, result)) = settled {
                match result {
                    Ok(ack) => {
                        if failing {
                            tracing::info!("JetStream publishes succeed again");
                            failing = false;
                        }
                        backoff = Duration::ZERO;
                        self.acked(job, &ack, &mut report, &mut handles);
                    }
                    Err(error) => {
                        self.failed(job, &error, &mut retry, &mut failing);
                        backoff = next_backoff(backoff);
                        retry_at = Instant::now() + backoff;
                    }
                }
                settled = inflight.next().now_or_never().flatten();
            }
        }

        let leftover = jobs.len() + ready.len() + inflight.len() + retry.len();
        report.abandoned = leftover as u64;
        if leftover > 0 {
            tracing::warn!(
                unacknowledged = leftover,
                "stopping with publishes not acknowledged; the stored sessions stop before them so a resume replays them"
            );
        }
        handles.depth.set(0.0);
        report
    }

    async fn send(&self, job: &Job) -> Result<PublishAckFuture, PublishError> {
        // The id is the only header: it is the event's trace too (see
        // wire::trace), so a `traceparent` would only repeat it, ~70 bytes
        // more for NATS to parse and store with every event (`gatehouse
        // bench gateway`: 5-10 % of the gateway's throughput).
        let message = PublishMessage::build()
            .payload(job.body.clone())
            .message_id(job.id.as_str());
        self.jetstream
            .send_publish(job.subject.clone(), message)
            .await
    }

    fn acked(&self, job: Job, ack: &PublishAck, report: &mut PublishReport, handles: &mut Handles) {
        job.progress.acked(job.epoch, job.sequence);
        handles.published(job.shard_id, job.kind).increment(1);
        handles.latency.record(job.received.elapsed().as_secs_f64());
        report.published += 1;
        if ack.duplicate {
            report.duplicates += 1;
            metrics::counter!(m::PUBLISH_DUPLICATES, "shard" => job.shard_id.to_string())
                .increment(1);
        }
    }

    fn failed(
        &self,
        job: Job,
        error: &PublishError,
        retry: &mut BTreeMap<(u32, u64, u64), Job>,
        failing: &mut bool,
    ) {
        let kind = error_kind(error);
        metrics::counter!(m::PUBLISH_ERRORS, "kind" => kind).increment(1);
        if matches!(error.kind(), PublishErrorKind::MaxPayloadExceeded) {
            // Retrying can never succeed; holding it would stall the shard
            // forever. Record it loudly and let the session move past it.
            tracing::error!(
                shard = job.shard_id,
                sequence = job.sequence,
                event_id = %job.id,
                r#type = job.kind,
                "envelope exceeds the NATS server's max_payload and cannot be published"
            );
            job.progress.acked(job.epoch, job.sequence);
            return;
        }
        if !*failing {
            tracing::warn!(%error, kind, "JetStream publish failed; retrying with backoff until NATS accepts it");
            *failing = true;
        } else {
            tracing::debug!(%error, kind, "JetStream publish failed again");
        }
        retry.insert((job.shard_id, job.epoch, job.sequence), job);
    }
}

fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
}

fn error_kind(error: &PublishError) -> &'static str {
    match error.kind() {
        PublishErrorKind::TimedOut => "timeout",
        PublishErrorKind::BrokenPipe => "broken_pipe",
        PublishErrorKind::StreamNotFound => "stream_not_found",
        PublishErrorKind::WrongLastMessageId => "wrong_last_message_id",
        PublishErrorKind::WrongLastSequence => "wrong_last_sequence",
        PublishErrorKind::MaxPayloadExceeded => "max_payload_exceeded",
        PublishErrorKind::MaxAckPending => "max_ack_pending",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        assert_eq!(next_backoff(Duration::ZERO), MIN_BACKOFF);
        assert_eq!(next_backoff(MIN_BACKOFF), MIN_BACKOFF * 2);
        assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
    }
}
