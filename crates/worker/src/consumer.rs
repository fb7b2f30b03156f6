use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::fair_queue::FairQueue;
use crate::telemetry;
use crate::{HandlerError, Handlers, WorkerConfig, WorkerError};

/// Where a message sits in its stream and how often it was delivered.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// Position in the stream: the order the gateway published in.
    pub stream_sequence: u64,
    /// 1 on first delivery.
    pub attempt: u32,
}

/// What a consumer does with each message. The acknowledgement follows
/// from the result: `Ok` acks, [`HandlerError`] says whether to retry (and
/// when) or to dead-letter.
pub(crate) trait HandleMessage: Send + Sync + 'static {
    fn handle_message(
        &self,
        subject: &str,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether messages on `subject` may be handed to
    /// [`handle_batch`](Self::handle_batch) together with the ones of their
    /// community queued next to them.
    fn batches(&self, _subject: &str) -> bool {
        false
    }

    /// Handles `(subject, payload, delivery)`s of one community, in order,
    /// all or nothing: one outcome for the whole batch (see [`process`] for
    /// what a failed batch becomes).
    fn handle_batch(
        &self,
        _batch: &[(&str, &[u8], Delivery)],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        std::future::ready(Err(HandlerError::Permanent(
            "this consumer handles no batches".to_owned(),
        )))
    }
}

impl HandleMessage for Handlers {
    fn handle_message(
        &self,
        subject: &str,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        Handlers::handle_message(self, subject, payload, delivery)
    }

    fn batches(&self, subject: &str) -> bool {
        Handlers::batches(self, subject)
    }

    fn handle_batch(
        &self,
        batch: &[(&str, &[u8], Delivery)],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        Handlers::handle_batch(self, batch)
    }
}

/// The most messages handed over in one batch. Past a few dozen, a
/// batch's transaction gains little and holds its rows' locks longer.
const MAX_BATCH: usize = 64;

/// How long one pull waits for messages. It bounds how long shutdown waits
/// for a pull that is still open on the server.
const PULL_EXPIRES: Duration = Duration::from_millis(500);

/// The most messages one pull asks for. A pull that gets all it asked for
/// ends at once, on this side; one that expires ends only at the server's
/// word, which can go missing (see [`PULL_GRACE`]). Pulls that asked for
/// all the room (hundreds) expired every time at a few dozen messages a
/// second, and the events stream, with its one puller, stalled for the
/// grace at each lost word (`bench fairness`: its quiet joins' p99). Sixteen
/// fill within [`PULL_EXPIRES`] from ~32 messages a second; under a backlog
/// each fills at once and the next follows.
const PULL_MAX_MESSAGES: usize = 16;

/// How long past [`PULL_EXPIRES`] a pull waits for the server's word that
/// it expired before it is given up. The word goes missing a few times a
/// minute under load here (nats-server 2.9.10); until the pull is given up
/// it delivers nothing, while another puller's pull (if any) still does. Not
/// shorter: a message the server sends to a pull given up too early comes
/// back only after `ack_wait`.
const PULL_GRACE: Duration = Duration::from_millis(250);

/// Bounds on how long a deferred message stays away.
const DEFER_MIN: Duration = Duration::from_millis(100);
const DEFER_MAX: Duration = Duration::from_secs(300);

/// Deferrals are remembered this long (a deferred message may be taken by
/// another worker and never come back here).
const DEFER_MEMORY: Duration = Duration::from_secs(900);

