//! The task that starts role changes: per-guild queues, global tokens,
//! guild windows and the breaker, with nothing ever asleep on a slot.
//!
//! One dispatcher runs per [`Discord`](crate::discord::Discord) client. It
//! owns the queues and the count of changes in flight, and is the only one
//! to touch them, so it needs no locks; the work that waits on the network
//! (leasing tokens, taking a guild's window, the request itself) runs in
//! tasks that report back as [`Event`]s. A change is started only with a
//! global token in hand; its task then takes one change from the guild's
//! window and, if the window is spent, hands the change back at once with
//! the time of the reset: the guild sits out of the round until then, and
//! its slot and its token go to the next guild. Waiting is always done
//! here, by a timer, never by a task holding a slot.

use std::collections::VecDeque;
use std::sync::Arc;

use domain::role_sync::RoleChange;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wire::{check::CheckPriority, GuildId};

use super::budget::{Budget, GlobalLease};
use super::guild_window::Observed;
use super::queues::GuildQueues;
use super::request::{Answer, RoleRequests};
use crate::discord::DiscordError;

/// How often a change is put back to wait after Discord answered 429,
/// before the 429 is its answer.
const RETRIES_AFTER_429: u8 = 1;

/// A role change waiting for its answer.
pub(crate) struct Job {
    pub(crate) change: RoleChange,
    pub(crate) priority: CheckPriority,
    pub(crate) reply: oneshot::Sender<Result<(), DiscordError>>,
    /// 429s answered to it so far.
    pub(crate) limited: u8,
}

impl Job {
    fn answer(self, result: Result<(), DiscordError>) {
        // The caller may have given up waiting; nothing to tell then.
        let _ = self.reply.send(result);
    }
}

/// What a task reports back.
enum Event {
    Leased(GlobalLease),
    /// The shared record was read again.
    Refreshed,
    /// A change was answered (or refused); its guild may go on.
    Done(GuildId),
    /// The change did not go out: back in its queue until `until`, with
    /// its unspent token.
    Deferred {
        guild: GuildId,
        job: Job,
        until: Instant,
        token: Option<Instant>,
    },
}

