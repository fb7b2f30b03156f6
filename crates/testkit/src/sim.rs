//! The Discord simulator as tests use it, and the check that what it sent
//! reached JetStream exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use discord_sim::{SimConfig, Simulator};
use tokio::time::Instant;
use wire::EventId;

use crate::nats::{read_stream, stream_len, Stored};

/// A simulator config for fast tests: no identify spacing, and 1 s
/// heartbeats, so that faults are noticed quickly.
pub fn fast_config(token: &str) -> SimConfig {
    SimConfig {
        token: token.into(),
        identify_interval_ms: 0,
        max_concurrency: 16,
        heartbeat_interval_ms: 1_000,
        ..SimConfig::default()
    }
}

/// A simulator with [`fast_config`].
pub async fn start_fast(token: &str) -> Simulator {
    start(fast_config(token)).await
}

pub async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

/// The user ids of `guild`'s members, in the simulator's order.
pub fn member_ids(sim: &Simulator, guild: wire::GuildId) -> Vec<wire::UserId> {
    sim.control()
        .members(guild)
        .unwrap_or_else(|e| panic!("the members of guild {guild}: {e:?}"))
        .iter()
        .map(|m| m.user_id)
        .collect()
}

/// Dispatches that become envelopes.
const PUBLISHED_DISPATCHES: [&str; 7] = [
    "GUILD_CREATE",
    "GUILD_DELETE",
    "GUILD_MEMBER_ADD",
    "GUILD_MEMBER_REMOVE",
    "GUILD_MEMBER_UPDATE",
    "GUILD_MEMBERS_CHUNK",
    "INTERACTION_CREATE",
];

/// The envelope ids of every publishable dispatch the simulator sent to
/// `shards` (replays collapse into their original: same session and sequence).
pub fn expected_ids(
    sim: &Simulator,
    stream: &str,
    shards: impl IntoIterator<Item = u32>,
) -> BTreeSet<String> {
    described_ids(sim, stream, shards).into_keys().collect()
}

/// [`expected_ids`] with what each id is, for failure messages.
pub fn described_ids(
    sim: &Simulator,
    stream: &str,
    shards: impl IntoIterator<Item = u32>,
) -> BTreeMap<String, String> {
    // Interactions go to COMMANDS, everything else to EVENTS.
    let commands = stream.ends_with("COMMANDS");
    let mut ids = BTreeMap::new();
    for shard in shards {
        let transcript = sim.control().transcript(shard);
        for frame in &transcript.sent {
            let publishable = frame.op == 0
                && frame.event.as_deref().is_some_and(|e| {
                    PUBLISHED_DISPATCHES.contains(&e) && (e == "INTERACTION_CREATE") == commands
                });
            if let (true, Some(session), Some(seq)) = (publishable, &frame.session_id, frame.seq) {
                ids.insert(
                    EventId::for_dispatch(shard, session, seq).to_string(),
                    format!(
                        "shard {shard} {:?} seq {seq} replay {}",
                        frame.event, frame.replay
                    ),
                );
            }
        }
    }
    ids
}

/// How long the stream may take to catch up with the simulator: a fault
/// scenario includes a reconnect and a resume.
const SETTLE: Duration = Duration::from_secs(20);

/// Waits until `stream` on the server `nats` reaches holds exactly the ids the simulator
/// sent to `shards`, then checks that no id is there twice and that each
/// message's `Nats-Msg-Id` and subject (under `subject_prefix`) match its
/// envelope. Returns what was stored.
pub async fn assert_exactly_once(
    sim: &Simulator,
    nats: &crate::nats::NatsAccess,
    stream: &str,
    shards: impl IntoIterator<Item = u32> + Clone,
    subject_prefix: &str,
) -> Vec<Stored> {
    let deadline = Instant::now() + SETTLE;
    let (settled, last) = loop {
        let expected = expected_ids(sim, stream, shards.clone());
        let stored = stream_len(nats, stream).await;
        if stored as usize == expected.len() && !expected.is_empty() {
            break (true, (expected.len(), stored));
        }
        if Instant::now() >= deadline {
            break (false, (expected.len(), stored));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stored = read_stream(nats, stream).await;
    let ids: Vec<String> = stored.iter().map(|s| s.envelope.id.to_string()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an id is in the stream twice");
    let described = described_ids(sim, stream, shards);
    let expected: BTreeSet<String> = described.keys().cloned().collect();
    let missing: Vec<_> = expected
        .difference(&unique)
        .map(|id| (id, described.get(id)))
        .collect();
    let extra: Vec<_> = unique.difference(&expected).collect();
    assert!(
        settled && missing.is_empty() && extra.is_empty(),
        "stream {stream} does not hold exactly the sent events: {} expected, {} stored; missing {missing:?}; unexpected {extra:?}",
        last.0,
        last.1
    );
    for s in &stored {
        assert_eq!(
            s.msg_id.as_deref(),
            Some(s.envelope.id.as_str()),
            "Nats-Msg-Id"
        );
        // The id is the event's trace (wire::trace): no header repeats it.
        assert_eq!(
            s.traceparent, None,
            "a traceparent header on {}",
            s.envelope.id
        );
        let subject = s.envelope.subject().expect("a known type");
        assert_eq!(s.subject, format!("{subject_prefix}{subject}"));
    }
    stored
}
