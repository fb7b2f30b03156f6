use std::time::Duration;

use bus::{DurableConsumer, Namespace, Topology};

use crate::WorkerError;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The namespace and the streams, ensured at start exactly as the
    /// gateway ensures them.
    pub topology: Topology,
    /// Durable consumer name; every worker process with the same name shares
    /// the work.
    pub consumer_name: String,
    /// Messages handled at once by this process.
    pub concurrency: usize,
    /// Deliveries before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before redelivery after the n-th failed attempt (the last entry
    /// repeats).
    pub backoff: Vec<Duration>,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            topology: Topology::new(Namespace::root()),
            consumer_name: "worker".into(),
            concurrency: 32,
            max_attempts: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            ack_wait: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<(), WorkerError> {
        let bad = |setting: &'static str, reason: &str| {
            Err(WorkerError::Config {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max attempts", "must be at least 1");
        }
        if self.backoff.is_empty() {
            return bad("backoff", "needs at least one delay");
        }
        if self.ack_wait < Duration::from_secs(1) {
            return bad("ack wait", "must be at least 1s");
        }
        let name_ok = !self.consumer_name.is_empty()
            && self
                .consumer_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return bad(
                "consumer name",
                "use letters, digits, '_' and '-' (it names a durable JetStream consumer)",
            );
        }
        self.topology.validate()?;
        Ok(())
    }

    pub fn namespace(&self) -> &Namespace {
        &self.topology.namespace
    }

    /// The durable consumer every worker with this consumer name shares.
    pub fn consumer(&self) -> DurableConsumer {
        DurableConsumer {
            name: self.consumer_name.clone(),
            ack_wait: self.ack_wait,
            max_ack_pending: (self.concurrency * 4).max(256) as i64,
        }
    }

    /// Delay before the next delivery after `attempt` (1-based) failed.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_steps_then_repeats_the_last_delay() {
        let c = WorkerConfig::default();
        assert_eq!(c.backoff_after(1), Duration::from_secs(1));
        assert_eq!(c.backoff_after(2), Duration::from_secs(5));
        assert_eq!(c.backoff_after(9), Duration::from_secs(120));
    }

    #[test]
    fn nonsense_settings_are_refused() {
        let ok = WorkerConfig::default();
        assert!(ok.validate().is_ok());
        for broken in [
            WorkerConfig {
                concurrency: 0,
                ..ok.clone()
            },
            WorkerConfig {
                max_attempts: 0,
                ..ok.clone()
            },
            WorkerConfig {
                backoff: vec![],
                ..ok.clone()
            },
            WorkerConfig {
                consumer_name: "a.b".into(),
                ..ok.clone()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }
}
