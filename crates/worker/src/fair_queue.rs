//! Per-community queues for one stream's delivered messages, served in
//! turns.
//!
//! A JetStream consumer hands messages out in stream order, so a community
//! that floods a stream (thousands of slash commands, a mass member update)
//! would put every other community's messages behind its whole backlog. The
//! consumer therefore pulls a bounded distance ahead of what it can start
//! and files each message under its community; whenever a handler slot
//! frees, the next community in turn that has work starts one message. A
//! flood then costs a quiet community at most one of the flood's messages
//! per turn, however long the flood's backlog.
//!
//! Turns alone are not enough: handlers can be slow for reasons of their own
//! community (a guild waiting out its Discord rate-limit window, a slow
//! RPC), and a community that holds every slot starves the next quiet
//! message that arrives. So one community holds at most `cap` slots at a
//! time, and the rest stay free for others.
//!
//! Within one community, messages start in stream order, whatever order
//! they arrived in (several pulls run at once, and a redelivery arrives
//! late): each lane is kept sorted by [`InOrder::order`]. A cap of one keeps
//! them in that order as they finish, which is what a consumer of
//! membership events asks for; runs of messages that can be handled
//! together (see [`FairQueue::pop_run`]) keep that cheap.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Where an item belongs among its key's items (its stream sequence).
pub(crate) trait InOrder {
    fn order(&self) -> u64;
}

/// Queued work by key, with at most `cap` items of one key in flight.
#[derive(Debug)]
pub(crate) struct FairQueue<K, T> {
    lanes: HashMap<K, Lane<T>>,
    /// Keys with queued items, each once, in the order they get a turn.
    turns: VecDeque<K>,
    cap: usize,
    queued: usize,
}

#[derive(Debug)]
struct Lane<T> {
    items: VecDeque<T>,
    in_flight: usize,
    in_turns: bool,
}

impl<K: Hash + Eq + Clone, T: InOrder> FairQueue<K, T> {
    /// `cap`: the most items of one key in flight at once (at least 1).
    pub(crate) fn new(cap: usize) -> Self {
        FairQueue {
            lanes: HashMap::new(),
            turns: VecDeque::new(),
            cap: cap.max(1),
            queued: 0,
        }
    }

    /// Items waiting to start (not those in flight).
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Items of `key` here: waiting or in flight.
    pub(crate) fn held(&self, key: &K) -> usize {
        self.lanes
            .get(key)
            .map_or(0, |lane| lane.items.len() + lane.in_flight)
    }

    /// Keys with items waiting.
    pub(crate) fn waiting_keys(&self) -> usize {
        self.turns.len()
    }

    pub(crate) fn push(&mut self, key: K, item: T) {
        let lane = self.lanes.entry(key.clone()).or_insert_with(|| Lane {
            items: VecDeque::new(),
            in_flight: 0,
            in_turns: false,
        });
        // Arrivals are nearly in order: the place is found from the back.
        let at = lane
            .items
            .iter()
            .rposition(|queued| queued.order() <= item.order())
            .map_or(0, |before| before + 1);
        lane.items.insert(at, item);
        if !lane.in_turns {
            lane.in_turns = true;
            self.turns.push_back(key);
        }
        self.queued += 1;
    }

