//! Publishing `eligibility.check` requests.

use async_nats::{jetstream, HeaderMap};
use wire::{check::EligibilityCheck, Namespace};

use crate::WorkerError;

/// Publishes a check request with its id as `Nats-Msg-Id` (so a repeated
/// request within JetStream's duplicate window is stored once) and waits
/// until JetStream has stored it.
pub async fn publish_check(
    js: &jetstream::Context,
    namespace: &Namespace,
    check: &EligibilityCheck,
) -> Result<(), WorkerError> {
    let body = check
        .to_json()
        .map_err(|e| WorkerError::jetstream("encoding an eligibility check", e))?;
    let mut headers = HeaderMap::new();
    headers.insert(wire::subjects::headers::MSG_ID, check.id.as_str());
    let subject = namespace.subject(wire::subjects::ELIGIBILITY_CHECK);
    js.publish_with_headers(subject.clone(), headers, body.into())
        .await
        .map_err(|e| WorkerError::jetstream(format!("publishing to {subject}"), e))?
        .await
        .map_err(|e| WorkerError::jetstream(format!("storing on {subject}"), e))?;
    Ok(())
}
