//! One gateway WebSocket connection: Hello, Identify or Resume, heartbeats,
//! delivery from the session log, and injected faults.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout};
use tokio_websockets::{CloseCode, Config, Message, ServerBuilder, WebSocketStream};
use wire::GuildId;

use crate::config::intents;
use crate::discord_json::{self, op};
use crate::faults::{ends_session, Fault};
use crate::gateway::compress::ZstdStream;
use crate::gateway::member_requests;
use crate::gateway::sessions::Session;
use crate::gateway::transcript::{SentFrame, ShardEvent};
use crate::lock;
use crate::state::{ConnCommand, Shared};

/// Dispatches sent per turn of the event loop, so that a long backlog does
/// not keep heartbeats waiting.
const DELIVERY_BATCH: usize = 512;
/// Discord does not shard a bot with more guilds per shard than this.
const MAX_GUILDS_PER_SHARD: usize = 2_500;
/// Encoded frames a connection holds for a client that is not reading,
/// beyond what the socket buffers take, before it waits for the client.
///
/// Dispatches are compressed and queued as they are generated, and written
/// whenever the socket takes them. Compressing only as fast as the client
/// reads would make a client that catches up on a backlog (`gatehouse bench
/// gateway` queues a storm while its gateway is paused) share the machine's
/// cores with the simulator's compression, where real Discord's work is on
/// Discord's machines.
const SEND_AHEAD_BYTES: usize = 64 * 1024 * 1024;

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let server = ServerBuilder::new().config(Config::default().flush_threshold(SEND_AHEAD_BYTES));
    let accepted = timeout(Duration::from_secs(10), server.accept(tcp)).await;
    let (request, ws) = match accepted {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => {
            tracing::debug!(%error, "gateway handshake failed");
            return;
        }
        Err(_) => return,
    };
    let query = Query::parse(request.uri().query().unwrap_or(""));
    let (tx, rx) = mpsc::unbounded_channel();
    let id = shared.register_connection(tx);
    let shutdown = shared.shutdown.subscribe();
    let mut connection = Connection {
        id,
        shared: Arc::clone(&shared),
        ws,
        commands: rx,
        shutdown,
        zstd: query.zstd.then(ZstdStream::new),
        shard: None,
        session: None,
        seq_rx: None,
        cursor: 0,
        zombie: false,
        more_to_deliver: false,
        unflushed: false,
        heartbeat_deadline: Instant::now() + heartbeat_grace(&shared),
    };
    connection.run(&query).await;
    if let Some(session) = &connection.session {
        session.detach(id);
    }
    shared.unregister_connection(id);
}

fn heartbeat_grace(shared: &Shared) -> Duration {
    // The first heartbeat may come after up to one interval of jitter.
    Duration::from_millis(shared.config.heartbeat_interval_ms.saturating_mul(2) + 5_000)
}

struct Query {
    version: Option<String>,
    encoding: Option<String>,
    zstd: bool,
}

impl Query {
    fn parse(query: &str) -> Self {
        let mut parsed = Query {
            version: None,
            encoding: None,
            zstd: false,
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "v" => parsed.version = Some(value.to_owned()),
                "encoding" => parsed.encoding = Some(value.to_owned()),
                // zlib-stream is not simulated; plain text frames are always
                // valid, so such a client still works.
                "compress" => parsed.zstd = value == "zstd-stream",
                _ => {}
            }
        }
        parsed
    }
}

#[derive(Deserialize)]
struct Incoming {
    op: u8,
    #[serde(default)]
    d: Value,
}

#[derive(Deserialize)]
struct IdentifyData {
    token: String,
    intents: u64,
    #[serde(default)]
    shard: Option<[u32; 2]>,
    #[serde(default)]
    large_threshold: Option<u32>,
}

#[derive(Deserialize)]
struct ResumeData {
    token: String,
    session_id: String,
    #[serde(default)]
    seq: Option<u64>,
}

enum Wake {
    Shutdown,
    Command(Option<ConnCommand>),
    Client(Option<Result<Message, tokio_websockets::Error>>),
    Flushed(Result<(), tokio_websockets::Error>),
    Deliver,
    HeartbeatTimeout,
}

enum Flow {
    Continue,
    End,
}

