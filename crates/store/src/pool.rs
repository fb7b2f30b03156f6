use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::guild_cache::GuildCache;
use crate::{Directory, StoreConfig, StoreError, TenantId, TenantTx};

/// A pool of connections for the runtime role, usually pointed at PgBouncer.
///
/// Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    config: StoreConfig,
    guilds: Arc<GuildCache>,
}

impl Store {
    /// Builds the pool and proves the database is reachable with one
    /// connection, so that a wrong URL or password fails at start with a
    /// clear error rather than on the first event.
    pub async fn connect(config: StoreConfig) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(config)?;
        drop(store.checkout().await?);
        Ok(store)
    }

    /// Builds the pool without connecting; connections are opened on demand.
    fn connect_lazy(config: StoreConfig) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            config.pg.clone(),
            NoTls,
            ManagerConfig {
                // Fast only checks the socket is open. Nothing we do leaves
                // session state behind, so there is nothing to reset.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::InvalidSetting {
                setting: "pool",
                reason: e.to_string(),
            })?;
        Ok(Store {
            pool,
            config,
            guilds: Arc::new(GuildCache::new()),
        })
    }

    /// Opens a tenant transaction on a pooled connection. `BEGIN` and
    /// `set_config('app.current_tenant', …, true)` go out with its first
    /// statement (see [`TenantTx`]).
    pub async fn begin(&self, tenant: TenantId) -> Result<TenantTx, StoreError> {
        let client = self.checkout().await?;
        Ok(TenantTx::new(client, tenant))
    }

    /// Cross-tenant lookups through the SECURITY DEFINER functions.
    pub fn directory(&self) -> Directory<'_> {
        Directory::new(self)
    }

    /// Dashboard sessions, through their SECURITY DEFINER functions.
    pub fn web_sessions(&self) -> crate::WebSessions<'_> {
        crate::WebSessions::new(self)
    }

    pub(crate) fn guilds(&self) -> &GuildCache {
        &self.guilds
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Proves the database answers (a readiness probe): one `SELECT 1` on a
    /// pooled connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.checkout()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(|e| StoreError::query("checking the database answers", e))?;
        Ok(())
    }

    /// Connections currently open and currently idle.
    pub fn pool_status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    pub(crate) async fn checkout(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                StoreError::PoolTimeout(self.config.acquire_timeout)
            }
            PoolError::Timeout(_) => StoreError::ConnectTimeout {
                target: self.config.redacted_url(),
                after: self.config.connect_timeout,
            },
            PoolError::Backend(source) => StoreError::Connect {
                target: self.config.redacted_url(),
                source,
            },
            PoolError::Closed => StoreError::PoolClosed,
            other => StoreError::InvalidSetting {
                setting: "pool",
                reason: other.to_string(),
            },
        })
    }
}
