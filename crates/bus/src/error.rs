//! What went wrong talking to NATS, naming the thing that failed. Messages
//! never contain a secret: URLs are redacted before they get here.

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A connection setting is unusable; `setting` is the variable to fix.
    #[error("{setting}: {problem}")]
    Setting { setting: String, problem: String },
    /// `url` is already redacted; `problem` ends with what to check.
    #[error("NATS_URL ({url}): cannot connect: {problem}")]
    Connect { url: String, problem: String },
    #[error("JetStream stream {stream}: {problem}")]
    Stream { stream: String, problem: String },
    #[error("JetStream consumer {consumer} on {stream}: {problem}")]
    Consumer {
        stream: String,
        consumer: String,
        problem: String,
    },
    #[error("JetStream key-value bucket {bucket}: {problem}")]
    Bucket { bucket: String, problem: String },
    #[error("publishing to {subject}: {problem}")]
    Publish { subject: String, problem: String },
    /// A dead letter that cannot be handled as asked (replayed, read).
    #[error("dead letter {sequence}: {problem}")]
    DeadLetter { sequence: u64, problem: String },
}

impl BusError {
    pub(crate) fn setting(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        BusError::Setting {
            setting: setting.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn stream(stream: &str, problem: impl std::fmt::Display) -> Self {
        BusError::Stream {
            stream: stream.to_owned(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn publish(subject: &str, problem: impl std::fmt::Display) -> Self {
        BusError::Publish {
            subject: subject.to_owned(),
            problem: problem.to_string(),
        }
    }
}
