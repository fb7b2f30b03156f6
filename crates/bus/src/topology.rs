//! The one definition of every stream and key-value bucket Gatehouse uses,
//! with its limits. The gateway and the worker both build their JetStream
//! objects from a [`Topology`], so they cannot disagree about what a stream
//! looks like.

use std::time::Duration;

use async_nats::jetstream::stream::{self, Config, DiscardPolicy, RetentionPolicy, StorageType};
use wire::subjects::{self, StreamSpec};

use crate::{BusError, Namespace};

/// Where JetStream keeps a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

impl Storage {
    fn jetstream(self) -> StorageType {
        match self {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        }
    }
}

/// When JetStream removes a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// At the limits (age, bytes, messages) only.
    Limits,
    /// Once every consumer has acknowledged it.
    Interest,
    /// Once one consumer has acknowledged it.
    WorkQueue,
}

impl Retention {
    fn jetstream(self) -> RetentionPolicy {
        match self {
            Retention::Limits => RetentionPolicy::Limits,
            Retention::Interest => RetentionPolicy::Interest,
            Retention::WorkQueue => RetentionPolicy::WorkQueue,
        }
    }
}

/// Where a clustered JetStream may put a stream's replicas: on servers of
/// `cluster` (one cluster of a super-cluster) that carry every one of
/// `tags` (`server_tags` in their configuration). The default, no cluster
/// and no tags, lets JetStream choose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub cluster: Option<String>,
    pub tags: Vec<String>,
}

impl Placement {
    /// No constraint: JetStream chooses.
    pub fn is_anywhere(&self) -> bool {
        self.cluster.is_none() && self.tags.is_empty()
    }

    /// What the stream configuration carries: nothing for no constraint.
    fn jetstream(&self) -> Option<stream::Placement> {
        (!self.is_anywhere()).then(|| stream::Placement {
            cluster: self.cluster.clone(),
            tags: self.tags.clone(),
        })
    }

    /// Refuses a name JetStream could never match. Problems start with the
    /// field (`placement_cluster`, `placement_tags`) so settings can name
    /// the variable to fix.
    fn problem(&self) -> Option<&'static str> {
        let blank = |s: &str| s.is_empty() || s.contains(char::is_whitespace);
        if self.cluster.as_deref().is_some_and(blank) {
            return Some("placement_cluster must be a cluster name, without spaces");
        }
        if self.tags.iter().any(|t| blank(t) || t.contains(',')) {
            return Some(
                "placement_tags must be server tags, without spaces, empty tags or commas in one",
            );
        }
        None
    }
}

/// Limits of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub storage: Storage,
    pub retention: Retention,
    /// Zero: no age limit.
    pub max_age: Duration,
    /// -1 for unlimited.
    pub max_bytes: i64,
    /// -1 for unlimited.
    pub max_messages: i64,
    /// Window in which JetStream drops a publish whose `Nats-Msg-Id` it has
    /// seen; re-publishes after a gateway restart must fall inside it.
    pub duplicate_window: Duration,
    /// Copies kept by a clustered JetStream; 1 on a single server.
    pub replicas: usize,
    /// Which servers of a clustered JetStream keep those copies.
    pub placement: Placement,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            storage: Storage::File,
            retention: Retention::Limits,
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: -1,
            max_messages: -1,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            placement: Placement::default(),
        }
    }
}

impl StreamLimits {
    /// Refuses limits JetStream would refuse or that would break dedupe;
    /// `stream` names the stream in the message.
    pub fn validate(&self, stream: &str) -> Result<(), BusError> {
        let bad = |problem: &str| Err(BusError::stream(stream, problem));
        if self.duplicate_window.is_zero() {
            return bad(
                "duplicate_window must be above zero: deduplication by message id depends on it",
            );
        }
        if !self.max_age.is_zero() && self.duplicate_window > self.max_age {
            return bad("duplicate_window must not exceed max_age (JetStream refuses it)");
        }
        if !(self.max_bytes == -1 || self.max_bytes > 0) {
            return bad("max_bytes must be -1 (unlimited) or positive");
        }
        if !(self.max_messages == -1 || self.max_messages > 0) {
            return bad("max_messages must be -1 (unlimited) or positive");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be between 1 and 5");
        }
        if let Some(problem) = self.placement.problem() {
            return bad(problem);
        }
        Ok(())
    }
}

