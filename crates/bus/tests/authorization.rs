//! The NATS trust boundary, against a private nats-server running the
//! configuration `gatehouse nats-config` generates: what an attacker holding
//! one process's credentials (or none) tries is refused by the server, and
//! what each process does for a living still works with its own user.
//!
//! Each attack is checked for production's configuration (the root
//! namespace), for a prefixed namespace, and where it holds there too for the
//! any-namespace configuration the local stack runs.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_nats::{Client, Event, HeaderMap};
use bus::authorization::{Authorization, Scope, WORKER_STREAMS};
use bus::{DurableConsumer, Namespace, Process, Storage, Topology};
use futures::StreamExt;
use testkit::nats::{NatsAccess, NatsServer};
use tokio::sync::mpsc;
use wire::subjects;

/// How long a refused request may take to be given up on: the server drops
/// a refused publish, so the only answer is none.
const REFUSED: Duration = Duration::from_secs(1);

fn scopes() -> Vec<Scope> {
    vec![
        Scope::One(Namespace::root()),
        Scope::One(Namespace::prefixed("t1").unwrap()),
        Scope::Any,
    ]
}

/// The namespace a test acts in under `scope` (any prefix for `Any`).
fn namespace(scope: &Scope) -> Namespace {
    match scope {
        Scope::One(ns) => ns.clone(),
        Scope::Any => Namespace::prefixed("anyns7").unwrap(),
    }
}

struct World {
    server: NatsServer,
    access: NatsAccess,
    topology: Topology,
}

impl World {
    fn start(scope: Scope) -> World {
        let topology = Topology::new(namespace(&scope)).with_storage(Storage::Memory);
        let server = NatsServer::start_with(&Authorization::new(scope));
        let access = server.access();
        World {
            server,
            access,
            topology,
        }
    }

    fn ns(&self) -> &Namespace {
        &self.topology.namespace
    }

    /// A connection as `process` whose server errors (permission
    /// violations) arrive on the receiver.
    async fn connect(&self, process: Process) -> (Client, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = self.access.settings(process);
        let options = settings.options(process).event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        });
        let client = settings
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("{process}: {e}"));
        (client, rx)
    }

    /// JetStream as `process`, giving up on an unanswered request after
    /// [`REFUSED`].
    async fn jetstream(
        &self,
        process: Process,
    ) -> (jetstream::Context, mpsc::UnboundedReceiver<String>) {
        let (client, errors) = self.connect(process).await;
        let js = jetstream::ContextBuilder::new()
            .timeout(REFUSED)
            .build(client);
        (js, errors)
    }

    async fn admin(&self) -> jetstream::Context {
        self.access.jetstream(Process::Admin).await
    }

    /// What the gateway does at start: its streams and its bucket.
    async fn gateway_start(&self, js: &jetstream::Context) -> jetstream::kv::Store {
        bus::ensure_streams(js, &self.topology)
            .await
            .unwrap_or_else(|e| panic!("the gateway ensures its streams: {e}"));
        bus::open_sessions_bucket(js, &self.topology)
            .await
            .unwrap_or_else(|e| panic!("the gateway opens its bucket: {e}"))
    }

    /// What a worker does at start: its streams and its durable consumers.
    async fn worker_start(
        &self,
        js: &jetstream::Context,
    ) -> Vec<jetstream::consumer::PullConsumer> {
        bus::ensure_streams(js, &self.topology)
            .await
            .unwrap_or_else(|e| panic!("the worker ensures its streams: {e}"));
        let mut consumers = Vec::new();
        for spec in WORKER_STREAMS {
            consumers.push(
                bus::ensure_consumer(js, self.ns(), &spec, &worker_consumer())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("the worker ensures its consumer on {}: {e}", spec.name)
                    }),
            );
        }
        consumers
    }

    async fn stream_len(&self, stream: &str) -> u64 {
        let mut stream = self.admin().await.get_stream(stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

fn worker_consumer() -> DurableConsumer {
    DurableConsumer {
        name: "worker".into(),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 256,
    }
}

/// Waits for the server to report a permissions violation naming `subject`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.contains("Permissions Violation") && error.contains(subject) {
                return;
            }
        }
    });
    wait.await.unwrap_or_else(|_| {
        panic!("the server did not refuse {subject}: no permissions violation reported")
    });
}

