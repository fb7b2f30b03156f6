use tokio_postgres::types::Type;

use wire::GuildId;

use crate::ids::{db_id, id_from_db};
use crate::{ApiKeyId, Store, StoreError, TenantId};

/// Cross-tenant entry points, each one a narrow `SECURITY DEFINER` function
/// owned by the NOLOGIN `gatehouse_definer` role (see migration 0003).
///
/// They run outside any tenant transaction because they are how a tenant is
/// found in the first place: events arrive keyed by Discord guild, and the
/// community id is what the tenant transaction needs.
pub struct Directory<'a> {
    store: &'a Store,
}

impl<'a> Directory<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Directory { store }
    }

    /// The community of a Discord guild, if one was ever provisioned
    /// (active or not). Found answers are remembered (see
    /// `guild_cache`): a known guild costs no connection.
    pub async fn resolve_guild(&self, guild: GuildId) -> Result<Option<TenantId>, StoreError> {
        const CONTEXT: &str = "resolving a guild to its community";
        if let Some(tenant) = self.store.guilds().get(guild) {
            return Ok(Some(tenant));
        }
        let client = self.store.checkout().await?;
        let rows = client
            .query_typed(
                "SELECT resolve_community($1)",
                &[(&db_id(guild, "discord_guild_id")?, Type::INT8)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        let id: Option<uuid::Uuid> = match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| StoreError::query(CONTEXT, e))?,
            None => None,
        };
        let tenant = id.map(TenantId::from);
        if let Some(tenant) = tenant {
            self.store.guilds().put(guild, tenant);
        }
        Ok(tenant)
    }

    /// Creates the community for a guild, or reactivates (and renames) the
    /// existing one. Returns its id.
    pub async fn provision_guild(
        &self,
        guild: GuildId,
        name: &str,
    ) -> Result<TenantId, StoreError> {
        const CONTEXT: &str = "provisioning a community";
        let client = self.store.checkout().await?;
        let rows = client
            .query_typed(
                "SELECT provision_community($1, $2)",
                &[
                    (&db_id(guild, "discord_guild_id")?, Type::INT8),
                    (&name, Type::TEXT),
                ],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        let row = rows
            .first()
            .ok_or(StoreError::NotFound { context: CONTEXT })?;
        let id: uuid::Uuid = row.try_get(0).map_err(|e| StoreError::query(CONTEXT, e))?;
        let tenant = TenantId::from(id);
        self.store.guilds().put(guild, tenant);
        Ok(tenant)
    }

    /// The active communities with at least one active webhook, for the
    /// webhook dispatcher (which would otherwise open a transaction in every
    /// community each tick to find the few with webhooks).
    pub async fn webhook_communities(&self) -> Result<Vec<TenantId>, StoreError> {
        const CONTEXT: &str = "listing communities with webhooks";
        let client = self.store.checkout().await?;
        let rows = client
            .query_typed("SELECT community_id FROM webhook_communities()", &[])
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        rows.iter()
            .map(|row| {
                let id: uuid::Uuid = row.try_get(0).map_err(|e| StoreError::query(CONTEXT, e))?;
                Ok(TenantId::from(id))
            })
            .collect()
    }

    /// Every active community and its guild, for background scans.
    pub async fn active_communities(&self) -> Result<Vec<(TenantId, GuildId)>, StoreError> {
        const CONTEXT: &str = "listing active communities";
        let client = self.store.checkout().await?;
        let rows = client
            .query_typed(
                "SELECT community_id, discord_guild_id FROM active_communities()",
                &[],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        rows.iter()
            .map(|row| {
                let id: uuid::Uuid = row.try_get(0).map_err(|e| StoreError::query(CONTEXT, e))?;
                let guild: i64 = row.try_get(1).map_err(|e| StoreError::query(CONTEXT, e))?;
                Ok((TenantId::from(id), id_from_db(guild, "discord_guild_id")?))
            })
            .collect()
    }

    /// The live key with this public prefix and secret hash: its id, its
    /// community and its scopes. `None` for an unknown, revoked or expired
    /// key (the caller cannot tell which, and neither can an attacker).
    pub async fn authenticate_api_key(
        &self,
        prefix: &str,
        secret_hash: &[u8; 32],
    ) -> Result<Option<AuthenticatedKey>, StoreError> {
        const CONTEXT: &str = "authenticating an API key";
        let client = self.store.checkout().await?;
        let hash: &[u8] = secret_hash;
        let rows = client
            .query_typed(
                "SELECT key_id, community_id, discord_guild_id, scopes
                 FROM authenticate_api_key($1, $2)",
                &[(&prefix, Type::TEXT), (&hash, Type::BYTEA)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let key: uuid::Uuid = row.try_get(0).map_err(|e| StoreError::query(CONTEXT, e))?;
        let tenant: uuid::Uuid = row.try_get(1).map_err(|e| StoreError::query(CONTEXT, e))?;
        let guild: i64 = row.try_get(2).map_err(|e| StoreError::query(CONTEXT, e))?;
        let scopes: Vec<String> = row.try_get(3).map_err(|e| StoreError::query(CONTEXT, e))?;
        Ok(Some(AuthenticatedKey {
            key: ApiKeyId::from(key),
            tenant: TenantId::from(tenant),
            guild: id_from_db(guild, "discord_guild_id")?,
            scopes,
        }))
    }
    /// The wallet-link page token with this SHA-256, expired or used ones
    /// included (the page says which). `None` for an unknown token or an
    /// inactive community.
    pub async fn resolve_wallet_link_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<ResolvedLinkToken>, StoreError> {
        const CONTEXT: &str = "resolving a wallet-link token";
        let client = self.store.checkout().await?;
        let hash: &[u8] = token_hash;
        let rows = client
            .query_typed(
                "SELECT community_id, discord_guild_id, discord_user_id, expires_at, used_at
                 FROM resolve_wallet_link_token($1)",
                &[(&hash, Type::BYTEA)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let get = |i: usize| StoreError::Corrupt {
            what: "wallet-link token",
            reason: format!("column {i} has an unexpected type"),
        };
        let tenant: uuid::Uuid = row.try_get(0).map_err(|_| get(0))?;
        let guild: i64 = row.try_get(1).map_err(|_| get(1))?;
        let user: i64 = row.try_get(2).map_err(|_| get(2))?;
        Ok(Some(ResolvedLinkToken {
            tenant: TenantId::from(tenant),
            guild: id_from_db(guild, "discord_guild_id")?,
            user: id_from_db(user, "discord_user_id")?,
            expires_at: row.try_get(3).map_err(|_| get(3))?,
            used_at: row.try_get(4).map_err(|_| get(4))?,
        }))
    }
    /// Deletes up to `limit` audit rows older than `before`, in every
    /// community (the operator's retention setting). The database refuses a
    /// cut-off less than a day ago. Returns how many rows went.
    pub async fn prune_audit(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: i32,
    ) -> Result<u64, StoreError> {
        const CONTEXT: &str = "pruning the audit log";
        let client = self.store.checkout().await?;
        let row = client
            .query_typed(
                "SELECT prune_audit_logs($1, $2)",
                &[(&before, Type::TIMESTAMPTZ), (&limit, Type::INT4)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        let deleted: i64 = row
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| StoreError::query(CONTEXT, e))?
            .unwrap_or(0);
        Ok(u64::try_from(deleted).unwrap_or(0))
    }
}

/// A wallet-link page token that [`Directory::resolve_wallet_link_token`]
/// found: which community and member it was issued for, and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLinkToken {
    pub tenant: TenantId,
    pub guild: GuildId,
    pub user: wire::UserId,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A key that [`Directory::authenticate_api_key`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub key: ApiKeyId,
    pub tenant: TenantId,
    pub guild: GuildId,
    /// As stored; the domain parses them.
    pub scopes: Vec<String>,
}
