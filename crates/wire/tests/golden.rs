//! Golden fixtures pin the JSON of every envelope type. A change that breaks
//! one of these breaks every deployed reader or writer of that type.

use std::path::PathBuf;

use serde_json::Value;
use wire::payload::{InteractionKind, MemberUpdate};
use wire::{ChannelId, Envelope, EventId, EventType, Payload, RoleId, UserId};

/// The session every fixture was produced in; ids are derived from it.
const FIXTURE_SESSION: &str = "9f3c1b7e2d4a6f80";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn as_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("fixture is JSON")
}

/// Reads the fixture, writes it back, and checks nothing was lost or added.
fn round_trip(name: &str) -> Envelope {
    let bytes = fixture(name);
    let env = Envelope::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let written = env.to_json().expect("encodes");
    assert_eq!(as_value(&written), as_value(&bytes), "{name} round trip");
    env
}

#[test]
fn every_type_has_a_fixture_that_round_trips() {
    let cases = [
        ("guild_join", EventType::GuildJoin),
        ("guild_leave", EventType::GuildLeave),
        ("guild_unavailable", EventType::GuildUnavailable),
        ("member_join", EventType::MemberJoin),
        ("member_leave", EventType::MemberLeave),
        ("member_update", EventType::MemberUpdate),
        ("interaction_create", EventType::InteractionCreate),
        ("member_chunk", EventType::MembersChunk),
    ];
    assert_eq!(cases.len(), EventType::ALL.len(), "a type lacks a fixture");
    for (name, expected) in cases {
        let env = round_trip(name);
        assert_eq!(env.event_type(), Some(expected), "{name}");
        assert_eq!(env.version, wire::VERSION, "{name}");
    }
}

#[test]
fn fixture_ids_are_the_deterministic_ids_of_their_dispatch() {
    // Fixture n was sequence n+1 of the session on shard 1 (sequence 1 was READY).
    let names = [
        "guild_join",
        "guild_leave",
        "guild_unavailable",
        "member_join",
        "member_leave",
        "member_update",
        "interaction_create",
        "member_chunk",
    ];
    for (i, name) in names.iter().enumerate() {
        let env = Envelope::from_json(&fixture(name)).expect("fixture reads");
        let sequence = i as u64 + 2;
        assert_eq!(
            env.id,
            EventId::for_dispatch(env.shard_id, FIXTURE_SESSION, sequence),
            "{name}"
        );
        let guild = env.guild_id.expect("every fixture names a guild");
        // Discord routes a guild to shard `(guild_id >> 22) % shard_count`.
        assert_eq!(
            (guild.get() >> 22) % 2,
            u64::from(env.shard_id),
            "{name} on the wrong shard"
        );
    }
}

#[test]
fn member_update_fields_read_as_typed_values() {
    let env = round_trip("member_update");
    assert_eq!(env.subject(), Some("events.member.update"));
    assert_eq!(env.user_id, UserId::new(80351110224678912));
    let Payload::MemberUpdate(update) = env.payload else {
        panic!("not a member update: {:?}", env.payload);
    };
    assert_eq!(
        update,
        MemberUpdate {
            username: "nelly".into(),
            nick: Some("Nells".into()),
            roles: [41771983423143936, 41771983423143937]
                .into_iter()
                .filter_map(RoleId::new)
                .collect(),
            pending: false,
        }
    );
}

#[test]
fn member_chunk_fields_read_as_typed_values() {
    let env = round_trip("member_chunk");
    assert_eq!(env.subject(), Some("events.member.chunk"));
    assert_eq!(env.user_id, None);
    let Payload::MembersChunk(chunk) = env.payload else {
        panic!("not a member chunk: {:?}", env.payload);
    };
    assert_eq!((chunk.chunk_index, chunk.chunk_count), (1, 3));
    assert_eq!(chunk.nonce.as_deref(), Some("sync-7f3a"));
    let ids: Vec<_> = chunk.members.iter().map(|m| m.user_id.get()).collect();
    assert_eq!(ids, [80351110224678912, 80351110224678913]);
    assert_eq!(chunk.members[0].member.nick.as_deref(), Some("Nells"));
    assert_eq!(
        chunk.members[0].member.roles,
        [RoleId::new(41771983423143936).expect("non-zero")]
    );
    assert_eq!(chunk.members[1].member.joined_at, Some(1704067200000));
}

#[test]
fn interaction_fields_read_as_typed_values() {
    let env = round_trip("interaction_create");
    assert_eq!(env.subject(), Some("commands.interaction"));
    assert_eq!(env.channel_id, ChannelId::new(381870553235193857));
    let Payload::InteractionCreate(interaction) = env.payload else {
        panic!("not an interaction: {:?}", env.payload);
    };
    assert_eq!(interaction.kind, InteractionKind::ApplicationCommand);
    assert_eq!(interaction.command_name.as_deref(), Some("verify"));
    let sub = &interaction.options[0];
    assert_eq!(sub.name, "wallet");
    assert!(sub.value.is_null());
    assert_eq!(sub.options[1].value, Value::from(1));
}

#[test]
fn guild_leave_and_unavailable_are_different_subjects() {
    let leave = round_trip("guild_leave");
    let outage = round_trip("guild_unavailable");
    assert_eq!(leave.subject(), Some("events.guild.leave"));
    assert_eq!(outage.subject(), Some("events.guild.unavailable"));
}

#[test]
fn readers_tolerate_unknown_fields_from_newer_writers() {
    let newer = Envelope::from_json(&fixture("member_update_with_future_fields"))
        .expect("unknown fields must not fail a v1 reader");
    let current = Envelope::from_json(&fixture("member_update")).expect("fixture reads");
    assert_eq!(newer, current);
}

#[test]
fn readers_tolerate_missing_optional_fields_from_older_writers() {
    let mut value = as_value(&fixture("interaction_create"));
    let data = value["data"].as_object_mut().expect("data is an object");
    data.remove("guild_locale");
    data.remove("command_id");
    let env = Envelope::from_json(&serde_json::to_vec(&value).expect("encodes"))
        .expect("an older writer's envelope reads");
    let Payload::InteractionCreate(interaction) = env.payload else {
        panic!("not an interaction");
    };
    assert_eq!(interaction.guild_locale, None);
    assert_eq!(interaction.command_id, None);
    assert_eq!(interaction.locale.as_deref(), Some("en-US"));
}

#[test]
fn unknown_interaction_kind_reads_as_unknown() {
    let mut value = as_value(&fixture("interaction_create"));
    value["data"]["kind"] = Value::from("premium_purchase");
    let env = Envelope::from_json(&serde_json::to_vec(&value).expect("encodes"))
        .expect("a new interaction kind must not fail the reader");
    let Payload::InteractionCreate(interaction) = env.payload else {
        panic!("not an interaction");
    };
    assert_eq!(interaction.kind, InteractionKind::Unknown);
}
