//! `eligibility.check`: a request to re-evaluate eligibility, published by
//! workers (on a join, a linked wallet, a changed rule, a `/check`) and
//! consumed by workers. Not a gateway event, so not an [`Envelope`](crate::Envelope).

use serde::{Deserialize, Serialize};

use crate::{GuildId, UserId};

/// Who asked, which decides the queue it waits in: interactive work goes
/// ahead of bulk re-checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckPriority {
    /// A member waiting for the answer (a new join, their own `/check`).
    Interactive,
    /// Background work (rule changes, periodic re-checks).
    #[default]
    Bulk,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EligibilityCheck {
    /// Unique per request; used as the Nats-Msg-Id.
    pub id: String,
    pub guild_id: GuildId,
    /// One member, or the whole community when absent.
    #[serde(default)]
    pub user_id: Option<UserId>,
    /// Why, for the audit trail: `member.join`, `wallet.linked`,
    /// `rule.changed`, `command.check`, …
    pub reason: String,
    #[serde(default)]
    pub priority: CheckPriority,
    /// Unix milliseconds.
    pub requested_at: i64,
}

impl EligibilityCheck {
    pub fn to_json(&self) -> Result<Vec<u8>, crate::WireError> {
        serde_json::to_vec(self).map_err(crate::WireError::Encode)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::WireError> {
        serde_json::from_slice(bytes).map_err(crate::WireError::Decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_missing_optional_fields() {
        let check = EligibilityCheck {
            id: "c1".into(),
            guild_id: GuildId::new(1).unwrap(),
            user_id: UserId::new(2),
            reason: "member.join".into(),
            priority: CheckPriority::Interactive,
            requested_at: 5,
        };
        let json = check.to_json().unwrap();
        assert_eq!(EligibilityCheck::from_json(&json).unwrap(), check);
        let minimal = br#"{"id":"c2","guild_id":"1","reason":"rule.changed","requested_at":0,"later_field":true}"#;
        let parsed = EligibilityCheck::from_json(minimal).unwrap();
        assert_eq!(
            (parsed.user_id, parsed.priority),
            (None, CheckPriority::Bulk)
        );
    }
}