    /// The next item to start: the oldest of the first key in turn that is
    /// below its cap. The key goes to the back of the turns.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<(K, T)> {
        self.pop_run(1, |_| false)
            .map(|(key, mut run)| (key, run.remove(0)))
    }

    /// As [`pop`](Self::pop), and if the item `joins` others, up to `max`
    /// items of its key in all: the ones queued right after it, as long as
    /// each of them `joins` too. The run counts as one item in flight.
    pub(crate) fn pop_run(
        &mut self,
        max: usize,
        joins: impl Fn(&T) -> bool,
    ) -> Option<(K, Vec<T>)> {
        // Keys at their cap keep their place and are passed over; there are
        // at most (slots ÷ cap) of them, so this stays short.
        for _ in 0..self.turns.len() {
            let key = self.turns.pop_front()?;
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            if lane.in_flight >= self.cap {
                self.turns.push_back(key);
                continue;
            }
            let Some(item) = lane.items.pop_front() else {
                lane.in_turns = false;
                continue;
            };
            let mut run = vec![item];
            if joins(&run[0]) {
                while run.len() < max && lane.items.front().is_some_and(&joins) {
                    run.extend(lane.items.pop_front());
                }
            }
            lane.in_flight += 1;
            self.queued -= run.len();
            if lane.items.is_empty() {
                lane.in_turns = false;
            } else {
                self.turns.push_back(key.clone());
            }
            return Some((key, run));
        }
        None
    }

    /// An item (or run) of `key` that [`pop_run`](Self::pop_run) returned
    /// has finished.
    pub(crate) fn done(&mut self, key: &K) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            if lane.in_flight == 0 && lane.items.is_empty() {
                self.lanes.remove(key);
            }
        }
    }

    /// Every waiting item, for keeping them alive while they wait.
    pub(crate) fn waiting_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.lanes
            .values_mut()
            .flat_map(|lane| lane.items.iter_mut())
    }

    /// Takes every waiting item out (at shutdown, to hand them back).
    pub(crate) fn drain_waiting(&mut self) -> Vec<T> {
        self.turns.clear();
        self.queued = 0;
        let mut out = Vec::new();
        self.lanes.retain(|_, lane| {
            out.extend(lane.items.drain(..));
            lane.in_turns = false;
            lane.in_flight > 0
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl InOrder for u32 {
        fn order(&self) -> u64 {
            u64::from(*self)
        }
    }

    #[test]
    fn a_lane_starts_its_items_in_their_order_whatever_order_they_came_in() {
        let mut queue = FairQueue::new(1);
        for n in [3, 1, 2, 5, 4] {
            queue.push("a", n);
        }
        let mut order = Vec::new();
        while let Some((_, n)) = queue.pop() {
            order.push(n);
            queue.done(&"a");
        }
        assert_eq!(order, [1, 2, 3, 4, 5]);
    }

    /// Starts up to `slots` items, returning the keys in start order.
    fn start(queue: &mut FairQueue<&'static str, u32>, slots: usize) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop().map(|(k, _)| k))
            .take(slots)
            .collect()
    }

    #[test]
    fn a_flood_queued_first_does_not_go_first() {
        let mut queue = FairQueue::new(8);
        for n in 0..1_000 {
            queue.push("flood", n);
        }
        queue.push("quiet-a", 0);
        queue.push("quiet-b", 0);
        // Three slots: the quiet communities' messages are among the first
        // three to start although 1,000 were pulled before them.
        let started = start(&mut queue, 3);
        assert_eq!(started, ["flood", "quiet-a", "quiet-b"]);
        assert_eq!(queue.queued(), 999);
    }

    #[test]
    fn one_key_never_holds_more_than_its_cap() {
        let mut queue = FairQueue::new(3);
        for n in 0..10 {
            queue.push("flood", n);
        }
        assert_eq!(start(&mut queue, 10).len(), 3, "at most 3 in flight");
        // A quiet item that arrives now starts although the flood waits.
        queue.push("quiet", 0);
        assert_eq!(start(&mut queue, 10), ["quiet"]);
        // When one of the flood's finishes, the next one may start.
        queue.done(&"flood");
        assert_eq!(start(&mut queue, 10), ["flood"]);
    }

    #[test]
    fn one_keys_items_start_in_the_order_they_came() {
        let mut queue = FairQueue::new(10);
        for n in 0..5 {
            queue.push("a", n);
            queue.push("b", n * 10);
        }
        let order: Vec<(&str, u32)> = std::iter::from_fn(|| queue.pop()).collect();
        let of = |key| {
            order
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
        };
        assert_eq!(of("a"), [0, 1, 2, 3, 4]);
        assert_eq!(of("b"), [0, 10, 20, 30, 40]);
        // And the turns alternate.
        assert_eq!(order[0].0, "a");
        assert_eq!(order[1].0, "b");
        assert_eq!(order[2].0, "a");
    }

    #[test]
    fn a_run_takes_what_joins_in_order_and_holds_one_slot() {
        let mut queue = FairQueue::new(1);
        // Even numbers join a run, odd ones go alone.
        for n in [0, 2, 4, 5, 6, 8] {
            queue.push("a", n);
        }
        queue.push("b", 10);
        let joins = |n: &u32| n.is_multiple_of(2);
        assert_eq!(queue.pop_run(2, joins), Some(("a", vec![0, 2])));
        // "a" is at its cap of one run in flight: "b" goes next.
        assert_eq!(queue.pop_run(8, joins), Some(("b", vec![10])));
        assert_eq!(queue.pop_run(8, joins), None);
        queue.done(&"a");
        // A run stops before an item that does not join…
        assert_eq!(queue.pop_run(8, joins), Some(("a", vec![4])));
        queue.done(&"a");
        // …which then starts alone, and what follows it runs together.
        assert_eq!(queue.pop_run(8, joins), Some(("a", vec![5])));
        queue.done(&"a");
        assert_eq!(queue.pop_run(8, joins), Some(("a", vec![6, 8])));
        assert_eq!(queue.queued(), 0);
    }

    #[test]
    fn a_finished_key_is_forgotten_and_drain_returns_what_waits() {
        let mut queue = FairQueue::new(1);
        queue.push("a", 1);
        queue.push("a", 2);
        queue.push("b", 3);
        let (key, _) = queue.pop().unwrap();
        assert_eq!(key, "a");
        assert_eq!(queue.waiting_keys(), 2);
        let mut waiting = queue.drain_waiting();
        waiting.sort_unstable();
        assert_eq!(waiting, [2, 3]);
        assert_eq!(queue.queued(), 0);
        assert!(queue.pop().is_none());
        queue.done(&"a");
        assert!(queue.lanes.is_empty());
    }
}