struct Connection {
    id: u64,
    shared: Arc<Shared>,
    ws: WebSocketStream<TcpStream>,
    commands: mpsc::UnboundedReceiver<ConnCommand>,
    shutdown: watch::Receiver<bool>,
    zstd: Option<ZstdStream>,
    shard: Option<[u32; 2]>,
    session: Option<Arc<Session>>,
    seq_rx: Option<watch::Receiver<u64>>,
    /// Last sequence sent on this connection.
    cursor: u64,
    zombie: bool,
    more_to_deliver: bool,
    /// Frames have been queued for the socket since it was last flushed:
    /// the dispatches among them may not be counted delivered yet.
    unflushed: bool,
    heartbeat_deadline: Instant,
}

/// What the socket did: the client sent something, or what was queued for
/// it has all been written.
enum Io {
    Client(Option<Result<Message, tokio_websockets::Error>>),
    Flushed(Result<(), tokio_websockets::Error>),
}

/// Reads the client and, when `unflushed`, writes what is queued for it:
/// both need the stream, so one future polls both.
async fn socket_io(ws: &mut WebSocketStream<TcpStream>, unflushed: bool) -> Io {
    poll_fn(|cx| {
        if unflushed {
            if let Poll::Ready(flushed) = Pin::new(&mut *ws).poll_flush(cx) {
                return Poll::Ready(Io::Flushed(flushed));
            }
        }
        Pin::new(&mut *ws).poll_next(cx).map(Io::Client)
    })
    .await
}

