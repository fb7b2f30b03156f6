//! Re-check requests from the command line go to the workers over
//! JetStream, like everyone else's.

use std::time::Duration;

use bus::Namespace;
use domain::{RecheckError, Rechecks};
use wire::check::EligibilityCheck;

/// Publishes `eligibility.check` requests and waits for JetStream to store
/// each (bounded, so a missing stream is an error rather than a hang).
pub struct JetStreamRechecks {
    pub js: async_nats::jetstream::Context,
    pub namespace: Namespace,
}

impl Rechecks for JetStreamRechecks {
    async fn request(&self, check: &EligibilityCheck) -> Result<(), RecheckError> {
        match tokio::time::timeout(
            Duration::from_secs(10),
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

impl JetStreamRechecks {
    pub async fn connect(nats: &crate::nats_args::NatsArgs) -> anyhow::Result<Self> {
        Ok(JetStreamRechecks {
            namespace: nats.namespace()?,
            js: async_nats::jetstream::new(nats.connect().await?),
        })
    }
}
