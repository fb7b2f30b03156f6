//! The limit the gateway is measured against: a bare async-nats publisher
//! pushing the storm's envelopes, already serialised, into a stream defined
//! like the gateway's (same storage, limits and dedupe window, in a namespace
//! of its own so that the same message ids are stored again rather than
//! dropped as duplicates), as the gateway's user, with the gateway's JetStream
//! context, in-flight window and runtime threads. Whatever the gateway does
//! beyond this — reading Discord, decompressing, parsing, building envelopes —
//! is what the ratio shows.

use std::future::{Future, IntoFuture as _};
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use futures::stream::{FuturesUnordered, StreamExt as _};
use indicatif::ProgressBar;

use super::capture::Published;

/// The name of the bare publisher's runtime threads, which its work runs on.
const WORKER_THREAD_NAME: &str = "bare-publisher";

pub struct Bare {
    pub published: u64,
    /// Acks JetStream answered as duplicates (0 when the stream is fresh).
    pub duplicates: u64,
    /// JetStream's clock from the first message stored to the last.
    pub span_s: f64,
    /// The publisher's clock from the first send to the last ack.
    pub wall_s: f64,
}

/// Runs `work` as a task on a runtime of `threads` worker threads of its
/// own, as the gateway process runs its shards, publisher and NATS
/// connection as tasks on `GATEWAY_THREADS` workers: the limit is measured
/// with the runtime the gateway has, not the bench's. A task, not the future
/// `block_on` drives: that one runs on the calling thread beside the
/// workers, which would give the bare publisher a thread the gateway does
/// not have and send each of its publishes and acks across threads (see
/// docs/BENCHMARKS.md, gateway, 2026-12-06 11:35 UTC).
pub fn on_own_runtime<T: Send + 'static>(
    threads: u16,
    work: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    // A runtime cannot be started on a thread that is driving one: on a
    // scoped thread of its own, while this one steps aside.
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(usize::from(threads))
                        .thread_name(WORKER_THREAD_NAME)
                        .enable_all()
                        .build()
                        .context("starting the bare publisher's runtime")?;
                    runtime.block_on(runtime.spawn(work)).unwrap_or_else(|_| {
                        Err(anyhow::anyhow!("the bare publisher's task panicked"))
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the bare publisher's thread panicked")))
        })
    })
}

/// Publishes `envelopes` into `topology`'s EVENTS stream (created here by
/// `admin`) over `client`, `window` at a time.
pub async fn publish(
    client: async_nats::Client,
    admin: &jetstream::Context,
    topology: &bus::Topology,
    envelopes: &[Published],
    window: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Bare> {
    bus::ensure_streams(admin, topology)
        .await
        .context("creating the bare publisher's streams")?;
    let stream_name = topology.namespace.stream_name(&wire::subjects::EVENTS);
    let context =
        gateway::publishing_context(client, window, gateway::config::DEFAULT_PUBLISH_ACK_TIMEOUT);
    // Serialised before the clock starts, as the gateway's are by the time
    // they reach its publisher.
    let subjects: Vec<String> = envelopes
        .iter()
        .map(|e| topology.namespace.subject(&e.subject))
        .collect();

    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut next = 0;
    let (mut published, mut duplicates) = (0u64, 0u64);
    while next < envelopes.len() || !inflight.is_empty() {
        while inflight.len() < window && next < envelopes.len() {
            let envelope = &envelopes[next];
            let message = PublishMessage::build()
                .payload(envelope.message.payload.clone())
                .message_id(envelope.id.as_str());
            let ack = context
                .send_publish(subjects[next].clone(), message)
                .await
                .with_context(|| format!("the bare publisher sending to {}", subjects[next]))?;
            inflight.push(ack.into_future());
            next += 1;
        }
        if let Some(ack) = inflight.next().await {
            let ack = ack.context("the bare publisher awaiting an ack")?;
            published += 1;
            duplicates += u64::from(ack.duplicate);
            if published.is_multiple_of(1024) {
                bar.set_position(published);
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    bar.set_position(published);

    let stream = admin
        .get_stream(&stream_name)
        .await
        .with_context(|| format!("looking up {stream_name} after the bare publisher's run"))?;
    let last = stream
        .get_info()
        .await
        .with_context(|| format!("reading {stream_name} after the bare publisher's run"))?
        .state
        .last_sequence;
    let stored_at = |sequence: u64| {
        let stream = &stream;
        let stream_name = &stream_name;
        async move {
            stream
                .get_raw_message(sequence)
                .await
                .map(|m| m.time.unix_timestamp_nanos())
                .with_context(|| format!("reading message {sequence} of {stream_name}"))
        }
    };
    let span_s = if last > 1 {
        (stored_at(last).await? - stored_at(1).await?) as f64 / 1e9
    } else {
        0.0
    };
    Ok(Bare {
        published,
        duplicates,
        span_s,
        wall_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's tasks all run on its runtime's workers; so must the
    /// bare publisher's loop, or it has a thread the gateway lacks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_work_runs_on_the_runtimes_own_worker_threads() {
        let runtime_threads = 1;
        let ran_on = on_own_runtime(runtime_threads, async {
            Ok(std::thread::current().name().map(str::to_owned))
        })
        .expect("the work ran");
        assert_eq!(ran_on.as_deref(), Some(WORKER_THREAD_NAME));
    }
}
