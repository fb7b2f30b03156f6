//! `gatehouse dead-letters …` against the stack's NATS and a database of
//! its own: listing reads without consuming, showing never prints the
//! interaction token, a replay goes back to its original subject with the
//! payload unchanged, audited, once, and drop deletes.

use std::process::Output;

use async_nats::jetstream;
use bus::{DeadLetters, Process, Storage, Topology};
use serde_json::Value;
use testkit::cli::{error_line, stderr};
use testkit::nats::NatsScope;
use testkit::TestDb;
use wire::payload::{InteractionCreate, InteractionKind, MemberJoin};
use wire::{subjects, Envelope, GuildId, Payload};

const TOKEN: &str = "aW50ZXJhY3Rpb24tdG9rZW4tdGhhdC1tdXN0LW5vdC1sZWFr";

/// Each dead letter a test stores is a message of its own.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A provisioned community (guild 4242), the streams of a namespace of the
/// test's own, and the environment the verbs run with.
struct World {
    db: TestDb,
    tenant: store::TenantId,
    nats: NatsScope,
    url: String,
}

impl World {
    async fn new(label: &str) -> World {
        let db = TestDb::create(label).await;
        let store = db.store(2).await;
        let tenant = store
            .directory()
            .provision_guild(guild(4242), "g")
            .await
            .unwrap();
        let nats = NatsScope::new(&db.env.nats).await;
        let topology = Topology::new(nats.ns.clone()).with_storage(Storage::Memory);
        bus::ensure_streams(&nats.js, &topology).await.unwrap();
        let url = db.app_pgbouncer_url();
        World {
            db,
            tenant,
            nats,
            url,
        }
    }

    /// Runs a dead-letters verb as the operator would: the admin NATS user,
    /// the runtime database.
    fn run(&self, args: &[&str]) -> Output {
        self.run_as(Process::Admin, true, args)
    }

    fn run_as(&self, process: Process, with_db: bool, args: &[&str]) -> Output {
        let nats = self.nats.access.env(process);
        let mut env = vec![("NATS_NAMESPACE", self.nats.ns.prefix().unwrap())];
        if with_db {
            env.push(("DATABASE_URL", self.url.as_str()));
        }
        env.extend(nats.iter().map(|(k, v)| (*k, v.as_str())));
        let mut full = vec!["dead-letters"];
        full.extend_from_slice(args);
        testkit::cli::run(env!("CARGO_BIN_EXE_gatehouse"), &full, &env)
    }

