//! Against the stack's NATS (`scripts/stack up`): the gateway and the worker
//! ensure the same streams from the one definition, in either order, and a
//! process with different limits cannot change them. Each test has its own
//! namespace and deletes what it created.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use bus::{DurableConsumer, Namespace, Storage, Topology};

struct Scratch {
    js: jetstream::Context,
    topology: Topology,
}

impl Scratch {
    async fn new(label: &str) -> Scratch {
        let client = testkit::StackEnv::load()
            .nats
            .connect(bus::Process::Admin)
            .await;
        let prefix = format!("bus{label}{}", std::process::id());
        let namespace = Namespace::prefixed(&prefix).unwrap();
        Scratch {
            js: jetstream::new(client),
            topology: Topology::new(namespace).with_storage(Storage::Memory),
        }
    }

    /// What `Gateway::start` does with NATS before its shards run.
    async fn gateway_start(&self, topology: &Topology) -> Vec<bus::Drift> {
        let drift = bus::ensure_streams(&self.js, topology).await.unwrap();
        bus::open_sessions_bucket(&self.js, topology).await.unwrap();
        drift
    }

    /// What `worker::run` does with NATS before it consumes.
    async fn worker_start(&self, topology: &Topology) -> Vec<bus::Drift> {
        let drift = bus::ensure_streams(&self.js, topology).await.unwrap();
        let consumer = DurableConsumer {
            name: "worker".into(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 256,
        };
        for (spec, _) in topology.streams() {
            bus::ensure_consumer(&self.js, &topology.namespace, &spec, &consumer)
                .await
                .unwrap();
        }
        drift
    }

    /// The stored configuration of every stream and the bucket, plus when
    /// each was created (a re-created stream would show a new time).
    async fn stored(&self) -> Vec<(Config, String)> {
        let mut out = Vec::new();
        for want in self.all() {
            let mut stream = self.js.get_stream(&want.name).await.unwrap();
            let info = stream.info().await.unwrap();
            out.push((info.config.clone(), format!("{:?}", info.created)));
        }
        out
    }

    fn all(&self) -> Vec<Config> {
        let mut all = self.topology.stream_configs();
        all.push(self.topology.sessions_stream_config());
        all
    }

    async fn delete(self) {
        for stream in self.all() {
            let _ = self.js.delete_stream(&stream.name).await;
        }
    }
}

fn assert_as_defined(stored: &[(Config, String)], topology: &Topology) {
    for ((config, _), want) in stored.iter().zip(topology.stream_configs()) {
        assert_eq!(config.name, want.name);
        assert_eq!(config.subjects, want.subjects, "{}", want.name);
        assert_eq!(config.storage, want.storage, "{}", want.name);
        assert_eq!(config.max_age, want.max_age, "{}", want.name);
        assert_eq!(
            config.duplicate_window, want.duplicate_window,
            "{}",
            want.name
        );
        assert_eq!(config.discard, want.discard, "{}", want.name);
        assert_eq!(config.num_replicas, want.num_replicas, "{}", want.name);
    }
}

#[tokio::test]
async fn gateway_then_worker_and_worker_then_gateway_give_the_same_streams() {
    let first = Scratch::new("gw").await;
    assert!(first.gateway_start(&first.topology).await.is_empty());
    assert!(first.worker_start(&first.topology).await.is_empty());
    let gateway_first = first.stored().await;
    assert_as_defined(&gateway_first, &first.topology);
    first.delete().await;

    let second = Scratch::new("wk").await;
    assert!(second.worker_start(&second.topology).await.is_empty());
    assert!(second.gateway_start(&second.topology).await.is_empty());
    let worker_first = second.stored().await;
    assert_as_defined(&worker_first, &second.topology);
    second.delete().await;

    // Same limits whichever process came first (names differ by namespace).
    let limits = |stored: &[(Config, String)]| {
        stored
            .iter()
            .map(|(c, _)| {
                (
                    c.storage,
                    c.retention,
                    c.max_age,
                    c.max_bytes,
                    c.max_messages,
                    c.duplicate_window,
                    c.num_replicas,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(limits(&gateway_first), limits(&worker_first));
}

#[tokio::test]
async fn ensuring_again_changes_nothing_and_other_limits_do_not_overwrite() {
    let scratch = Scratch::new("idem").await;
    scratch.gateway_start(&scratch.topology).await;
    let before = scratch.stored().await;
    assert!(scratch.worker_start(&scratch.topology).await.is_empty());
    assert!(scratch.gateway_start(&scratch.topology).await.is_empty());
    assert_eq!(scratch.stored().await, before, "ensure is idempotent");

    // A process started with other limits (a stale config) reports the
    // difference and leaves the streams alone.
    let mut stale = scratch.topology.clone();
    stale.events.max_age = Duration::from_secs(600);
    stale.commands.max_bytes = 1 << 20;
    let drift = scratch.worker_start(&stale).await;
    let streams: Vec<_> = drift.iter().map(|d| d.stream.as_str()).collect();
    let ns = &scratch.topology.namespace;
    assert_eq!(
        streams,
        [
            ns.stream_name(&wire::subjects::EVENTS),
            ns.stream_name(&wire::subjects::COMMANDS)
        ]
    );
    assert!(
        drift[0].differences[0].starts_with("max_age: existing 604800s"),
        "{drift:?}"
    );
    assert_eq!(scratch.stored().await, before, "not overwritten");

    // Changing a live stream is deliberate.
    let changed = bus::update_streams(&scratch.js, &stale).await.unwrap();
    assert_eq!(changed.len(), 2, "{changed:?}");
    let after = scratch.stored().await;
    assert_eq!(after[0].0.max_age, Duration::from_secs(600));
    assert_eq!(after[1].0.max_bytes, 1 << 20);
    assert_eq!(after[0].1, before[0].1, "updated in place, not re-created");
    scratch.delete().await;
}

#[tokio::test]
async fn checks_and_dead_letters_are_stored_where_the_definition_says() {
    let scratch = Scratch::new("pub").await;
    scratch.worker_start(&scratch.topology).await;
    let ns = scratch.topology.namespace.clone();
    let check = wire::check::EligibilityCheck {
        id: "check-1".into(),
        guild_id: wire::GuildId::new(1).expect("not 0"),
        user_id: None,
        more_user_ids: vec![],
        reason: "rule.changed".into(),
        priority: wire::check::CheckPriority::Bulk,
        requested_at: 0,
    };
    // Twice: the check id is the Nats-Msg-Id, so the second is a duplicate.
    bus::publish_check(&scratch.js, &ns, &check).await.unwrap();
    bus::publish_check(&scratch.js, &ns, &check).await.unwrap();
    // Twice, as a worker that died before terminating the original would:
    // the dead letter's id makes the second a duplicate.
    for _ in 0..2 {
        bus::publish_dead_letter(
            &scratch.js,
            &ns,
            &ns.subject(wire::subjects::MEMBER_JOIN),
            "{}".into(),
            "dead-1",
            3,
            "bad\npayload",
        )
        .await
        .unwrap();
    }
    let count = |spec: wire::subjects::StreamSpec| {
        let js = scratch.js.clone();
        let name = ns.stream_name(&spec);
        async move {
            js.get_stream(&name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
        }
    };
    assert_eq!(count(wire::subjects::ELIGIBILITY).await, 1);
    assert_eq!(count(wire::subjects::DEAD_LETTER).await, 1);
    let dead = scratch
        .js
        .get_stream(ns.stream_name(&wire::subjects::DEAD_LETTER))
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    assert_eq!(dead.subject.as_str(), ns.subject("dead.events.member.join"));
    let reason = dead
        .headers
        .get(wire::subjects::headers::DEAD_LETTER_REASON)
        .map(|v| v.as_str().to_owned());
    assert_eq!(reason.as_deref(), Some("bad payload"));
    scratch.delete().await;
}
