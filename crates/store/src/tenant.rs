use std::{
    future::Future,
    pin::pin,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    task::Poll,
};

use tokio_postgres::{
    types::{ToSql, Type},
    Row,
};

use crate::{
    pool::Pooled,
    repo::{
        ApiKeys, Audit, Badges, Communities, InteractionReplies, LinkTokens, MemberSyncs,
        MemberWallets, ProcessedEvents, Profiles, RoleGrants, Rules, Seed, Stats, SyncCounters,
        WalletNonces, Webhooks,
    },
    StoreError, TenantId,
};

/// A parameter for [`TenantTx::query`]: the value and its PostgreSQL type.
/// Naming the type lets the statement go out unprepared (no Describe round
/// trip, no named statement).
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A transaction scoped to one community.
///
/// Created by [`Store::begin`](crate::Store::begin) with a pooled
/// connection. `BEGIN` and `SELECT set_config('app.current_tenant', <id>,
/// true)` go out with the transaction's first statement, pipelined in the
/// same round trip: a transaction of a read and a write costs three round
/// trips, not four, and one that sends nothing costs none. The setting is
/// transaction-local, so it cannot outlive the transaction and leak to the
/// next user of the server connection under PgBouncer's transaction pooling.
///
/// Finish with [`commit`](Self::commit), or with
/// [`commit_with`](Self::commit_with) to send `COMMIT` in the round trip of
/// the last statements. Dropping it without committing discards the
/// connection instead of returning it to the pool mid-transaction;
/// PostgreSQL rolls the transaction back when the connection closes.
pub struct TenantTx {
    client: Option<Pooled>,
    tenant: TenantId,
    /// Whether `BEGIN` has been sent (with the first statement).
    begun: AtomicBool,
    /// Statements sent so far.
    sent: AtomicUsize,
    /// Whether `COMMIT` has been sent (by `commit_with`): a statement after
    /// it would run outside the transaction.
    closed: AtomicBool,
}

