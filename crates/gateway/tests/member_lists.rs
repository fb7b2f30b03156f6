//! A guild's member list: asked for when the guild arrives, published chunk
//! by chunk, asked again when Discord refuses the request as rate limited.

mod common;

use std::collections::BTreeSet;

use common::*;
use discord_sim::{Fault, GuildsSpec, MemberRequestAnswer};
use testkit::nats::{self, NatsServer};
use testkit::sim::assert_exactly_once;
use wire::{EventType, Payload};

/// Waits until EVENTS holds `n` member chunks; returns them in stream order.
async fn chunks_in_stream(nats: &NatsServer, n: usize) -> Vec<wire::payload::MembersChunk> {
    let access = nats.access();
    testkit::eventually(&format!("{n} member chunks in EVENTS"), WAIT, || async {
        chunks(&nats::read_stream(&access, "EVENTS").await).len() >= n
    })
    .await;
    chunks(&nats::read_stream(&access, "EVENTS").await)
}

fn chunks(stored: &[nats::Stored]) -> Vec<wire::payload::MembersChunk> {
    stored
        .iter()
        .filter_map(|s| match &s.envelope.payload {
            Payload::MembersChunk(chunk) => Some(chunk.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_that_arrives_is_asked_for_its_members_and_every_chunk_is_published_once() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 2_500,
        roles_per_guild: 1,
    })[0];
    let gateway = start(settings(&sim, &nats, "0", 1), &nats).await;
    until_ready(&gateway, "at start").await;

    let chunks = chunks_in_stream(&nats, 3).await;
    let stored = assert_exactly_once(&sim, &nats.access(), "EVENTS", [0], "").await;
    let join = stored
        .iter()
        .find(|s| s.envelope.event_type() == Some(EventType::GuildJoin))
        .expect("guild.join");
    // The request is named after the dispatch that caused it.
    let nonce: String = join
        .envelope
        .id
        .as_str()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let requests: Vec<_> = control.transcript(0).member_requests().cloned().collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].guild_id, guild);
    assert_eq!(requests[0].query.as_deref(), Some(""));
    assert_eq!(requests[0].limit, Some(0));
    assert_eq!(requests[0].nonce.as_deref(), Some(nonce.as_str()));

    assert_eq!(chunks.len(), 3);
    let members: BTreeSet<_> = chunks
        .iter()
        .flat_map(|c| c.members.iter().map(|m| m.user_id))
        .collect();
    assert_eq!(members.len(), 2_500, "every member once");
    let expected: BTreeSet<_> = testkit::sim::member_ids(&sim, guild).into_iter().collect();
    assert_eq!(members, expected);
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.chunk_index as usize, i);
        assert_eq!(chunk.chunk_count, 3);
        assert_eq!(chunk.nonce.as_deref(), Some(nonce.as_str()));
    }
    gateway.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_request_refused_as_rate_limited_is_made_again_after_the_wait() {
    let nats = NatsServer::start();
    let sim = testkit::sim::start(discord_sim::SimConfig {
        member_request_window_ms: 1_500,
        ..testkit::sim::fast_config(TOKEN)
    })
    .await;
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 10,
        roles_per_guild: 1,
    })[0];
    let gateway = start(settings(&sim, &nats, "0", 1), &nats).await;
    until_ready(&gateway, "at start").await;
    chunks_in_stream(&nats, 1).await;

    // A new session within Discord's window: its GUILD_CREATE asks again,
    // and is refused.
    assert_eq!(
        control.fault(0, Fault::InvalidSession { resumable: false }),
        1
    );
    let answered = chunks_in_stream(&nats, 2).await;
    let requests: Vec<_> = control.transcript(0).member_requests().cloned().collect();
    assert!(
        requests.len() >= 3,
        "asked, refused, asked again: {requests:?}"
    );
    assert!(requests.iter().all(|r| r.guild_id == guild));
    assert!(
        matches!(requests[1].answer, MemberRequestAnswer::RateLimited { .. }),
        "{requests:?}"
    );
    let retry = requests.last().expect("a retry");
    assert!(
        matches!(
            retry.answer,
            MemberRequestAnswer::Chunks { members: 10, .. }
        ),
        "{requests:?}"
    );
    // The retry is a request of its own (its chunks count apart), named
    // after the refused one.
    let refused = requests[1].nonce.clone().expect("nonce");
    let again = retry.nonce.clone().expect("nonce");
    assert_eq!(again, format!("{}~1", &refused[..30]));
    assert_eq!(answered[1].nonce.as_deref(), Some(again.as_str()));
    gateway.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
}
