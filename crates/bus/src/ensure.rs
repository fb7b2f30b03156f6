//! Making JetStream match the [`Topology`] at start.
//!
//! A missing stream is created from the one definition. An existing stream
//! whose definition differs is **left as it is and reported** ([`Drift`],
//! logged as a warning), never updated by a process at start. Why:
//!
//! * Several processes of different versions or configurations start during
//!   a rolling deploy. If each one updated the stream to its own view, the
//!   limits would flip-flop with whichever started last, the bug this
//!   crate exists to end.
//! * Shrinking `max_age`, `max_bytes` or `max_messages` deletes messages at
//!   once. A stray setting on one restarted process must not throw away
//!   events nobody has processed yet.
//! * A different replica count or placement (cluster, server tags) makes a
//!   clustered JetStream copy or move the stream's data between servers;
//!   that too waits for an operator, and is reported like any other limit.
//!
//! Changing a live stream is an operator's act: [`update_streams`] applies
//! the definition on purpose (storage excepted: JetStream cannot change it in
//! place).

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{Config, Placement};
use async_nats::jetstream::Context;

use crate::{BusError, Topology};

/// An existing stream that differs from its definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub stream: String,
    /// One entry per differing setting: `max_age: existing 1h, defined 7d`.
    pub differences: Vec<String>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stream, self.differences.join("; "))
    }
}

/// Creates every stream of `topology` that does not exist. Idempotent; an
/// existing stream is not changed, and each one that differs from the
/// definition is returned (and logged).
pub async fn ensure_streams(js: &Context, topology: &Topology) -> Result<Vec<Drift>, BusError> {
    let mut drifts = Vec::new();
    for want in topology.stream_configs() {
        if let Some(drift) = ensure_stream(js, want).await? {
            drifts.push(drift);
        }
    }
    Ok(drifts)
}

/// Applies the definition to every stream, creating missing ones and
/// updating the limits of the others: the deliberate change [`ensure_streams`]
/// refuses to make. Returns what was changed.
pub async fn update_streams(js: &Context, topology: &Topology) -> Result<Vec<Drift>, BusError> {
    let mut changed = Vec::new();
    for mut want in topology.stream_configs() {
        let current = existing_or_create(js, &want).await?;
        if current.storage != want.storage {
            tracing::warn!(
                stream = %want.name,
                defined = ?want.storage,
                existing = ?current.storage,
                "JetStream cannot change a stream's storage in place; keeping the existing storage"
            );
            want.storage = current.storage;
        }
        let differences = differences(&current, &want);
        if differences.is_empty() {
            continue;
        }
        js.update_stream(want.clone())
            .await
            .map_err(|e| BusError::stream(&want.name, format!("cannot update its limits: {e}")))?;
        tracing::info!(stream = %want.name, changes = %differences.join("; "), "stream updated to the definition");
        changed.push(Drift {
            stream: want.name,
            differences,
        });
    }
    Ok(changed)
}

/// Creates `want` if missing; otherwise compares it with what exists.
pub(crate) async fn ensure_stream(js: &Context, want: Config) -> Result<Option<Drift>, BusError> {
    let current = existing_or_create(js, &want).await?;
    let differences = differences(&current, &want);
    if differences.is_empty() {
        tracing::debug!(stream = %want.name, "stream is as defined");
        return Ok(None);
    }
    let drift = Drift {
        stream: want.name,
        differences,
    };
    tracing::warn!(
        stream = %drift.stream,
        differences = %drift.differences.join("; "),
        "existing stream differs from its definition; leaving it as it is (changing a live stream is an operator's act)"
    );
    Ok(Some(drift))
}

/// Attempts at creating or opening a stream that timed out before giving up.
/// A clustered JetStream answers slowly while it elects a meta leader or
/// places a replicated stream (a cluster starting, a node restarting), and
/// the call is idempotent: waiting a little beats a process that exits.
const CREATE_ATTEMPTS: u32 = 4;

async fn existing_or_create(js: &Context, want: &Config) -> Result<Config, BusError> {
    let mut attempt = 1;
    let mut stream = loop {
        match js.get_or_create_stream(want.clone()).await {
            Ok(stream) => break stream,
            Err(e)
                if attempt < CREATE_ATTEMPTS
                    && matches!(
                        e.kind(),
                        CreateStreamErrorKind::TimedOut
                            | CreateStreamErrorKind::JetStreamUnavailable
                    ) =>
            {
                tracing::warn!(stream = %want.name, error = %e, attempt, "JetStream is slow to create or open the stream; retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(BusError::stream(
                    &want.name,
                    format!("cannot create or open it: {e}"),
                ))
            }
        }
    };
    let info = stream
        .info()
        .await
        .map_err(|e| BusError::stream(&want.name, format!("cannot read its configuration: {e}")))?;
    Ok(info.config.clone())
}

