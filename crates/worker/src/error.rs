/// Why the worker as a whole stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker settings: {0}")]
    Config(#[from] settings::ConfigErrors),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("worker task failed: {0}")]
    Task(String),
    /// The address for `/healthz`, `/readyz` and `/metrics` cannot be
    /// listened on (in use, or not an address of this machine). The cause
    /// is part of the message, not a `source`, so that it is said once
    /// where errors are printed with their chain.
    #[error("cannot listen on {addr} for /healthz, /readyz and /metrics: {error}")]
    HttpBind {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

/// Why one message could not be handled, and so what to do with it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later: a dependency is down or busy, or something the
    /// message needs has not arrived yet.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: the message itself is wrong.
    #[error("{0}")]
    Permanent(String),
    /// Try again after `after`, however often it was delivered: the handler
    /// counts attempts itself (a webhook delivery keeps its count in its
    /// log, with limits of its own) and says `Permanent` when it gives up.
    #[error("{reason}")]
    RetryAfter {
        reason: String,
        after: std::time::Duration,
    },
}

impl From<domain::badges::BadgeError> for HandlerError {
    fn from(e: domain::badges::BadgeError) -> Self {
        match e {
            domain::badges::BadgeError::Store(e) => e.into(),
            other => HandlerError::Permanent(other.to_string()),
        }
    }
}

impl From<domain::role_sync::SyncError> for HandlerError {
    fn from(e: domain::role_sync::SyncError) -> Self {
        match e {
            domain::role_sync::SyncError::Store(e) => e.into(),
            domain::role_sync::SyncError::Badges(e) => e.into(),
        }
    }
}

impl From<store::StoreError> for HandlerError {
    fn from(e: store::StoreError) -> Self {
        // Serialisation failures, deadlocks, lock and statement timeouts go
        // away on retry; so do lost connections.
        const RETRYABLE: [&str; 4] = ["40001", "40P01", "55P03", "57014"];
        if e.is_connection_error() || e.sql_state().is_some_and(|s| RETRYABLE.contains(&s)) {
            HandlerError::Transient(e.to_string())
        } else {
            HandlerError::Permanent(e.to_string())
        }
    }
}
