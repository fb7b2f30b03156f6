//! The durable pull consumer workers share on each stream.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::Context;
use wire::subjects::StreamSpec;

use crate::{BusError, Namespace};

/// A durable consumer: every process using the same name shares the work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableConsumer {
    /// Base name; the durable on stream `EVENTS` is `<name>_events`.
    pub name: String,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Deliveries outstanding at once across all processes.
    pub max_ack_pending: i64,
}

impl DurableConsumer {
    /// The durable's name on `spec` in `ns`.
    pub fn durable_name(&self, ns: &Namespace, spec: &StreamSpec) -> String {
        Self::durable_name_for(ns, &self.name, spec)
    }

    /// The durable's name for consumer name `name` on `spec` in `ns` (the
    /// generated NATS permissions name it too).
    pub fn durable_name_for(ns: &Namespace, name: &str, spec: &StreamSpec) -> String {
        ns.name(&format!("{}_{}", name, spec.name.to_ascii_lowercase()))
    }

    pub fn config(&self, ns: &Namespace, spec: &StreamSpec) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable_name(ns, spec)),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: self.ack_wait,
            // Unlimited on the server side: the worker counts attempts itself
            // and dead-letters, so JetStream never silently stops redelivering.
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }
}

/// Opens the durable consumer on `spec`'s stream, creating it if missing.
/// The stream must exist ([`crate::ensure_streams`]).
pub async fn ensure_consumer(
    js: &Context,
    ns: &Namespace,
    spec: &StreamSpec,
    consumer: &DurableConsumer,
) -> Result<PullConsumer, BusError> {
    let stream_name = ns.stream_name(spec);
    let durable = consumer.durable_name(ns, spec);
    let fail = |problem: String| BusError::Consumer {
        stream: stream_name.clone(),
        consumer: durable.clone(),
        problem,
    };
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| fail(format!("cannot open the stream: {e}")))?;
    stream
        .get_or_create_consumer(&durable, consumer.config(ns, spec))
        .await
        .map_err(|e| fail(format!("cannot create or open it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durables_are_named_per_stream_and_namespace() {
        let consumer = DurableConsumer {
            name: "worker".into(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 256,
        };
        let ns = Namespace::prefixed("t1").unwrap();
        let config = consumer.config(&ns, &wire::subjects::COMMANDS);
        assert_eq!(config.durable_name.as_deref(), Some("t1_worker_commands"));
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.max_deliver, -1);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
    }
}