/// The settings the definition fixes that `current` does not have.
fn differences(current: &Config, want: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |field: &str, existing: String, defined: String| {
        if existing != defined {
            out.push(format!("{field}: existing {existing}, defined {defined}"));
        }
    };
    let sorted = |subjects: &[String]| {
        let mut subjects = subjects.to_vec();
        subjects.sort();
        subjects.join(",")
    };
    // JetStream reports an unset limit as -1; the definition may say 0.
    let limit = |v: i64| if v <= 0 { -1 } else { v };
    note(
        "subjects",
        sorted(&current.subjects),
        sorted(&want.subjects),
    );
    note(
        "storage",
        format!("{:?}", current.storage),
        format!("{:?}", want.storage),
    );
    note(
        "retention",
        format!("{:?}", current.retention),
        format!("{:?}", want.retention),
    );
    note(
        "discard",
        format!("{:?}", current.discard),
        format!("{:?}", want.discard),
    );
    note(
        "max_age",
        format!("{:?}", current.max_age),
        format!("{:?}", want.max_age),
    );
    note(
        "max_bytes",
        limit(current.max_bytes).to_string(),
        limit(want.max_bytes).to_string(),
    );
    note(
        "max_messages",
        limit(current.max_messages).to_string(),
        limit(want.max_messages).to_string(),
    );
    note(
        "duplicate_window",
        format!("{:?}", current.duplicate_window),
        format!("{:?}", want.duplicate_window),
    );
    note(
        "replicas",
        current.num_replicas.max(1).to_string(),
        want.num_replicas.max(1).to_string(),
    );
    note(
        "placement",
        placement(current.placement.as_ref()),
        placement(want.placement.as_ref()),
    );
    out
}

/// A placement as drift reports name it; no placement and an empty one are
/// the same, and the order of tags does not matter.
fn placement(placement: Option<&Placement>) -> String {
    let cluster = placement
        .and_then(|p| p.cluster.as_deref())
        .filter(|c| !c.is_empty());
    let mut tags: Vec<&str> = placement
        .map(|p| p.tags.iter().map(String::as_str).collect())
        .unwrap_or_default();
    tags.sort_unstable();
    match (cluster, tags.is_empty()) {
        (None, true) => "anywhere".to_owned(),
        (Some(cluster), true) => format!("cluster {cluster}"),
        (None, false) => format!("tags {}", tags.join(",")),
        (Some(cluster), false) => format!("cluster {cluster} tags {}", tags.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Namespace, Storage};

    #[test]
    fn the_same_definition_has_no_differences() {
        let topology = Topology::new(Namespace::root());
        for config in topology.stream_configs() {
            assert!(differences(&config, &config).is_empty());
        }
    }

    #[test]
    fn differing_limits_are_named() {
        let defined = Topology::new(Namespace::root());
        let mut other = defined.clone().with_storage(Storage::Memory);
        other.events.max_age = Duration::from_secs(3600);
        let found = differences(&other.stream_configs()[0], &defined.stream_configs()[0]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("storage: existing Memory, defined File"));
        assert!(found[1].starts_with("max_age: existing 3600s"));
    }

    #[test]
    fn a_different_placement_is_drift_like_different_replicas() {
        let defined = Topology::new(Namespace::root()).with_placement(crate::Placement {
            cluster: Some("east".into()),
            tags: vec!["ssd".into(), "az1".into()],
        });
        let anywhere = Topology::new(Namespace::root());
        let found = differences(&anywhere.stream_configs()[1], &defined.stream_configs()[1]);
        assert_eq!(
            found,
            ["placement: existing anywhere, defined cluster east tags az1,ssd"]
        );
        let found = differences(
            &defined.sessions_stream_config(),
            &anywhere.sessions_stream_config(),
        );
        assert_eq!(
            found,
            ["placement: existing cluster east tags az1,ssd, defined anywhere"]
        );
        let mut moved = defined.clone();
        moved.events.placement.cluster = Some("west".into());
        moved.events.replicas = 3;
        let found = differences(&defined.stream_configs()[0], &moved.stream_configs()[0]);
        assert_eq!(
            found,
            [
                "replicas: existing 1, defined 3",
                "placement: existing cluster east tags az1,ssd, defined cluster west tags az1,ssd"
            ]
        );
    }

    #[test]
    fn unset_and_unlimited_are_the_same() {
        let defined = Topology::new(Namespace::root()).stream_configs().remove(0);
        let reported = Config {
            max_messages: 0,
            num_replicas: 0,
            placement: Some(Placement::default()),
            ..defined.clone()
        };
        assert!(differences(&reported, &defined).is_empty());
        // Tags in another order are the same placement.
        let tagged = |tags: &[&str]| Config {
            placement: Some(Placement {
                cluster: None,
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            }),
            ..defined.clone()
        };
        assert!(differences(&tagged(&["b", "a"]), &tagged(&["a", "b"])).is_empty());
    }
}
