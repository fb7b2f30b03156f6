//! NATS settings shared by the verbs that talk to JetStream: where NATS is,
//! how to log in, and the stream limits. The gateway and the worker read the
//! limits through the same [`StreamArgs`], so the same environment gives both
//! the same streams.

use std::path::PathBuf;

use anyhow::Context;
use bus::{Namespace, NatsSettings, Process, StreamLimitSettings, StreamSettings, Topology};

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = bus::DEFAULT_URL,
        hide_env_values = true
    )]
    pub nats_url: settings::Secret,

    /// Prefix for every subject, stream and consumer name, so several
    /// deployments can share one NATS server. Empty: the standard names.
    #[arg(long, env = "NATS_NAMESPACE", default_value = "")]
    pub nats_namespace: String,

    #[command(flatten)]
    pub login: NatsLoginArgs,
}

/// Credentials and TLS towards NATS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsLoginArgs {
    /// User name (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,

    /// Password for NATS_USER. Prefer the environment over the flag.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<settings::Secret>,

    /// Token authentication, instead of a user and password.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<settings::Secret>,

    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS, with NATS_TLS_KEY.
    #[arg(long, env = "NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client key (PEM) for NATS_TLS_CERT.
    #[arg(long, env = "NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    /// Refuse a server that does not offer TLS.
    #[arg(long, env = "NATS_TLS_REQUIRED", default_value_t = false)]
    pub nats_tls_required: bool,
}

impl NatsLoginArgs {
    /// `url` with these credentials and TLS settings.
    pub fn settings(&self, url: &str) -> anyhow::Result<NatsSettings> {
        let auth = match (&self.nats_user, &self.nats_password, &self.nats_token) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => anyhow::bail!(
                "NATS_TOKEN (--nats-token): set either a token or NATS_USER/NATS_PASSWORD, not both"
            ),
            (Some(user), Some(password), None) => Some(bus::Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            }),
            (Some(_), None, None) => {
                anyhow::bail!("NATS_PASSWORD (--nats-password): not set, but NATS_USER is")
            }
            (None, Some(_), None) => {
                anyhow::bail!("NATS_USER (--nats-user): not set, but NATS_PASSWORD is")
            }
            (None, None, Some(token)) => Some(bus::Auth::Token(token.clone())),
            (None, None, None) => None,
        };
        let settings = NatsSettings {
            auth,
            tls: bus::TlsSettings {
                ca_file: self.nats_tls_ca.clone(),
                client_cert: self.nats_tls_cert.clone(),
                client_key: self.nats_tls_key.clone(),
                require: self.nats_tls_required,
            },
            ..NatsSettings::new(url)
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl NatsArgs {
    pub fn namespace(&self) -> anyhow::Result<Namespace> {
        namespace(&self.nats_namespace)
    }

    pub fn settings(&self) -> anyhow::Result<NatsSettings> {
        self.login.settings(self.nats_url.expose())
    }

    /// Connects as `process`, or explains in one line what to fix. After
    /// this, async-nats reconnects by itself when the server goes away.
    pub async fn connect(&self, process: Process) -> anyhow::Result<async_nats::Client> {
        let settings = self.settings()?;
        settings
            .connect(process)
            .await
            .context("is NATS running with JetStream? `scripts/stack up` starts one")
    }
}

/// The namespace named by NATS_NAMESPACE (empty: the root).
pub fn namespace(prefix: &str) -> anyhow::Result<Namespace> {
    if prefix.is_empty() {
        Ok(Namespace::root())
    } else {
        Namespace::prefixed(prefix).context("NATS_NAMESPACE (--nats-namespace)")
    }
}

/// One NATS login per process, for the verbs that run several processes in
/// one (the demo, the benchmarks): each connects with its own user, as it
/// would in production. The variables are those `scripts/stack up` writes to
/// `.stack/env`; a process without a user connects without credentials (a
/// server without users).
#[cfg(feature = "sim")]
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProcessLogins {
    /// NATS user of the gateway.
    #[arg(long = "nats-gateway-user", env = "GATEHOUSE_NATS_GATEWAY_USER")]
    pub gateway_user: Option<String>,
    /// Password of --nats-gateway-user.
    #[arg(
        long = "nats-gateway-password",
        env = "GATEHOUSE_NATS_GATEWAY_PASSWORD",
        hide_env_values = true
    )]
    pub gateway_password: Option<settings::Secret>,
    /// NATS user of the worker.
    #[arg(long = "nats-worker-user", env = "GATEHOUSE_NATS_WORKER_USER")]
    pub worker_user: Option<String>,
    /// Password of --nats-worker-user.
    #[arg(
        long = "nats-worker-password",
        env = "GATEHOUSE_NATS_WORKER_PASSWORD",
        hide_env_values = true
    )]
    pub worker_password: Option<settings::Secret>,
    /// NATS user of the admin API.
    #[arg(long = "nats-api-user", env = "GATEHOUSE_NATS_API_USER")]
    pub api_user: Option<String>,
    /// Password of --nats-api-user.
    #[arg(
        long = "nats-api-password",
        env = "GATEHOUSE_NATS_API_PASSWORD",
        hide_env_values = true
    )]
    pub api_password: Option<settings::Secret>,
    /// NATS user for setting up and removing the run's streams.
    #[arg(long = "nats-admin-user", env = "GATEHOUSE_NATS_ADMIN_USER")]
    pub admin_user: Option<String>,
    /// Password of --nats-admin-user.
    #[arg(
        long = "nats-admin-password",
        env = "GATEHOUSE_NATS_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<settings::Secret>,
}

