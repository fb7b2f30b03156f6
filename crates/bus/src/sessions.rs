//! The key-value bucket where the gateway keeps shard sessions across
//! restarts. What an entry means is the gateway's business; the bucket's
//! definition is here with every other JetStream object.

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::Context;

use crate::{ensure::ensure_stream, BusError, Topology};

/// Opens the session bucket, creating it from the definition if missing.
pub async fn open_sessions_bucket(js: &Context, topology: &Topology) -> Result<Store, BusError> {
    let bucket = topology.sessions_bucket();
    let fail = |problem: String| BusError::Bucket {
        bucket: bucket.clone(),
        problem,
    };
    ensure_stream(js, topology.sessions_stream_config())
        .await
        .map_err(|e| fail(e.to_string()))?;
    js.get_key_value(bucket.clone())
        .await
        .map_err(|e| fail(format!("cannot open it: {e}")))
}
