//! Re-check requests go to the workers over JetStream, like everyone
//! else's. Shared by the API and the command line.

use std::time::Duration;

use bus::Namespace;
use domain::{RecheckError, Rechecks};
use wire::check::EligibilityCheck;

/// Publishes `eligibility.check` requests and waits for JetStream to store
/// each (bounded, so a missing stream is an error rather than a hang).
#[derive(Clone)]
pub struct BusRechecks {
    js: async_nats::jetstream::Context,
    namespace: Namespace,
}

impl BusRechecks {
    pub fn new(js: async_nats::jetstream::Context, namespace: Namespace) -> Self {
        BusRechecks { js, namespace }
    }
}

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

impl Rechecks for BusRechecks {
    async fn request(&self, check: &EligibilityCheck) -> Result<(), RecheckError> {
        match tokio::time::timeout(
            ACK_TIMEOUT,
            bus::publish_check(&self.js, &self.namespace, check),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RecheckError(e.to_string())),
            Err(_) => Err(RecheckError(
                "no acknowledgement from JetStream within 10s (is a worker's ELIGIBILITY stream there?)"
                    .into(),
            )),
        }
    }
}
