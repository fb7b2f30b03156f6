//! How fast one guild's member updates enter JetStream.
//!
//! Every guild's membership events share one stream, and workers read it in
//! order: a guild whose member updates arrive faster than workers apply them
//! (a bot rewriting every nickname, a mass role edit) builds a backlog that
//! every other guild's joins sit behind. A worker cannot skip that backlog
//! without reading it, and reading it costs as much as the flood is fast
//! (`gatehouse bench fairness --flood-per-s 0`: the quiet guilds' joins did
//! not arrive within two minutes). The gateway is the one place that sees
//! all of a guild's events before they are queued — a guild belongs to one
//! shard, and a shard to one process — so the flood is met here.
//!
//! A guild's member updates are admitted at a sustained rate with a burst (a
//! token bucket). Past it, a member's update waits here, and a newer update
//! of the same member takes its place: a member update carries the member's
//! whole state (roles, nickname), so the newest says everything the ones it
//! replaces would have, and a flood of updates to a few hundred members
//! costs the stream a few hundred messages, not the flood. Waiting updates
//! leave in the order their members first waited, as the bucket refills.
//!
//! Nothing else waits, and nothing is reordered for a member: a join or
//! leave of a member with an update waiting sends that update first; an
//! event of the whole guild (its members' chunks, the guild leaving) sends
//! all of the guild's first. Crash safety is the caller's: a waiting
//! update's sequence stays unacknowledged in the shard's progress, so a
//! stored session never passes it, and one it replaces is released (the
//! replacement, replayed on a resume, says the same).
//!
//! The wait is bounded: past [`MAX_WAITING`] members waiting in one guild,
//! further members' updates are admitted over the rate rather than held
//! (memory stays bounded; the flood is then the workers' to pace).
//!
//! A guild's slash commands have a bucket of their own, far above what the
//! workers' command limits let a community do (`WORKER_COMMAND_*`: a burst
//! of 300, then 10 a second); past it they are shed here, counted and never
//! published. Workers already leave a flooding member unanswered after one
//! polite reply a period; reading thousands of such commands a second is
//! what made the other communities' commands wait (the stream's backlog
//! was 18 s deep in `bench fairness --flood-per-s 0`, every one of them
//! dropped as stale when it was finally read).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use wire::{GuildId, UserId};

/// Members of one guild whose updates may wait at once.
pub const MAX_WAITING: usize = 10_000;

/// A sustained rate and the burst before it applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

/// One guild's limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub member_updates: Limit,
    pub interactions: Limit,
}

/// What an event is to admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Paced, and replaced by the member's next one while it waits.
    MemberUpdate,
    /// Must follow the member's waiting update: a join or leave.
    OfMember,
    /// Must follow all of its guild's waiting updates: the guild's own
    /// events and its members' chunks.
    OfGuild,
    /// A slash command: touches no member's state, so never waits nor is
    /// waited for; past its guild's limit, shed.
    Interaction,
}

impl Kind {
    pub fn of(event: wire::EventType) -> Kind {
        use wire::EventType as E;
        match event {
            E::MemberUpdate => Kind::MemberUpdate,
            E::MemberJoin | E::MemberLeave => Kind::OfMember,
            E::GuildJoin | E::GuildLeave | E::GuildUnavailable | E::MembersChunk => Kind::OfGuild,
            E::InteractionCreate => Kind::Interaction,
        }
    }
}

/// What to do with an offered event.
#[derive(Debug, PartialEq)]
pub enum Offer<T> {
    /// Publish it now.
    Publish(T),
    /// Publish these waiting updates first, in order, then it.
    After(Vec<T>, T),
    /// It waits. The update it replaced, if any, will never be published:
    /// release it.
    Held { replaced: Option<T> },
    /// Past its guild's limit: never published.
    Shed(T),
}

/// Per-guild buckets and the updates waiting for them, of one shard.
#[derive(Debug)]
pub struct Admission<T> {
    limits: Limits,
    guilds: HashMap<GuildId, Guild<T>>,
    /// Guilds with updates waiting.
    holding: Vec<GuildId>,
    /// When the first waiting update may leave, if any waits.
    next_due: Option<Instant>,
    last_prune: Instant,
}

#[derive(Debug)]
struct Guild<T> {
    updates: Bucket,
    interactions: Bucket,
    /// Set only while updates wait, which few guilds ever have: out of
    /// line, a guild's entry is 64 bytes rather than 144, and the table of
    /// every guild heard from in the last minute (100,000 guilds' worth in
    /// `gatehouse bench gateway`) is built and grown at half the cost.
    held: Option<Box<Held<T>>>,
}

