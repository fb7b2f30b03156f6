//! The storm's envelopes read back from the stream, exactly as the gateway
//! published them (subject, `Nats-Msg-Id`, body): the bare publisher pushes
//! these bytes, so both sides move the same messages.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use futures::StreamExt as _;
use indicatif::ProgressBar;

/// One envelope as JetStream stored it.
pub struct Published {
    /// The subject without the namespace.
    pub subject: String,
    /// Its `Nats-Msg-Id` (the envelope id).
    pub id: String,
    /// The stored message; its payload is the envelope's JSON.
    pub message: async_nats::Message,
    /// When JetStream stored it, ns since the epoch.
    pub stored_at_ns: i128,
}

/// The storm as JetStream holds it.
pub struct Storm {
    /// From the storm's first event to its last, with whatever the gateway
    /// published in between (a guild's member list still arriving).
    pub envelopes: Vec<Published>,
    /// JetStream's clock from the first to the last of them.
    pub span_s: f64,
}

/// How long one read may wait before the stream is taken to hold less
/// than it said.
const READ_STALL: Duration = Duration::from_secs(30);

/// Reads the stream `name` from `after_sequence + 1` until `events` storm
/// events (subjects in `storm_subjects`) have been read.
pub async fn read_storm(
    jetstream: &jetstream::Context,
    name: &str,
    namespace: &bus::Namespace,
    after_sequence: u64,
    events: u64,
    storm_subjects: &[&str],
    bar: &ProgressBar,
) -> anyhow::Result<Storm> {
    let stream = jetstream
        .get_stream(name)
        .await
        .with_context(|| format!("looking up stream {name} to read the storm back"))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after_sequence + 1,
            },
            ..OrderedConfig::default()
        })
        .await
        .with_context(|| format!("creating a consumer to read the storm back from {name}"))?;
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("reading the storm back from {name}"))?;
    let mut window = Window::new(events);
    while !window.complete() {
        let next = tokio::time::timeout(READ_STALL, messages.next())
            .await
            .with_context(|| {
                format!(
                    "reading the storm back from {name}: nothing for {READ_STALL:?} after {} of {events} events",
                    window.storm_seen
                )
            })?;
        let message = match next {
            Some(m) => m.with_context(|| format!("reading the storm back from {name}"))?,
            None => anyhow::bail!(
                "reading the storm back from {name}: the stream ended after {} of {events} events",
                window.storm_seen
            ),
        };
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("a message read back from {name} has no metadata: {e}"))?;
        let stored_at_ns = info.published.unix_timestamp_nanos();
        let message = message.split().0;
        let subject = namespace
            .strip(message.subject.as_str())
            .unwrap_or(message.subject.as_str())
            .to_owned();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::subjects::headers::MSG_ID))
            .map(|v| v.as_str().to_owned())
            .with_context(|| {
                format!("a message on {subject} read back from {name} has no Nats-Msg-Id")
            })?;
        let storm = storm_subjects.contains(&subject.as_str());
        window.offer(
            Published {
                subject,
                id,
                message,
                stored_at_ns,
            },
            storm,
        );
        bar.set_position(window.storm_seen);
    }
    let envelopes = window.items;
    let span_s = match (envelopes.first(), envelopes.last()) {
        (Some(first), Some(last)) => (last.stored_at_ns - first.stored_at_ns) as f64 / 1e9,
        _ => 0.0,
    };
    Ok(Storm { envelopes, span_s })
}

/// Collects from the first storm event to the `want`-th: what the gateway
/// published before the storm began is not part of it.
struct Window<T> {
    items: Vec<T>,
    storm_seen: u64,
    want: u64,
}

impl<T> Window<T> {
    fn new(want: u64) -> Self {
        Window {
            items: Vec::with_capacity(usize::try_from(want).unwrap_or(0)),
            storm_seen: 0,
            want,
        }
    }

    fn offer(&mut self, item: T, storm: bool) {
        if self.complete() || (self.items.is_empty() && !storm) {
            return;
        }
        self.items.push(item);
        if storm {
            self.storm_seen += 1;
        }
    }

    fn complete(&self) -> bool {
        self.storm_seen >= self.want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_runs_from_the_first_storm_event_to_the_last() {
        let mut w = Window::new(3);
        w.offer("chunk before", false);
        w.offer("join 1", true);
        w.offer("chunk between", false);
        w.offer("update 2", true);
        assert!(!w.complete());
        w.offer("leave 3", true);
        assert!(w.complete());
        w.offer("chunk after", false);
        assert_eq!(w.items, ["join 1", "chunk between", "update 2", "leave 3"]);
    }
}