#[cfg(feature = "sim")]
impl ProcessLogins {
    /// The user and password of `process`, if one is set.
    pub fn login(&self, process: Process) -> anyhow::Result<Option<(String, settings::Secret)>> {
        let (user, password) = match process {
            Process::Gateway => (&self.gateway_user, &self.gateway_password),
            Process::Worker => (&self.worker_user, &self.worker_password),
            Process::Api => (&self.api_user, &self.api_password),
            Process::Admin => (&self.admin_user, &self.admin_password),
        };
        match (user, password) {
            (Some(user), Some(password)) => Ok(Some((user.clone(), password.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "{}: not set, but {} is",
                process.password_variable(),
                process.user_variable()
            ),
            (None, Some(_)) => anyhow::bail!(
                "{}: not set, but {} is",
                process.user_variable(),
                process.password_variable()
            ),
        }
    }

    /// The settings `process` connects to `url` with.
    pub fn settings(&self, url: &str, process: Process) -> anyhow::Result<NatsSettings> {
        let settings = NatsSettings {
            auth: self
                .login(process)?
                .map(|(user, password)| bus::Auth::UserPassword { user, password }),
            ..NatsSettings::new(url)
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Connects to `url` as `process`.
    pub async fn connect(&self, url: &str, process: Process) -> anyhow::Result<async_nats::Client> {
        self.settings(url, process)?
            .connect(process)
            .await
            .context("is NATS running with JetStream? `scripts/stack up` starts one")
    }
}

/// Stream limits, read by the gateway and the worker alike. Unset values
/// keep `bus`'s definition; per-stream settings win over STREAM_*.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StreamArgs {
    /// Storage of every stream, `file` or `memory` [default: file].
    #[arg(long = "stream-storage", env = "STREAM_STORAGE")]
    pub stream_storage: Option<String>,

    /// Max age of every stream, e.g. 7d; 0 for none [default: 7d].
    #[arg(long = "stream-max-age", env = "STREAM_MAX_AGE")]
    pub stream_max_age: Option<String>,

    /// Copies of every stream and bucket in a clustered JetStream [default: 1].
    #[arg(long = "nats-replicas", env = "NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,

    /// Cluster (of a super-cluster) whose servers keep every stream and
    /// bucket; a file's `streams.<name>.placement_cluster` wins for its
    /// stream [default: any].
    #[arg(long = "nats-placement-cluster", env = "NATS_PLACEMENT_CLUSTER")]
    pub nats_placement_cluster: Option<String>,

    /// Server tags, comma-separated, that every server keeping a stream or
    /// bucket must carry; a file's `streams.<name>.placement_tags` wins for
    /// its stream [default: none].
    #[arg(long = "nats-placement-tags", env = "NATS_PLACEMENT_TAGS")]
    pub nats_placement_tags: Option<String>,

    /// EVENTS stream storage, `file` or `memory` [default: STREAM_STORAGE].
    #[arg(long = "events-storage", env = "EVENTS_STORAGE")]
    pub events_storage: Option<String>,

    /// EVENTS stream max age, e.g. 7d; 0 for none [default: STREAM_MAX_AGE].
    #[arg(long = "events-max-age", env = "EVENTS_MAX_AGE")]
    pub events_max_age: Option<String>,

    /// EVENTS stream max bytes, -1 for unlimited [default: -1].
    #[arg(
        long = "events-max-bytes",
        env = "EVENTS_MAX_BYTES",
        allow_negative_numbers = true
    )]
    pub events_max_bytes: Option<i64>,

    /// COMMANDS stream storage, `file` or `memory` [default: STREAM_STORAGE].
    #[arg(long = "commands-storage", env = "COMMANDS_STORAGE")]
    pub commands_storage: Option<String>,

    /// COMMANDS stream max age [default: STREAM_MAX_AGE].
    #[arg(long = "commands-max-age", env = "COMMANDS_MAX_AGE")]
    pub commands_max_age: Option<String>,

    /// COMMANDS stream max bytes, -1 for unlimited [default: -1].
    #[arg(
        long = "commands-max-bytes",
        env = "COMMANDS_MAX_BYTES",
        allow_negative_numbers = true
    )]
    pub commands_max_bytes: Option<i64>,
}

