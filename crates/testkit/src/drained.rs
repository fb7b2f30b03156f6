//! "Consumer drained": the point after which a missing second effect is
//! proof, not luck. A test that shows a redelivered event changes nothing
//! must look only once every copy has been handled; a fixed sleep is either
//! too short on a loaded machine or wasted time on an idle one.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream;
use bus::Namespace;
use futures::StreamExt;
use tokio::time::Instant;

/// Waits until every durable consumer on `ns`'s contract streams has no
/// message left to deliver and none awaiting an acknowledgement, twice in a
/// row with no new message in between (a handler may publish a follow-up,
/// such as an eligibility check, before it acknowledges the cause). A
/// worker acknowledges only after the effect is committed, so from then on
/// the database holds every effect there will be. Panics after `within`
/// with every consumer's state.
pub async fn drained(js: &jetstream::Context, ns: &Namespace, within: Duration) {
    let deadline = Instant::now() + within;
    let mut settled_at: Option<Vec<u64>> = None;
    loop {
        let now = Snapshot::take(js, ns).await;
        if now.is_drained() {
            if settled_at.as_ref() == Some(&now.last_sequences) {
                return;
            }
            settled_at = Some(now.last_sequences.clone());
        } else {
            settled_at = None;
        }
        if Instant::now() >= deadline {
            panic!("the consumers were not drained within {within:?}: {now}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Snapshot {
    last_sequences: Vec<u64>,
    consumers: Vec<ConsumerState>,
}

struct ConsumerState {
    stream: String,
    name: String,
    pending: u64,
    ack_pending: usize,
}

impl Snapshot {
    async fn take(js: &jetstream::Context, ns: &Namespace) -> Snapshot {
        let mut last_sequences = Vec::new();
        let mut consumers = Vec::new();
        for spec in wire::subjects::ALL_STREAMS {
            let name = ns.stream_name(&spec);
            let Ok(mut stream) = js.get_stream(&name).await else {
                continue;
            };
            let Ok(info) = stream.info().await else {
                continue;
            };
            last_sequences.push(info.state.last_sequence);
            let mut listed = stream.consumers();
            while let Some(Ok(consumer)) = listed.next().await {
                // Ephemeral consumers are readers (a test peeking at dead
                // letters), not handlers.
                if consumer.config.durable_name.is_none() {
                    continue;
                }
                consumers.push(ConsumerState {
                    stream: name.clone(),
                    name: consumer.name,
                    pending: consumer.num_pending,
                    ack_pending: consumer.num_ack_pending,
                });
            }
        }
        Snapshot {
            last_sequences,
            consumers,
        }
    }

    fn is_drained(&self) -> bool {
        !self.consumers.is_empty()
            && self
                .consumers
                .iter()
                .all(|c| c.pending == 0 && c.ack_pending == 0)
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.consumers.is_empty() {
            return write!(f, "no durable consumer exists (is a worker running?)");
        }
        for (i, c) in self.consumers.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(
                f,
                "{} on {}: {} undelivered, {} unacknowledged",
                c.name, c.stream, c.pending, c.ack_pending
            )?;
        }
        Ok(())
    }
}
