use async_nats::{jetstream, HeaderMap};
use wire::subjects::{dead_letter_subject, headers};

use crate::WorkerError;

/// Publishes the message, unchanged, to `dead.<original subject>` with why
/// it died, and waits for JetStream to store it. Only then may the original
/// be terminated: a dead letter that was not stored would be a silent drop.
pub(crate) async fn publish(
    js: &jetstream::Context,
    ns: &wire::Namespace,
    original_subject: &str,
    payload: bytes::Bytes,
    deliveries: i64,
    reason: &str,
) -> Result<(), WorkerError> {
    let contract_subject = ns.strip(original_subject).unwrap_or(original_subject);
    let subject = ns.subject(&dead_letter_subject(contract_subject));
    let mut hdrs = HeaderMap::new();
    hdrs.insert(headers::DEAD_LETTER_ORIGINAL_SUBJECT, original_subject);
    hdrs.insert(
        headers::DEAD_LETTER_DELIVERIES,
        deliveries.to_string().as_str(),
    );
    // Headers are single-line; keep the reason readable and bounded.
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    hdrs.insert(headers::DEAD_LETTER_REASON, one_line.as_str());
    js.publish_with_headers(subject.clone(), hdrs, payload)
        .await
        .map_err(|e| WorkerError::jetstream(format!("publishing dead letter to {subject}"), e))?
        .await
        .map_err(|e| WorkerError::jetstream(format!("storing dead letter on {subject}"), e))?;
    Ok(())
}
