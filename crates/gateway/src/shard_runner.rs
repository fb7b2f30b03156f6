//! One Twilight shard: read its messages, turn dispatches into envelopes,
//! hand them to the publisher, and close resumably on shutdown.
//!
//! The runner reads raw messages rather than Twilight's parsed events because
//! the envelope id needs each dispatch's sequence number and session id,
//! which Twilight's `Event` does not carry. Twilight still does all of the
//! protocol work (heartbeats, resume, reconnect, zombie detection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use tokio::sync::{mpsc, watch};
use twilight_gateway::error::ReceiveMessageErrorType;
use twilight_gateway::{
    CloseFrame, ConfigBuilder, Intents, Message, Session, Shard, ShardId, ShardState,
};
use twilight_model::gateway::event::{DispatchEvent, GatewayEvent};
use twilight_model::gateway::payload::incoming::GuildCreate;

use crate::admission::{Admission, Kind, Offer};
use crate::config::Token;
use crate::error::is_fatal_close;
use crate::identify::FleetQueue;
use crate::member_requests;
use crate::metrics as m;
use crate::outbox::{Outbox, Stopping};
use crate::progress::ShardProgress;
use crate::publisher::Job;
use crate::sessions::StoredSession;
use crate::status::{ShardPhase, Status};
use crate::translate::{self, Origin};

/// Bytes reserved for an envelope's JSON: a member event's is about 230–450
/// (crates/wire/tests/fixtures), so one allocation holds it where growing
/// from serde_json's default 128 took three. Larger envelopes (member
/// chunks, guild joins) still grow as needed.
const ENVELOPE_CAPACITY: usize = 512;

/// How long a shard waits for the gateway to answer its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Everything needed to build one shard.
pub struct ShardSetup {
    pub shard_id: u32,
    pub total: u32,
    pub token: Token,
    pub intents: Intents,
    pub gateway_url: Option<String>,
    pub queue: FleetQueue,
    pub resume: Option<StoredSession>,
}

pub fn build(setup: ShardSetup) -> Shard<FleetQueue> {
    let mut config =
        ConfigBuilder::new(setup.token.expose().to_owned(), setup.intents).queue(setup.queue);
    let resume = setup.resume.filter(|stored| match &stored.resume_url {
        Some(url) if !trusted_resume_url(url, setup.gateway_url.as_deref()) => {
            // The Resume carries the bot token: read back from NATS, the
            // URL is only as trustworthy as everyone who can write there.
            tracing::warn!(
                shard = setup.shard_id,
                resume_url = %url,
                "ignoring a stored session whose resume URL is neither Discord's gateway nor the configured one; identifying afresh"
            );
            false
        }
        _ => true,
    });
    if let Some(url) = setup.gateway_url {
        config = config.proxy_url(url);
    }
    if let Some(stored) = resume {
        config = config.session(Session::new(stored.sequence, stored.session_id));
        if let Some(url) = stored.resume_url {
            config = config.resume_url(url);
        }
    }
    Shard::with_config(ShardId::new(setup.shard_id, setup.total), config.build())
}

/// Whether a resume URL may receive the bot token: Discord's own gateway
/// (`wss://` on `discord.gg`), or the same scheme, host and port as the
/// configured gateway (the simulator, a proxy).
pub(crate) fn trusted_resume_url(url: &str, configured: Option<&str>) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let discord = parsed.scheme() == "wss"
        && (host == "discord.gg" || host.ends_with(".discord.gg"))
        && parsed.username().is_empty()
        && parsed.password().is_none();
    let same_as_configured = configured
        .and_then(|c| url::Url::parse(c).ok())
        .is_some_and(|c| {
            c.scheme() == parsed.scheme()
                && c.host_str().map(str::to_ascii_lowercase).as_deref() == Some(host.as_str())
                && c.port_or_known_default() == parsed.port_or_known_default()
        });
    discord || same_as_configured
}

/// How a shard stopped.
#[derive(Debug)]
pub enum ShardExit {
    /// Asked to stop; closed resumably. The URL to resume at, if known.
    Stopped { resume_url: Option<String> },
    /// Discord closed with a code after which reconnecting cannot help.
    Fatal { code: u16 },
}

