//! Frame-level checks with a bare WebSocket client: key order, compression,
//! and the protocol errors Twilight never provokes.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_websockets::Message;
use zstd_safe::{DCtx, InBuffer, OutBuffer};

#[tokio::test]
async fn frames_put_op_s_and_t_before_d() {
    let sim = start(fast_config()).await;
    sim.control()
        .create_guilds(&discord_sim::GuildsSpec::default());
    let mut ws = connect(&sim.gateway_url(), "v=10&encoding=json").await;
    let hello = next_text(&mut ws).await;
    assert!(
        hello.starts_with(r#"{"op":10,"s":null,"t":null,"d":{"heartbeat_interval":1000"#),
        "{hello}"
    );
    send(&mut ws, identify(TOKEN)).await;
    let ready = next_text(&mut ws).await;
    assert!(
        ready.starts_with(r#"{"op":0,"s":1,"t":"READY","d":{"#),
        "{ready}"
    );
    let guild_create = next_text(&mut ws).await;
    assert!(guild_create.starts_with(r#"{"op":0,"s":2,"t":"GUILD_CREATE","d":{"#));
    send(&mut ws, json!({"op": 1, "d": 2})).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"op":11,"s":null,"t":null,"d":null}"#
    );
    sim.shutdown().await;
}

fn decompress(ctx: &mut DCtx<'_>, frame: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut input = InBuffer::around(frame);
    while input.pos < frame.len() {
        let pos = out.len();
        let mut output = OutBuffer::around_pos(&mut out, pos);
        ctx.decompress_stream(&mut output, &mut input)
            .expect("valid zstd stream");
    }
    String::from_utf8(out).expect("utf-8 JSON")
}

#[tokio::test]
async fn zstd_stream_sends_binary_frames_of_one_stream() {
    let sim = start(fast_config()).await;
    sim.control().create_guilds(&discord_sim::GuildsSpec {
        count: 3,
        ..Default::default()
    });
    let mut ws = connect(
        &sim.gateway_url(),
        "v=10&encoding=json&compress=zstd-stream",
    )
    .await;
    let mut ctx = DCtx::create();
    let mut texts = Vec::new();
    for i in 0..5 {
        if i == 1 {
            send(&mut ws, identify(TOKEN)).await;
        }
        let message = next_message(&mut ws).await;
        assert!(message.is_binary(), "frame {i} is binary");
        texts.push(decompress(&mut ctx, message.as_payload()));
    }
    assert!(texts[0].starts_with(r#"{"op":10,"#));
    assert!(texts[1].contains(r#""t":"READY""#));
    for text in &texts[2..] {
        let value: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(value["t"], "GUILD_CREATE");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_close_with_discords_codes() {
    let sim = start(fast_config()).await;
    let url = sim.gateway_url();

    let mut ws = connect(&url, "v=9&encoding=json").await;
    assert_eq!(close_code(&mut ws).await, 4012, "unsupported API version");

    let mut ws = connect(&url, "v=10&encoding=json").await;
    next_text(&mut ws).await;
    ws.send(Message::text("{not json")).await.expect("sent");
    assert_eq!(close_code(&mut ws).await, 4002, "decode error");

    let mut ws = connect(&url, "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(&mut ws, json!({"op": 3, "d": {}})).await;
    assert_eq!(close_code(&mut ws).await, 4003, "not authenticated");

    let mut ws = connect(&url, "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(&mut ws, json!({"op": 42, "d": null})).await;
    assert_eq!(close_code(&mut ws).await, 4001, "unknown opcode");

    let mut ws = connect(&url, "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(&mut ws, identify(TOKEN)).await;
    next_text(&mut ws).await;
    send(&mut ws, identify(TOKEN)).await;
    assert_eq!(close_code(&mut ws).await, 4005, "already authenticated");
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_of_an_unknown_session_is_refused_with_op9() {
    let sim = start(fast_config()).await;
    let mut ws = connect(&sim.gateway_url(), "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": "nope", "seq": 3}}),
    )
    .await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"op":9,"s":null,"t":null,"d":false}"#
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_replays_after_the_clients_sequence_then_resumed() {
    let sim = start(fast_config()).await;
    let guild = sim.control().create_guilds(&discord_sim::GuildsSpec {
        count: 1,
        members_per_guild: 1,
        roles_per_guild: 0,
    })[0];
    let mut ws = connect(&sim.gateway_url(), "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(&mut ws, identify(TOKEN)).await;
    let ready: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
    let session_id = ready["d"]["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    next_text(&mut ws).await; // GUILD_CREATE, seq 2
    drop(ws);
    // Dispatched while no connection is attached: seq 3, 4, 5.
    for _ in 0..3 {
        sim.control()
            .add_member(guild, discord_sim::NewMember::default())
            .expect("member added");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = connect(&sim.gateway_url(), "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": format!("Bot {TOKEN}"), "session_id": session_id, "seq": 3}}),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let frame: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
        seen.push((
            frame["t"].as_str().unwrap_or_default().to_owned(),
            frame["s"].as_u64(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("GUILD_MEMBER_ADD".to_owned(), Some(4)),
            ("GUILD_MEMBER_ADD".to_owned(), Some(5)),
            ("RESUMED".to_owned(), Some(5)),
        ]
    );
    sim.shutdown().await;
}

/// Dispatches the simulator has encoded for its connections.
fn dispatches_sent(sim: &discord_sim::Simulator) -> u64 {
    sim.control()
        .shards()
        .iter()
        .map(|shard| shard.dispatches_sent)
        .sum()
}

#[tokio::test]
async fn a_client_that_does_not_read_is_sent_ahead_and_misses_nothing() {
    // Far more than the socket buffers hold (~450 bytes a frame, ~18 MB):
    // a connection that encoded only as fast as its client read would stop
    // a few megabytes in.
    const EVENTS: u64 = 40_000;
    let sim = start(fast_config()).await;
    sim.control()
        .create_guilds(&discord_sim::GuildsSpec::default());
    let mut ws = connect(&sim.gateway_url(), "v=10&encoding=json").await;
    next_text(&mut ws).await;
    send(&mut ws, identify(TOKEN)).await;
    next_dispatch(&mut ws, "READY").await;
    next_dispatch(&mut ws, "GUILD_CREATE").await;
    let before = dispatches_sent(&sim);

    let traffic = sim.control().start_traffic(discord_sim::TrafficSpec {
        events: EVENTS,
        max_lag: 0,
        ..Default::default()
    });
    // Not reading, but heartbeating, as a busy client would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut heartbeats = 0;
    while dispatches_sent(&sim) - before < EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulator encoded {} of {EVENTS} dispatches for a client that was not reading",
            dispatches_sent(&sim) - before
        );
        send(&mut ws, json!({"op": 1, "d": null})).await;
        heartbeats += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(traffic.wait().await.emitted, EVENTS);

    // Everything arrives, in order, the heartbeats answered among it.
    let (mut next_seq, mut acks) = (3, 0);
    while next_seq < 3 + EVENTS || acks < heartbeats {
        let frame: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
        match frame["op"].as_u64() {
            Some(0) => {
                assert_eq!(frame["s"].as_u64(), Some(next_seq), "dispatches in order");
                next_seq += 1;
            }
            Some(11) => acks += 1,
            other => panic!("unexpected op {other:?}: {frame}"),
        }
    }
    sim.shutdown().await;
}
