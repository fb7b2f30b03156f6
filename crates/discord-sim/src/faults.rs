//! Faults the simulator injects on demand: into a shard's live connections
//! ([`Fault`]) and into the interaction callbacks it receives
//! ([`CallbackFault`]).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Close with a WebSocket close code. 4000 (the default) lets the client
    /// resume; 4004 (bad token), 4010 (bad shard), 4013 and 4014 (intents)
    /// are fatal and also end the session.
    Close {
        #[serde(default = "default_close_code")]
        code: u16,
    },
    /// Drop the TCP connection without a close frame.
    Drop,
    /// op 7 Reconnect: the client should reconnect and resume.
    Reconnect,
    /// op 9 Invalid Session. Not resumable also ends the session server-side.
    InvalidSession { resumable: bool },
    /// Stop acknowledging heartbeats and stop sending anything, leaving the
    /// connection open: a "zombie" the client must detect itself.
    Zombie,
}

fn default_close_code() -> u16 {
    4000
}

impl Fault {
    pub(crate) fn describe(&self) -> String {
        match self {
            Fault::Close { code } => format!("close {code}"),
            Fault::Drop => "drop".into(),
            Fault::Reconnect => "reconnect".into(),
            Fault::InvalidSession { resumable } => {
                format!("invalid session (resumable: {resumable})")
            }
            Fault::Zombie => "zombie".into(),
        }
    }
}

/// What the simulator does to one interaction callback
/// (`POST /interactions/{id}/{token}/callback`). Queued with
/// [`SimControl::fault_callbacks`](crate::SimControl::fault_callbacks); each
/// callback that arrives takes the oldest queued fault, whatever it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallbackFault {
    /// Discord is slow to take the answer: the request waits, not yet taken,
    /// until [`SimControl::release_callbacks`](crate::SimControl::release_callbacks)
    /// (or until the client gives up on it), then is handled as usual.
    Hold,
    /// Discord fails before taking the answer: 500, and the interaction is
    /// still unanswered.
    Fail,
    /// Discord takes the answer (the member sees it) but the application
    /// never learns it: the request is answered 500, as when Discord's reply
    /// is lost on the way back.
    TakeThenFail,
}

/// Close codes after which Discord will not accept a Resume.
pub(crate) fn ends_session(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 4004 | 4010 | 4011 | 4012 | 4013 | 4014)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_read_from_tagged_json() {
        let close: Fault = serde_json::from_str(r#"{"kind":"close"}"#).unwrap();
        assert_eq!(close, Fault::Close { code: 4000 });
        let op9: Fault =
            serde_json::from_str(r#"{"kind":"invalid_session","resumable":true}"#).unwrap();
        assert_eq!(op9, Fault::InvalidSession { resumable: true });
    }

    #[test]
    fn callback_faults_read_from_tagged_json() {
        let hold: CallbackFault = serde_json::from_str(r#"{"kind":"hold"}"#).unwrap();
        assert_eq!(hold, CallbackFault::Hold);
        let lost: CallbackFault = serde_json::from_str(r#"{"kind":"take_then_fail"}"#).unwrap();
        assert_eq!(lost, CallbackFault::TakeThenFail);
    }

    #[test]
    fn only_fatal_and_normal_codes_end_the_session() {
        assert!(ends_session(4004));
        assert!(ends_session(1000));
        assert!(!ends_session(4000));
        assert!(!ends_session(4009));
    }
}