pub struct ShardRunner {
    pub shard: Shard<FleetQueue>,
    pub progress: Arc<ShardProgress>,
    pub jobs: mpsc::Sender<Job>,
    pub status: Arc<Status>,
    /// Subject prefix (`ns.`), empty without a namespace.
    pub subject_prefix: String,
    /// The session of the latest dispatch. Twilight forgets its session on
    /// op 9 `false` before the connection closes; a dispatch that still
    /// arrives on that connection belongs to the old session and is published
    /// under it rather than dropped.
    pub last_session: Option<Arc<str>>,
    /// The resume URL last handed to `progress`, so that it is compared
    /// here rather than copied under a lock for every message.
    pub last_resume_url: Option<String>,
    /// Per event type: the prefixed subject (cheap to clone) and the
    /// received counter, built once rather than for every event.
    pub subjects: Vec<(&'static str, async_nats::Subject)>,
    pub received: m::CountersByType,
    /// This shard's guilds' member updates and slash commands, paced
    /// (see [`crate::admission`]).
    pub admission: Admission<Job>,
    pub flood: FloodReport,
}

/// What admission does to this shard's floods, told to the metrics and
/// the log. The handles are looked up once: under a flood they count tens
/// of thousands of events a second.
pub struct FloodReport {
    waiting: metrics::Gauge,
    replaced: metrics::Counter,
    shed: metrics::Counter,
    /// When shed commands were last reported in the log, and how many were
    /// shed since: once a minute is enough to say a flood goes on.
    shed_said_at: Option<Instant>,
    shed_since_said: u64,
}

/// How often shedding is reported in the log while it goes on.
const SHED_SAY_EVERY: Duration = Duration::from_secs(60);

impl FloodReport {
    pub fn new(shard_id: u32) -> Self {
        let shard = shard_id.to_string();
        FloodReport {
            waiting: metrics::gauge!(m::MEMBER_UPDATES_WAITING, "shard" => shard.clone()),
            replaced: metrics::counter!(m::MEMBER_UPDATES_REPLACED, "shard" => shard.clone()),
            shed: metrics::counter!(m::INTERACTIONS_SHED, "shard" => shard),
            shed_said_at: None,
            shed_since_said: 0,
        }
    }

    fn waiting(&self, admission: &Admission<Job>) {
        self.waiting.set(admission.waiting() as f64);
    }

    fn shed(&mut self, shard_id: u32, guild: Option<wire::GuildId>) {
        self.shed.increment(1);
        self.shed_since_said += 1;
        if self
            .shed_said_at
            .is_some_and(|at| at.elapsed() < SHED_SAY_EVERY)
        {
            return;
        }
        tracing::warn!(
            shard = shard_id,
            guild = %guild.map(|g| g.to_string()).unwrap_or_default(),
            shed = self.shed_since_said,
            "a guild sends slash commands past its limit (GUILD_INTERACTIONS_PER_S); shedding them unanswered"
        );
        self.shed_said_at = Some(Instant::now());
        self.shed_since_said = 0;
    }
}

/// A message as `handle` reads it.
// Lives on the stack for one message; boxing the dispatch would put an
// allocation back on the path this type exists to make cheap.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Dispatch(u64, Dispatch),
    /// Not a dispatch, or not one the gateway wants; the text if it may be
    /// a RATE_LIMITED answer.
    Other {
        text_copy: String,
    },
    /// A dispatch Twilight wants but cannot read.
    Unreadable,
}

/// A dispatch, read by the member road or by Twilight.
enum Dispatch {
    Member(translate::MemberDispatch),
    Twilight(DispatchEvent),
}