/// Pulls from `consumer` and handles up to `config.concurrency` messages at
/// once, fairly between communities (see [`crate::fair_queue`]), until
/// `shutdown`; then stops pulling, hands back what had not started and
/// waits for in-flight messages to finish.
///
/// The process reads ahead of what it can start, up to `read_ahead`
/// messages, so that it can choose between communities. Past that it keeps
/// reading only to find other communities' messages: one from a community
/// that already has its share here is handed back to the stream with a
/// delay (a deferral, which does not count as a failed attempt) instead of
/// blocking the stream behind it. Held messages are kept alive towards
/// JetStream while they wait, and anything delivered after the signal is
/// handed straight back with a NAK.
///
/// Messages the handlers take in batches (see
/// [`HandleMessage::batches`]) start together with the ones of their
/// community queued right behind them, up to [`MAX_BATCH`]: under a flood
/// a community's backlog then costs a transaction per batch, not per
/// message. With [`Order::PerCommunity`] a community has one message or
/// batch in flight at a time, so its effects follow stream order; with
/// [`Order::OneBatch`] too, in any order.
pub(crate) async fn consume<H: HandleMessage>(
    consumer: PullConsumer,
    stream: &'static str,
    js: jetstream::Context,
    handlers: Arc<H>,
    config: WorkerConfig,
    order: Order,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let limit = config.concurrency.max(1);
    let plan = Plan::new(limit, config.community_share(), order);
    // Hard bound on what this process holds: the read-ahead, plus the same
    // again for quiet communities' messages found past a full read-ahead.
    let slots = Arc::new(Semaphore::new(plan.read_ahead * 2));
    let (found, mut arrivals) = mpsc::channel::<Held>(plan.read_ahead);
    // Where order does not matter, two pullers, so that a pull is open
    // nearly all the time: when the server's notice that one pull expired
    // goes missing, the other still delivers (see PULL_GRACE). Where it
    // does, one: two pullers' arrivals interleave, and a later message can
    // start before an earlier one has even arrived.
    let tasks: Vec<_> = (0..plan.pullers)
        .map(|_| {
            tokio::spawn(pull(
                consumer.clone(),
                stream,
                slots.clone(),
                found.clone(),
                plan.pullers,
                shutdown.clone(),
            ))
        })
        .collect();
    // The dispatcher stops once every puller has dropped its sender.
    drop(found);
    let config = Arc::new(config);
    let mut queue: FairQueue<Key, Held> = FairQueue::new(plan.per_community_in_flight);
    let mut deferrals = Deferrals::new(
        plan.per_community_in_flight,
        plan.return_together,
        order == Order::PerCommunity,
    );
    let mut running: JoinSet<(Key, Duration)> = JoinSet::new();
    let mut keep_alive =
        tokio::time::interval((config.ack_wait / 4).max(Duration::from_millis(250)));
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = tokio::time::interval_at(
        tokio::time::Instant::now() + Deferrals::MEASURE_EVERY,
        Deferrals::MEASURE_EVERY,
    );
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // By stream: each stream's consumer has queues of its own. Registered
    // once, not on every turn of the loop below.
    let queued_gauge = metrics::gauge!("worker_messages_queued", "stream" => stream);
    let waiting_gauge = metrics::gauge!("worker_communities_waiting", "stream" => stream);
    loop {
        while running.len() < limit {
            let Some((key, run)) = queue.pop_run(MAX_BATCH, |held| held.batches) else {
                break;
            };
            let (js, handlers, config) = (js.clone(), handlers.clone(), config.clone());
            let together = plan.return_together;
            let run: Vec<(Held, u32)> = run
                .into_iter()
                .map(|held| {
                    let deferred = deferrals.count(held.sequence);
                    (held, deferred)
                })
                .collect();
            running.spawn(async move {
                let started = tokio::time::Instant::now();
                let n = run.len();
                process(run, &js, &*handlers, &config).await;
                // The pace of deferrals is per message. Where messages go
                // in batches, a small one says little about the pace of
                // full ones, which is what returning deferrals make: its
                // time counts as that of a full batch (an early return
                // costs one more deferral, a late one an idle community).
                let per = n.max(together);
                (
                    key,
                    started.elapsed() / u32::try_from(per).unwrap_or(u32::MAX),
                )
            });
        }
        queued_gauge.set(queue.queued() as f64);
        waiting_gauge.set(queue.waiting_keys() as f64);
        tokio::select! {
            Some(finished) = running.join_next(), if !running.is_empty() => {
                match finished {
                    Ok((key, took)) => {
                        queue.done(&key);
                        deferrals.completed(&key, took);
                    }
                    // A panicking handler loses its key; the message comes
                    // back after ack_wait. Say so loudly.
                    Err(e) => tracing::error!(error = %e, "a message handler failed unexpectedly"),
                }
            }
            arrival = arrivals.recv() => {
                let Some(mut held) = arrival else { break };
                held.batches = handlers.batches(&held.message.subject);
                let key = Key::of(&held.message.payload);
                deferrals.returned(&key, held.sequence);
                let here = queue.held(&key);
                let total = slots_in_use(&slots, plan.read_ahead * 2);
                let room = total <= plan.read_ahead || here < plan.per_community_waiting;
                if room && !deferrals.holds_back(&key, held.sequence, std::time::Instant::now()) {
                    queue.push(key, held);
                } else {
                    defer(held, key, &mut deferrals).await;
                }
            }
            _ = keep_alive.tick() => {
                keep_waiting_alive(&mut queue, config.ack_wait).await;
            }
            _ = pace.tick() => deferrals.forget_stale(),
        }
    }
    // The pullers have stopped (shutdown): what has not started goes back at
    // once for another worker, then in-flight messages finish.
    for held in queue.drain_waiting() {
        if let Err(e) = held.message.ack_with(AckKind::Nak(None)).await {
            tracing::warn!(error = %e, "could not hand back a message at shutdown; it returns after ack_wait");
        }
    }
    while running.join_next().await.is_some() {}
    let mut result = Ok(());
    for puller in tasks {
        let outcome = match puller.await {
            Ok(outcome) => outcome,
            Err(e) => Err(WorkerError::Task(e.to_string())),
        };
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

/// Whether one community's messages may be handled side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Several at once (up to its share of the slots), in any order.
    Any,
    /// One message or batch at a time, in the order pulled (stream order,
    /// but for redeliveries): membership events, whose effects depend on
    /// what came before. Batches keep this from being slow.
    PerCommunity,
    /// One batch at a time, in any order: eligibility checks. A batch
    /// leases its members, reads the community's rules and their grants,
    /// and writes its decisions once for all of them; two batches of one
    /// community side by side each pay that for fewer members, and contend
    /// for the same rows. One at a time, what arrives while a batch runs
    /// goes in the next, so batches fill as the load rises.
    OneBatch,
}

/// How far this process reads ahead, and each community's share of it.
#[derive(Clone, Copy, Debug)]
struct Plan {
    read_ahead: usize,
    /// Messages (or batches) of one community in flight at once: one if
    /// its messages go in order; else its share of the handler slots
    /// ([`WorkerConfig::community_share`]).
    per_community_in_flight: usize,
    /// Messages of one community held here (waiting or in flight) past
    /// which, with the read-ahead full, more of its messages are deferred.
    per_community_waiting: usize,
    /// How many deferred messages of a community return at once.
    return_together: usize,
    /// Pull loops running side by side.
    pullers: usize,
}

impl Plan {
    fn new(limit: usize, share: usize, order: Order) -> Plan {
        match order {
            Order::Any => Plan {
                read_ahead: limit * 4,
                per_community_in_flight: share.clamp(1, limit),
                per_community_waiting: limit,
                return_together: 1,
                pullers: 2,
            },
            // One batch at a time: a community goes as fast as its batches
            // are full, so it may hold two of them (one running, the next
            // filling) before more of it is deferred.
            Order::PerCommunity => Plan {
                read_ahead: (limit * 4).max(2 * MAX_BATCH),
                per_community_in_flight: 1,
                per_community_waiting: 2 * MAX_BATCH,
                return_together: MAX_BATCH,
                pullers: 1,
            },
            // As above, but nothing waits on order, so two pulls may be
            // open at once.
            Order::OneBatch => Plan {
                pullers: 2,
                ..Plan::new(limit, share, Order::PerCommunity)
            },
        }
    }
}

fn slots_in_use(slots: &Semaphore, total: usize) -> usize {
    total.saturating_sub(slots.available_permits())
}

/// The community a message belongs to, as far as its payload tells without
/// a full decode: the guild of an event, interaction or eligibility check,
/// the community of a webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Guild(wire::GuildId),
    Community(String),
    /// Undecodable: these share one turn (and will be dead-lettered).
    Unkeyed,
}

