//! The key-value bucket where worker processes share Discord's request
//! budget. What an entry means is the worker's business; the bucket's
//! definition is here with every other JetStream object.

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::Context;

use crate::{ensure::ensure_stream, BusError, Topology};

/// Opens the Discord budget bucket, creating it from the definition if
/// missing.
pub async fn open_discord_budget_bucket(
    js: &Context,
    topology: &Topology,
) -> Result<Store, BusError> {
    let bucket = topology.discord_budget_bucket();
    let fail = |problem: String| BusError::Bucket {
        bucket: bucket.clone(),
        problem,
    };
    ensure_stream(js, topology.discord_budget_stream_config())
        .await
        .map_err(|e| fail(e.to_string()))?;
    js.get_key_value(bucket.clone())
        .await
        .map_err(|e| fail(format!("cannot open it: {e}")))
}
