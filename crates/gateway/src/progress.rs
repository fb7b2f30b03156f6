//! How far each shard's session is safely in JetStream.
//!
//! Publishes are pipelined and retried, so acks arrive out of order. The
//! sequence stored for a resume must be one where every dispatch up to it is
//! either acked or was never going to be published (READY, typing, …): a
//! resume from there makes Discord replay exactly what is not yet durable.
//! Storing the shard's own latest sequence instead could skip events whose
//! publish was still in flight when the process stopped.
//!
//! The point is stored while the shard runs (every second, see
//! [`crate::checkpoint`]), not only on a clean stop: a process that dies
//! leaves its successor a point to resume from, and Discord replays the gap.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// One shard's progress. The shard runner is the only writer of new
/// sequences; the publisher reports acks.
#[derive(Debug, Default)]
pub struct ShardProgress {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    session_id: Option<String>,
    /// Bumped on every new session so that late acks of an old session's
    /// publishes cannot touch the new one.
    epoch: u64,
    pending: BTreeSet<u64>,
    last_seen: u64,
    /// Where Discord asked this session to be resumed (READY's
    /// `resume_gateway_url`).
    resume_url: Option<String>,
}

/// A resumable point: every dispatch up to `sequence` is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafePoint {
    pub session_id: String,
    pub sequence: u64,
    pub resume_url: Option<String>,
}

impl ShardProgress {
    /// Starts from a stored session (the process resumes it).
    pub fn resuming(session_id: String, sequence: u64, resume_url: Option<String>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                session_id: Some(session_id),
                epoch: 1,
                pending: BTreeSet::new(),
                last_seen: sequence,
                resume_url,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave Inner half-updated in a way that
        // matters more than losing the process; keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records dispatch `sequence` of `session_id`; `publish` marks it as
    /// awaiting an ack. Returns the epoch to quote in [`Self::acked`].
    pub fn observe(&self, session_id: &str, sequence: u64, publish: bool) -> u64 {
        let mut inner = self.lock();
        if inner.session_id.as_deref() != Some(session_id) {
            inner.session_id = Some(session_id.to_owned());
            inner.epoch += 1;
            inner.pending.clear();
            inner.last_seen = 0;
            // The resume URL stays until the shard reports the new
            // session's (right after its READY): either is Discord's.
        }
        if publish {
            inner.pending.insert(sequence);
        }
        inner.last_seen = inner.last_seen.max(sequence);
        inner.epoch
    }

    /// The publish of `sequence` (observed in `epoch`) is durable.
    pub fn acked(&self, epoch: u64, sequence: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch {
            inner.pending.remove(&sequence);
        }
    }

    /// The current session's resume URL, as the shard learnt it.
    pub fn set_resume_url(&self, url: Option<&str>) {
        let mut inner = self.lock();
        if inner.resume_url.as_deref() != url {
            inner.resume_url = url.map(str::to_owned);
        }
    }

    /// Where a resume should start, if there is a session.
    pub fn safe_point(&self) -> Option<SafePoint> {
        let inner = self.lock();
        let session_id = inner.session_id.clone()?;
        let sequence = match inner.pending.first() {
            Some(first) => first.saturating_sub(1),
            None => inner.last_seen,
        };
        Some(SafePoint {
            session_id,
            sequence,
            resume_url: inner.resume_url.clone(),
        })
    }

    /// Publishes of the current session still awaiting an ack.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safe_point_never_passes_an_unacked_publish() {
        let p = ShardProgress::default();
        assert_eq!(p.safe_point(), None);
        let e = p.observe("a", 1, false); // READY
        for seq in 2..=5 {
            p.observe("a", seq, true);
        }
        p.observe("a", 6, false);
        assert_eq!(p.safe_point().unwrap().sequence, 1);
        p.acked(e, 3);
        p.acked(e, 2);
        assert_eq!(p.safe_point().unwrap().sequence, 3, "4 is still in flight");
        p.acked(e, 5);
        p.acked(e, 4);
        assert_eq!(
            p.safe_point(),
            Some(SafePoint {
                session_id: "a".into(),
                sequence: 6,
                resume_url: None,
            })
        );
    }

    #[test]
    fn a_new_session_starts_over_and_ignores_old_acks() {
        let p = ShardProgress::resuming("old".into(), 40, Some("wss://old".into()));
        assert_eq!(p.safe_point().unwrap().sequence, 40);
        assert_eq!(
            p.safe_point().unwrap().resume_url.as_deref(),
            Some("wss://old")
        );
        let old = p.observe("old", 41, true);
        let new = p.observe("new", 1, false);
        assert_ne!(old, new);
        p.observe("new", 2, true);
        p.acked(old, 2); // same sequence number, other session
        assert_eq!(
            p.safe_point(),
            Some(SafePoint {
                session_id: "new".into(),
                sequence: 1,
                resume_url: Some("wss://old".into()),
            })
        );
        p.set_resume_url(Some("wss://new"));
        p.acked(new, 2);
        assert_eq!(p.safe_point().unwrap().sequence, 2);
        assert_eq!(
            p.safe_point().unwrap().resume_url.as_deref(),
            Some("wss://new")
        );
        assert_eq!(p.pending(), 0);
    }
}