impl Key {
    fn of(payload: &[u8]) -> Key {
        #[derive(serde::Deserialize)]
        struct Keyed<'a> {
            #[serde(default)]
            guild_id: Option<wire::GuildId>,
            #[serde(default, borrow)]
            community: Option<&'a str>,
        }
        match serde_json::from_slice::<Keyed<'_>>(payload) {
            Ok(Keyed {
                guild_id: Some(guild),
                ..
            }) => Key::Guild(guild),
            Ok(Keyed {
                community: Some(community),
                ..
            }) => Key::Community(community.to_owned()),
            _ => Key::Unkeyed,
        }
    }
}

impl crate::fair_queue::InOrder for Held {
    fn order(&self) -> u64 {
        self.sequence
    }
}

/// A delivered message this process holds, with its place in the buffer.
struct Held {
    message: jetstream::Message,
    sequence: u64,
    slot: OwnedSemaphorePermit,
    /// Since its ack deadline was last extended.
    since: tokio::time::Instant,
    /// When this process received it.
    received: tokio::time::Instant,
    /// From JetStream storing it to this process receiving it.
    delivered_after: Duration,
    /// May be handled in one batch with its community's next messages.
    batches: bool,
}

/// Which messages this process deferred, and how long each deferring
/// community's messages take to handle.
///
/// A deferred message should come back about when its community can be
/// served again: earlier, and JetStream (which hands out redeliveries before
/// new messages) fills every pull with the flood again instead of reading on
/// to other communities; later, and the flood's work waits while slots sit
/// idle. A community can be served at most at (its slots ÷ the time one of
/// its messages takes), so the n-th outstanding deferral of a community is
/// delayed by n divided by that rate. (Its *observed* rate would not do:
/// while deferred, a community is served exactly as fast as its deferrals
/// return, and pacing by that would only ever slow it further.)
///
/// Where a community's messages go in order, a deferral holds back the
/// messages of its community that come after it: they are deferred too
/// until it is back ([`holds_back`](Self::holds_back)). Otherwise a later
/// message (a member's leave) could run while an earlier one (their
/// update) is away, and the earlier one would find itself overtaken.
///
/// Deferrals are also not failed attempts: [`count`](Self::count) says how
/// many to subtract from JetStream's delivery count. Per process: a message
/// deferred here and failing in another worker counts its deferrals there
/// as attempts (at worst it is dead-lettered after fewer real failures).
struct Deferrals {
    by_sequence: HashMap<u64, (u32, std::time::Instant)>,
    paces: HashMap<Key, Pace>,
    /// Slots one community may use at once.
    slots: f64,
    /// Deferrals sent back to return at the same moment, so that they can
    /// be handled as one batch.
    together: u64,
    /// Whether a community's messages go in order; if so, the sequences of
    /// its deferred messages not yet back, with when each is given up on.
    away: Option<HashMap<Key, BTreeMap<u64, std::time::Instant>>>,
}

