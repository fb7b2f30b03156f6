use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use wire::{GuildId, UserId};

use crate::ids::{db_id, db_ids, id_from_db};
use crate::{Store, StoreError, TenantId};

/// Dashboard sessions (migration 0013). A session belongs to a person, not
/// a community, so it lives outside every tenant: the runtime role reaches
/// it only through `SECURITY DEFINER` functions keyed by the hash of the
/// session id, and cannot list or read any other session.
pub struct WebSessions<'a> {
    store: &'a Store,
}

/// A session to store. The id itself never reaches the database.
#[derive(Clone, Debug)]
pub struct NewWebSession<'s> {
    pub id_hash: &'s [u8; 32],
    pub user: UserId,
    pub username: &'s str,
    /// The Discord tokens, sealed by the caller (never plaintext).
    pub sealed_tokens: &'s [u8],
    pub admin_guilds: &'s [GuildId],
    /// Absolute lifetime from now.
    pub lifetime: Duration,
}

/// A live session as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub user: UserId,
    pub username: String,
    pub sealed_tokens: Vec<u8>,
    pub admin_guilds: Vec<GuildId>,
    pub permissions_checked_at: DateTime<Utc>,
}

/// An active community a dashboard user may be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCommunity {
    pub tenant: TenantId,
    pub guild: GuildId,
    pub name: String,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

impl<'a> WebSessions<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        WebSessions { store }
    }

    pub async fn create(&self, session: &NewWebSession<'_>) -> Result<(), StoreError> {
        const CONTEXT: &str = "creating a dashboard session";
        let client = self.store.checkout().await?;
        let hash: &[u8] = session.id_hash;
        client
            .query_typed(
                "SELECT web_session_create($1, $2, $3, $4, $5, $6)",
                &[
                    (&hash, Type::BYTEA),
                    (&db_id(session.user, "discord_user_id")?, Type::INT8),
                    (&session.username, Type::TEXT),
                    (&session.sealed_tokens, Type::BYTEA),
                    (
                        &db_ids(session.admin_guilds, "admin_guilds")?,
                        Type::INT8_ARRAY,
                    ),
                    (&secs(session.lifetime), Type::INT8),
                ],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        Ok(())
    }

    /// The live session with this id hash; `None` for an unknown one, and for
    /// one idle longer than `idle` or past its absolute expiry (which is
    /// deleted on the way).
    pub async fn get(
        &self,
        id_hash: &[u8; 32],
        idle: Duration,
    ) -> Result<Option<WebSession>, StoreError> {
        const CONTEXT: &str = "reading a dashboard session";
        let client = self.store.checkout().await?;
        let hash: &[u8] = id_hash;
        let rows = client
            .query_typed(
                "SELECT discord_user_id, username, sealed_tokens, admin_guilds, permissions_checked_at
                 FROM web_session_get($1, $2)",
                &[(&hash, Type::BYTEA), (&secs(idle), Type::INT8)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let get = |e| StoreError::query(CONTEXT, e);
        let user: i64 = row.try_get(0).map_err(get)?;
        let guilds: Vec<i64> = row.try_get(3).map_err(get)?;
        Ok(Some(WebSession {
            user: id_from_db(user, "discord_user_id")?,
            username: row.try_get(1).map_err(get)?,
            sealed_tokens: row.try_get(2).map_err(get)?,
            admin_guilds: guilds
                .into_iter()
                .map(|g| id_from_db(g, "admin_guilds"))
                .collect::<Result<_, _>>()?,
            permissions_checked_at: row.try_get(4).map_err(get)?,
        }))
    }

    /// Records a permission re-read. `false` when the session is gone.
    pub async fn set_permissions(
        &self,
        id_hash: &[u8; 32],
        sealed_tokens: &[u8],
        admin_guilds: &[GuildId],
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "updating a dashboard session's permissions";
        let client = self.store.checkout().await?;
        let hash: &[u8] = id_hash;
        let rows = client
            .query_typed(
                "SELECT web_session_set_permissions($1, $2, $3)",
                &[
                    (&hash, Type::BYTEA),
                    (&sealed_tokens, Type::BYTEA),
                    (&db_ids(admin_guilds, "admin_guilds")?, Type::INT8_ARRAY),
                ],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| StoreError::query(CONTEXT, e)),
            None => Ok(false),
        }
    }

    /// Logs a session out. `false` when there was none.
    pub async fn delete(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        const CONTEXT: &str = "deleting a dashboard session";
        let client = self.store.checkout().await?;
        let hash: &[u8] = id_hash;
        let rows = client
            .query_typed("SELECT web_session_delete($1)", &[(&hash, Type::BYTEA)])
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| StoreError::query(CONTEXT, e)),
            None => Ok(false),
        }
    }

    /// Deletes every expired or idle session; how many went.
    pub async fn prune(&self, idle: Duration) -> Result<i64, StoreError> {
        const CONTEXT: &str = "pruning dashboard sessions";
        let client = self.store.checkout().await?;
        let rows = client
            .query_typed(
                "SELECT web_sessions_prune($1)",
                &[(&secs(idle), Type::INT8)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| StoreError::query(CONTEXT, e)),
            None => Ok(0),
        }
    }

    /// Which of `guilds` have an active community, by name.
    pub async fn active_communities(
        &self,
        guilds: &[GuildId],
    ) -> Result<Vec<ActiveCommunity>, StoreError> {
        const CONTEXT: &str = "listing a dashboard user's communities";
        if guilds.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.store.checkout().await?;
        let rows = client
            .query_typed(
                "SELECT community_id, discord_guild_id, name FROM web_active_communities($1)",
                &[(&db_ids(guilds, "discord_guild_id")?, Type::INT8_ARRAY)],
            )
            .await
            .map_err(|e| StoreError::query(CONTEXT, e))?;
        rows.iter()
            .map(|row| {
                let get = |e| StoreError::query(CONTEXT, e);
                let id: uuid::Uuid = row.try_get(0).map_err(get)?;
                let guild: i64 = row.try_get(1).map_err(get)?;
                Ok(ActiveCommunity {
                    tenant: TenantId::from(id),
                    guild: id_from_db(guild, "discord_guild_id")?,
                    name: row.try_get(2).map_err(get)?,
                })
            })
            .collect()
    }
}
