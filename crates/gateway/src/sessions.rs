//! Gateway sessions kept across restarts in a JetStream key-value bucket.
//!
//! On shutdown each shard's session id, safe sequence (see
//! [`crate::progress`]) and resume URL are stored; the next process owning the
//! shard resumes from there, so Discord replays what was not yet durable and
//! no event is missed across a rolling restart. Entries expire with the
//! bucket's max age: Discord would refuse an old session anyway, and a refused
//! resume costs a fresh identify. The bucket itself is defined in `bus`.

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::Context;
use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// What is stored for one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub session_id: String,
    /// Every dispatch up to here is in JetStream.
    pub sequence: u64,
    pub resume_url: Option<String>,
    /// Unix ms.
    pub saved_at: i64,
}

/// The bucket, opened (and created if missing) at start.
#[derive(Clone)]
pub struct SessionStore {
    store: Store,
    bucket: String,
}

/// One key per shard *and* shard count: a session of shard 3 of 8 is no use
/// to shard 3 of 16.
pub fn key(shard_id: u32, total: u32) -> String {
    format!("shard.{total}.{shard_id}")
}

impl SessionStore {
    pub async fn open(jetstream: &Context, topology: &bus::Topology) -> Result<Self, GatewayError> {
        let store = bus::open_sessions_bucket(jetstream, topology).await?;
        Ok(Self {
            store,
            bucket: topology.sessions_bucket(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The bucket itself: shard leases ([`crate::leases`]) and identify
    /// slots ([`crate::identify`]) live beside the sessions, under their own
    /// key prefixes, so the gateway's NATS user needs no other bucket.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The stored session of a shard, removing it: a session must be resumed
    /// by one process only, and a failed resume falls back to identify anyway.
    pub async fn take(
        &self,
        shard_id: u32,
        total: u32,
    ) -> Result<Option<StoredSession>, GatewayError> {
        let key = key(shard_id, total);
        let fail = |problem: String| GatewayError::Sessions {
            bucket: self.bucket.clone(),
            problem,
        };
        let Some(bytes) = self
            .store
            .get(&key)
            .await
            .map_err(|e| fail(format!("cannot read {key}: {e}")))?
        else {
            return Ok(None);
        };
        self.store
            .delete(&key)
            .await
            .map_err(|e| fail(format!("cannot delete {key}: {e}")))?;
        match serde_json::from_slice(&bytes) {
            Ok(session) => Ok(Some(session)),
            Err(error) => {
                tracing::warn!(shard = shard_id, %error, "ignoring an unreadable stored session");
                Ok(None)
            }
        }
    }

    pub async fn save(
        &self,
        shard_id: u32,
        total: u32,
        session: &StoredSession,
    ) -> Result<(), GatewayError> {
        let key = key(shard_id, total);
        let body = serde_json::to_vec(session).map_err(|e| GatewayError::Sessions {
            bucket: self.bucket.clone(),
            problem: format!("cannot encode {key}: {e}"),
        })?;
        self.store
            .put(&key, body.into())
            .await
            .map_err(|e| GatewayError::Sessions {
                bucket: self.bucket.clone(),
                problem: format!("cannot store {key}: {e}"),
            })?;
        Ok(())
    }
}