#[derive(Debug, Default)]
struct Pace {
    /// Deferred and not yet back.
    outstanding: u64,
    /// Seconds one message takes, smoothed; 0 until one finished.
    seconds_each: f64,
}

impl Deferrals {
    const MEASURE_EVERY: Duration = Duration::from_secs(1);

    /// How long past its delay a deferred message may take to come back
    /// before this process stops holding its community's later messages
    /// for it: another worker may have taken it, and then it never will.
    const RETURN_GRACE: Duration = Duration::from_secs(5);

    /// The longest a deferral on an ordered stream stays away: its
    /// community's later messages wait for it.
    const ORDERED_DEFER_MAX: Duration = Duration::from_secs(5);

    fn new(slots: usize, together: usize, ordered: bool) -> Self {
        Deferrals {
            by_sequence: HashMap::new(),
            paces: HashMap::new(),
            slots: slots.max(1) as f64,
            together: together.max(1) as u64,
            away: ordered.then(HashMap::new),
        }
    }

    /// Whether the message `sequence` of `key` must wait for one of its
    /// community deferred before it (ordered streams only).
    fn holds_back(&mut self, key: &Key, sequence: u64, now: std::time::Instant) -> bool {
        let Some(away) = self.away.as_mut() else {
            return false;
        };
        let Some(deferred) = away.get_mut(key) else {
            return false;
        };
        deferred.retain(|_, give_up_at| *give_up_at > now);
        let earlier = deferred.range(..sequence).next().is_some();
        if deferred.is_empty() {
            away.remove(key);
        }
        earlier
    }

    /// Counts one more deferral of `sequence` for `key` and returns how
    /// long it should stay away.
    fn add(&mut self, key: Key, sequence: u64) -> Duration {
        let now = std::time::Instant::now();
        let entry = self.by_sequence.entry(sequence).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
        let pace = self.paces.entry(key.clone()).or_default();
        pace.outstanding += 1;
        // Unmeasured: assume a brisk pace; an early return costs one more
        // deferral, a late one idle slots.
        let seconds_each = if pace.seconds_each > 0.0 {
            pace.seconds_each
        } else {
            0.005
        };
        let rate = self.slots / seconds_each;
        let place = pace.outstanding.div_ceil(self.together) * self.together;
        let mut delay = Duration::from_secs_f64(place as f64 / rate).clamp(DEFER_MIN, DEFER_MAX);
        if let Some(away) = self.away.as_mut() {
            let deferred = away.entry(key).or_default();
            // In order, a community waits for its first deferral to come
            // back: a pace measured while its handling was slow (a database
            // outage) must not keep it away for minutes once it is fast.
            // (Its later messages are deferred again each time they come
            // back before it: the cap also bounds that churn.)
            delay = delay.min(Self::ORDERED_DEFER_MAX);
            deferred.insert(sequence, now + delay + Self::RETURN_GRACE);
        }
        delay
    }