async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn run(&mut self, query: &Query) {
        if query.version.as_deref() != Some("10") {
            return self.close(4012, "Invalid API version.").await;
        }
        if query.encoding.as_deref().is_some_and(|e| e != "json") {
            return self.close(4002, "Only JSON encoding is simulated.").await;
        }
        let hello = format!(
            r#"{{"heartbeat_interval":{},"_trace":["discord-sim"]}}"#,
            self.shared.config.heartbeat_interval_ms
        );
        if self.send_op(op::HELLO, &hello).await.is_err() {
            return;
        }
        loop {
            let deliver = self.session.is_some() && !self.zombie;
            let more = self.more_to_deliver && deliver;
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.changed() => Wake::Shutdown,
                command = self.commands.recv() => Wake::Command(command),
                io = socket_io(&mut self.ws, self.unflushed) => match io {
                    Io::Client(message) => Wake::Client(message),
                    Io::Flushed(flushed) => Wake::Flushed(flushed),
                },
                () = std::future::ready(()), if more => Wake::Deliver,
                () = changed(&mut self.seq_rx), if deliver => Wake::Deliver,
                () = sleep_until(self.heartbeat_deadline.into()), if !self.zombie => Wake::HeartbeatTimeout,
            };
            let flow = match wake {
                Wake::Shutdown => {
                    self.close(1001, "Simulator shutting down.").await;
                    Flow::End
                }
                Wake::Command(None) => Flow::End,
                Wake::Command(Some(command)) => self.on_command(command).await,
                Wake::Client(message) => self.on_client(message).await,
                Wake::Flushed(Ok(())) => {
                    self.unflushed = false;
                    if let Some(session) = &self.session {
                        session.mark_delivered(self.cursor);
                    }
                    Flow::Continue
                }
                Wake::Flushed(Err(_)) => Flow::End,
                Wake::Deliver => match self.deliver(false).await {
                    Ok(()) => Flow::Continue,
                    Err(()) => Flow::End,
                },
                Wake::HeartbeatTimeout => {
                    self.close(4009, "Session timed out.").await;
                    Flow::End
                }
            };
            if let Flow::End = flow {
                return;
            }
        }
    }

    fn shard_id(&self) -> Option<u32> {
        self.shard.map(|s| s[0])
    }

    fn record(&self, event: ShardEvent) {
        if let Some(shard) = self.shard_id() {
            self.shared.record_event(shard, event);
        }
    }

    async fn send_text(&mut self, frame: String) -> Result<(), ()> {
        let message = match &mut self.zstd {
            Some(zstd) => match zstd.compress(frame.as_bytes()) {
                Ok(bytes) => Message::binary(bytes),
                Err(error) => {
                    tracing::warn!(%error, "falling back to a text frame");
                    Message::text(frame)
                }
            },
            None => Message::text(frame),
        };
        self.ws.feed(message).await.map_err(|_| ())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        self.ws.flush().await.map_err(|_| ())
    }

    async fn send_op(&mut self, opcode: u8, data: &str) -> Result<(), ()> {
        self.queue_op(opcode, data).await?;
        self.flush().await
    }

    /// An op frame, queued for the event loop to write (see `deliver`).
    async fn queue_op(&mut self, opcode: u8, data: &str) -> Result<(), ()> {
        self.send_text(discord_json::op_frame(opcode, data)).await?;
        self.unflushed = true;
        if let Some(shard) = self.shard_id() {
            let frame = SentFrame {
                connection_id: self.id,
                session_id: self.session.as_ref().map(|s| s.id.clone()),
                op: opcode,
                event: None,
                seq: None,
                guild_id: None,
                replay: false,
                at_ms: Shared::now_ms(),
            };
            self.shared.record_sent(shard, frame);
        }
        Ok(())
    }

    /// Sends what the session log holds past the cursor: everything, written
    /// out, when `drain` (a Resume replay); otherwise one batch, queued.
    async fn deliver(&mut self, drain: bool) -> Result<(), ()> {
        let (Some(session), Some(shard)) = (self.session.clone(), self.shard_id()) else {
            return Ok(());
        };
        loop {
            let entries = session.entries_after(self.cursor, DELIVERY_BATCH);
            if entries.is_empty() {
                self.more_to_deliver = false;
                return Ok(());
            }
            for entry in &entries {
                if entry.seq <= self.cursor {
                    continue;
                }
                self.send_text(discord_json::dispatch_frame(
                    entry.seq,
                    entry.event,
                    &entry.data,
                ))
                .await?;
                self.cursor = entry.seq;
                self.shared.record_sent(
                    shard,
                    SentFrame {
                        connection_id: self.id,
                        session_id: Some(session.id.clone()),
                        op: op::DISPATCH,
                        event: Some(entry.event.to_owned()),
                        seq: Some(entry.seq),
                        guild_id: entry.guild_id,
                        replay: drain,
                        at_ms: Shared::now_ms(),
                    },
                );
            }
            if !drain {
                // Written by the event loop as the socket takes it, and
                // counted delivered then; meanwhile the next batch can be
                // encoded (see `SEND_AHEAD_BYTES`).
                self.unflushed = true;
                self.more_to_deliver = entries.len() == DELIVERY_BATCH;
                return Ok(());
            }
            self.flush().await?;
            session.mark_delivered(self.cursor);
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        self.record(ShardEvent::ClosedByServer {
            connection_id: self.id,
            code: Some(code),
            reason: reason.to_owned(),
        });
        if let Some(session) = &self.session {
            if ends_session(code) {
                session.invalidate();
            }
        }
        let close_code = CloseCode::try_from(code).ok();
        if self
            .ws
            .send(Message::close(close_code, reason))
            .await
            .is_err()
        {
            return;
        }
        // Give the client a moment to answer the close, as a server would.
        let _ = timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    async fn on_command(&mut self, command: ConnCommand) -> Flow {
        let fault = match command {
            ConnCommand::Displaced => {
                self.close(4000, "Session resumed on another connection.")
                    .await;
                return Flow::End;
            }
            ConnCommand::Fault(fault) => fault,
        };
        self.record(ShardEvent::FaultInjected {
            connection_id: self.id,
            fault: fault.describe(),
        });
        match fault {
            Fault::Close { code } => {
                self.close(code, "Fault injected.").await;
                Flow::End
            }
            Fault::Drop => {
                self.record(ShardEvent::ClosedByServer {
                    connection_id: self.id,
                    code: None,
                    reason: "dropped".into(),
                });
                Flow::End
            }
            Fault::Reconnect => match self.send_op(op::RECONNECT, "null").await {
                Ok(()) => Flow::Continue,
                Err(()) => Flow::End,
            },
            Fault::InvalidSession { resumable } => {
                if !resumable {
                    if let Some(session) = &self.session {
                        session.invalidate();
                    }
                }
                let data = if resumable { "true" } else { "false" };
                match self.send_op(op::INVALID_SESSION, data).await {
                    Ok(()) => Flow::Continue,
                    Err(()) => Flow::End,
                }
            }
            Fault::Zombie => {
                self.zombie = true;
                Flow::Continue
            }
        }
    }

    async fn on_client(
        &mut self,
        message: Option<Result<Message, tokio_websockets::Error>>,
    ) -> Flow {
        let Some(Ok(message)) = message else {
            self.record(ShardEvent::ClosedByClient {
                connection_id: self.id,
                code: None,
            });
            return Flow::End;
        };
        if let Some((code, _)) = message.as_close() {
            let code = u16::from(code);
            self.record(ShardEvent::ClosedByClient {
                connection_id: self.id,
                code: Some(code),
            });
            if matches!(code, 1000 | 1001) {
                if let Some(session) = &self.session {
                    session.invalidate();
                }
            }
            return Flow::End;
        }
        if message.is_ping() || message.is_pong() {
            return Flow::Continue;
        }
        let Some(text) = message.as_text() else {
            self.close(4002, "Decode error.").await;
            return Flow::End;
        };
        let incoming: Incoming = match serde_json::from_str(text) {
            Ok(incoming) => incoming,
            Err(_) => {
                self.close(4002, "Decode error.").await;
                return Flow::End;
            }
        };
        let identified = self.session.is_some();
        let result = match incoming.op {
            op::HEARTBEAT => self.on_heartbeat().await,
            op::IDENTIFY if identified => {
                self.close(4005, "Already authenticated.").await;
                return Flow::End;
            }
            op::RESUME if identified => {
                self.close(4005, "Already authenticated.").await;
                return Flow::End;
            }
            op::IDENTIFY => return self.on_identify(incoming.d).await,
            op::RESUME => return self.on_resume(incoming.d).await,
            op::PRESENCE_UPDATE | op::VOICE_STATE_UPDATE | op::REQUEST_GUILD_MEMBERS
                if !identified =>
            {
                self.close(4003, "Not authenticated.").await;
                return Flow::End;
            }
            op::REQUEST_GUILD_MEMBERS => return self.on_request_members(incoming.d).await,
            op::PRESENCE_UPDATE | op::VOICE_STATE_UPDATE => Ok(()),
            _ => {
                self.close(4001, "Unknown opcode.").await;
                return Flow::End;
            }
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::End,
        }
    }

    async fn on_heartbeat(&mut self) -> Result<(), ()> {
        self.heartbeat_deadline = Instant::now() + heartbeat_grace(&self.shared);
        if let Some(shard) = self.shard_id() {
            self.shared.record_heartbeat(shard);
        }
        if self.zombie {
            return Ok(());
        }
        // Queued behind what the client has not read yet, not waited for:
        // a client slow to read still has its heartbeats answered in
        // order, and this connection goes on encoding meanwhile.
        self.queue_op(op::HEARTBEAT_ACK, "null").await
    }

    async fn on_request_members(&mut self, data: Value) -> Flow {
        let Some(session) = self.session.clone() else {
            self.close(4003, "Not authenticated.").await;
            return Flow::End;
        };
        let request = match member_requests::parse(data) {
            Ok(request) => request,
            Err(invalid) => {
                self.close(invalid.close_code(), &invalid.to_string()).await;
                return Flow::End;
            }
        };
        let request = member_requests::answer(&self.shared, &session, request);
        self.record(ShardEvent::MembersRequested {
            connection_id: self.id,
            request,
        });
        Flow::Continue
    }

    fn token_ok(&self, token: &str) -> bool {
        let token = token.strip_prefix("Bot ").unwrap_or(token);
        token == self.shared.config.token
    }

    async fn on_identify(&mut self, data: Value) -> Flow {
        let Ok(identify) = serde_json::from_value::<IdentifyData>(data) else {
            self.close(4002, "Decode error.").await;
            return Flow::End;
        };
        let shard = identify.shard.unwrap_or([0, 1]);
        // Known from here on, so that a rejection shows in the shard's record.
        self.shard = Some(shard);
        self.shared.set_connection_shard(self.id, shard);
        if !self.token_ok(&identify.token) {
            self.close(4004, "Authentication failed.").await;
            return Flow::End;
        }
        if identify.intents & !intents::ALL_DEFINED != 0 {
            self.close(4013, "Invalid intent(s).").await;
            return Flow::End;
        }
        let disallowed =
            identify.intents & intents::PRIVILEGED & !self.shared.config.allowed_privileged_intents;
        if disallowed != 0 {
            self.close(4014, "Disallowed intent(s).").await;
            return Flow::End;
        }
        if shard[1] == 0 || shard[0] >= shard[1] {
            self.close(4010, "Invalid shard.").await;
            return Flow::End;
        }
        let acquired = lock(&self.shared.identify).try_acquire(shard[0], Instant::now());
        if !acquired {
            self.record(ShardEvent::IdentifyRateLimited {
                connection_id: self.id,
            });
            return match self.send_op(op::INVALID_SESSION, "false").await {
                Ok(()) => Flow::Continue,
                Err(()) => Flow::End,
            };
        }
        let large_threshold = identify
            .large_threshold
            .unwrap_or(50)
            .clamp(50, 250)
            .min(self.shared.config.large_threshold);
        let Some(session) = self.create_session(shard, identify.intents, large_threshold) else {
            self.close(4011, "Sharding required.").await;
            return Flow::End;
        };
        session.attach(self.id);
        self.record(ShardEvent::Identified {
            connection_id: self.id,
            session_id: session.id.clone(),
            compressed: self.zstd.is_some(),
        });
        self.seq_rx = Some(session.subscribe());
        self.session = Some(session);
        self.cursor = 0;
        match self.deliver(false).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::End,
        }
    }

    /// Creates the session with READY and the shard's GUILD_CREATEs as its
    /// first dispatches. The world lock is held throughout, so no dispatch
    /// can slip in before them or be missed. `None` when the shard has too
    /// many guilds.
    fn create_session(
        &self,
        shard: [u32; 2],
        intents_requested: u64,
        large_threshold: u32,
    ) -> Option<Arc<Session>> {
        let world = lock(&self.shared.world);
        let guilds = world.guilds_of_shard(shard[0], shard[1]);
        if guilds.len() > MAX_GUILDS_PER_SHARD {
            return None;
        }
        let session = self.shared.sessions.create(shard, intents_requested);
        let guild_ids: Vec<GuildId> = guilds.iter().map(|g| g.id).collect();
        let config = &self.shared.config;
        let ready = discord_json::ready(&discord_json::ReadyInfo {
            session_id: &session.id,
            resume_gateway_url: &self.shared.gateway_url,
            shard,
            guild_ids: &guild_ids,
            bot_user_id: config.bot_user_id,
            bot_username: &config.bot_username,
            application_id: config.application_id,
        });
        session.append("READY", None, ready.to_string().into());
        if intents_requested & intents::GUILDS != 0 {
            for guild in guilds.iter().filter(|g| g.available) {
                let data = discord_json::guild_create(guild, large_threshold, guild.joined_at_ms);
                session.append("GUILD_CREATE", Some(guild.id), data.to_string().into());
            }
        }
        Some(session)
    }

    async fn on_resume(&mut self, data: Value) -> Flow {
        let Ok(resume) = serde_json::from_value::<ResumeData>(data) else {
            self.close(4002, "Decode error.").await;
            return Flow::End;
        };
        if !self.token_ok(&resume.token) {
            self.close(4004, "Authentication failed.").await;
            return Flow::End;
        }
        let seq = resume.seq.unwrap_or(0);
        let session = self.shared.sessions.get(&resume.session_id);
        let checked = match &session {
            Some(session) => session
                .check_resume(seq, None, self.shared.sessions.ttl())
                .map(|()| Arc::clone(session)),
            None => Err(crate::gateway::sessions::ResumeRefused::Unknown),
        };
        let session = match checked {
            Ok(session) => session,
            Err(reason) => {
                if let Some(session) = &session {
                    self.shard = Some([session.shard_id, session.shard_count]);
                }
                self.record(ShardEvent::ResumeRefused {
                    connection_id: self.id,
                    reason: format!("{reason:?}"),
                });
                return match self.send_op(op::INVALID_SESSION, "false").await {
                    Ok(()) => Flow::Continue,
                    Err(()) => Flow::End,
                };
            }
        };
        let shard = [session.shard_id, session.shard_count];
        self.shard = Some(shard);
        self.shared.set_connection_shard(self.id, shard);
        if let Some(displaced) = session.attach(self.id) {
            if displaced != self.id {
                self.shared
                    .command_connection(displaced, ConnCommand::Displaced);
            }
        }
        self.seq_rx = Some(session.subscribe());
        self.session = Some(Arc::clone(&session));
        self.cursor = seq;
        if self.deliver(true).await.is_err() {
            return Flow::End;
        }
        self.record(ShardEvent::Resumed {
            connection_id: self.id,
            session_id: session.id.clone(),
            compressed: self.zstd.is_some(),
            from_seq: seq,
            replayed: self.cursor - seq,
        });
        // RESUMED carries the last sequence instead of a new one, so the
        // session's sequence numbers stay gap-free for the client.
        let resumed =
            discord_json::dispatch_frame(self.cursor, "RESUMED", r#"{"_trace":["discord-sim"]}"#);
        if self.send_text(resumed).await.is_err() || self.flush().await.is_err() {
            return Flow::End;
        }
        self.shared.record_sent(
            shard[0],
            SentFrame {
                connection_id: self.id,
                session_id: Some(session.id.clone()),
                op: op::DISPATCH,
                event: Some("RESUMED".into()),
                seq: Some(self.cursor),
                guild_id: None,
                replay: false,
                at_ms: Shared::now_ms(),
            },
        );
        Flow::Continue
    }
}
