//! Faults the simulator injects into a shard's live connections on demand.

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
    fn only_fatal_and_normal_codes_end_the_session() {
        assert!(ends_session(4004));
        assert!(ends_session(1000));
        assert!(!ends_session(4000));
        assert!(!ends_session(4009));
    }
}