/// Limits of a key-value bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketLimits {
    pub storage: Storage,
    /// Entries older than this disappear.
    pub max_age: Duration,
    pub replicas: usize,
    pub placement: Placement,
}

/// Base name of the gateway's session bucket (prefixed with the namespace).
pub const SESSIONS_BUCKET: &str = "GATEWAY_SESSIONS";

/// Base name of the bucket where worker processes share Discord's request
/// budget: the global token bucket, the invalid-request count and each
/// guild's role-change window (prefixed with the namespace).
pub const DISCORD_BUDGET_BUCKET: &str = "DISCORD_BUDGET";

/// Every stream and bucket of one deployment, in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub namespace: Namespace,
    pub events: StreamLimits,
    pub commands: StreamLimits,
    pub eligibility: StreamLimits,
    /// Webhook deliveries: small references, retried with delays of their
    /// own, so their backlog never sits in front of Discord events.
    pub webhooks: StreamLimits,
    pub dead_letter: StreamLimits,
    /// Gateway sessions kept across restarts. Discord refuses to resume an
    /// old session anyway, so entries need not live long.
    pub sessions: BucketLimits,
    /// Discord's request budget shared by the workers. Every entry is about
    /// the last few minutes (the invalid-request window is the longest), so
    /// an hour without a write means the entry says nothing any more.
    pub discord_budget: BucketLimits,
}

impl Topology {
    /// The defaults: file storage, 7 days, unlimited size, 2 minute dedupe
    /// window, one replica; sessions kept 5 minutes, the Discord budget an
    /// hour.
    pub fn new(namespace: Namespace) -> Self {
        Topology {
            namespace,
            events: StreamLimits::default(),
            commands: StreamLimits::default(),
            eligibility: StreamLimits::default(),
            webhooks: StreamLimits::default(),
            dead_letter: StreamLimits::default(),
            sessions: BucketLimits {
                storage: Storage::File,
                max_age: Duration::from_secs(300),
                replicas: 1,
                placement: Placement::default(),
            },
            discord_budget: BucketLimits {
                storage: Storage::File,
                max_age: Duration::from_secs(3600),
                replicas: 1,
                placement: Placement::default(),
            },
        }
    }

    /// The same storage for every stream and bucket (tests and the demo
    /// use memory).
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.for_each_stream(|limits| limits.storage = storage);
        self.sessions.storage = storage;
        self.discord_budget.storage = storage;
        self
    }

    /// The same message age limit on every stream (the buckets keep their
    /// own).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.for_each_stream(|limits| limits.max_age = max_age);
        self
    }

    /// The same replica count everywhere, for a clustered JetStream.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.for_each_stream(|limits| limits.replicas = replicas);
        self.sessions.replicas = replicas;
        self.discord_budget.replicas = replicas;
        self
    }

    /// The same placement everywhere, for a clustered JetStream.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.for_each_stream(|limits| limits.placement = placement.clone());
        self.sessions.placement = placement.clone();
        self.discord_budget.placement = placement;
        self
    }

    fn for_each_stream(&mut self, mut change: impl FnMut(&mut StreamLimits)) {
        for limits in [
            &mut self.events,
            &mut self.commands,
            &mut self.eligibility,
            &mut self.webhooks,
            &mut self.dead_letter,
        ] {
            change(limits);
        }
    }

    /// Each stream of the contract with its limits, in the order
    /// [`wire::subjects::ALL_STREAMS`] lists them.
    pub fn streams(&self) -> [(StreamSpec, &StreamLimits); 5] {
        [
            (subjects::EVENTS, &self.events),
            (subjects::COMMANDS, &self.commands),
            (subjects::ELIGIBILITY, &self.eligibility),
            (subjects::WEBHOOKS, &self.webhooks),
            (subjects::DEAD_LETTER, &self.dead_letter),
        ]
    }

    pub fn validate(&self) -> Result<(), BusError> {
        for (spec, limits) in self.streams() {
            limits.validate(&self.namespace.stream_name(&spec))?;
        }
        self.sessions.validate(&self.sessions_bucket())?;
        self.discord_budget
            .validate(&self.discord_budget_bucket())?;
        Ok(())
    }

    /// The JetStream configuration of `spec` in this namespace.
    pub fn stream_config(&self, spec: &StreamSpec, limits: &StreamLimits) -> Config {
        Config {
            name: self.namespace.stream_name(spec),
            subjects: self.namespace.stream_subjects(spec),
            storage: limits.storage.jetstream(),
            retention: limits.retention.jetstream(),
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            max_messages: limits.max_messages,
            duplicate_window: limits.duplicate_window,
            num_replicas: limits.replicas,
            placement: limits.placement.jetstream(),
            // Old messages make room for new ones: refusing new events would
            // stall every shard behind a full stream.
            discard: DiscardPolicy::Old,
            description: Some(description(spec).to_owned()),
            ..Config::default()
        }
    }

    /// The configurations of every stream, in [`Topology::streams`] order.
    pub fn stream_configs(&self) -> Vec<Config> {
        self.streams()
            .into_iter()
            .map(|(spec, limits)| self.stream_config(&spec, limits))
            .collect()
    }

    /// The session bucket's name in this namespace.
    pub fn sessions_bucket(&self) -> String {
        self.namespace.name(SESSIONS_BUCKET)
    }

    /// The stream behind the session bucket.
    pub fn sessions_stream_config(&self) -> Config {
        bucket_stream_config(
            &self.sessions_bucket(),
            &self.sessions,
            "Gatehouse gateway sessions for resuming after a restart",
        )
    }

    /// The Discord budget bucket's name in this namespace.
    pub fn discord_budget_bucket(&self) -> String {
        self.namespace.name(DISCORD_BUDGET_BUCKET)
    }

    /// The stream behind the Discord budget bucket.
    pub fn discord_budget_stream_config(&self) -> Config {
        bucket_stream_config(
            &self.discord_budget_bucket(),
            &self.discord_budget,
            "Gatehouse workers' shared Discord request budget (global rate, invalid requests, guild windows)",
        )
    }
}