impl ShardRunner {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> ShardExit {
        let shard_id = self.shard.id().number();
        let shard_label = shard_id.to_string();
        let jobs = self.jobs.clone();
        let mut outbox = Outbox::new(&jobs);
        loop {
            // While the gateway is busy a message is usually waiting: taking
            // it without racing it against `stop` saves registering with the
            // watch channel (a lock and a list insert and removal) for every
            // one. `stop` is still looked at first, as the race did.
            if *stop.borrow() {
                break;
            }
            let due = self.admission.next_due();
            if due.is_some_and(|due| due <= Instant::now())
                && self.release_waiting(&mut outbox, &mut stop).await.is_err()
            {
                break;
            }
            let message = match self.shard.next().now_or_never() {
                Some(message) => message,
                None => {
                    // Nothing waiting: room held for a backlog goes back
                    // to the other shards while this one idles.
                    outbox.release();
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => break,
                        () = sleep_until(due), if due.is_some() => continue,
                        message = self.shard.next() => message,
                    }
                }
            };
            match message {
                None => {
                    // Twilight ends the stream only after a fatal close, which
                    // the Close message below has already reported.
                    self.status.set_shard(shard_id, ShardPhase::FatallyClosed);
                    return ShardExit::Fatal { code: 0 };
                }
                Some(Err(error)) => {
                    let kind = match error.kind() {
                        ReceiveMessageErrorType::Compression => "compression",
                        ReceiveMessageErrorType::Deserializing { .. } => "deserializing",
                        ReceiveMessageErrorType::Reconnect => "reconnect",
                        _ => "other",
                    };
                    metrics::counter!(m::SHARD_ERRORS, "shard" => shard_label.clone(), "kind" => kind)
                        .increment(1);
                    // A deserializing error's Display quotes the whole event,
                    // which may hold an interaction token: log the kind only.
                    let cause = match error.kind() {
                        ReceiveMessageErrorType::Deserializing { .. } => String::new(),
                        _ => describe(&error),
                    };
                    tracing::warn!(
                        shard = shard_id,
                        kind,
                        cause,
                        "error reading from the gateway; the shard carries on"
                    );
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map(|f| f.code);
                    if let Some(code) = code.filter(|c| is_fatal_close(*c)) {
                        self.status.set_shard(shard_id, ShardPhase::FatallyClosed);
                        tracing::error!(
                            shard = shard_id,
                            code,
                            "the gateway closed the shard with a fatal code"
                        );
                        return ShardExit::Fatal { code };
                    }
                    metrics::counter!(m::SHARD_RECONNECTS, "shard" => shard_label.clone())
                        .increment(1);
                    tracing::info!(
                        shard = shard_id,
                        code,
                        "gateway connection closed; Twilight reconnects and resumes"
                    );
                }
                Some(Ok(Message::Text(text))) => {
                    if self
                        .handle(text, &shard_label, &mut outbox, &mut stop)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    self.note_resume_url();
                }
            }
            self.status
                .set_shard(shard_id, ShardPhase::of(self.shard.state()));
        }
        drop(outbox);
        self.hand_over_waiting();
        self.close().await
    }

    /// Sends the member updates whose turn has come.
    async fn release_waiting(
        &mut self,
        outbox: &mut Outbox<'_, Job>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopping> {
        for job in self.admission.release(Instant::now()) {
            outbox.send(job, stop).await?;
        }
        self.flood.waiting(&self.admission);
        Ok(())
    }

    /// A stopping shard's waiting updates go to the publisher if it has
    /// room. What it has not stays unacknowledged in the shard's progress,
    /// so the stored session stops before it and a resume replays it.
    fn hand_over_waiting(&mut self) {
        for job in self.admission.drain() {
            if self.jobs.try_send(job).is_err() {
                break;
            }
        }
        self.flood.waiting(&self.admission);
    }

    /// Closes with 4000 so the session stays resumable (1000/1001 would end
    /// it), and reads until the gateway answers, discarding what arrives:
    /// those dispatches are past the stored sequence and will be replayed.
    async fn close(mut self) -> ShardExit {
        let shard_id = self.shard.id().number();
        let open = matches!(
            self.shard.state(),
            ShardState::Active | ShardState::Resuming | ShardState::Identifying
        );
        if open {
            self.shard.close(CloseFrame::RESUME);
            let answered = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(item) = self.shard.next().await {
                    if matches!(item, Ok(Message::Close(_))) {
                        return true;
                    }
                    // A server that ends the TCP connection without echoing
                    // the close makes Twilight reconnect at once; its first
                    // message (Hello) moves the shard out of Disconnected.
                    // Stop there, before Twilight sends a Resume.
                    if !matches!(self.shard.state(), ShardState::Disconnected { .. }) {
                        return false;
                    }
                }
                false
            })
            .await;
            if !matches!(answered, Ok(true)) {
                tracing::debug!(
                    shard = shard_id,
                    "gateway did not answer the close frame in time"
                );
            }
        }
        self.status.set_shard(shard_id, ShardPhase::Disconnected);
        ShardExit::Stopped {
            resume_url: self.shard.resume_url().map(str::to_owned),
        }
    }

    /// Hands a new resume URL (a READY, a resume elsewhere) to the
    /// checkpoints.
    fn note_resume_url(&mut self) {
        let url = self.shard.resume_url();
        if url != self.last_resume_url.as_deref() {
            self.last_resume_url = url.map(str::to_owned);
            self.progress.set_resume_url(url);
        }
    }

    /// `subject` in this gateway's namespace.
    fn subject(&mut self, subject: &'static str) -> async_nats::Subject {
        if let Some((_, prefixed)) = self.subjects.iter().find(|(s, _)| *s == subject) {
            return prefixed.clone();
        }
        let prefixed = async_nats::Subject::from(format!("{}{subject}", self.subject_prefix));
        self.subjects.push((subject, prefixed.clone()));
        prefixed
    }

    async fn handle(
        &mut self,
        text: String,
        shard_label: &str,
        outbox: &mut Outbox<'_, Job>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopping> {
        let received = Instant::now();
        let shard_id = self.shard.id().number();
        // Member dispatches are read without Twilight's model (see
        // `translate`); anything else, or one that road cannot read, is
        // parsed by Twilight as before.
        let parsed = match translate::parse_member_dispatch(&text) {
            Some((sequence, member)) => Parsed::Dispatch(sequence, Dispatch::Member(member)),
            None => {
                // Kept for RATE_LIMITED, which is not in `WANTED` (Twilight
                // 0.18 cannot read Discord's shape of it): only such
                // messages are read again, below.
                let text_copy = if text.contains("RATE_LIMITED") {
                    text.clone()
                } else {
                    String::new()
                };
                match twilight_gateway::parse(text, translate::WANTED) {
                    Ok(Some(GatewayEvent::Dispatch(sequence, event))) => {
                        Parsed::Dispatch(sequence, Dispatch::Twilight(event))
                    }
                    Ok(_) => Parsed::Other { text_copy },
                    Err(_) => Parsed::Unreadable,
                }
            }
        };
        // Twilight has already processed the message, so the session is the
        // one this dispatch belongs to (READY included). Its id is copied
        // only when it changes, not for every event.
        let current = match self.shard.session() {
            Some(session) => {
                let id = match &self.last_session {
                    Some(last) if **last == *session.id() => Arc::clone(last),
                    _ => Arc::from(session.id()),
                };
                self.last_session = Some(Arc::clone(&id));
                Some((id, session.sequence()))
            }
            None => None,
        };
        let (sequence, event) = match parsed {
            Parsed::Dispatch(sequence, event) => (sequence, event),
            Parsed::Other { text_copy } => {
                // Not a dispatch, or one the contract has no type for
                // (RATE_LIMITED among them).
                if let Some(refused) = member_requests::refused(&text_copy) {
                    member_requests::retry_later(self.shard.sender(), shard_id, refused);
                }
                if let Some((id, sequence)) = &current {
                    self.progress.observe(id, *sequence, false);
                }
                return Ok(());
            }
            Parsed::Unreadable => {
                // A dispatch Twilight's model cannot read. It cannot be
                // published; skipping it keeps the shard alive.
                metrics::counter!(m::SHARD_ERRORS, "shard" => shard_label.to_owned(), "kind" => "unreadable_dispatch")
                    .increment(1);
                tracing::warn!(
                    shard = shard_id,
                    "skipping a dispatch Twilight could not deserialize"
                );
                if let Some((id, sequence)) = &current {
                    self.progress.observe(id, *sequence, false);
                }
                return Ok(());
            }
        };
        let Some(session_id) = current
            .map(|(id, _)| id)
            .or_else(|| self.last_session.clone())
        else {
            return Ok(());
        };
        match &event {
            Dispatch::Twilight(DispatchEvent::Ready(_)) => {
                metrics::counter!(m::SHARD_IDENTIFIES, "shard" => shard_label.to_owned())
                    .increment(1);
                tracing::info!(shard = shard_id, "identified: new gateway session");
            }
            Dispatch::Twilight(DispatchEvent::Resumed) => {
                metrics::counter!(m::SHARD_RESUMES, "shard" => shard_label.to_owned()).increment(1);
                tracing::info!(shard = shard_id, sequence, "session resumed");
            }
            _ => {}
        }
        let origin = Origin {
            shard_id,
            session_id: &session_id,
            sequence,
            received_at: unix_ms(),
        };
        // Without the members intent Discord would refuse the request.
        let may_ask = self
            .shard
            .config()
            .intents()
            .contains(Intents::GUILD_MEMBERS);
        let arrived = match &event {
            Dispatch::Twilight(DispatchEvent::GuildCreate(create)) if may_ask => match &**create {
                GuildCreate::Available(guild) => Some(guild.id),
                GuildCreate::Unavailable(_) => None,
            },
            _ => None,
        };
        let envelope = match event {
            Dispatch::Member(member) => Some(translate::member_envelope(origin, member)),
            Dispatch::Twilight(event) => translate::to_envelope(origin, event),
        };
        let Some(envelope) = envelope else {
            self.progress.observe(&session_id, sequence, false);
            return Ok(());
        };
        let (Some(subject), Some(event_type)) = (envelope.subject(), envelope.event_type()) else {
            self.progress.observe(&session_id, sequence, false);
            return Ok(());
        };
        let kind = event_type.as_str();
        // `Envelope::to_json`'s encoding, into a buffer sized for a member
        // event up front rather than grown (and copied) three times.
        let mut body = Vec::with_capacity(ENVELOPE_CAPACITY);
        let body = match serde_json::to_writer(&mut body, &envelope) {
            Ok(()) => Bytes::from(body),
            Err(error) => {
                tracing::error!(shard = shard_id, sequence, %error, "cannot encode an envelope");
                self.progress.observe(&session_id, sequence, false);
                return Ok(());
            }
        };
        self.received
            .get(m::EVENTS_RECEIVED, shard_label, kind)
            .increment(1);
        let epoch = self.progress.observe(&session_id, sequence, true);
        let nonce = arrived.map(|_| member_requests::nonce_for(envelope.id.as_str()));
        let (guild_id, user_id) = (envelope.guild_id, envelope.user_id);
        let job = Job {
            shard_id,
            progress: Arc::clone(&self.progress),
            epoch,
            sequence,
            subject: self.subject(subject),
            // Moved, not copied: the envelope is done with once encoded.
            id: envelope.id.into_string(),
            kind,
            body,
            received,
        };
        let offer = self
            .admission
            .offer(Kind::of(event_type), guild_id, user_id, job, received);
        match offer {
            Offer::Publish(job) => outbox.send(job, stop).await?,
            Offer::After(waited, job) => {
                for waited in waited {
                    outbox.send(waited, stop).await?;
                }
                outbox.send(job, stop).await?;
                self.flood.waiting(&self.admission);
            }
            Offer::Shed(job) => {
                // Never to be published: nothing for a resume to replay.
                job.progress.acked(job.epoch, job.sequence);
                self.flood.shed(shard_id, guild_id);
            }
            Offer::Held { replaced } => {
                // Never published: the update that replaced it, waiting
                // here, keeps the stored session from passing it, and
                // says what it said.
                if let Some(old) = replaced {
                    old.progress.acked(old.epoch, old.sequence);
                    self.flood.replaced.increment(1);
                } else {
                    self.flood.waiting(&self.admission);
                }
            }
        }
        // Asked for once the guild's own event is on its way, so that its
        // members follow it in the stream.
        if let (Some(guild), Some(nonce)) = (arrived, nonce) {
            member_requests::request_all(&self.shard.sender(), shard_id, guild, &nonce);
        }
        Ok(())
    }
}

/// `due`, or never.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::trusted_resume_url;

    #[test]
    fn only_discord_or_the_configured_gateway_may_receive_a_resume() {
        let sim = Some("ws://127.0.0.1:4000");
        assert!(trusted_resume_url(
            "wss://gateway-us-east1-b.discord.gg",
            None
        ));
        assert!(trusted_resume_url("wss://gateway.discord.gg/", sim));
        assert!(trusted_resume_url("ws://127.0.0.1:4000", sim));
        for forged in [
            "ws://127.0.0.1:4001",
            "ws://gateway.discord.gg",
            "wss://gateway.discord.gg.evil.example",
            "wss://discord.gg@evil.example",
            "wss://evil.example/discord.gg",
            "not a url",
        ] {
            assert!(!trusted_resume_url(forged, sim), "{forged} was trusted");
        }
        assert!(!trusted_resume_url("ws://127.0.0.1:4000", None));
    }
}
