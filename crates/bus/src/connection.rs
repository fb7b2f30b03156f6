//! How to reach NATS: servers, credentials and TLS, and one `connect` whose
//! error says what to fix without ever printing a secret.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions};

use crate::{BusError, Process};

pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

pub use settings::Secret;

/// How the client proves who it is (besides a TLS client certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// TLS towards NATS. With nothing set, TLS is still used when the URL says
/// `tls://` or the server requires it, trusting the system's roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key for mutual TLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Refuse to talk to a server that does not offer TLS.
    pub require: bool,
}

/// Everything needed to connect. `Debug` redacts the URL, which may carry
/// a password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// One server or several, comma-separated; may carry `user:password@`.
    pub url: String,
    pub auth: Option<Auth>,
    pub tls: TlsSettings,
    pub connection_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings::new(DEFAULT_URL)
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.redacted_url())
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("connection_timeout", &self.connection_timeout)
            .finish()
    }
}

impl NatsSettings {
    pub fn new(url: impl Into<String>) -> Self {
        NatsSettings {
            url: url.into(),
            auth: None,
            tls: TlsSettings::default(),
            connection_timeout: Duration::from_secs(5),
        }
    }

    /// Checks what can be checked without a server: every URL parses, a
    /// client certificate comes with its key, the named files exist.
    pub fn validate(&self) -> Result<(), BusError> {
        for server in self.url.split(',').map(str::trim) {
            let parsed = if server.contains("://") {
                url::Url::parse(server).ok()
            } else {
                url::Url::parse(&format!("nats://{server}")).ok()
            };
            let ok = parsed.is_some_and(|u| {
                matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") && u.host_str().is_some()
            });
            if !ok {
                // Never echo the URL: it may carry a password.
                return Err(BusError::setting(
                    "NATS_URL",
                    "not a NATS server URL; use e.g. nats://127.0.0.1:4222",
                ));
            }
        }
        if let Some(Auth::UserPassword { user, .. }) = &self.auth {
            if user.is_empty() {
                return Err(BusError::setting(
                    "NATS_USER",
                    "is empty but a password is set",
                ));
            }
        }
        match (&self.tls.client_cert, &self.tls.client_key) {
            (Some(_), None) => {
                return Err(BusError::setting(
                    "NATS_TLS_KEY",
                    "not set, but NATS_TLS_CERT is: a client certificate needs its key",
                ))
            }
            (None, Some(_)) => {
                return Err(BusError::setting(
                    "NATS_TLS_CERT",
                    "not set, but NATS_TLS_KEY is: a client key needs its certificate",
                ))
            }
            _ => {}
        }
        for (setting, file) in [
            ("NATS_TLS_CA", &self.tls.ca_file),
            ("NATS_TLS_CERT", &self.tls.client_cert),
            ("NATS_TLS_KEY", &self.tls.client_key),
        ] {
            if let Some(path) = file {
                if !path.is_file() {
                    return Err(BusError::setting(
                        setting,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The servers without any password, for logs and errors.
    pub fn redacted_url(&self) -> String {
        settings::redact(&self.url)
    }

    /// Options with the credentials, TLS and timeout applied, naming the
    /// connection after `process` and receiving replies on its own inbox
    /// ([`Process::inbox_prefix`]: the generated permissions let each user
    /// subscribe to its own inbox only). The caller may add its own options
    /// (reconnect policy, event callbacks) before
    /// [`NatsSettings::connect_with`].
    pub fn options(&self, process: Process) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .name(process.client_name())
            .custom_inbox_prefix(process.inbox_prefix())
            .connection_timeout(self.connection_timeout);
        match &self.auth {
            Some(Auth::UserPassword { user, password }) => {
                options = options.user_and_password(user.clone(), password.expose().to_owned());
            }
            Some(Auth::Token(token)) => options = options.token(token.expose().to_owned()),
            None => {}
        }
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls.client_cert, &self.tls.client_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.require {
            options = options.require_tls(true);
        }
        options
    }

    /// Connects as `process` with [`NatsSettings::options`]. After this,
    /// async-nats reconnects by itself when the server goes away.
    pub async fn connect(&self, process: Process) -> Result<Client, BusError> {
        self.connect_with(self.options(process)).await
    }

    /// Connects with `options` (built from [`NatsSettings::options`]).
    pub async fn connect_with(&self, options: ConnectOptions) -> Result<Client, BusError> {
        self.validate()?;
        if self.auth.is_none() && !self.url.contains('@') {
            // Fine for a local server without users; in production the
            // server should refuse it (docs/security.md, NATS in production).
            tracing::warn!(
                nats = %self.redacted_url(),
                "connecting to NATS without credentials: NATS_USER/NATS_PASSWORD and NATS_TOKEN are not set"
            );
        }
        // async-nats reads one string as one address: a cluster's list must
        // reach it as a list, or a comma makes the URL unparseable.
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        options
            .connect(servers)
            .await
            .map_err(|e| {
                let refused = e.kind() == ConnectErrorKind::AuthorizationViolation;
                BusError::Connect {
                    url: self.redacted_url(),
                    problem: if refused {
                        format!(
                            "{e}: the server refused these credentials; set NATS_USER and NATS_PASSWORD (or NATS_TOKEN) to this process's user{}",
                            if self.auth.is_none() { " (none are set)" } else { "" }
                        )
                    } else {
                        format!("{e}; is nats-server running with JetStream enabled (-js)?")
                    },
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        let settings = NatsSettings {
            auth: Some(Auth::UserPassword {
                user: "gw".into(),
                password: Secret::new("hunter2"),
            }),
            ..NatsSettings::new("nats://a:s3cret@host:4222, b:pw@other:4222")
        };
        let shown = format!("{} {settings:?}", settings.redacted_url());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains(":***@"), "{shown}");
        assert!(!settings.redacted_url().contains(":pw@"));
        let bad = NatsSettings::new("http://u:hunter2@host").validate();
        let message = bad.unwrap_err().to_string();
        assert!(message.starts_with("NATS_URL:") && !message.contains("hunter2"));
    }

    #[test]
    fn tls_files_are_checked_before_connecting() {
        let half = NatsSettings {
            tls: TlsSettings {
                client_cert: Some("/etc/hostname".into()),
                ..TlsSettings::default()
            },
            ..NatsSettings::default()
        };
        assert!(half
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("NATS_TLS_KEY"));
        let missing = NatsSettings {
            tls: TlsSettings {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsSettings::default()
            },
            ..NatsSettings::default()
        };
        let message = missing.validate().unwrap_err().to_string();
        assert!(message.starts_with("NATS_TLS_CA") && message.contains("/nonexistent/ca.pem"));
        assert!(NatsSettings::default().validate().is_ok());
    }

    #[tokio::test]
    async fn a_failed_connect_is_one_redacted_line() {
        // Port 1 on loopback: refused at once, no server needed.
        let settings = NatsSettings {
            connection_timeout: Duration::from_secs(2),
            ..NatsSettings::new("nats://u:hunter2@127.0.0.1:1")
        };
        let message = settings
            .connect(Process::Admin)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("NATS_URL (nats://u:***@127.0.0.1:1)"),
            "{message}"
        );
        assert!(!message.contains("hunter2") && !message.contains('\n'));
    }
}
