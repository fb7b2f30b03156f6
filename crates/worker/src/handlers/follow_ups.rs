//! What follows a committed batch of joins — asking for one eligibility
//! check of its members, which evaluates their badges too (or, without
//! role sync, evaluating the badges alone) — run beside the community's
//! later batches instead of before them.
//!
//! A community's membership events are applied one batch at a time, in
//! stream order, and the next batch starts when the previous one is
//! settled. Follow-ups in that turn (a round trip to JetStream and a badge
//! transaction) made every join wait for the follow-ups of the batch before
//! it. They need not: both are best effort already — a check that cannot be
//! published is made by the periodic scan (a joiner is due a minute on),
//! and badge awards are idempotent and evaluated again by the scan — so
//! they may as well run after the batch is acknowledged. What keeps this
//! from becoming an unbounded backlog is a fixed number of follow-ups in
//! flight: when all are busy, the turn that wants to start one waits, as it
//! did before.
//!
//! The tasks live in a `JoinSet` owned by the handlers, so a worker that is
//! dropped (a killed worker, in tests) takes its follow-ups with it, and a
//! worker that stops cleanly waits a little for them
//! ([`FollowUps::finish`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bus::Namespace;
use store::Store;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument as _;
use wire::{Envelope, GuildId, UserId};

use super::{eligibility, membership};
use crate::HandlerError;

pub(super) struct FollowUps {
    work: Work,
    permits: Arc<Semaphore>,
    tasks: Mutex<JoinSet<()>>,
}

/// What a follow-up needs, cheap to clone into its task.
#[derive(Clone)]
struct Work {
    store: Store,
    js: jetstream::Context,
    namespace: Namespace,
    /// Role sync is configured: joins are worth checking, and their check
    /// evaluates their badges.
    checks: bool,
}

impl FollowUps {
    pub(super) fn new(
        store: Store,
        js: jetstream::Context,
        namespace: Namespace,
        checks: bool,
        in_flight: usize,
    ) -> Self {
        FollowUps {
            work: Work {
                store,
                js,
                namespace,
                checks,
            },
            permits: Arc::new(Semaphore::new(in_flight.max(1))),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Starts the follow-ups of `joined` (members of one community whose
    /// join was just committed), waiting first if too many are running.
    pub(super) async fn after_joins(&self, joined: Vec<Envelope>) {
        if joined.is_empty() {
            return;
        }
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            // Closed by `finish`: the worker is stopping, and the periodic
            // scan of its successor or a peer reaches these members.
            return;
        };
        let work = self.work.clone();
        let span = tracing::Span::current();
        let mut tasks = self.lock();
        // Finished tasks leave their result here until joined.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(
            async move {
                work.run(&joined).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Waits up to `grace` for the follow-ups still running; starts no more.
    pub(crate) async fn finish(&self, grace: Duration) {
        self.permits.close();
        let mut tasks = std::mem::take(&mut *self.lock());
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::info!(
                "follow-ups of joins still running at shutdown were left to the periodic scan"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        // A JoinSet has no invariant a panic elsewhere could break.
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Work {
    async fn run(&self, joined: &[Envelope]) {
        // The check evaluates its members' badges in the transaction that
        // leases them; without role sync there is no check, and the badges
        // take a transaction of their own.
        if self.checks {
            self.ask_for_checks(joined).await;
        } else {
            self.award_badges(joined).await;
        }
    }

    /// Asks for one check of the batch's members (one community), not one
    /// each: under a flood of joins a message per member was as many
    /// JetStream writes, deliveries and acks as the joins themselves.
    async fn ask_for_checks(&self, joined: &[Envelope]) {
        let (Some(first), Some((guild, users))) = (joined.first(), members_of(joined)) else {
            return;
        };
        let asked_at = joined.iter().map(|e| e.occurred_at).min().unwrap_or(0);
        // Derived from the batch's first event, so a redelivered batch asks
        // only once within JetStream's duplicate window. That event names
        // the batch: follow-ups run only for events this batch applied, and
        // an event is applied once.
        let id = format!("check:{}", first.id.as_str());
        let Some(check) =
            domain::recheck::members_recheck(guild, &users, id, "member.join", asked_at)
        else {
            return;
        };
        eligibility::publish(&self.js, &self.namespace, &check).await;
    }

    /// Awards the badges members earned by joining: the members of a batch
    /// (one community) in one transaction.
    async fn award_badges(&self, joined: &[Envelope]) {
        let Some((guild, users)) = members_of(joined) else {
            return;
        };
        let result = match membership::community_of(&self.store, guild).await {
            Ok(tenant) => domain::badges::evaluate_members(&self.store, tenant, &users)
                .await
                .map_err(HandlerError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(awarded) if !awarded.is_empty() => {
                tracing::debug!(%guild, members = users.len(), badges = awarded.len(), "badges awarded on join");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%guild, members = users.len(), error = %e, "badge evaluation on join failed; the periodic scan will retry");
            }
        }
    }
}

/// The community of a batch of joins (its first event's) and the members
/// who joined it, each once, in order.
fn members_of(joined: &[Envelope]) -> Option<(GuildId, Vec<UserId>)> {
    let guild = joined.first()?.guild_id?;
    let mut users: Vec<UserId> = Vec::with_capacity(joined.len());
    for user in joined
        .iter()
        .filter(|e| e.guild_id == Some(guild))
        .filter_map(|e| e.user_id)
    {
        if !users.contains(&user) {
            users.push(user);
        }
    }
    Some((guild, users))
}