impl BucketLimits {
    fn validate(&self, bucket: &str) -> Result<(), BusError> {
        let bad = |problem: &str| {
            Err(BusError::Bucket {
                bucket: bucket.to_owned(),
                problem: problem.into(),
            })
        };
        if self.max_age.is_zero() {
            return bad("max_age must be above zero");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be between 1 and 5");
        }
        if let Some(problem) = self.placement.problem() {
            return bad(problem);
        }
        Ok(())
    }
}

/// The stream behind a key-value bucket, with the settings async-nats'
/// `create_key_value` would use. It is created directly because that call
/// first queries account info in a shape NATS 2.9 (Debian's) does not send.
fn bucket_stream_config(bucket: &str, limits: &BucketLimits, description: &str) -> Config {
    Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: limits.max_age,
        max_bytes: -1,
        max_messages: -1,
        duplicate_window: limits.max_age.min(Duration::from_secs(120)),
        storage: limits.storage.jetstream(),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: limits.replicas,
        placement: limits.placement.jetstream(),
        ..Config::default()
    }
}

fn description(spec: &StreamSpec) -> &'static str {
    match spec.name {
        "EVENTS" => "Gatehouse Discord events (wire envelopes)",
        "COMMANDS" => "Gatehouse Discord interactions (wire envelopes)",
        "ELIGIBILITY" => "Gatehouse eligibility check requests",
        "WEBHOOKS" => "Gatehouse webhook deliveries to attempt (references; URLs and secrets stay in the database)",
        "DEAD_LETTER" => "Gatehouse messages a worker gave up on; headers say why",
        _ => "Gatehouse stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_of_the_contract_is_defined_once() {
        let topology = Topology::new(Namespace::root());
        let defined: Vec<_> = topology.streams().iter().map(|(s, _)| *s).collect();
        assert_eq!(defined, subjects::ALL_STREAMS.to_vec());
    }

    #[test]
    fn configs_carry_the_namespace_and_the_limits() {
        let ns = Namespace::prefixed("t7").unwrap();
        let mut topology = Topology::new(ns).with_replicas(3);
        topology.commands.max_age = Duration::from_secs(3600);
        let configs = topology.stream_configs();
        let names: Vec<_> = configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t7_EVENTS",
                "t7_COMMANDS",
                "t7_ELIGIBILITY",
                "t7_WEBHOOKS",
                "t7_DEAD_LETTER"
            ]
        );
        assert_eq!(configs[0].subjects, ["t7.events.>"]);
        assert_eq!(configs[1].max_age, Duration::from_secs(3600));
        assert_eq!(configs[0].max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(configs[3].subjects, ["t7.webhooks.>"]);
        assert!(configs.iter().all(|c| c.num_replicas == 3));
        assert!(configs.iter().all(|c| c.discard == DiscardPolicy::Old));
        let kv = topology.sessions_stream_config();
        assert_eq!(kv.name, "KV_t7_GATEWAY_SESSIONS");
        assert_eq!(kv.subjects, ["$KV.t7_GATEWAY_SESSIONS.>"]);
        assert_eq!(kv.num_replicas, 3);
        let budget = topology.discord_budget_stream_config();
        assert_eq!(budget.name, "KV_t7_DISCORD_BUDGET");
        assert_eq!(budget.subjects, ["$KV.t7_DISCORD_BUDGET.>"]);
        assert_eq!(budget.num_replicas, 3);
        assert_eq!(budget.max_messages_per_subject, 1);
    }

    #[test]
    fn placement_reaches_every_stream_and_bucket_config() {
        let topology = Topology::new(Namespace::root());
        assert!(topology
            .stream_configs()
            .iter()
            .all(|c| c.placement.is_none()));
        assert_eq!(topology.sessions_stream_config().placement, None);

        let east = Placement {
            cluster: Some("east".into()),
            tags: vec!["ssd".into(), "az1".into()],
        };
        let mut topology = topology.with_placement(east.clone());
        topology.dead_letter.placement = Placement {
            cluster: None,
            tags: vec!["cheap".into()],
        };
        let want = Some(stream::Placement {
            cluster: Some("east".into()),
            tags: vec!["ssd".into(), "az1".into()],
        });
        let configs = topology.stream_configs();
        assert!(
            configs[..4].iter().all(|c| c.placement == want),
            "{configs:?}"
        );
        assert_eq!(
            configs[4].placement,
            Some(stream::Placement {
                cluster: None,
                tags: vec!["cheap".into()],
            })
        );
        assert_eq!(topology.sessions_stream_config().placement, want);
        assert_eq!(topology.discord_budget_stream_config().placement, want);
        assert!(topology.validate().is_ok());
    }

    #[test]
    fn placement_names_jetstream_could_never_match_are_refused() {
        let bad = [
            Placement {
                cluster: Some(String::new()),
                tags: vec![],
            },
            Placement {
                cluster: Some("east 1".into()),
                tags: vec![],
            },
            Placement {
                cluster: None,
                tags: vec!["ssd".into(), " ".into()],
            },
            Placement {
                cluster: None,
                tags: vec!["a,b".into()],
            },
        ];
        for placement in bad {
            let mut topology = Topology::new(Namespace::root());
            topology.webhooks.placement = placement.clone();
            let error = topology.validate().unwrap_err().to_string();
            assert!(
                error.contains("WEBHOOKS") && error.contains("placement_"),
                "{placement:?}: {error}"
            );
            let mut topology = Topology::new(Namespace::root());
            topology.sessions.placement = placement.clone();
            let error = topology.validate().unwrap_err().to_string();
            assert!(
                error.contains("GATEWAY_SESSIONS") && error.contains("placement_"),
                "{placement:?}: {error}"
            );
        }
    }

    #[test]
    fn storage_applies_to_every_stream_and_the_bucket() {
        let topology = Topology::new(Namespace::root()).with_storage(Storage::Memory);
        assert!(topology
            .stream_configs()
            .iter()
            .all(|c| c.storage == StorageType::Memory));
        assert_eq!(
            topology.sessions_stream_config().storage,
            StorageType::Memory
        );
        assert_eq!(
            topology.discord_budget_stream_config().storage,
            StorageType::Memory
        );
    }

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused() {
        assert!(Topology::new(Namespace::root()).validate().is_ok());
        let broken = [
            StreamLimits {
                duplicate_window: Duration::ZERO,
                ..StreamLimits::default()
            },
            StreamLimits {
                max_age: Duration::from_secs(60),
                ..StreamLimits::default()
            },
            StreamLimits {
                max_bytes: 0,
                ..StreamLimits::default()
            },
            StreamLimits {
                replicas: 0,
                ..StreamLimits::default()
            },
        ];
        for limits in broken {
            let mut topology = Topology::new(Namespace::root());
            topology.eligibility = limits.clone();
            let error = topology.validate().unwrap_err().to_string();
            assert!(error.contains("ELIGIBILITY"), "{limits:?}: {error}");
        }
        let mut topology = Topology::new(Namespace::root()).with_replicas(6);
        topology.events.replicas = 1;
        assert!(topology.validate().is_err());
    }
}