    /// `list --json` with `filters`: the sequences listed.
    fn listed(&self, filters: &[&str]) -> Vec<u64> {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(filters);
        let out = self.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("list --json: {e}: {}", String::from_utf8_lossy(&out.stdout))
        });
        rows.iter()
            .map(|row| row["sequence"].as_u64().expect("a sequence"))
            .collect()
    }

    async fn dead_letter(&self, original: &str, payload: Vec<u8>, deliveries: i64, reason: &str) {
        let ns = &self.nats.ns;
        bus::publish_dead_letter(
            &self.nats.js,
            ns,
            &ns.subject(original),
            payload.into(),
            &format!(
                "dead-{}",
                NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            deliveries,
            reason,
        )
        .await
        .unwrap();
    }

    async fn stream(&self, spec: subjects::StreamSpec) -> jetstream::stream::Stream {
        self.nats
            .js
            .get_stream(self.nats.ns.stream_name(&spec))
            .await
            .unwrap()
    }

    async fn messages(&self, spec: subjects::StreamSpec) -> u64 {
        self.stream(spec).await.info().await.unwrap().state.messages
    }

    async fn consumers(&self, spec: subjects::StreamSpec) -> usize {
        self.stream(spec)
            .await
            .info()
            .await
            .unwrap()
            .state
            .consumer_count
    }

    /// Replay audit entries in the community's log for dead letter `seq`.
    async fn replays_audited(&self, seq: u64) -> i64 {
        self.db
            .admin()
            .await
            .query_one(
                "SELECT count(*) FROM audit_logs WHERE action = 'dead_letter.replayed' \
                 AND community_id = $1 AND target_id = $2 AND actor_type = 'admin' \
                 AND actor_id = 'alice'",
                &[&self.tenant.as_uuid(), &seq.to_string()],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn guild(id: u64) -> GuildId {
    GuildId::new(id).expect("not 0")
}

fn member_join(guild_id: u64, sequence: u64) -> Envelope {
    Envelope::for_dispatch(
        0,
        "session-dl",
        sequence,
        1_700_000_000_000,
        Payload::MemberJoin(MemberJoin {
            username: "ada".into(),
            ..MemberJoin::default()
        }),
    )
    .with_guild(guild(guild_id))
    .with_user(wire::UserId::new(77).expect("not 0"))
}

fn interaction(guild_id: u64) -> Envelope {
    Envelope::for_dispatch(
        0,
        "session-dl",
        900,
        1_700_000_000_000,
        Payload::InteractionCreate(InteractionCreate {
            interaction_id: wire::InteractionId::new(11).expect("not 0"),
            token: TOKEN.into(),
            application_id: wire::ApplicationId::new(12).expect("not 0"),
            kind: InteractionKind::ApplicationCommand,
            command_id: None,
            command_name: Some("check".into()),
            options: Vec::new(),
            locale: None,
            guild_locale: None,
        }),
    )
    .with_guild(guild(guild_id))
    .with_user(wire::UserId::new(77).expect("not 0"))
}

fn check(guild_id: u64) -> Vec<u8> {
    wire::check::EligibilityCheck {
        id: "check-dl-1".into(),
        guild_id: guild(guild_id),
        user_id: None,
        more_user_ids: vec![],
        reason: "rule.changed".into(),
        priority: wire::check::CheckPriority::Bulk,
        requested_at: 0,
    }
    .to_json()
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_read_without_consuming_and_show_redacts_the_interaction_token() {
    let w = World::new("dl_list").await;
    w.dead_letter(
        subjects::MEMBER_JOIN,
        member_join(4242, 1).to_json().unwrap(),
        5,
        "gave up after 5 attempts: database timeout",
    )
    .await;
    w.dead_letter(
        subjects::ELIGIBILITY_CHECK,
        check(999),
        1,
        "Unknown rule type",
    )
    .await;
    // A Discord error quoting the callback URL carries the token too.
    w.dead_letter(
        subjects::INTERACTION,
        interaction(4242).to_json().unwrap(),
        3,
        &format!("discord answered 404 for /interactions/11/{TOKEN}/callback"),
    )
    .await;
    w.dead_letter(
        subjects::MEMBER_UPDATE,
        format!(r#"{{"id":"x","data":{{"token":"{TOKEN}""#).into_bytes(),
        1,
        "decoding envelope: EOF while parsing",
    )
    .await;

    assert_eq!(w.listed(&[]), [1, 2, 3, 4]);
    assert_eq!(w.listed(&["--subject", "events.member.join"]), [1]);
    assert_eq!(w.listed(&["--subject", "events.>"]), [1, 4]);
    assert_eq!(
        w.listed(&["--subject", "webhooks.deliver"]),
        Vec::<u64>::new()
    );
    assert_eq!(w.listed(&["--guild", "4242"]), [1, 3]);
    assert_eq!(w.listed(&["--guild", "999"]), [2]);
    assert_eq!(w.listed(&["--reason", "UNKNOWN RULE"]), [2]);
    assert_eq!(
        w.listed(&["--guild", "4242", "--subject", "commands.interaction"]),
        [3]
    );
    assert_eq!(w.listed(&["--since", "1h"]), [1, 2, 3, 4]);
    assert_eq!(w.listed(&["--until", "1h"]), Vec::<u64>::new());
    assert_eq!(
        w.listed(&["--since", "2999-01-01T00:00:00Z"]),
        Vec::<u64>::new()
    );
    assert_eq!(w.listed(&["--limit", "2"]), [1, 2]);

    let out = w.run(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].trim_start().starts_with("1 ")
            && rows[0].contains("events.member.join")
            && rows[0].contains("4242")
            && rows[0].contains("gave up after 5 attempts")
            && rows[0].contains(r#"{"id":""#),
        "{table}"
    );
    assert!(rows[1].contains("eligibility.check") && rows[1].contains("999"));
    assert!(
        !table.contains(TOKEN) && !stderr(&out).contains(TOKEN),
        "{table}"
    );
    let out = w.run(&["list", "--limit", "3"]);
    assert!(stdout(&out).contains("1 more match"), "{}", stdout(&out));

    // The interaction: every field but the token, which is nowhere.
    let out = w.run(&["show", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!stderr(&out).contains(TOKEN));
    assert!(shown.contains(r#""token": "[redacted]""#), "{shown}");
    assert!(
        shown.contains("/interactions/11/[redacted]/callback"),
        "{shown}"
    );
    assert!(shown.contains(r#""interaction_id": "11""#), "{shown}");
    assert!(shown.contains("Gatehouse-Deliveries: 3"), "{shown}");
    assert!(
        shown.contains(&format!(
            "replays to  {}",
            w.nats.ns.subject(subjects::INTERACTION)
        )),
        "{shown}"
    );
    // A payload that is not even JSON is shown as text, token masked.
    let out = w.run(&["show", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("not JSON"), "{}", stdout(&out));
    assert!(!stdout(&out).contains(TOKEN), "{}", stdout(&out));
    let out = w.run(&["list", "--json", "--subject", "events.member.update"]);
    assert!(!stdout(&out).contains(TOKEN), "{}", stdout(&out));

    let out = w.run(&["show", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("no dead letter 99"),
        "{}",
        stderr(&out)
    );

    // Reading consumed nothing and left no consumer behind.
    assert_eq!(w.messages(subjects::DEAD_LETTER).await, 4);
    assert_eq!(w.consumers(subjects::DEAD_LETTER).await, 0);

    // Another process's user is told which user it needs, without waiting
    // for a timeout.
    let out = w.run_as(Process::Api, false, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("admin user") && line.contains("GATEHOUSE_NATS_ADMIN_USER"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_republishes_unchanged_audited_once_and_drop_deletes() {
    let w = World::new("dl_replay").await;
    let join = member_join(4242, 2);
    let original = join.to_json().unwrap();
    // As the gateway published it, moments ago: its Nats-Msg-Id (the
    // envelope id) is still inside EVENTS' duplicate window.
    w.nats.publish(&join).await;
    w.dead_letter(
        subjects::MEMBER_JOIN,
        original.clone(),
        5,
        "gave up after 5 attempts: database timeout",
    )
    .await;
    w.dead_letter(subjects::ELIGIBILITY_CHECK, check(999), 1, "bad check")
        .await;
    let second_join = member_join(4242, 3);
    w.dead_letter(
        subjects::MEMBER_JOIN,
        second_join.to_json().unwrap(),
        5,
        "gave up",
    )
    .await;
    assert_eq!(w.messages(subjects::EVENTS).await, 1);

    // Replay needs the database: it is never unaudited.
    let out = w.run_as(Process::Admin, false, &["replay", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("audit log") && line.contains("DATABASE_URL"),
        "{line}"
    );
    assert_eq!(w.messages(subjects::EVENTS).await, 1, "published anyway");

    // A dry run changes nothing.
    let out = w.run(&["replay", "--all-matching", "--guild", "4242", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let planned = stdout(&out);
    assert!(
        planned.contains("would replay 1 to") && planned.contains("would replay 3 to"),
        "{planned}"
    );
    assert!(!planned.contains("would replay 2"), "{planned}");
    assert_eq!(w.messages(subjects::EVENTS).await, 1);
    assert_eq!(w.messages(subjects::DEAD_LETTER).await, 3);

    let out = w.run(&["replay", "1", "--by", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("replayed 1"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("dead letter replayed"),
        "the replay is logged: {}",
        stderr(&out)
    );
    // Back on its original subject, bytes unchanged, and not swallowed as a
    // duplicate of the original publish.
    assert_eq!(w.messages(subjects::EVENTS).await, 2);
    let events = w.stream(subjects::EVENTS).await;
    let replayed = events.get_raw_message(2).await.unwrap();
    assert_eq!(
        replayed.subject.as_str(),
        w.nats.ns.subject(subjects::MEMBER_JOIN)
    );
    assert_eq!(replayed.payload.as_ref(), original.as_slice());
    assert_eq!(
        Envelope::from_json(&replayed.payload).unwrap().id,
        join.id,
        "the envelope id, which the workers' claim rests on, is unchanged"
    );
    let msg_id = replayed
        .headers
        .get(subjects::headers::MSG_ID)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(msg_id.starts_with("dead-letter-replay-1-"), "{msg_id}");
    assert_eq!(w.replays_audited(1).await, 1);
    let dead = DeadLetters::open(&w.nats.js, &w.nats.ns).await.unwrap();
    assert!(
        dead.get(1).await.unwrap().is_none(),
        "the dead letter stays"
    );

    // Replaying the same dead letter again publishes nothing.
    let out = w.run(&["replay", "1", "--by", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no dead letter 1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.messages(subjects::EVENTS).await, 2);
    assert_eq!(w.replays_audited(1).await, 1);

    // Had its removal failed after the publish, a second replay of a dead
    // letter is deduplicated by JetStream all the same.
    let letter = dead.get(3).await.unwrap().expect("dead letter 3");
    let first = dead.replay(&letter).await.unwrap();
    let again = dead.replay(&letter).await.unwrap();
    assert!(!first.duplicate && again.duplicate, "{first:?} {again:?}");
    assert_eq!(w.messages(subjects::EVENTS).await, 3);
    let out = w.run(&["replay", "3", "--by", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("stored by an earlier replay of it"),
        "{}",
        stdout(&out)
    );
    assert_eq!(w.messages(subjects::EVENTS).await, 3);
    assert_eq!(w.replays_audited(3).await, 1);

    // A check for a guild with no community: replayed, not audited.
    let out = w.run(&["replay", "--all-matching", "--subject", "eligibility.check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("not audited: guild 999 has no community"),
        "{}",
        stdout(&out)
    );
    assert_eq!(w.messages(subjects::ELIGIBILITY).await, 1);
    assert_eq!(w.messages(subjects::DEAD_LETTER).await, 0);

    // Drop asks first, then deletes.
    w.dead_letter(subjects::MEMBER_JOIN, b"garbage".to_vec(), 1, "decoding")
        .await;
    let out = w.run(&["drop", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out).contains("--yes"), "{}", stderr(&out));
    let out = w.run(&[
        "drop",
        "--all-matching",
        "--reason",
        "decoding",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("would drop 1"), "{}", stdout(&out));
    let out = w.run(&["drop", "4", "--subject", "events.>", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "filters with sequence numbers");
    assert_eq!(w.messages(subjects::DEAD_LETTER).await, 1);
    let out = w.run(&["drop", "4", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dead letter dropped"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.messages(subjects::DEAD_LETTER).await, 0);
    assert_eq!(
        w.messages(subjects::EVENTS).await,
        3,
        "dropping publishes nothing"
    );
    assert_eq!(w.consumers(subjects::DEAD_LETTER).await, 0);
}
