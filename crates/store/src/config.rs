use std::{fmt, str::FromStr, time::Duration};

use crate::StoreError;

/// How to reach the database and how big the pool is.
///
/// `Debug` never prints the password: configs end up in logs.
#[derive(Clone)]
pub struct StoreConfig {
    url: String,
    pub(crate) pg: tokio_postgres::Config,
    /// Connections this process keeps open (through PgBouncer these are cheap
    /// client slots; PgBouncer decides how many server connections back them).
    pub pool_size: usize,
    /// Give up on establishing a connection after this long.
    pub connect_timeout: Duration,
    /// Give up waiting for a free pooled connection after this long.
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Parses a `postgres://user:password@host:port/database` URL (or a
    /// libpq key=value string).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: settings::redact(url),
            reason: e.to_string(),
        })?;
        if pg.get_hosts().is_empty() {
            return Err(StoreError::InvalidUrl {
                url: settings::redact(url),
                reason: "no host given".into(),
            });
        }
        if pg.get_user().is_none() {
            return Err(StoreError::InvalidUrl {
                url: settings::redact(url),
                reason: "no user given".into(),
            });
        }
        if pg.get_application_name().is_none() {
            pg.application_name("gatehouse");
        }
        pg.connect_timeout(Self::DEFAULT_CONNECT_TIMEOUT);
        Ok(StoreConfig {
            url: url.to_owned(),
            pg,
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
        })
    }

    pub fn with_pool_size(mut self, size: usize) -> Result<Self, StoreError> {
        if size == 0 {
            return Err(StoreError::InvalidSetting {
                setting: "pool size",
                reason: "must be at least 1".into(),
            });
        }
        self.pool_size = size;
        Ok(self)
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.pg.connect_timeout(timeout);
        self
    }

    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    pub fn with_application_name(mut self, name: &str) -> Self {
        self.pg.application_name(name);
        self
    }

    /// The URL with its password replaced, safe to log.
    pub fn redacted_url(&self) -> String {
        settings::redact(&self.url)
    }

    pub fn user(&self) -> &str {
        self.pg.get_user().unwrap_or_default()
    }

    pub fn dbname(&self) -> &str {
        self.pg.get_dbname().unwrap_or_default()
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The one redaction, re-exported for the callers that name it here.
pub use settings::redact as redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls_and_debug_output() {
        let url = "postgres://gatehouse_app:s3cret@127.0.0.1:6432/gatehouse";
        let cfg = StoreConfig::from_url(url).unwrap();
        assert!(!format!("{cfg:?}").contains("s3cret"));
        assert_eq!(cfg.user(), "gatehouse_app");
        assert_eq!(cfg.dbname(), "gatehouse");
    }

    #[test]
    fn malformed_urls_are_refused_without_echoing_the_password() {
        let err = StoreConfig::from_url("postgres://u:s3cret@127.0.0.1:notaport/db").unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl { .. }));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(StoreConfig::from_url("postgres:///db").is_err());
    }

    #[test]
    fn a_pool_of_zero_connections_is_refused() {
        let cfg = StoreConfig::from_url("postgres://u@h/db").unwrap();
        assert!(cfg.with_pool_size(0).is_err());
    }
}
