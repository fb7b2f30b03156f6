//! `webhooks.deliver`: "attempt this webhook delivery", published by the
//! worker's dispatcher once the delivery is committed, consumed by workers.
//!
//! A reference, not the request: the URL, the secret and the body are read
//! from the database when the attempt is made. Nothing read back from NATS
//! chooses where a request goes or what signs it, and a message that is
//! redelivered for days still sends what the log says today (nothing, if
//! the webhook was deleted).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The community (tenant) the delivery belongs to.
    pub community: Uuid,
    /// The delivery's id in the community's delivery log.
    pub delivery: i64,
}

impl WebhookDelivery {
    /// The `Nats-Msg-Id`: a re-publish of the same delivery within the
    /// stream's duplicate window is stored once.
    pub fn msg_id(&self) -> String {
        format!("webhook-delivery-{}", self.delivery)
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
    fn the_reference_round_trips_and_names_only_the_delivery() {
        let d = WebhookDelivery {
            community: Uuid::from_u128(7),
            delivery: 42,
        };
        let json = d.to_json().unwrap();
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"community":"00000000-0000-0000-0000-000000000007","delivery":42}"#
        );
        assert_eq!(WebhookDelivery::from_json(&json).unwrap(), d);
        assert_eq!(d.msg_id(), "webhook-delivery-42");
        assert!(WebhookDelivery::from_json(br#"{"delivery":1}"#).is_err());
    }
}
