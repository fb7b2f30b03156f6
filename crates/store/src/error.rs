use std::time::Duration;

use crate::wallet::WalletError;

/// Everything that can go wrong in the store, with enough context to say what
/// was being done when it failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid store setting {setting}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },

    #[error("could not connect to the database at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("could not connect to the database at {target} within {after:?}; is it running and reachable?")]
    ConnectTimeout { target: String, after: Duration },

    #[error("no database connection became free within {0:?}; raise the pool size or look for slow transactions")]
    PoolTimeout(Duration),

    #[error("the database connection pool is closed")]
    PoolClosed,

    #[error("database error while {context}: {detail}")]
    Query {
        context: &'static str,
        /// The server's message and SQLSTATE: tokio-postgres' own Display
        /// says only "db error".
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A unique constraint refused the write: the thing already exists.
    #[error("{context}: conflicts with an existing row ({constraint})")]
    Conflict {
        context: &'static str,
        constraint: String,
    },

    /// A text value PostgreSQL cannot store (a NUL character): the input
    /// is at fault, not the database.
    #[error("{context}: a text value contains a character PostgreSQL cannot store (NUL, \\u0000)")]
    Unstorable { context: &'static str },

    /// A statement [`TenantTx::commit_with`](crate::TenantTx::commit_with)'s
    /// `last` tried after the `COMMIT` had gone out: it was not sent.
    #[error("{context}: not sent, the transaction's COMMIT had gone out already (commit_with's statements must all be sent at once)")]
    AfterCommit { context: &'static str },

    #[error("{context}: expected a row, found none")]
    NotFound { context: &'static str },

    #[error(transparent)]
    Wallet(#[from] WalletError),

    #[error("Discord id {id} does not fit {column} (a bigint holds at most 9223372036854775807)")]
    IdOutOfRange { column: &'static str, id: u64 },

    #[error("stored {what} is malformed: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl StoreError {
    /// Wraps a driver error with what we were doing, turning unique
    /// violations into [`StoreError::Conflict`] so callers can match on it.
    pub(crate) fn query(context: &'static str, source: tokio_postgres::Error) -> Self {
        if let Some(db) = source.as_db_error() {
            use tokio_postgres::error::SqlState;
            if db.code() == &SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict {
                    context,
                    constraint: db.constraint().unwrap_or("unique").to_owned(),
                };
            }
            if db.code() == &SqlState::UNTRANSLATABLE_CHARACTER
                || db.code() == &SqlState::CHARACTER_NOT_IN_REPERTOIRE
            {
                return StoreError::Unstorable { context };
            }
        }
        let detail = match source.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => source.to_string(),
        };
        StoreError::Query {
            context,
            detail,
            source,
        }
    }

    /// True when the failure is about reaching the database (connect, pool,
    /// a connection that died) rather than about what a query asked for.
    /// Retrying elsewhere or later may help; retrying the same query will not
    /// help a query error.
    pub fn is_connection_error(&self) -> bool {
        match self {
            StoreError::Connect { .. }
            | StoreError::ConnectTimeout { .. }
            | StoreError::PoolTimeout(_)
            | StoreError::PoolClosed => true,
            StoreError::Query { source, .. } => match source.as_db_error() {
                None => true,
                // The server (or PgBouncer) answered, but to say the session
                // is gone or cannot be had now, not that the query is wrong.
                Some(db) => is_connection_state(db.code().code()),
            },
            _ => false,
        }
    }

    /// The SQLSTATE code of a database-side error, if this is one.
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            StoreError::Query { source, .. } => source.as_db_error().map(|e| e.code().code()),
            StoreError::Conflict { .. } => Some("23505"),
            _ => None,
        }
    }
}

/// SQLSTATEs reporting a connection lost or refused for now: class 08
/// (connection exception; PgBouncer reports its own failures as 08P01, such
/// as `server login has been failing, try again later (server_login_retry)`
/// to every query while PostgreSQL is down), and the server shutting down
/// or starting up (57P01 admin_shutdown, sent to every session by a fast
/// stop; 57P02 crash_shutdown; 57P03 cannot_connect_now): the query may
/// well succeed when tried again.
fn is_connection_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}