pub(crate) async fn run(
    requests: Arc<RoleRequests>,
    budget: Arc<Budget>,
    mut incoming: mpsc::Receiver<Vec<Job>>,
    in_flight: usize,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut queues: GuildQueues<Job> = GuildQueues::default();
    // Leased global tokens, by when each must be spent.
    let mut tokens: VecDeque<Instant> = VecDeque::new();
    let mut running = 0usize;
    // A lease or a re-read of the shared record is out.
    let mut asking = false;
    // No lease before this (the bucket said when its next token comes).
    let mut global_wait: Option<Instant> = None;
    let mut open = true;
    loop {
        let now = Instant::now();
        queues.wake(now);
        tokens.retain(|expires| *expires > now);
        let breaker = budget.breaker_open_until();
        if let Some(until) = breaker {
            let jobs = queues.drain();
            if !jobs.is_empty() {
                metrics::counter!("worker_role_changes_refused_total", "reason" => "breaker")
                    .increment(jobs.len() as u64);
            }
            for job in jobs {
                job.answer(Err(DiscordError::breaker(until)));
            }
        } else if budget.breaker_seen_open() && !asking {
            // Its time has passed here; the record says whether others
            // have kept it open.
            asking = true;
            let (budget, events) = (budget.clone(), events_tx.clone());
            tokio::spawn(async move {
                budget.refresh().await;
                let _ = events.send(Event::Refreshed);
            });
        }
        if !budget.breaker_seen_open() {
            while running < in_flight && queues.ready_guilds() > 0 {
                let Some(token) = tokens.pop_front() else {
                    if !asking && global_wait.is_none_or(|at| at <= now) {
                        let want = queues.ready_guilds().min(in_flight - running);
                        asking = true;
                        global_wait = None;
                        let (budget, events) = (budget.clone(), events_tx.clone());
                        tokio::spawn(async move {
                            let lease = budget.lease(u32::try_from(want).unwrap_or(u32::MAX)).await;
                            let _ = events.send(Event::Leased(lease));
                        });
                    }
                    break;
                };
                let Some((guild, _, job)) = queues.start_next() else {
                    tokens.push_front(token);
                    break;
                };
                running += 1;
                let (requests, budget, events) =
                    (requests.clone(), budget.clone(), events_tx.clone());
                tokio::spawn(async move {
                    let event = attempt(&requests, &budget, guild, job, token).await;
                    let _ = events.send(event);
                });
            }
        }
        metrics::gauge!("worker_role_changes_queued").set(queues.queued() as f64);
        metrics::gauge!("worker_role_changes_in_flight").set(running as f64);
        if !open && queues.queued() == 0 && running == 0 && !asking {
            return;
        }
        let wake = [
            queues.next_wake(),
            global_wait.filter(|_| tokens.is_empty() && !asking),
            breaker,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            biased;
            Some(event) = events.recv() => match event {
                Event::Leased(GlobalLease::Granted { count, expires }) => {
                    asking = false;
                    tokens.extend(std::iter::repeat_n(expires, count as usize));
                }
                Event::Leased(GlobalLease::WaitUntil(at)) => {
                    asking = false;
                    global_wait = Some(at);
                }
                Event::Leased(GlobalLease::BreakerOpen) | Event::Refreshed => asking = false,
                Event::Done(guild) => {
                    running -= 1;
                    queues.finish(guild);
                }
                Event::Deferred { guild, job, until, token } => {
                    running -= 1;
                    let priority = job.priority;
                    queues.defer(guild, priority, job, until);
                    if let Some(token) = token {
                        tokens.push_front(token);
                    }
                }
            },
            batch = incoming.recv(), if open => match batch {
                Some(jobs) => {
                    for job in jobs {
                        match budget.breaker_open_until() {
                            Some(until) => {
                                metrics::counter!("worker_role_changes_refused_total", "reason" => "breaker").increment(1);
                                job.answer(Err(DiscordError::breaker(until)));
                            }
                            None => queues.push(job.change.guild_id, job.priority, job),
                        }
                    }
                }
                None => open = false,
            },
            () = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes one change from the guild's window and sends the change, or hands
/// it back to wait.
async fn attempt(
    requests: &RoleRequests,
    budget: &Budget,
    guild: GuildId,
    mut job: Job,
    token: Instant,
) -> Event {
    if let Err(until) = budget.take_guild(guild).await {
        return Event::Deferred {
            guild,
            job,
            until,
            token: Some(token),
        };
    }
    if let Some(until) = budget.breaker_open_until() {
        metrics::counter!("worker_role_changes_refused_total", "reason" => "breaker").increment(1);
        job.answer(Err(DiscordError::breaker(until)));
        return Event::Done(guild);
    }
    if Instant::now() > token {
        // The guild's record took longer than the token may be held: get
        // a fresh one rather than send on a lapsed one.
        return Event::Deferred {
            guild,
            job,
            until: Instant::now(),
            token: None,
        };
    }
    let answer = requests.send(&job.change).await;
    let op = if job.change.add { "add" } else { "remove" };
    metrics::counter!("worker_role_changes_total", "op" => op, "ok" => if matches!(answer, Answer::Done { .. }) { "true" } else { "false" }).increment(1);
    if let Some(status) = answer.invalid_status() {
        metrics::counter!("worker_discord_invalid_requests_total", "status" => status.to_string())
            .increment(1);
        budget.record_invalid(1).await;
    }
    match answer {
        Answer::Done { rate } => {
            budget.observe_guild(guild, rate).await;
            job.answer(Ok(()));
        }
        Answer::MemberGone { rate } => {
            budget.observe_guild(guild, rate).await;
            let user = job.change.user_id;
            job.answer(Err(DiscordError::MemberGone { guild, user }));
        }
        Answer::Limited {
            rate,
            retry_after,
            global,
            ..
        } => {
            if global {
                tracing::warn!(
                    ?retry_after,
                    "Discord answered a global 429; every worker pauses"
                );
                budget.pause_global(retry_after).await;
            } else {
                let reset_after = rate.map_or(retry_after, |r| r.reset_after.max(retry_after));
                let spent = Observed {
                    limit: rate.and_then(|r| r.limit),
                    remaining: 0,
                    reset_after,
                };
                budget.observe_guild(guild, Some(spent)).await;
            }
            if job.limited < RETRIES_AFTER_429 {
                // Waits out the limit in the queue, holding nothing.
                job.limited += 1;
                return Event::Deferred {
                    guild,
                    job,
                    until: Instant::now() + retry_after,
                    token: None,
                };
            }
            let what = describe(&job.change);
            job.answer(Err(DiscordError::RateLimited {
                what,
                reason: format!("429, retry after {retry_after:?}"),
            }));
        }
        Answer::Refused { rate, reason, .. } => {
            budget.observe_guild(guild, rate).await;
            let what = describe(&job.change);
            job.answer(Err(DiscordError::Request { what, reason }));
        }
        Answer::Unreachable(reason) => {
            budget.observe_guild(guild, None).await;
            let what = describe(&job.change);
            job.answer(Err(DiscordError::Request { what, reason }));
        }
    }
    Event::Done(guild)
}

fn describe(change: &RoleChange) -> String {
    format!(
        "{} role {} for user {} in guild {}",
        if change.add { "adding" } else { "removing" },
        change.role_id,
        change.user_id,
        change.guild_id
    )
}

impl DiscordError {
    fn breaker(until: Instant) -> DiscordError {
        DiscordError::BreakerOpen {
            retry_after: until.saturating_duration_since(Instant::now()),
        }
    }
}