impl StreamArgs {
    /// The settings as `bus` reads them.
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            every: StreamLimitSettings {
                storage: self.stream_storage.clone(),
                max_age: self.stream_max_age.clone(),
                replicas: self.nats_replicas,
                placement_cluster: self.nats_placement_cluster.clone(),
                placement_tags: self.nats_placement_tags.clone(),
                ..StreamLimitSettings::default()
            },
            events: StreamLimitSettings {
                storage: self.events_storage.clone(),
                max_age: self.events_max_age.clone(),
                max_bytes: self.events_max_bytes,
                ..StreamLimitSettings::default()
            },
            commands: StreamLimitSettings {
                storage: self.commands_storage.clone(),
                max_age: self.commands_max_age.clone(),
                max_bytes: self.commands_max_bytes,
                ..StreamLimitSettings::default()
            },
            ..StreamSettings::default()
        }
    }

    /// The topology of `namespace` with these limits (the buckets take
    /// NATS_REPLICAS and NATS_PLACEMENT_* too).
    pub fn topology(&self, namespace: Namespace) -> Result<Topology, bus::BusError> {
        let mut topology = Topology::new(namespace);
        self.settings().apply(&mut topology)?;
        topology.validate()?;
        Ok(topology)
    }

    /// [`StreamArgs::topology`], with a bad setting recorded in `problems`
    /// under its variable and flag (`STREAM_STORAGE (--stream-storage)`).
    pub fn checked_topology(
        &self,
        namespace: Namespace,
        problems: &mut settings::Problems,
    ) -> Option<Topology> {
        match self.topology(namespace) {
            Ok(topology) => Some(topology),
            Err(bus::BusError::Setting { setting, problem }) => {
                let label = crate::config::Labels::of::<Self>().get(&setting.to_ascii_lowercase());
                problems.push(label, problem);
                None
            }
            Err(other) => {
                problems.push("streams", other);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_stream_settings_win_over_every_stream() {
        let args = StreamArgs {
            stream_storage: Some("memory".into()),
            stream_max_age: Some("1h".into()),
            nats_replicas: Some(3),
            events_max_age: Some("2h".into()),
            ..StreamArgs::default()
        };
        let t = args.topology(Namespace::root()).unwrap();
        assert_eq!(t.events.max_age, std::time::Duration::from_secs(7200));
        assert_eq!(t.dead_letter.max_age, std::time::Duration::from_secs(3600));
        assert_eq!(t.commands.storage, bus::Storage::Memory);
        assert_eq!((t.eligibility.replicas, t.sessions.replicas), (3, 3));
        assert_eq!(t.discord_budget.replicas, 3);
    }

    #[test]
    fn placement_reaches_every_stream_and_bucket() {
        let args = StreamArgs {
            nats_placement_cluster: Some("east".into()),
            nats_placement_tags: Some("ssd,az1".into()),
            ..StreamArgs::default()
        };
        let t = args.topology(Namespace::root()).unwrap();
        let east = bus::Placement {
            cluster: Some("east".into()),
            tags: vec!["ssd".into(), "az1".into()],
        };
        for (_, limits) in t.streams() {
            assert_eq!(limits.placement, east);
        }
        assert_eq!(t.sessions.placement, east);
        assert_eq!(t.discord_budget.placement, east);
    }

    #[test]
    fn a_bad_placement_is_named_by_its_variable_and_flag() {
        let args = StreamArgs {
            nats_placement_tags: Some("ssd,,az1".into()),
            ..StreamArgs::default()
        };
        let mut problems = settings::Problems::new();
        assert!(args
            .checked_topology(Namespace::root(), &mut problems)
            .is_none());
        let e = problems.finish().unwrap_err().to_string();
        assert!(
            e.contains("NATS_PLACEMENT_TAGS (--nats-placement-tags)"),
            "{e}"
        );
    }

    #[test]
    fn half_a_login_is_refused() {
        let user_only = NatsLoginArgs {
            nats_user: Some("gw".into()),
            ..NatsLoginArgs::default()
        };
        let e = user_only
            .settings(bus::DEFAULT_URL)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("NATS_PASSWORD"), "{e}");
        assert!(NatsLoginArgs::default().settings(bus::DEFAULT_URL).is_ok());
    }

    #[cfg(feature = "sim")]
    #[test]
    fn each_process_of_the_demo_logs_in_as_itself() {
        let logins = ProcessLogins {
            gateway_user: Some("gateway".into()),
            gateway_password: Some(settings::Secret::new("gw-pass")),
            worker_user: Some("worker".into()),
            ..ProcessLogins::default()
        };
        let gateway = logins.settings(bus::DEFAULT_URL, Process::Gateway).unwrap();
        assert!(matches!(
            gateway.auth,
            Some(bus::Auth::UserPassword { ref user, .. }) if user == "gateway"
        ));
        // No user at all: a server without users.
        let api = logins.settings(bus::DEFAULT_URL, Process::Api).unwrap();
        assert!(api.auth.is_none());
        let e = logins
            .settings(bus::DEFAULT_URL, Process::Worker)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("GATEHOUSE_NATS_WORKER_PASSWORD: not set"),
            "{e}"
        );
    }
}
