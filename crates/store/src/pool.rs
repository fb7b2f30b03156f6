use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
    Timeouts,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    waits: Arc<WaitCounters>,
    /// The connections background work may hold at once, shared by every
    /// handle on this pool; only [`background`](Self::background) handles
    /// take from it.
    background_share: Arc<Semaphore>,
    background: bool,
}

/// The share of the pool that background work leaves to the rest (a
/// quarter, at least one connection once the pool has two).
fn reserved(pool_size: usize) -> usize {
    if pool_size < 2 {
        0
    } else {
        (pool_size / 4).max(1)
    }
}

/// A pooled connection, with the background permit it was taken under.
pub(crate) struct Pooled {
    object: Object,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Pooled {
    /// Detaches the connection from the pool (it is closed when dropped).
    pub(crate) fn discard(self) {
        drop(Object::take(self.object));
    }
}

impl std::ops::Deref for Pooled {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.object
    }
}

/// How often getting a connection meant waiting for one, since the store
/// was built: every connection was in use, so the caller queued until one
/// came back (or `DATABASE_ACQUIRE_TIMEOUT` passed). Counters only ever
/// grow; a rate of them says how starved the pool is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolWaits {
    /// Connections asked for (every transaction and directory call).
    pub acquisitions: u64,
    /// Of those, the ones that found every connection in use and waited.
    pub waits: u64,
    /// Time spent in those waits, added up (timed-out waits included).
    pub waited: Duration,
}

/// [`PoolWaits`] as the checkout path updates them: relaxed atomics, no
/// lock and no allocation; and who is told of each wait.
#[derive(Default)]
struct WaitCounters {
    acquisitions: AtomicU64,
    waits: AtomicU64,
    waited_nanos: AtomicU64,
    observer: OnceLock<fn(Duration)>,
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
            guilds: Arc::new(GuildCache::new()),
            waits: Arc::new(WaitCounters::default()),
            background_share: Arc::new(Semaphore::new(
                config.pool_size - reserved(config.pool_size),
            )),
            background: false,
            config,
        })
    }

    /// A handle on the same pool for work nobody is waiting on as it
    /// happens — eligibility checks, badge evaluation, periodic scans,
    /// pruning — which together may hold all but a quarter of the
    /// connections. The rest stay for the work whose order and latency
    /// matter: membership events, commands, the admin API. Under load,
    /// background work then waits for connections instead of making every
    /// member event wait behind it, and its batches grow while it waits,
    /// which makes it cheaper per member. Clones of the handle share its
    /// limit, as do all background handles on one pool.
    pub fn background(&self) -> Store {
        Store {
            background: true,
            ..self.clone()
        }
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

    /// How often getting a connection has meant waiting for one.
    pub fn pool_waits(&self) -> PoolWaits {
        PoolWaits {
            acquisitions: self.waits.acquisitions.load(Ordering::Relaxed),
            waits: self.waits.waits.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waits.waited_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Has `observe` called with the length of every wait for a connection
    /// from now on (a histogram, say); a connection taken at once calls
    /// nothing. One observer per pool, shared by every clone of this store:
    /// `false` (and `observe` unused) if one was set already.
    pub fn observe_pool_waits(&self, observe: fn(Duration)) -> bool {
        self.waits.observer.set(observe).is_ok()
    }

    pub(crate) async fn checkout(&self) -> Result<Pooled, StoreError> {
        self.waits.acquisitions.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let mut waited = false;
        let permit = match self.background_permit(&mut waited).await {
            Ok(permit) => permit,
            Err(e) => {
                self.count_wait(start.elapsed());
                return Err(e);
            }
        };
        // First without waiting: a free slot (an idle connection, or room
        // to open one) is taken at once, and that is the common case.
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            ..self.pool.timeouts()
        };
        let got = match self.pool.timeout_get(&now).await {
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                // Every connection is in use: queue for one.
                waited = true;
                self.pool.get().await
            }
            got => got,
        };
        if waited {
            self.count_wait(start.elapsed());
        }
        let got = got.map(|object| Pooled {
            object,
            _permit: permit,
        });
        got.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => {
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

    /// A background handle's permit to hold one connection: at once while
    /// background work has room in its share, else once one of its own is
    /// given back (up to the acquire timeout; `waited` is set). `None` for
    /// other handles.
    async fn background_permit(
        &self,
        waited: &mut bool,
    ) -> Result<Option<OwnedSemaphorePermit>, StoreError> {
        if !self.background {
            return Ok(None);
        }
        let share = &self.background_share;
        if let Ok(permit) = share.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        *waited = true;
        match tokio::time::timeout(self.config.acquire_timeout, share.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The share is never closed.
            Ok(Err(_)) => Err(StoreError::PoolClosed),
            Err(_) => Err(StoreError::PoolTimeout(self.config.acquire_timeout)),
        }
    }

    fn count_wait(&self, waited: Duration) {
        self.waits.waits.fetch_add(1, Ordering::Relaxed);
        self.waits.waited_nanos.fetch_add(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(observe) = self.waits.observer.get() {
            observe(waited);
        }
    }
}
