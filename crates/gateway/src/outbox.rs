//! A shard's way into the publisher's buffer.
//!
//! While the buffer has room a job goes straight in. When it is full the
//! shard waits for room for a batch rather than for one job, and keeps what
//! it got for the messages that follow. Freed one slot at a time, the room
//! would go to every waiting shard in turn, one message each: at 40 shards a
//! process (100,000 guilds) that is a wake-up, a semaphore hand-off and a
//! cold shard — its zstd context, buffers and tables — for every event
//! (`gatehouse bench gateway`: ~10 % of the gateway's CPU per event).
//!
//! Waiting here is the backpressure that stops a shard from being read
//! until NATS catches up. Room a shard holds is room no other shard can use,
//! so it is given back as soon as the shard has nothing waiting to be read
//! ([`Outbox::release`]), and a batch is small beside the buffer.

use tokio::sync::{mpsc, watch};

/// Room a shard waits for, at most, when the buffer is full: a 128th of the
/// default buffer (4,096), so that a turn is short beside everyone's wait.
const BATCH: usize = 32;

/// The gateway is stopping: the job was not handed over.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopping;

pub struct Outbox<'a, T> {
    jobs: &'a mpsc::Sender<T>,
    /// Room waited for and not yet used.
    room: Option<mpsc::PermitIterator<'a, T>>,
}

impl<'a, T> Outbox<'a, T> {
    pub fn new(jobs: &'a mpsc::Sender<T>) -> Self {
        Outbox { jobs, room: None }
    }

    /// Hands `job` over, waiting while the buffer is full, unless `stop`
    /// turns true first.
    pub async fn send(&mut self, job: T, stop: &mut watch::Receiver<bool>) -> Result<(), Stopping> {
        if let Some(permit) = self.room.as_mut().and_then(Iterator::next) {
            // Sent through held room, a job would sit unread in a channel
            // whose publisher is gone, where `try_send` would say so.
            if self.jobs.is_closed() {
                return Err(Stopping);
            }
            permit.send(job);
            return Ok(());
        }
        self.room = None;
        let job = match self.jobs.try_send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stopping),
            Err(mpsc::error::TrySendError::Full(job)) => job,
        };
        // `reserve_many` refuses more than the buffer holds at all.
        let batch = BATCH.min(self.jobs.max_capacity());
        let mut room = tokio::select! {
            biased;
            room = self.jobs.reserve_many(batch) => room.map_err(|_| Stopping)?,
            _ = stop.wait_for(|s| *s) => return Err(Stopping),
        };
        // `batch` is at least 1, so the room holds a permit.
        room.next().ok_or(Stopping)?.send(job);
        self.room = Some(room);
        Ok(())
    }

    /// Gives back the room held and not used.
    pub fn release(&mut self) {
        self.room = None;
    }

    /// Room held and not used.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.room.as_ref().map_or(0, ExactSizeIterator::len)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use futures::poll;

    use super::*;

    fn full(capacity: usize) -> (mpsc::Sender<u32>, mpsc::Receiver<u32>) {
        let (tx, rx) = mpsc::channel(capacity);
        for i in 0..capacity {
            tx.try_send(1000 + i as u32).expect("room in a new channel");
        }
        (tx, rx)
    }

    #[tokio::test]
    async fn jobs_go_straight_in_while_there_is_room() {
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut outbox = Outbox::new(&tx);
        outbox.send(1, &mut stop).await.unwrap();
        outbox.send(2, &mut stop).await.unwrap();
        assert_eq!(
            outbox.held(),
            0,
            "nothing is held while the buffer has room"
        );
        assert_eq!(tx.capacity(), 2);
        assert_eq!((rx.recv().await, rx.recv().await), (Some(1), Some(2)));
    }

    #[tokio::test]
    async fn a_full_buffer_is_waited_for_a_batch_at_a_time_in_order() {
        let (tx, mut rx) = full(BATCH * 2);
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut outbox = Outbox::new(&tx);
        {
            let waiting = outbox.send(0, &mut stop);
            tokio::pin!(waiting);
            assert!(poll!(&mut waiting).is_pending());
            // One slot freed (one ack) is not yet a batch.
            rx.recv().await.unwrap();
            assert!(
                poll!(&mut waiting).is_pending(),
                "waits for a batch, not a slot"
            );
            for _ in 1..BATCH {
                rx.recv().await.unwrap();
            }
            assert_eq!(poll!(&mut waiting), Poll::Ready(Ok(())));
        }
        assert_eq!(outbox.held(), BATCH - 1);
        for job in 1..BATCH as u32 {
            outbox.send(job, &mut stop).await.unwrap();
        }
        assert_eq!(outbox.held(), 0);
        let mut taken: Vec<u32> = (0..BATCH * 2).map(|_| rx.try_recv().unwrap()).collect();
        let sent = taken.split_off(BATCH);
        assert!(
            taken.iter().all(|&job| job >= 1000),
            "what was waiting goes first"
        );
        assert_eq!(
            sent,
            (0..BATCH as u32).collect::<Vec<_>>(),
            "then the batch, in order"
        );
    }

    #[tokio::test]
    async fn room_held_goes_back_when_released() {
        let (tx, mut rx) = full(BATCH * 2);
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut outbox = Outbox::new(&tx);
        {
            let waiting = outbox.send(1, &mut stop);
            tokio::pin!(waiting);
            assert!(poll!(&mut waiting).is_pending());
            for _ in 0..BATCH {
                rx.recv().await.unwrap();
            }
            assert_eq!(waiting.await, Ok(()));
        }
        assert_eq!(tx.capacity(), 0, "the batch is held for this shard");
        outbox.release();
        assert_eq!(outbox.held(), 0);
        assert_eq!(
            tx.capacity(),
            BATCH - 1,
            "what was not used is everyone's again"
        );
    }

    #[tokio::test]
    async fn a_buffer_smaller_than_a_batch_is_waited_for_whole() {
        let (tx, mut rx) = full(3);
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut outbox = Outbox::new(&tx);
        let waiting = outbox.send(1, &mut stop);
        let freed = async {
            for _ in 0..3 {
                rx.recv().await.unwrap();
            }
        };
        let (sent, ()) = tokio::join!(waiting, freed);
        sent.unwrap();
        assert_eq!(outbox.held(), 2);
    }

    #[tokio::test]
    async fn stopping_ends_the_wait_and_a_closed_buffer_refuses() {
        let (tx, mut rx) = full(2);
        let (stop_tx, mut stop) = watch::channel(false);
        let mut outbox = Outbox::new(&tx);
        {
            let waiting = outbox.send(1, &mut stop);
            tokio::pin!(waiting);
            assert!(poll!(&mut waiting).is_pending());
            stop_tx.send(true).unwrap();
            assert_eq!(waiting.await, Err(Stopping));
        }
        // With room held, too.
        let (_stop_tx, mut stop) = watch::channel(false);
        {
            let waiting = outbox.send(2, &mut stop);
            tokio::pin!(waiting);
            assert!(poll!(&mut waiting).is_pending());
            rx.recv().await.unwrap();
            rx.recv().await.unwrap();
            assert_eq!(waiting.await, Ok(()));
        }
        assert_eq!(outbox.held(), 1);
        drop(rx);
        assert_eq!(outbox.send(3, &mut stop).await, Err(Stopping));
    }
}
