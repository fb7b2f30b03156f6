//! A bare WebSocket gateway client, for what Twilight does not show:
//! frames as sent, and protocol errors Twilight never provokes.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

use super::{TOKEN, WAIT};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(url: &str, query: &str) -> Ws {
    let uri = format!("{url}/?{query}");
    let (ws, _) = ClientBuilder::new()
        .uri(&uri)
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    ws
}

pub async fn next_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("connection open")
        .expect("valid frame")
}

pub async fn next_text(ws: &mut Ws) -> String {
    let message = next_message(ws).await;
    message.as_text().expect("a text frame").to_owned()
}

pub async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("JSON")
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("sent");
}

pub fn identify(token: &str) -> Value {
    identify_with(token, 3, [0, 1])
}

pub fn identify_with(token: &str, intents: u64, shard: [u32; 2]) -> Value {
    json!({"op": 2, "d": {
        "token": token,
        "intents": intents,
        "shard": shard,
        "properties": {"os": "linux", "browser": "test", "device": "test"},
    }})
}

/// The close code the server ends the connection with.
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let message = next_message(ws).await;
        if let Some((code, _)) = message.as_close() {
            return u16::from(code);
        }
    }
}

/// An uncompressed connection identified as `shard` with `intents`, read
/// up to its READY (whose frame it returns).
pub async fn identified(url: &str, intents: u64, shard: [u32; 2]) -> (Ws, Value) {
    let mut ws = connect(url, "v=10&encoding=json").await;
    next_text(&mut ws).await; // Hello
    send(&mut ws, identify_with(TOKEN, intents, shard)).await;
    let ready = next_json(&mut ws).await;
    assert_eq!(ready["t"], "READY", "{ready}");
    (ws, ready)
}

/// The next dispatch named `event`, skipping other frames.
pub async fn next_dispatch(ws: &mut Ws, event: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["t"] == event {
            return frame;
        }
    }
}
