//! Role changes waiting to start: a queue per guild, and the guilds taken
//! in turn.
//!
//! Within a guild, a member's own change (interactive) goes before every
//! bulk one. Across guilds, the guilds that may send now take turns, one
//! change each, interactive ones first: a guild with ten thousand queued
//! changes gets one turn in the round like a guild with one. A guild that
//! has a change in flight, or waits for its window to reset, is out of the
//! round until that is over, so it holds nothing that another guild could
//! use meanwhile.

use std::collections::{BTreeSet, HashMap, VecDeque};

use tokio::time::Instant;
use wire::{check::CheckPriority, GuildId};

/// The two lanes, in the order they are served.
const LANES: [CheckPriority; 2] = [CheckPriority::Interactive, CheckPriority::Bulk];

fn lane(priority: CheckPriority) -> usize {
    match priority {
        CheckPriority::Interactive => 0,
        CheckPriority::Bulk => 1,
    }
}

struct Guild<J> {
    lanes: [VecDeque<J>; 2],
    /// A change of this guild is being started or is in flight.
    busy: bool,
    /// The guild's window is spent until then.
    waiting_until: Option<Instant>,
    /// Whether the guild has an entry in `GuildQueues::turns[lane]`.
    listed: [bool; 2],
}

impl<J> Guild<J> {
    fn new() -> Self {
        Guild {
            lanes: [VecDeque::new(), VecDeque::new()],
            busy: false,
            waiting_until: None,
            listed: [false; 2],
        }
    }

    fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    /// The lane of the change it would start next, if it may start one.
    fn ready_lane(&self) -> Option<usize> {
        if self.busy || self.waiting_until.is_some() {
            return None;
        }
        (0..2).find(|l| !self.lanes[*l].is_empty())
    }
}

/// Queued role changes (`J`, a job) per guild.
pub(crate) struct GuildQueues<J> {
    guilds: HashMap<GuildId, Guild<J>>,
    /// Per lane, the guilds whose turn it is, in order. An entry can be
    /// stale (the guild started its change from the other lane meanwhile);
    /// it is skipped when reached.
    turns: [VecDeque<GuildId>; 2],
    /// Guilds waiting for their window, by when it resets.
    waking: BTreeSet<(Instant, GuildId)>,
    queued: usize,
}

impl<J> Default for GuildQueues<J> {
    fn default() -> Self {
        GuildQueues {
            guilds: HashMap::new(),
            turns: [VecDeque::new(), VecDeque::new()],
            waking: BTreeSet::new(),
            queued: 0,
        }
    }
}

impl<J> GuildQueues<J> {
    /// Queues `job` at the back of its guild's lane.
    pub(crate) fn push(&mut self, guild: GuildId, priority: CheckPriority, job: J) {
        let entry = self.guilds.entry(guild).or_insert_with(Guild::new);
        entry.lanes[lane(priority)].push_back(job);
        self.queued += 1;
        self.list(guild);
    }

    /// Changes queued (not started).
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Guilds that may start a change now (an upper bound: stale entries
    /// count too).
    pub(crate) fn ready_guilds(&self) -> usize {
        self.turns[0].len() + self.turns[1].len()
    }

    /// Takes the next change to start: the first guild in turn with an
    /// interactive change, else the first with a bulk one. The guild is
    /// busy until [`GuildQueues::finish`] or [`GuildQueues::defer`].
    pub(crate) fn start_next(&mut self) -> Option<(GuildId, CheckPriority, J)> {
        for turn in 0..2 {
            while let Some(guild) = self.turns[turn].pop_front() {
                let Some(entry) = self.guilds.get_mut(&guild) else {
                    continue;
                };
                entry.listed[turn] = false;
                let Some(l) = entry.ready_lane() else {
                    continue;
                };
                let Some(job) = entry.lanes[l].pop_front() else {
                    continue;
                };
                entry.busy = true;
                self.queued -= 1;
                return Some((guild, LANES[l], job));
            }
        }
        None
    }

    /// The guild's change is done: it rejoins the round at the back.
    pub(crate) fn finish(&mut self, guild: GuildId) {
        if let Some(entry) = self.guilds.get_mut(&guild) {
            entry.busy = false;
        }
        self.list(guild);
    }

    /// The guild's window is spent until `until`: `job` goes back to the
    /// head of its lane and the guild sits out until then.
    pub(crate) fn defer(
        &mut self,
        guild: GuildId,
        priority: CheckPriority,
        job: J,
        until: Instant,
    ) {
        let entry = self.guilds.entry(guild).or_insert_with(Guild::new);
        entry.lanes[lane(priority)].push_front(job);
        self.queued += 1;
        entry.busy = false;
        if let Some(previous) = entry.waiting_until.replace(until) {
            self.waking.remove(&(previous, guild));
        }
        self.waking.insert((until, guild));
    }

    /// When the next waiting guild may send again.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.waking.first().map(|(at, _)| *at)
    }