    /// A message of `key` arrived; if it is one deferred here, it is back.
    fn returned(&mut self, key: &Key, sequence: u64) {
        if self.by_sequence.contains_key(&sequence) {
            if let Some(pace) = self.paces.get_mut(key) {
                pace.outstanding = pace.outstanding.saturating_sub(1);
            }
        }
        if let Some(deferred) = self.away.as_mut().and_then(|away| away.get_mut(key)) {
            deferred.remove(&sequence);
        }
    }

    /// How often `sequence` was deferred here; it is starting now.
    fn count(&mut self, sequence: u64) -> u32 {
        self.by_sequence.remove(&sequence).map_or(0, |(n, _)| n)
    }

    /// A message of `key` took `took` to handle.
    fn completed(&mut self, key: &Key, took: Duration) {
        if let Some(pace) = self.paces.get_mut(key) {
            let took = took.as_secs_f64();
            pace.seconds_each = if pace.seconds_each > 0.0 {
                0.8 * pace.seconds_each + 0.2 * took
            } else {
                took
            };
        }
    }

    /// Forgets communities with nothing deferred, and deferrals that never
    /// came back (another worker took them).
    fn forget_stale(&mut self) {
        self.paces.retain(|_, pace| pace.outstanding > 0);
        self.by_sequence
            .retain(|_, (_, at)| at.elapsed() < DEFER_MEMORY);
        if let Some(away) = self.away.as_mut() {
            let now = std::time::Instant::now();
            away.retain(|_, deferred| {
                deferred.retain(|_, give_up_at| *give_up_at > now);
                !deferred.is_empty()
            });
        }
    }
}

async fn defer(held: Held, key: Key, deferrals: &mut Deferrals) {
    let delay = deferrals.add(key.clone(), held.sequence);
    metrics::counter!("worker_messages_deferred_total").increment(1);
    tracing::debug!(community = ?key, sequence = held.sequence, ?delay, "deferred");
    if let Err(e) = held.message.ack_with(AckKind::Nak(Some(delay))).await {
        tracing::warn!(error = %e, "could not defer a message; it returns after ack_wait");
    }
    drop(held.slot);
}

/// Tells JetStream that messages waiting here for their turn are still
/// being worked on, so it does not hand them to another worker.
async fn keep_waiting_alive(queue: &mut FairQueue<Key, Held>, ack_wait: Duration) {
    let now = tokio::time::Instant::now();
    for held in queue.waiting_mut() {
        if now.duration_since(held.since) >= ack_wait / 3 {
            if let Err(e) = held.message.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %e, "could not extend a waiting message's ack deadline");
            }
            held.since = now;
        }
    }
}

/// How long ago JetStream stored a message, by the server's clock (hosts'
/// clocks are assumed to agree, as NTP keeps them; a message that seems to
/// come from the future waited no time).
fn waited_since(stored_unix_nanos: i128) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stored = u128::try_from(stored_unix_nanos).unwrap_or(0);
    Duration::from_nanos(u64::try_from(now.saturating_sub(stored)).unwrap_or(u64::MAX))
}

