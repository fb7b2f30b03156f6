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
    /// More members of the community checked with `user_id`, for the same
    /// reason: a batch of joins asks once for all its members, not once
    /// each (a message is a JetStream write, a delivery and an ack). Only
    /// beside a `user_id`, so that a reader that predates this field checks
    /// that one member, not the whole community; the others it ignores are
    /// reached by the periodic scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_user_ids: Vec<UserId>,
    /// Why, for the audit trail: `member.join`, `wallet.linked`,
    /// `rule.changed`, `command.check`, …
    pub reason: String,
    #[serde(default)]
    pub priority: CheckPriority,
    /// Unix milliseconds.
    pub requested_at: i64,
}

impl EligibilityCheck {
    /// The members to check: `user_id` and `more_user_ids` (none: the
    /// whole community).
    pub fn members(&self) -> impl Iterator<Item = UserId> + '_ {
        let more: &[UserId] = match self.user_id {
            Some(_) => &self.more_user_ids,
            None => &[],
        };
        self.user_id.into_iter().chain(more.iter().copied())
    }

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
            more_user_ids: vec![],
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
        assert_eq!(parsed.members().count(), 0);
    }

    #[test]
    fn a_check_of_several_members_names_the_first_where_every_reader_looks() {
        let check = EligibilityCheck {
            id: "c3".into(),
            guild_id: GuildId::new(1).unwrap(),
            user_id: UserId::new(2),
            more_user_ids: vec![UserId::new(3).unwrap(), UserId::new(4).unwrap()],
            reason: "member.join".into(),
            priority: CheckPriority::Interactive,
            requested_at: 5,
        };
        let json: serde_json::Value = serde_json::from_slice(&check.to_json().unwrap()).unwrap();
        assert_eq!(json["user_id"], "2");
        assert_eq!(json["more_user_ids"], serde_json::json!(["3", "4"]));
        assert_eq!(
            check.members().map(UserId::get).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        // One member: the field is left out, as before it existed.
        let one = EligibilityCheck {
            more_user_ids: vec![],
            ..check
        };
        let json: serde_json::Value = serde_json::from_slice(&one.to_json().unwrap()).unwrap();
        assert!(json.get("more_user_ids").is_none(), "{json}");
        // Without a user_id, more_user_ids names nobody: the whole community.
        let odd = EligibilityCheck::from_json(
            br#"{"id":"c4","guild_id":"1","more_user_ids":["3"],"reason":"x","requested_at":0}"#,
        )
        .unwrap();
        assert_eq!(odd.members().count(), 0);
    }
}