async fn js_publish(
    js: &jetstream::Context,
    subject: &str,
    body: &'static [u8],
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    headers.insert(subjects::headers::MSG_ID, "forged-1");
    let ack = js
        .publish_with_headers(subject.to_owned(), headers, body.into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_connection_without_credentials_or_with_wrong_ones_is_refused() {
    for scope in scopes() {
        let world = World::start(scope.clone());
        let anonymous = bus::NatsSettings::new(world.access.url());
        let error = anonymous
            .connect(Process::Admin)
            .await
            .map(|_| ())
            .expect_err("an anonymous connection must be refused");
        assert!(
            error.to_string().contains("authorization violation"),
            "{scope:?}: {error}"
        );
        assert!(error.to_string().contains("(none are set)"), "{error}");
        let mut wrong = world.access.settings(Process::Gateway);
        wrong.auth = Some(bus::Auth::UserPassword {
            user: "gateway".into(),
            password: bus::Secret::new("not-the-password"),
        });
        assert!(wrong.connect(Process::Gateway).await.is_err(), "{scope:?}");
    }
}

#[tokio::test]
async fn the_worker_and_the_api_cannot_forge_an_event_or_an_interaction() {
    for scope in scopes() {
        let world = World::start(scope.clone());
        let (gateway, _) = world.jetstream(Process::Gateway).await;
        world.gateway_start(&gateway).await;
        let events = world.ns().stream_name(&subjects::EVENTS);
        let commands = world.ns().stream_name(&subjects::COMMANDS);
        for process in [Process::Worker, Process::Api] {
            let (js, mut errors) = world.jetstream(process).await;
            let forged: Vec<String> = [
                subjects::MEMBER_JOIN,
                subjects::GUILD_JOIN,
                subjects::INTERACTION,
            ]
            .iter()
            .map(|s| world.ns().subject(s))
            .collect();
            // Awaited together: a refused publish is only ever unanswered.
            let published = futures::future::join_all(
                forged
                    .iter()
                    .map(|subject| js_publish(&js, subject, b"{\"type\":\"member.join\"}")),
            )
            .await;
            for (subject, result) in forged.iter().zip(published) {
                assert!(result.is_err(), "{scope:?}: {process} published {subject}");
                refused(&mut errors, subject).await;
            }
            // A plain publish is refused as well (and never stored).
            js.client()
                .publish(forged[0].clone(), "{}".into())
                .await
                .unwrap();
            js.client().flush().await.unwrap();
            refused(&mut errors, &forged[0]).await;
        }
        assert_eq!(world.stream_len(&events).await, 0, "{scope:?}");
        assert_eq!(world.stream_len(&commands).await, 0, "{scope:?}");
    }
}

#[tokio::test]
async fn a_wildcard_meant_for_namespaces_cannot_reach_a_root_event_stream() {
    // On the stack's shared server the worker may publish `*.dead.>`
    // (dead letters of any namespace); `events.dead.x` would land in the
    // root EVENTS stream as an event if the root were not fenced off.
    let world = World::start(Scope::Any);
    let root = Topology::new(Namespace::root()).with_storage(Storage::Memory);
    bus::ensure_streams(&world.admin().await, &root)
        .await
        .unwrap();
    let (js, mut errors) = world.jetstream(Process::Worker).await;
    for subject in ["events.dead.member.join", "commands.dead.interaction"] {
        assert!(js_publish(&js, subject, b"{}").await.is_err(), "{subject}");
        refused(&mut errors, subject).await;
    }
    assert_eq!(world.stream_len("EVENTS").await, 0);
    assert_eq!(world.stream_len("COMMANDS").await, 0);
}

#[tokio::test]
async fn nobody_but_the_gateway_can_write_or_read_its_session_bucket() {
    // The resume-URL hijack: whoever writes this bucket chooses where the
    // next gateway sends the bot token when it resumes.
    for scope in [
        Scope::One(Namespace::root()),
        Scope::One(Namespace::prefixed("t1").unwrap()),
    ] {
        let world = World::start(scope.clone());
        let (gateway, _) = world.jetstream(Process::Gateway).await;
        let kv = world.gateway_start(&gateway).await;
        kv.put("shard.1.0", "{\"session_id\":\"real\"}".into())
            .await
            .expect("the gateway writes its bucket");
        let bucket = world.topology.sessions_bucket();
        let key_subject = format!("$KV.{bucket}.shard.1.0");
        for process in [Process::Worker, Process::Api] {
            let (js, mut errors) = world.jetstream(process).await;
            let forged = js_publish(
                &js,
                &key_subject,
                b"{\"session_id\":\"x\",\"sequence\":1,\"resume_url\":\"wss://attacker.example\",\"saved_at\":0}",
            )
            .await;
            assert!(
                forged.is_err(),
                "{scope:?}: {process} wrote the session bucket"
            );
            refused(&mut errors, &key_subject).await;
            // Nor can it open the bucket to read a session.
            assert!(
                js.get_key_value(&bucket).await.is_err(),
                "{scope:?}: {process}"
            );
            refused(&mut errors, &format!("KV_{bucket}")).await;
        }
        let stored = kv.get("shard.1.0").await.unwrap().expect("the entry");
        assert_eq!(&stored[..], b"{\"session_id\":\"real\"}", "{scope:?}");
    }
}

#[tokio::test]
async fn the_gateway_cannot_read_the_workers_consumers_and_nobody_deletes_or_purges() {
    for scope in scopes() {
        let world = World::start(scope.clone());
        let (worker, _) = world.jetstream(Process::Worker).await;
        world.worker_start(&worker).await;
        let (gateway, mut gateway_errors) = world.jetstream(Process::Gateway).await;
        world.gateway_start(&gateway).await;
        let event = world.ns().subject(subjects::MEMBER_JOIN);
        js_publish(&gateway, &event, b"{}")
            .await
            .expect("the gateway publishes an event");

        let events = world.ns().stream_name(&subjects::EVENTS);
        let durable = worker_consumer().durable_name(world.ns(), &subjects::EVENTS);
        // Pulling from the workers' durable would take their events.
        let stream = gateway
            .get_stream(&events)
            .await
            .expect("the gateway may look up its stream");
        assert!(
            stream.get_consumer::<pull::Config>(&durable).await.is_err(),
            "{scope:?}: the gateway opened the workers' consumer"
        );
        refused(
            &mut gateway_errors,
            &format!("CONSUMER.INFO.{events}.{durable}"),
        )
        .await;
        let next = format!("$JS.API.CONSUMER.MSG.NEXT.{events}.{durable}");
        gateway
            .client()
            .publish_with_reply(next.clone(), gateway.client().new_inbox(), "1".into())
            .await
            .unwrap();
        gateway.client().flush().await.unwrap();
        refused(&mut gateway_errors, &next).await;
        // Nor may it make a consumer of its own.
        let own = stream
            .create_consumer(pull::Config {
                durable_name: Some(world.ns().name("spy")),
                ..Default::default()
            })
            .await;
        assert!(own.is_err(), "{scope:?}: the gateway created a consumer");
        refused(&mut gateway_errors, "CONSUMER.CREATE").await;

        drop(gateway_errors);
        for process in [Process::Gateway, Process::Worker] {
            let (js, mut errors) = world.jetstream(process).await;
            assert!(
                js.delete_stream(&events).await.is_err(),
                "{scope:?}: {process} deleted a stream"
            );
            refused(&mut errors, &format!("STREAM.DELETE.{events}")).await;
            let purge = format!("$JS.API.STREAM.PURGE.{events}");
            js.client()
                .publish_with_reply(purge.clone(), js.client().new_inbox(), "{}".into())
                .await
                .unwrap();
            js.client().flush().await.unwrap();
            refused(&mut errors, &purge).await;
            assert_eq!(world.stream_len(&events).await, 1, "{scope:?}: {process}");
        }
        // The workers' consumer still has the event for them.
        let admin = world.admin().await;
        let mut consumer: jetstream::consumer::PullConsumer = admin
            .get_stream(&events)
            .await
            .unwrap()
            .get_consumer(&durable)
            .await
            .unwrap();
        assert_eq!(consumer.info().await.unwrap().num_pending, 1, "{scope:?}");
    }
}

#[tokio::test]
async fn no_process_hears_another_ones_replies() {
    let world = World::start(Scope::One(Namespace::root()));
    for (process, other) in [
        (Process::Worker, Process::Gateway),
        (Process::Api, Process::Worker),
        (Process::Gateway, Process::Worker),
    ] {
        let (client, mut errors) = world.connect(process).await;
        let inbox = format!("{}.>", other.inbox_prefix());
        let _subscription = client.subscribe(inbox.clone()).await.unwrap();
        client.flush().await.unwrap();
        refused(&mut errors, &inbox).await;
    }
}

#[tokio::test]
async fn each_process_does_its_own_work_with_its_own_user() {
    for scope in scopes() {
        let world = World::start(scope.clone());
        let ns = world.ns().clone();
        // The gateway: streams, its bucket, events and interactions.
        let (gateway, _) = world.jetstream(Process::Gateway).await;
        let kv = world.gateway_start(&gateway).await;
        kv.put("shard.2.0", "{}".into()).await.expect("put");
        assert!(kv.get("shard.2.0").await.expect("get").is_some());
        kv.delete("shard.2.0").await.expect("delete");
        for subject in [subjects::MEMBER_JOIN, subjects::INTERACTION] {
            js_publish(&gateway, &ns.subject(subject), b"{}")
                .await
                .unwrap_or_else(|e| panic!("{scope:?}: the gateway publishes {subject}: {e}"));
        }
        // A worker: its consumers, acks, checks, webhook deliveries and
        // dead letters; a second worker starting finds it all in place.
        let (worker, _) = world.jetstream(Process::Worker).await;
        let consumers = world.worker_start(&worker).await;
        world
            .worker_start(&world.jetstream(Process::Worker).await.0)
            .await;
        for consumer in consumers.iter().take(2) {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .expect("fetch");
            let message = batch.next().await.expect("one message").expect("a message");
            bus::publish_dead_letter(
                &worker,
                &ns,
                &message.subject,
                message.payload.clone(),
                &format!("dead-{}", message.subject),
                1,
                "test",
            )
            .await
            .unwrap_or_else(|e| panic!("{scope:?}: dead letter: {e}"));
            message.ack_with(AckKind::Ack).await.expect("ack");
        }
        let check = wire::check::EligibilityCheck {
            id: "check-1".into(),
            guild_id: wire::Id::new(1).unwrap(),
            user_id: wire::Id::new(2),
            more_user_ids: vec![],
            reason: "test".into(),
            priority: Default::default(),
            requested_at: 0,
        };
        bus::publish_check(&worker, &ns, &check)
            .await
            .unwrap_or_else(|e| panic!("{scope:?}: {e}"));
        // The api: eligibility checks.
        let (api, _) = world.jetstream(Process::Api).await;
        bus::publish_check(&api, &ns, &check)
            .await
            .unwrap_or_else(|e| panic!("{scope:?}: {e}"));
        assert_eq!(
            world
                .stream_len(&ns.stream_name(&subjects::DEAD_LETTER))
                .await,
            2,
            "{scope:?}"
        );
        // Acknowledged: nothing left for the workers on EVENTS.
        let admin = world.admin().await;
        let durable = worker_consumer().durable_name(&ns, &subjects::EVENTS);
        let mut consumer: jetstream::consumer::PullConsumer = admin
            .get_stream(ns.stream_name(&subjects::EVENTS))
            .await
            .unwrap()
            .get_consumer(&durable)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(
            (info.num_pending, info.num_ack_pending),
            (0, 0),
            "{scope:?}"
        );
        assert!(
            !world.server.log().contains("Violation"),
            "{scope:?}: {}",
            world.server.log()
        );
    }
}

#[test]
fn the_committed_configurations_are_what_the_generator_writes() {
    // deploy/nats/ holds the production example and what the local stack
    // runs; both must change when the permissions do.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats");
    for (file, scope, command) in [
        (
            "authorization.conf",
            Scope::One(Namespace::root()),
            "gatehouse nats-config -o deploy/nats/authorization.conf",
        ),
        (
            "authorization-any-namespace.conf",
            Scope::Any,
            "gatehouse nats-config --any-namespace -o deploy/nats/authorization-any-namespace.conf",
        ),
    ] {
        let committed = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("deploy/nats/{file}: {e}"));
        assert!(
            committed == bus::authorization::render(&Authorization::new(scope)),
            "deploy/nats/{file} is not what the generator writes: run `{command}`"
        );
    }
}