/// Pulls messages while there is room to hold them and sends them to the
/// dispatcher. Each pull asks for no more than its share of the room (one
/// of `pullers`): a message delivered to this process is owned by it until
/// acknowledged.
async fn pull(
    consumer: PullConsumer,
    stream: &'static str,
    slots: Arc<Semaphore>,
    found: mpsc::Sender<Held>,
    pullers: usize,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let wanted = (slots.available_permits() / pullers.max(1) + 1).min(PULL_MAX_MESSAGES);
        let mut batch = match consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                // NATS down or restarting: wait and pull again.
                drop(first);
                tracing::warn!(error = %e, "cannot pull messages; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut reserved = Some(first);
        // The batch ends when it is full or when the server says the pull
        // expired. If that word is lost, async-nats waits 5 s more before
        // it ends the batch, and this stream stalls that long (seen in
        // `bench fairness`: every quiet message of a stream held back ~5 s,
        // stored in JetStream but not delivered). So past its expiry, with
        // nothing more delivered, the batch is given up and the next pull
        // made. A message already delivered is still read: the timeout
        // only ends a wait for more.
        let give_up = tokio::time::Instant::now() + PULL_EXPIRES + PULL_GRACE;
        // Read to the end even after the signal, so no delivered message is
        // dropped.
        loop {
            let next = match tokio::time::timeout_at(give_up, batch.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(_) => {
                    metrics::counter!("worker_pulls_given_up_total", "stream" => stream)
                        .increment(1);
                    tracing::debug!(
                        "a pull outlived its expiry without word from the server; pulling again"
                    );
                    break;
                }
            };
            let message = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling messages failed; pulling again");
                    break;
                }
            };
            if shutdown.is_cancelled() {
                if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::warn!(error = %e, "could not hand back a message at shutdown; it returns after ack_wait");
                }
                continue;
            }
            let Ok((sequence, delivered_after)) = message.info().map(|info| {
                (
                    info.stream_sequence,
                    waited_since(info.published.unix_timestamp_nanos()),
                )
            }) else {
                // Not a JetStream delivery; nothing sensible to do but say so.
                tracing::error!(subject = %message.subject, "message without JetStream metadata");
                continue;
            };
            let slot = match reserved.take() {
                Some(p) => p,
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let received = tokio::time::Instant::now();
            let held = Held {
                message,
                sequence,
                slot,
                since: received,
                received,
                delivered_after,
                batches: false,
            };
            if let Err(mpsc::error::SendError(held)) = found.send(held).await {
                // The dispatcher is gone: hand the message back.
                let _ = held.message.ack_with(AckKind::Nak(None)).await;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Handles a run of held messages (one, or a batch of one community) and
/// settles each by its outcome; their places in the buffer are freed only
/// then.
async fn process<H: HandleMessage>(
    run: Vec<(Held, u32)>,
    js: &jetstream::Context,
    handlers: &H,
    config: &WorkerConfig,
) {
    let mut started = Vec::with_capacity(run.len());
    for (held, deferred) in run {
        let subject = held.message.subject.to_string();
        let (stream_sequence, delivered) = match held.message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                // Not a JetStream delivery; nothing sensible to do but say so.
                tracing::error!(%subject, error = %e, "message without JetStream metadata");
                continue;
            }
        };
        // Deferrals for fairness were deliveries too, but not attempts.
        let delivery = Delivery {
            stream_sequence,
            attempt: u32::try_from(delivered)
                .unwrap_or(u32::MAX)
                .saturating_sub(deferred)
                .max(1),
        };
        started.push((held, subject, delivered, delivery));
    }
    if started.is_empty() {
        return;
    }
    let handling = tokio::time::Instant::now();
    for (held, subject, _, _) in &started {
        let (stream, _) = telemetry::labels(config.namespace(), subject);
        metrics::histogram!(telemetry::DELIVERY_SECONDS, "stream" => stream)
            .record(held.delivered_after.as_secs_f64());
        metrics::histogram!(telemetry::QUEUED_SECONDS, "stream" => stream)
            .record(handling.duration_since(held.received).as_secs_f64());
    }
    let outcomes = {
        let work = handle_run(&started, handlers);
        tokio::pin!(work);
        // A run can outlast ack_wait (a batch of checks whose role changes
        // wait on Discord's per-server limit): tell JetStream it is in
        // progress, or it hands the messages out again while they are being
        // handled.
        let every = (config.ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                outcomes = &mut work => break outcomes,
                _ = progress.tick() => {
                    for (held, subject, _, _) in &started {
                        if let Err(e) = held.message.ack_with(AckKind::Progress).await {
                            tracing::debug!(%subject, error = %e, "could not extend a message's ack wait");
                        }
                    }
                }
            }
        }
    };
    let took = handling.elapsed().as_secs_f64();
    for ((held, subject, delivered, delivery), outcome) in started.into_iter().zip(outcomes) {
        let (_, kind) = telemetry::labels(config.namespace(), &subject);
        metrics::histogram!(telemetry::HANDLER_SECONDS, "subject" => kind).record(took);
        let span = message_span(&held.message, &subject, delivery);
        settle(
            held.message,
            &subject,
            delivered,
            delivery,
            outcome,
            js,
            config,
        )
        .instrument(span)
        .await;
        drop(held.slot);
    }
}

/// The `Nats-Msg-Id` a message was published under: for Discord events the
/// envelope's id, for checks and webhook jobs their own.
fn envelope_id(message: &jetstream::Message) -> Option<&str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::subjects::headers::MSG_ID))
        .map(async_nats::HeaderValue::as_str)
}

