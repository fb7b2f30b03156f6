use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};

use super::col;
use crate::{ApiKeyId, StoreError, TenantTx};

/// An admin API key as listed: everything but its secret, which is never
/// stored (only its hash, which is never read back either).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// Public: identifies the key in listings and logs.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(ApiKey {
            id: col(row, "id")?,
            name: col(row, "name")?,
            prefix: col(row, "prefix")?,
            scopes: col(row, "scopes")?,
            created_by: col(row, "created_by")?,
            created_at: col(row, "created_at")?,
            expires_at: col(row, "expires_at")?,
            last_used_at: col(row, "last_used_at")?,
            revoked_at: col(row, "revoked_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, name, prefix, scopes, created_by, created_at, expires_at, last_used_at, revoked_at";

/// A key to store. The domain generates the secret and hashes it.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub name: String,
    pub prefix: String,
    pub secret_hash: [u8; 32],
    pub scopes: Vec<String>,
    pub created_by: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub struct ApiKeys<'t> {
    tx: &'t TenantTx,
}

impl<'t> ApiKeys<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        ApiKeys { tx }
    }

    pub async fn create(&self, key: &NewApiKey) -> Result<ApiKey, StoreError> {
        let sql = format!(
            "INSERT INTO api_keys (community_id, name, prefix, secret_hash, scopes, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let hash: &[u8] = &key.secret_hash;
        let row = self
            .tx
            .query_one(
                "storing an API key",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&key.name, Type::TEXT),
                    (&key.prefix, Type::TEXT),
                    (&hash, Type::BYTEA),
                    (&key.scopes, Type::TEXT_ARRAY),
                    (&key.created_by, Type::TEXT),
                    (&key.expires_at, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        ApiKey::from_row(&row)
    }

    /// Every key of the community, revoked ones included, newest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE community_id = $1 ORDER BY created_at DESC, id"
        );
        self.tx
            .query(
                "listing API keys",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?
            .iter()
            .map(ApiKey::from_row)
            .collect()
    }

    /// Revokes a key (once: revoking again keeps the first time). `None`
    /// when the community has no such key.
    pub async fn revoke(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
             WHERE community_id = $1 AND id = $2 RETURNING {COLUMNS}"
        );
        self.tx
            .query_opt(
                "revoking an API key",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&id, Type::UUID)],
            )
            .await?
            .as_ref()
            .map(ApiKey::from_row)
            .transpose()
    }
}
