//! Publishing what the bus itself is responsible for: eligibility check
//! requests, webhook delivery references and dead letters. Both wait for JetStream's ack: a publish that
//! was not stored must be reported, never assumed.

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use wire::check::EligibilityCheck;
use wire::subjects::{dead_letter_subject, headers};
use wire::webhook::WebhookDelivery;

use crate::{BusError, Namespace};

/// Publishes a check request with its id as `Nats-Msg-Id` (so a repeated
/// request within JetStream's duplicate window is stored once) and waits
/// until JetStream has stored it.
pub async fn publish_check(
    js: &Context,
    ns: &Namespace,
    check: &EligibilityCheck,
) -> Result<(), BusError> {
    let subject = ns.subject(wire::subjects::ELIGIBILITY_CHECK);
    let body = check
        .to_json()
        .map_err(|e| BusError::publish(&subject, e))?;
    let mut hdrs = HeaderMap::new();
    hdrs.insert(headers::MSG_ID, check.id.as_str());
    publish_stored(js, subject, hdrs, body.into()).await
}

/// Publishes a webhook delivery reference with [`WebhookDelivery::msg_id`]
/// as `Nats-Msg-Id` (a dispatcher re-publishing after a crash, or a second
/// dispatcher, adds no second message within the duplicate window) and
/// waits until JetStream has stored it.
pub async fn publish_webhook_delivery(
    js: &Context,
    ns: &Namespace,
    delivery: &WebhookDelivery,
) -> Result<(), BusError> {
    let subject = ns.subject(wire::subjects::WEBHOOK_DELIVER);
    let body = delivery
        .to_json()
        .map_err(|e| BusError::publish(&subject, e))?;
    let mut hdrs = HeaderMap::new();
    hdrs.insert(headers::MSG_ID, delivery.msg_id().as_str());
    publish_stored(js, subject, hdrs, body.into()).await
}

/// Publishes a message, unchanged, to `dead.<original subject>` with why it
/// died, and waits for JetStream to store it. Only then may the original be
/// terminated: a dead letter that was not stored would be a silent drop.
///
/// `msg_id` is the dead letter's `Nats-Msg-Id`: the original's own (the
/// envelope id), or something as stable for messages without one. A worker
/// that dies between storing the dead letter and terminating the original
/// gets the original again and dead-letters it again; within the duplicate
/// window that second copy is dropped.
pub async fn publish_dead_letter(
    js: &Context,
    ns: &Namespace,
    original_subject: &str,
    payload: Bytes,
    msg_id: &str,
    deliveries: i64,
    reason: &str,
) -> Result<(), BusError> {
    let contract_subject = ns.strip(original_subject).unwrap_or(original_subject);
    let subject = ns.subject(&dead_letter_subject(contract_subject));
    let mut hdrs = HeaderMap::new();
    hdrs.insert(headers::MSG_ID, msg_id);
    hdrs.insert(headers::DEAD_LETTER_ORIGINAL_SUBJECT, original_subject);
    hdrs.insert(
        headers::DEAD_LETTER_DELIVERIES,
        deliveries.to_string().as_str(),
    );
    hdrs.insert(headers::DEAD_LETTER_REASON, one_line(reason).as_str());
    publish_stored(js, subject, hdrs, payload).await
}

/// Headers are single-line; keep a reason readable and bounded.
fn one_line(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}

async fn publish_stored(
    js: &Context,
    subject: String,
    hdrs: HeaderMap,
    payload: Bytes,
) -> Result<(), BusError> {
    js.publish_with_headers(subject.clone(), hdrs, payload)
        .await
        .map_err(|e| BusError::publish(&subject, e))?
        .await
        .map_err(|e| BusError::publish(&subject, format!("not stored: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        assert_eq!(one_line(&"x".repeat(900)).len(), 500);
    }
}
