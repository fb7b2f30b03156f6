use std::time::Duration;

use bus::{DurableConsumer, Namespace, Topology};
use settings::{ConfigErrors, Problems};

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
    /// How often processed-event ids older than the streams' max age are
    /// forgotten.
    pub prune_interval: Duration,
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
            prune_interval: Duration::from_secs(3600),
        }
    }
}

impl WorkerConfig {
    /// Every problem at once, each named by its field (`concurrency`,
    /// `max_attempts`, `backoff`, `ack_wait`, `consumer_name`); the command
    /// line renames them to the variables that set them.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Problems::new();
        if self.concurrency == 0 {
            problems.push("concurrency", "must be at least 1");
        }
        if self.max_attempts == 0 {
            problems.push("max_attempts", "must be at least 1");
        }
        if self.backoff.is_empty() {
            problems.push("backoff", "needs at least one delay");
        }
        if self.prune_interval.is_zero() {
            problems.push("prune_interval", "must be more than 0");
        }
        if self.ack_wait < Duration::from_secs(1) {
            problems.push("ack_wait", "must be at least 1s");
        }
        let name_ok = !self.consumer_name.is_empty()
            && self
                .consumer_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            problems.push(
                "consumer_name",
                "use letters, digits, '_' and '-' (it names a durable JetStream consumer)",
            );
        }
        if let Err(e) = self.topology.validate() {
            problems.push("streams", e);
        }
        problems.finish()
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

    #[test]
    fn every_problem_is_reported_at_once() {
        let broken = WorkerConfig {
            concurrency: 0,
            ack_wait: Duration::ZERO,
            consumer_name: "a.b".into(),
            ..WorkerConfig::default()
        };
        let e = broken.validate().unwrap_err();
        let named: Vec<&str> = e.problems().iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(named, ["concurrency", "ack_wait", "consumer_name"]);
    }
}
