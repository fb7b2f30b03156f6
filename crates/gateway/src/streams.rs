//! The JetStream streams the gateway publishes into, ensured at start.
//!
//! Idempotent: a missing stream is created; an existing one whose subjects or
//! limits differ from the configuration is updated, so that changing a limit
//! in config takes effect on the next start. Storage type cannot be changed
//! on a live stream; a mismatch is logged and the existing storage kept.

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use wire::subjects::StreamSpec;

use crate::config::{GatewayConfig, Retention, Storage, StreamLimits};
use crate::GatewayError;

/// The streams this gateway writes to, with the configured limits.
pub fn desired(config: &GatewayConfig) -> Vec<Config> {
    [
        (wire::subjects::EVENTS, &config.events_stream),
        (wire::subjects::COMMANDS, &config.commands_stream),
    ]
    .into_iter()
    .map(|(spec, limits)| stream_config(config, spec, limits))
    .collect()
}

fn stream_config(config: &GatewayConfig, spec: StreamSpec, limits: &StreamLimits) -> Config {
    Config {
        name: config.stream_name(spec.name),
        subjects: spec.subjects.iter().map(|s| config.subject(s)).collect(),
        storage: match limits.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        },
        retention: match limits.retention {
            Retention::Limits => RetentionPolicy::Limits,
            Retention::Interest => RetentionPolicy::Interest,
            Retention::WorkQueue => RetentionPolicy::WorkQueue,
        },
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        max_messages: limits.max_messages,
        duplicate_window: limits.duplicate_window,
        num_replicas: limits.replicas,
        // Old messages make room for new ones: refusing new events would
        // stall every shard behind a full stream.
        discard: DiscardPolicy::Old,
        description: Some("Gatehouse gateway events (wire envelopes)".to_owned()),
        ..Config::default()
    }
}

fn differs(current: &Config, desired: &Config) -> bool {
    let mut current_subjects = current.subjects.clone();
    let mut desired_subjects = desired.subjects.clone();
    current_subjects.sort();
    desired_subjects.sort();
    current_subjects != desired_subjects
        || current.retention != desired.retention
        || current.max_age != desired.max_age
        || current.max_bytes != desired.max_bytes
        || current.max_messages != desired.max_messages
        || current.duplicate_window != desired.duplicate_window
        || current.num_replicas != desired.num_replicas
}

/// Creates or updates each stream.
pub async fn ensure(jetstream: &Context, config: &GatewayConfig) -> Result<(), GatewayError> {
    for mut want in desired(config) {
        let name = want.name.clone();
        let fail = |problem: String| GatewayError::Stream {
            stream: name.clone(),
            problem,
        };
        let mut stream = jetstream
            .get_or_create_stream(want.clone())
            .await
            .map_err(|e| fail(format!("cannot create or read it: {e}")))?;
        let current = stream
            .info()
            .await
            .map_err(|e| fail(format!("cannot read its configuration: {e}")))?
            .config
            .clone();
        if current.storage != want.storage {
            tracing::warn!(
                stream = %name,
                configured = ?want.storage,
                existing = ?current.storage,
                "stream storage differs from the configuration; JetStream cannot change it in place, keeping the existing storage"
            );
            want.storage = current.storage;
        }
        if differs(&current, &want) {
            jetstream
                .update_stream(want)
                .await
                .map_err(|e| fail(format!("cannot update its limits: {e}")))?;
            tracing::info!(stream = %name, "stream limits updated from configuration");
        } else {
            tracing::debug!(stream = %name, "stream is as configured");
        }
    }
    Ok(())
}
