use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{HandlerError, Handlers, WorkerConfig, WorkerError};

/// Where a message sits in its stream and how often it was delivered.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// Position in the stream: the order the gateway published in.
    pub stream_sequence: u64,
    /// 1 on first delivery.
    pub attempt: u32,
}

/// What a consumer does with each message. The acknowledgement follows
/// from the result: `Ok` acks, [`HandlerError`] says whether to retry (and
/// when) or to dead-letter.
pub(crate) trait HandleMessage: Send + Sync + 'static {
    fn handle_message(
        &self,
        subject: &str,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl HandleMessage for Handlers {
    fn handle_message(
        &self,
        subject: &str,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        Handlers::handle_message(self, subject, payload, delivery)
    }
}

/// How long one pull waits for messages. It bounds how long shutdown waits
/// for a pull that is still open on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Pulls from `consumer` and handles up to `config.concurrency` messages at
/// once until `shutdown`; then stops pulling and waits for in-flight
/// messages to finish.
///
/// Each pull asks for no more messages than can start right away. A message
/// delivered to this process is owned by it until acknowledged, so a client
/// buffer would hold messages back from idle workers and, at shutdown, leave
/// them stranded until `ack_wait` expires. Anything delivered after the
/// signal is handed straight back with a NAK.
pub(crate) async fn consume<H: HandleMessage>(
    consumer: PullConsumer,
    js: jetstream::Context,
    handlers: Arc<H>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let limit = config.concurrency;
    let permits = Arc::new(Semaphore::new(limit));
    let config = Arc::new(config);
    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        // Only this loop takes permits, so all of these are still free when
        // the messages arrive.
        let wanted = permits.available_permits() + 1;
        let mut batch = match consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                // NATS down or restarting: wait and pull again.
                drop(first);
                tracing::warn!(error = %e, "cannot pull messages; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut reserved = Some(first);
        // The batch ends when it is full or when the pull expires; read it to
        // the end even after the signal, so no delivered message is dropped.
        while let Some(next) = batch.next().await {
            let message = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling messages failed; pulling again");
                    break;
                }
            };
            if shutdown.is_cancelled() {
                if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::warn!(error = %e, "could not hand back a message at shutdown; it returns after ack_wait");
                }
                continue;
            }
            let permit = match reserved.take() {
                Some(p) => p,
                None => match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (js, handlers, config) = (js.clone(), handlers.clone(), config.clone());
            tokio::spawn(async move {
                process(message, &js, &*handlers, &config).await;
                drop(permit);
            });
        }
    }
    // Wait for every in-flight message: each holds one permit.
    let _all = permits.acquire_many(limit as u32).await;
    Ok(())
}

async fn process<H: HandleMessage>(
    message: jetstream::Message,
    js: &jetstream::Context,
    handlers: &H,
    config: &WorkerConfig,
) {
    let subject = message.subject.to_string();
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(e) => {
            // Not a JetStream delivery; nothing sensible to do but say so.
            tracing::error!(%subject, error = %e, "message without JetStream metadata");
            return;
        }
    };
    let delivery = Delivery {
        stream_sequence,
        attempt: u32::try_from(delivered).unwrap_or(u32::MAX),
    };
    let outcome = handlers
        .handle_message(&subject, &message.payload, &delivery)
        .await;
    // A label from a fixed set: metrics keys must stay low-cardinality.
    let stream: &'static str = if subject.contains("commands.") {
        "commands"
    } else if subject.contains("eligibility.") {
        "eligibility"
    } else if subject.contains("webhooks.") {
        "webhooks"
    } else if subject.contains("events.") {
        "events"
    } else {
        "other"
    };
    match outcome {
        Ok(()) => {
            metrics::counter!("worker_messages_total", "stream" => stream, "outcome" => "ok")
                .increment(1);
            if let Err(e) = message.ack().await {
                // The effect is committed; a redelivery will be recognised
                // as a duplicate.
                tracing::warn!(%subject, error = %e, "ack failed; a duplicate delivery will be skipped");
            }
        }
        Err(HandlerError::Transient(reason)) if delivery.attempt < config.max_attempts => {
            let delay = config.backoff_after(delivery.attempt);
            metrics::counter!("worker_messages_total", "stream" => stream, "outcome" => "retry")
                .increment(1);
            tracing::info!(%subject, attempt = delivery.attempt, ?delay, %reason, "will retry");
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::warn!(%subject, error = %e, "nak failed; JetStream will redeliver after ack_wait");
            }
        }
        Err(HandlerError::RetryAfter { reason, after }) => {
            metrics::counter!("worker_messages_total", "stream" => stream, "outcome" => "retry")
                .increment(1);
            tracing::debug!(%subject, ?after, %reason, "will retry");
            if let Err(e) = message.ack_with(AckKind::Nak(Some(after))).await {
                tracing::warn!(%subject, error = %e, "nak failed; JetStream will redeliver after ack_wait");
            }
        }
        Err(err) => {
            let reason = match &err {
                HandlerError::Transient(r) => {
                    format!("gave up after {} attempts: {r}", delivery.attempt)
                }
                HandlerError::Permanent(r) | HandlerError::RetryAfter { reason: r, .. } => {
                    r.clone()
                }
            };
            metrics::counter!("worker_messages_total", "stream" => stream, "outcome" => "dead_letter").increment(1);
            match bus::publish_dead_letter(
                js,
                config.namespace(),
                &subject,
                message.payload.clone(),
                delivered,
                &reason,
            )
            .await
            {
                Ok(()) => {
                    tracing::warn!(%subject, %reason, "dead-lettered");
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(%subject, error = %e, "terminating a dead-lettered message failed");
                    }
                }
                Err(e) => {
                    // Keep the message: better redelivered than lost.
                    tracing::error!(%subject, error = %e, "could not dead-letter; will retry");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(config.backoff_after(delivery.attempt))))
                        .await;
                }
            }
        }
    }
}