/// The span every log line about one message is written in: its envelope
/// id (the `Nats-Msg-Id` the gateway published it under, which is the
/// envelope's `id`), so a worker's line can be tied to the gateway event
/// that caused it.
fn message_span(message: &jetstream::Message, subject: &str, delivery: Delivery) -> tracing::Span {
    let id = envelope_id(message);
    // W3C trace context: a publisher's own `traceparent` if it sent one,
    // otherwise the trace the envelope id is (the gateway sends none: it
    // would only repeat the id, on every event, see wire::trace).
    let traceparent: Option<Cow<'_, str>> = match message
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::trace::HEADER))
    {
        Some(sent) => Some(Cow::Borrowed(sent.as_str())),
        None => id.and_then(wire::trace::traceparent).map(Cow::Owned),
    };
    // Checked once: a malformed header starts no trace.
    let trace_id = traceparent.as_deref().and_then(wire::trace::trace_id);
    let span = tracing::info_span!(
        "message",
        envelope_id = id.unwrap_or(""),
        trace_id = trace_id.unwrap_or(""),
        subject,
        stream_seq = delivery.stream_sequence,
        attempt = delivery.attempt
    );
    if let (Some(traceparent), Some(_)) = (&traceparent, trace_id) {
        continue_trace(&span, traceparent);
    }
    span
}

/// Makes `span` a child of the gateway's publish in exported traces. A no-op
/// unless span export is configured (`gatehouse`'s `otel`).
fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    // Well-formed, checked by the caller: 00-<trace>-<parent>-<flags>.
    let mut parts = traceparent.split('-').skip(1);
    let (Some(Ok(trace)), Some(Ok(parent))) = (
        parts.next().map(TraceId::from_hex),
        parts.next().map(SpanId::from_hex),
    ) else {
        return;
    };
    let remote = SpanContext::new(trace, parent, TraceFlags::SAMPLED, true, TraceState::NONE);
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Handles a run's messages: alone, or as a batch that falls back to one
/// at a time. One outcome per message, in order.
async fn handle_run<H: HandleMessage>(
    started: &[(Held, String, i64, Delivery)],
    handlers: &H,
) -> Vec<Result<(), HandlerError>> {
    match started {
        [] => Vec::new(),
        [(held, subject, _, delivery)] => vec![
            handlers
                .handle_message(subject, &held.message.payload, delivery)
                .instrument(message_span(&held.message, subject, *delivery))
                .await,
        ],
        batch => {
            // A batch is one community's: its lines name the envelope ids
            // it starts and ends with, and each message handled alone after
            // a failed batch gets its own span.
            let span = tracing::info_span!(
                "batch",
                messages = batch.len(),
                first_envelope_id = batch
                    .first()
                    .and_then(|(held, ..)| envelope_id(&held.message))
                    .unwrap_or(""),
                last_envelope_id = batch
                    .last()
                    .and_then(|(held, ..)| envelope_id(&held.message))
                    .unwrap_or("")
            );
            let together: Vec<(&str, &[u8], Delivery)> = batch
                .iter()
                .map(|(held, subject, _, delivery)| {
                    (subject.as_str(), &held.message.payload[..], *delivery)
                })
                .collect();
            match handlers.handle_batch(&together).instrument(span).await {
                Ok(()) => together.iter().map(|_| Ok(())).collect(),
                // A bad message fails the whole batch: handled again one at
                // a time, it fails (and is dead-lettered) alone.
                Err(HandlerError::Permanent(reason)) => {
                    metrics::counter!("worker_batches_split_total").increment(1);
                    tracing::debug!(messages = batch.len(), %reason, "a batch failed; handling its messages one by one");
                    let mut outcomes = Vec::with_capacity(batch.len());
                    for (held, subject, _, delivery) in batch {
                        outcomes.push(
                            handlers
                                .handle_message(subject, &held.message.payload, delivery)
                                .instrument(message_span(&held.message, subject, *delivery))
                                .await,
                        );
                    }
                    outcomes
                }
                // One that may succeed later (the database down, a guild not
                // provisioned yet) is retried whole: one at a time, each
                // would only wait for the same dependency in turn.
                Err(retry) => together.iter().map(|_| Err(retry.clone())).collect(),
            }
        }
    }
}