/// One guild's waiting updates.
#[derive(Debug)]
struct Held<T> {
    waiting: HashMap<UserId, (u64, T)>,
    /// Members in the order they first waited, each with the ticket it
    /// waited under; an entry whose member left the wait early is stale.
    order: VecDeque<(u64, UserId)>,
    next_ticket: u64,
}

/// How often buckets of guilds that stopped sending are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl<T> Admission<T> {
    pub fn new(limits: Limits, now: Instant) -> Self {
        let sane = |limit: Limit| Limit {
            per_second: limit.per_second.max(1),
            burst: limit.burst.max(1),
        };
        Self {
            limits: Limits {
                member_updates: sane(limits.member_updates),
                interactions: sane(limits.interactions),
            },
            guilds: HashMap::new(),
            holding: Vec::new(),
            next_due: None,
            last_prune: now,
        }
    }

    /// Updates waiting, in every guild.
    pub fn waiting(&self) -> usize {
        self.holding
            .iter()
            .filter_map(|g| self.guilds.get(g))
            .map(Guild::waiting)
            .sum()
    }

    /// When [`release`](Self::release) has something to send.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    pub fn offer(
        &mut self,
        kind: Kind,
        guild: Option<GuildId>,
        user: Option<UserId>,
        item: T,
        now: Instant,
    ) -> Offer<T> {
        let Some(guild) = guild else {
            return Offer::Publish(item);
        };
        match kind {
            Kind::Interaction => {
                let interactions = self.limits.interactions;
                let bucket = &mut guild_in(&mut self.guilds, self.limits, guild, now).interactions;
                if bucket.take(interactions, now) {
                    Offer::Publish(item)
                } else {
                    Offer::Shed(item)
                }
            }
            // The common case — nothing waits anywhere — costs one branch.
            Kind::OfMember | Kind::OfGuild if self.holding.is_empty() => Offer::Publish(item),
            Kind::OfMember => match user.and_then(|user| self.take_member(guild, user)) {
                Some(waited) => Offer::After(vec![waited], item),
                None => Offer::Publish(item),
            },
            Kind::OfGuild => {
                let waited = self.take_guild(guild);
                if waited.is_empty() {
                    Offer::Publish(item)
                } else {
                    Offer::After(waited, item)
                }
            }
            Kind::MemberUpdate => match user {
                None => Offer::Publish(item),
                Some(user) => self.offer_update(guild, user, item, now),
            },
        }
    }

    fn offer_update(&mut self, guild: GuildId, user: UserId, item: T, now: Instant) -> Offer<T> {
        let limit = self.limits.member_updates;
        let entry = guild_in(&mut self.guilds, self.limits, guild, now);
        // A member already waiting: the newer state takes its place (and
        // its turn), or the two would leave out of order.
        if let Some((_, waiting)) = entry.held.as_mut().and_then(|h| h.waiting.get_mut(&user)) {
            let replaced = std::mem::replace(waiting, item);
            return Offer::Held {
                replaced: Some(replaced),
            };
        }
        // Members already waiting go first: a new one waits behind them.
        let waiting = entry.waiting();
        if waiting == 0 && entry.updates.take(limit, now) {
            return Offer::Publish(item);
        }
        if waiting >= MAX_WAITING {
            return Offer::Publish(item);
        }
        let held = entry.held.get_or_insert_with(|| {
            Box::new(Held {
                waiting: HashMap::new(),
                order: VecDeque::new(),
                next_ticket: 0,
            })
        });
        let ticket = held.next_ticket;
        held.next_ticket += 1;
        held.waiting.insert(user, (ticket, item));
        held.order.push_back((ticket, user));
        if waiting == 0 {
            self.holding.push(guild);
        }
        let due = entry.updates.due(limit);
        self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
        Offer::Held { replaced: None }
    }

    /// The waiting updates whose turn has come, oldest first.
    pub fn release(&mut self, now: Instant) -> Vec<T> {
        let limits = self.limits;
        let limit = limits.member_updates;
        let mut out = Vec::new();
        let mut next_due: Option<Instant> = None;
        let guilds = &mut self.guilds;
        self.holding.retain(|id| {
            let Some(guild) = guilds.get_mut(id) else {
                return false;
            };
            while guild.waiting() > 0 && guild.updates.take(limit, now) {
                let Some(item) = guild.pop_oldest() else {
                    break;
                };
                out.push(item);
            }
            if guild.waiting() == 0 {
                guild.held = None;
                return false;
            }
            let due = guild.updates.due(limit);
            next_due = Some(next_due.map_or(due, |d| d.min(due)));
            true
        });
        self.next_due = next_due;
        if now.duration_since(self.last_prune) >= PRUNE_EVERY {
            self.last_prune = now;
            // A bucket refilled to its burst says nothing a new one would
            // not: guilds that went quiet need not be remembered.
            self.guilds.retain(|_, guild| {
                guild.waiting() > 0
                    || !guild.updates.is_full(limits.member_updates, now)
                    || !guild.interactions.is_full(limits.interactions, now)
            });
        }
        out
    }

    /// Everything waiting, oldest first in each guild: for a shard that
    /// stops.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.holding) {
            if let Some(guild) = self.guilds.get_mut(&id) {
                guild.take_all(&mut out);
            }
        }
        self.next_due = None;
        out
    }

    fn take_member(&mut self, guild: GuildId, user: UserId) -> Option<T> {
        let entry = self.guilds.get_mut(&guild)?;
        let (_, item) = entry.held.as_mut()?.waiting.remove(&user)?;
        // Its place in `order` goes stale and is skipped when reached.
        if entry.waiting() == 0 {
            entry.held = None;
            self.holding.retain(|g| *g != guild);
        }
        Some(item)
    }

    fn take_guild(&mut self, guild: GuildId) -> Vec<T> {
        let Some(entry) = self.guilds.get_mut(&guild) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entry.waiting());
        entry.take_all(&mut out);
        if !out.is_empty() {
            self.holding.retain(|g| *g != guild);
        }
        out
    }
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(limit: Limit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            refilled: now,
        }
    }

    fn refill(&mut self, limit: Limit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
        self.refilled = now;
    }

    /// Takes a token if there is a whole one.
    fn take(&mut self, limit: Limit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    fn is_full(&mut self, limit: Limit, now: Instant) -> bool {
        self.refill(limit, now);
        self.tokens >= f64::from(limit.burst)
    }

    /// When the bucket next holds a whole token.
    fn due(&self, limit: Limit) -> Instant {
        let short = (1.0 - self.tokens).max(0.0);
        self.refilled + Duration::from_secs_f64(short / f64::from(limit.per_second))
    }
}

