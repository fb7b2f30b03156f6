use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer},
    stream,
};
use wire::{subjects::StreamSpec, Namespace};

use crate::{config::StorageKind, StreamLimits, WorkerConfig, WorkerError};

/// Creates the streams the workers read and write, if they do not exist.
/// Idempotent, so every process can call it at start; an existing stream is
/// left as it is (changing limits of a live stream is an operator's act).
pub async fn ensure_streams(
    js: &jetstream::Context,
    ns: &Namespace,
    limits: &StreamLimits,
) -> Result<(), WorkerError> {
    for spec in wire::subjects::ALL_STREAMS {
        let config = stream::Config {
            name: ns.stream_name(&spec),
            subjects: ns.stream_subjects(&spec),
            storage: match limits.storage {
                StorageKind::File => stream::StorageType::File,
                StorageKind::Memory => stream::StorageType::Memory,
            },
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            duplicate_window: limits.duplicate_window,
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map_err(|e| {
            WorkerError::jetstream(format!("creating stream {}", ns.stream_name(&spec)), e)
        })?;
    }
    Ok(())
}

/// The durable pull consumer this worker shares with its peers on `spec`.
pub(crate) async fn ensure_consumer(
    js: &jetstream::Context,
    config: &WorkerConfig,
    spec: &StreamSpec,
) -> Result<PullConsumer, WorkerError> {
    let stream_name = config.namespace.stream_name(spec);
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| WorkerError::jetstream(format!("opening stream {stream_name}"), e))?;
    let durable = config.namespace.name(&format!(
        "{}_{}",
        config.consumer_name,
        spec.name.to_ascii_lowercase()
    ));
    let consumer_config = pull::Config {
        durable_name: Some(durable.clone()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: config.ack_wait,
        // Unlimited on the server side: the worker counts attempts itself
        // and dead-letters, so JetStream never silently stops redelivering.
        max_deliver: -1,
        max_ack_pending: (config.concurrency * 4).max(256) as i64,
        ..Default::default()
    };
    stream
        .get_or_create_consumer(&durable, consumer_config)
        .await
        .map_err(|e| {
            WorkerError::jetstream(format!("creating consumer {durable} on {stream_name}"), e)
        })
}