    /// Puts the guilds whose window has reset by `now` back in the round.
    pub(crate) fn wake(&mut self, now: Instant) {
        while let Some(&(at, guild)) = self.waking.first() {
            if at > now {
                break;
            }
            self.waking.pop_first();
            if let Some(entry) = self.guilds.get_mut(&guild) {
                entry.waiting_until = None;
            }
            self.list(guild);
        }
    }

    /// Takes every queued change out (the breaker opened).
    pub(crate) fn drain(&mut self) -> Vec<J> {
        let mut jobs = Vec::with_capacity(self.queued);
        for entry in self.guilds.values_mut() {
            for l in &mut entry.lanes {
                jobs.extend(l.drain(..));
            }
        }
        self.queued = 0;
        self.guilds.retain(|_, g| g.busy);
        self.turns = [VecDeque::new(), VecDeque::new()];
        self.waking.clear();
        for entry in self.guilds.values_mut() {
            entry.listed = [false; 2];
            entry.waiting_until = None;
        }
        jobs
    }

    /// Gives the guild a turn if it may start a change; forgets it if it
    /// has nothing left to do.
    fn list(&mut self, guild: GuildId) {
        let Some(entry) = self.guilds.get_mut(&guild) else {
            return;
        };
        if entry.is_empty() && !entry.busy && entry.waiting_until.is_none() {
            self.guilds.remove(&guild);
            return;
        }
        if let Some(l) = entry.ready_lane() {
            if !entry.listed[l] {
                entry.listed[l] = true;
                self.turns[l].push_back(guild);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use CheckPriority::{Bulk, Interactive};

    fn guild(n: u64) -> GuildId {
        GuildId::new(n).expect("test ids are not 0")
    }

    /// Starts and finishes changes one at a time; returns their labels.
    fn run(queues: &mut GuildQueues<&'static str>) -> Vec<&'static str> {
        let mut order = Vec::new();
        while let Some((g, _, job)) = queues.start_next() {
            order.push(job);
            queues.finish(g);
        }
        order
    }

    #[test]
    fn guilds_take_turns_whatever_their_backlog() {
        let mut q = GuildQueues::default();
        for job in ["a1", "a2", "a3", "a4"] {
            q.push(guild(1), Bulk, job);
        }
        q.push(guild(2), Bulk, "b1");
        q.push(guild(3), Bulk, "c1");
        q.push(guild(2), Bulk, "b2");
        assert_eq!(run(&mut q), ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]);
        assert_eq!(q.queued(), 0);
        assert!(q.guilds.is_empty(), "idle guilds are forgotten");
    }

    #[test]
    fn interactive_changes_of_any_guild_go_first() {
        let mut q = GuildQueues::default();
        q.push(guild(1), Bulk, "a-bulk");
        q.push(guild(2), Bulk, "b-bulk");
        q.push(guild(2), Interactive, "b-member");
        q.push(guild(3), Interactive, "c-member");
        assert_eq!(run(&mut q), ["b-member", "c-member", "a-bulk", "b-bulk"]);
    }

    #[test]
    fn a_busy_guild_starts_nothing_else_until_its_change_is_done() {
        let mut q = GuildQueues::default();
        q.push(guild(1), Bulk, "a1");
        q.push(guild(1), Bulk, "a2");
        let (g, _, first) = q.start_next().unwrap();
        assert_eq!((g, first), (guild(1), "a1"));
        assert!(q.start_next().is_none());
        q.push(guild(1), Interactive, "a-member");
        assert!(q.start_next().is_none(), "busy, even for a member");
        q.finish(guild(1));
        assert_eq!(run(&mut q), ["a-member", "a2"]);
    }

    #[test]
    fn a_waiting_guild_sits_out_and_others_go_on() {
        let mut q = GuildQueues::default();
        let now = Instant::now();
        q.push(guild(1), Bulk, "a1");
        q.push(guild(1), Bulk, "a2");
        let (g, p, job) = q.start_next().unwrap();
        let reset = now + Duration::from_secs(10);
        q.defer(g, p, job, reset);
        q.push(guild(2), Bulk, "b1");
        q.push(guild(1), Interactive, "a-member");
        assert_eq!(run(&mut q), ["b1"]);
        assert_eq!(q.queued(), 3);
        assert_eq!(q.next_wake(), Some(reset));
        q.wake(now);
        assert!(q.start_next().is_none(), "not reset yet");
        q.wake(reset);
        assert_eq!(run(&mut q), ["a-member", "a1", "a2"]);
    }

    #[test]
    fn draining_empties_the_queues_but_keeps_changes_in_flight_known() {
        let mut q = GuildQueues::default();
        q.push(guild(1), Bulk, "a1");
        q.push(guild(1), Bulk, "a2");
        q.push(guild(2), Interactive, "b1");
        let (busy, _, _) = q.start_next().unwrap();
        let mut drained = q.drain();
        drained.sort_unstable();
        assert_eq!(drained, ["a1", "a2"]);
        assert_eq!(q.queued(), 0);
        assert!(q.start_next().is_none());
        q.finish(busy);
        assert!(q.guilds.is_empty());
    }
}