/// `guild`'s state, new with full buckets if it has none. (A function of
/// the map alone, so that the rest of [`Admission`] stays borrowable.)
fn guild_in<T>(
    guilds: &mut HashMap<GuildId, Guild<T>>,
    limits: Limits,
    guild: GuildId,
    now: Instant,
) -> &mut Guild<T> {
    guilds.entry(guild).or_insert_with(|| Guild {
        updates: Bucket::full(limits.member_updates, now),
        interactions: Bucket::full(limits.interactions, now),
        held: None,
    })
}

impl<T> Guild<T> {
    fn waiting(&self) -> usize {
        self.held.as_ref().map_or(0, |held| held.waiting.len())
    }

    /// Every waiting update into `out`, oldest first.
    fn take_all(&mut self, out: &mut Vec<T>) {
        while let Some(item) = self.pop_oldest() {
            out.push(item);
        }
        self.held = None;
    }

    fn pop_oldest(&mut self) -> Option<T> {
        let held = self.held.as_mut()?;
        while let Some((ticket, user)) = held.order.pop_front() {
            match held.waiting.get(&user) {
                Some((current, _)) if *current == ticket => {
                    return held.waiting.remove(&user).map(|(_, item)| item);
                }
                // The member left the wait early (a join or leave took
                // its update) and may have come back under a new ticket.
                _ => continue,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guild(n: u64) -> Option<GuildId> {
        GuildId::new(n)
    }

    fn user(n: u64) -> Option<UserId> {
        UserId::new(n)
    }

    fn limits(per_second: u32, burst: u32) -> Limits {
        Limits {
            member_updates: Limit { per_second, burst },
            interactions: Limit {
                per_second: 1,
                burst: 3,
            },
        }
    }

    #[test]
    fn a_guilds_entry_stays_small_whatever_waits() {
        // Every guild heard from in the last minute has one: 100,000 of
        // them in a gateway's first minute at that size.
        assert!(std::mem::size_of::<(GuildId, Guild<[u8; 512]>)>() <= 64);
    }

    #[test]
    fn updates_past_the_burst_wait_and_a_newer_one_replaces_the_waiting_one() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(10, 2), t0);
        let up = Kind::MemberUpdate;
        assert_eq!(
            a.offer(up, guild(1), user(1), "u1 a", t0),
            Offer::Publish("u1 a")
        );
        assert_eq!(
            a.offer(up, guild(1), user(2), "u2 a", t0),
            Offer::Publish("u2 a")
        );
        assert_eq!(
            a.offer(up, guild(1), user(3), "u3 a", t0),
            Offer::Held { replaced: None }
        );
        assert_eq!(
            a.offer(up, guild(1), user(4), "u4 a", t0),
            Offer::Held { replaced: None }
        );
        assert_eq!(
            a.offer(up, guild(1), user(3), "u3 b", t0),
            Offer::Held {
                replaced: Some("u3 a")
            },
            "the newer state takes the waiting one's place"
        );
        // Another guild has a bucket of its own.
        assert_eq!(
            a.offer(up, guild(2), user(3), "g2", t0),
            Offer::Publish("g2")
        );
        assert_eq!(a.waiting(), 2);
        // Slash commands never wait.
        assert_eq!(
            a.offer(Kind::Interaction, guild(1), user(3), "cmd", t0),
            Offer::Publish("cmd")
        );

        // One token comes every 100 ms; the first member to wait leaves
        // first, with its newest state.
        let due = a.next_due().expect("something waits");
        assert_eq!(due, t0 + Duration::from_millis(100));
        assert!(a.release(due - Duration::from_millis(1)).is_empty());
        assert_eq!(a.release(due), vec!["u3 b"]);
        assert_eq!(a.release(due + Duration::from_millis(100)), vec!["u4 a"]);
        assert_eq!(a.waiting(), 0);
        assert_eq!(a.next_due(), None);
    }

    #[test]
    fn a_members_join_or_leave_and_a_guilds_own_events_follow_what_waits() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(1, 1), t0);
        let up = Kind::MemberUpdate;
        assert_eq!(
            a.offer(up, guild(1), user(1), "u1", t0),
            Offer::Publish("u1")
        );
        for (u, item) in [(2, "u2"), (3, "u3"), (4, "u4")] {
            assert_eq!(
                a.offer(up, guild(1), user(u), item, t0),
                Offer::Held { replaced: None }
            );
        }
        // Another member's leave does not wait for anyone.
        assert_eq!(
            a.offer(Kind::OfMember, guild(1), user(9), "leave 9", t0),
            Offer::Publish("leave 9")
        );
        assert_eq!(
            a.offer(Kind::OfMember, guild(1), user(3), "leave 3", t0),
            Offer::After(vec!["u3"], "leave 3")
        );
        // Member 3 comes back and waits again, behind member 4.
        assert_eq!(
            a.offer(up, guild(1), user(3), "u3 again", t0),
            Offer::Held { replaced: None }
        );
        assert_eq!(
            a.offer(Kind::OfGuild, guild(1), None, "chunk", t0),
            Offer::After(vec!["u2", "u4", "u3 again"], "chunk")
        );
        assert_eq!(a.waiting(), 0);
        assert!(a.release(t0 + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_guilds_commands_past_its_limit_are_shed() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(1, 1), t0);
        let cmd = Kind::Interaction;
        for n in 0..3 {
            assert_eq!(
                a.offer(cmd, guild(1), user(n + 1), n, t0),
                Offer::Publish(n)
            );
        }
        assert_eq!(a.offer(cmd, guild(1), user(1), 3, t0), Offer::Shed(3));
        assert_eq!(
            a.offer(cmd, guild(2), user(1), 4, t0),
            Offer::Publish(4),
            "another guild's bucket is its own"
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(a.offer(cmd, guild(1), user(1), 5, later), Offer::Publish(5));
        assert_eq!(a.offer(cmd, guild(1), user(1), 6, later), Offer::Shed(6));
        assert_eq!(a.waiting(), 0, "nothing of it waits");
    }

    #[test]
    fn the_wait_is_bounded_and_a_stopping_shard_gets_everything_back() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(1, 1), t0);
        let up = Kind::MemberUpdate;
        let mut published = 0;
        for u in 1..=(MAX_WAITING as u64 + 11) {
            if let Offer::Publish(_) = a.offer(up, guild(1), user(u), u, t0) {
                published += 1;
            }
        }
        assert_eq!(a.waiting(), MAX_WAITING);
        assert_eq!(
            published, 11,
            "the first by its token, the rest past the bound"
        );
        let drained = a.drain();
        assert_eq!(drained.len(), MAX_WAITING);
        assert_eq!(drained[0], 2, "oldest first");
        assert_eq!(a.waiting(), 0);
        assert_eq!(a.next_due(), None);
    }
}