/// Acknowledges `message` as its `outcome` says: done, again later, or
/// dead-lettered.
async fn settle(
    message: jetstream::Message,
    subject: &str,
    delivered: i64,
    delivery: Delivery,
    outcome: Result<(), HandlerError>,
    js: &jetstream::Context,
    config: &WorkerConfig,
) {
    let (stream, _) = telemetry::labels(config.namespace(), subject);
    match outcome {
        Ok(()) => {
            metrics::counter!(telemetry::MESSAGES, "stream" => stream, "outcome" => "ok")
                .increment(1);
            if let Err(e) = message.ack().await {
                // The effect is committed; a redelivery will be recognised
                // as a duplicate.
                tracing::warn!(%subject, error = %e, "ack failed; a duplicate delivery will be skipped");
            }
        }
        Err(HandlerError::Transient(reason)) if delivery.attempt < config.max_attempts => {
            let delay = config.backoff_after(delivery.attempt);
            metrics::counter!(telemetry::MESSAGES, "stream" => stream, "outcome" => "retry")
                .increment(1);
            tracing::info!(%subject, attempt = delivery.attempt, ?delay, %reason, "will retry");
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::warn!(%subject, error = %e, "nak failed; JetStream will redeliver after ack_wait");
            }
        }
        Err(HandlerError::RetryAfter { reason, after }) => {
            metrics::counter!(telemetry::MESSAGES, "stream" => stream, "outcome" => "retry")
                .increment(1);
            tracing::debug!(%subject, ?after, %reason, "will retry");
            if let Err(e) = message.ack_with(AckKind::Nak(Some(after))).await {
                tracing::warn!(%subject, error = %e, "nak failed; JetStream will redeliver after ack_wait");
            }
        }
        Err(err) => {
            let (reason, class) = match &err {
                HandlerError::Transient(r) => (
                    format!("gave up after {} attempts: {r}", delivery.attempt),
                    "attempts_exhausted",
                ),
                HandlerError::Permanent(r) | HandlerError::RetryAfter { reason: r, .. } => {
                    (r.clone(), "permanent")
                }
            };
            // The original's id (the envelope id the gateway published it
            // under), or its place in its stream: the same on redelivery.
            let msg_id = envelope_id(&message).map_or_else(
                || format!("{subject}#{}", delivery.stream_sequence),
                str::to_owned,
            );
            match bus::publish_dead_letter(
                js,
                config.namespace(),
                subject,
                message.payload.clone(),
                &msg_id,
                delivered,
                &reason,
            )
            .await
            {
                Ok(()) => {
                    // Counted once it is stored: one that could not be is
                    // handed back below, and counted as a retry.
                    metrics::counter!(telemetry::MESSAGES, "stream" => stream, "outcome" => "dead_letter").increment(1);
                    metrics::counter!(telemetry::DEAD_LETTERS, "stream" => stream, "reason" => class)
                        .increment(1);
                    tracing::warn!(%subject, %reason, "dead-lettered");
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(%subject, error = %e, "terminating a dead-lettered message failed");
                    }
                }
                Err(e) => {
                    // Keep the message: better redelivered than lost.
                    metrics::counter!(telemetry::MESSAGES, "stream" => stream, "outcome" => "retry")
                        .increment(1);
                    tracing::error!(%subject, error = %e, "could not dead-letter; will retry");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(config.backoff_after(delivery.attempt))))
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guild(id: u64) -> Key {
        Key::Guild(wire::GuildId::new(id).expect("not 0"))
    }

    #[test]
    fn in_order_a_deferred_message_holds_back_the_later_ones_of_its_community() {
        let mut d = Deferrals::new(1, 64, true);
        let now = std::time::Instant::now();
        d.add(guild(1), 5);
        assert!(d.holds_back(&guild(1), 7, now), "a later one ran ahead");
        assert!(!d.holds_back(&guild(1), 4, now), "an earlier one waits");
        assert!(!d.holds_back(&guild(2), 7, now), "another community waits");
        // Back: the later ones may go.
        d.returned(&guild(1), 5);
        assert!(!d.holds_back(&guild(1), 7, now));

        // One that never comes back (another worker took it) holds its
        // community only until its delay and a grace have passed.
        let delay = d.add(guild(1), 9);
        assert!(d.holds_back(&guild(1), 10, now));
        let later = std::time::Instant::now() + delay + Deferrals::RETURN_GRACE;
        assert!(!d.holds_back(&guild(1), 10, later));
    }

    #[test]
    fn in_order_a_slow_pace_keeps_a_deferral_away_for_seconds_not_minutes() {
        // A pace measured during an outage: seconds per message.
        let mut ordered = Deferrals::new(1, 1, true);
        ordered.paces.entry(guild(1)).or_default().seconds_each = 30.0;
        let delay = ordered.add(guild(1), 5);
        assert!(
            delay <= Deferrals::ORDERED_DEFER_MAX,
            "a slow pace kept an ordered community away for {delay:?}"
        );
        // Where nothing waits for it, the pace decides.
        let mut any = Deferrals::new(1, 1, false);
        any.paces.entry(guild(1)).or_default().seconds_each = 30.0;
        assert!(any.add(guild(1), 5) > Deferrals::ORDERED_DEFER_MAX);
    }

    #[test]
    fn in_any_order_a_deferral_holds_nothing_back() {
        let mut d = Deferrals::new(4, 1, false);
        d.add(guild(1), 5);
        assert!(!d.holds_back(&guild(1), 7, std::time::Instant::now()));
    }
}