impl TenantTx {
    pub(crate) fn new(client: Pooled, tenant: TenantId) -> Self {
        TenantTx {
            client: Some(client),
            tenant,
            begun: AtomicBool::new(false),
            sent: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The community this transaction is scoped to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    fn client(&self) -> &Pooled {
        // Only `commit` takes the client, and it consumes `self`.
        self.client
            .as_ref()
            .expect("tenant transaction used after commit")
    }

    /// Runs one statement and returns its rows.
    ///
    /// Uses the unnamed statement of the extended protocol with the parameter
    /// types given up front (`Parse`/`Bind`/`Execute`/`Sync` in one round
    /// trip), so nothing outlives the transaction: safe under PgBouncer 1.18,
    /// which does not track named prepared statements.
    pub(crate) async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client();
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::AfterCommit { context });
        }
        self.sent.fetch_add(1, Ordering::AcqRel);
        // Statements that callers pipeline (`join!` of two reads) may get
        // here in either order; whichever comes first sends `BEGIN` ahead of
        // itself. The swap and both sends happen in one poll, so nothing can
        // slip in between.
        if self.begun.swap(true, Ordering::AcqRel) {
            return client
                .query_typed(sql, params)
                .await
                .map_err(|e| StoreError::query(context, e));
        }
        // tokio-postgres sends a request when its future is first polled;
        // `biased` polls `BEGIN` first, so it reaches the server first.
        let begin = self.begin_sql();
        let (begun, rows) = tokio::join!(
            biased;
            client.batch_execute(&begin),
            client.query_typed(sql, params)
        );
        begun.map_err(|e| StoreError::query("starting a tenant transaction", e))?;
        rows.map_err(|e| StoreError::query(context, e))
    }

    fn begin_sql(&self) -> String {
        // The id is a formatted UUID ([0-9a-f-] only), so inlining it cannot
        // inject SQL; inlining is what lets both statements go in one
        // simple-query message.
        format!(
            "BEGIN; SELECT set_config('{}', '{}', true)",
            crate::names::TENANT_SETTING,
            self.tenant
        )
    }

    /// Whether anything was sent: a transaction that sent nothing has
    /// nothing to commit or roll back.
    fn sent_nothing(&self) -> bool {
        !self.begun.load(Ordering::Acquire)
    }

    /// Like [`query`](Self::query), for statements that yield at most one row.
    pub(crate) async fn query_opt(
        &self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(context, sql, params).await?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(StoreError::Corrupt {
                what: "query result",
                reason: format!("{context}: expected at most one row, got {n}"),
            }),
        }
    }

    /// Like [`query`](Self::query), for statements that yield exactly one row.
    pub(crate) async fn query_one(
        &self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Row, StoreError> {
        self.query_opt(context, sql, params)
            .await?
            .ok_or(StoreError::NotFound { context })
    }

    /// Commits. On error the connection is discarded (see the type docs).
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if self.sent_nothing() {
            drop(self.client.take());
            return Ok(());
        }
        self.client()
            .batch_execute("COMMIT")
            .await
            .map_err(|e| StoreError::query("committing a tenant transaction", e))?;
        // Committed: the connection is clean and may go back to the pool.
        drop(self.client.take());
        Ok(())
    }

    /// Runs `last`, the transaction's last statements, with `COMMIT` sent
    /// right behind them in the same round trip, and returns what `last`
    /// returned once everything is answered: one round trip fewer than
    /// awaiting them and then [`commit`](Self::commit).
    ///
    /// `COMMIT` follows what `last` sends when first polled: one statement,
    /// or several pipelined (`try_join!`), as repository calls send at once.
    /// A statement `last` tries after that (after awaiting another) fails
    /// with [`StoreError::AfterCommit`] without being sent, since it would
    /// run outside the transaction. If a statement fails, the transaction is
    /// rolled back and the statement's error returned: PostgreSQL answers a
    /// `COMMIT` after an error with a rollback. If `last` sends nothing at
    /// once, it is awaited and a plain commit follows.
    pub async fn commit_with<T>(
        mut self,
        last: impl AsyncFnOnce(&TenantTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // Whether COMMIT went behind the statements, and `last`'s value. An
        // error returns here: dropping `self` discards the connection.
        let (behind, value) = {
            let before = self.sent.load(Ordering::Acquire);
            let mut last = pin!(last(&self));
            let first = std::future::poll_fn(|cx| Poll::Ready(last.as_mut().poll(cx))).await;
            let rest = async {
                match first {
                    Poll::Ready(value) => value,
                    Poll::Pending => last.await,
                }
            };
            if self.sent.load(Ordering::Acquire) == before {
                // Nothing went out at once: no statements to ride behind.
                (false, rest.await?)
            } else {
                // Set before sending: whatever `last` tries from now on is
                // refused unsent.
                self.closed.store(true, Ordering::Release);
                let (committed, value) = tokio::join!(
                    biased;
                    self.client().batch_execute("COMMIT"),
                    rest,
                );
                // The statements' error first: after it, the COMMIT was a
                // rollback.
                let value = value?;
                committed.map_err(|e| StoreError::query("committing a tenant transaction", e))?;
                (true, value)
            }
        };
        if behind {
            // Committed: the connection is clean and may go back to the pool.
            drop(self.client.take());
        } else {
            self.commit().await?;
        }
        Ok(value)
    }

    /// Rolls back and returns the connection to the pool.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        if self.sent_nothing() {
            drop(self.client.take());
            return Ok(());
        }
        self.client()
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| StoreError::query("rolling back a tenant transaction", e))?;
        drop(self.client.take());
        Ok(())
    }

    pub fn communities(&self) -> Communities<'_> {
        Communities::new(self)
    }

    pub fn profiles(&self) -> Profiles<'_> {
        Profiles::new(self)
    }

    pub fn member_syncs(&self) -> MemberSyncs<'_> {
        MemberSyncs::new(self)
    }

    pub fn rules(&self) -> Rules<'_> {
        Rules::new(self)
    }

    pub fn badges(&self) -> Badges<'_> {
        Badges::new(self)
    }

    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    pub fn role_grants(&self) -> RoleGrants<'_> {
        RoleGrants::new(self)
    }

    pub fn processed_events(&self) -> ProcessedEvents<'_> {
        ProcessedEvents::new(self)
    }

    pub fn interaction_replies(&self) -> InteractionReplies<'_> {
        InteractionReplies::new(self)
    }

    pub fn wallet_nonces(&self) -> WalletNonces<'_> {
        WalletNonces::new(self)
    }

    pub fn member_wallets(&self) -> MemberWallets<'_> {
        MemberWallets::new(self)
    }

    pub fn link_tokens(&self) -> LinkTokens<'_> {
        LinkTokens::new(self)
    }

    pub fn stats(&self) -> Stats<'_> {
        Stats::new(self)
    }

    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys::new(self)
    }

    pub fn sync_counters(&self) -> SyncCounters<'_> {
        SyncCounters::new(self)
    }

    pub fn seed(&self) -> Seed<'_> {
        Seed::new(self)
    }

    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks::new(self)
    }
}

/// Arbitrary SQL inside a tenant transaction, for `store`'s own tests: they
/// prove the policies hold against queries no repository would send (an
/// unfiltered `SELECT`, a write that bypasses the types). Behind a feature
/// that only the tests enable, so no production build has it.
#[cfg(feature = "test-sql")]
impl TenantTx {
    pub async fn raw_query(&self, sql: &str) -> Result<Vec<Row>, StoreError> {
        self.query("a test's raw query", sql, &[]).await
    }

    pub async fn raw_query_one(&self, sql: &str) -> Result<Row, StoreError> {
        self.query_one("a test's raw query", sql, &[]).await
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.sent_nothing() {
                // Never began: the connection is clean.
                return;
            }
            // Still inside the transaction (an error, or an early return).
            // Returning this connection to the pool would hand an open
            // transaction to the next caller; close it instead.
            client.discard();
        }
    }
}
