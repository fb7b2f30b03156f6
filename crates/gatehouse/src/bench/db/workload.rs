//! The tenant transaction every profile of `bench db` runs, the communities
//! it runs against, and how its outcomes are counted.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use chrono::Utc;
use rand::{rngs::SmallRng, Rng};
use store::{
    repo::{AuditAction, AuditEntry, MemberUpsert},
    Store, StoreError, TenantId,
};
use wire::{GuildId, UserId};

use super::super::recorder::Recorder;

/// Seeded guild ids live far above real snowflakes of today so a bench run
/// against a shared database cannot collide with real communities. The
/// pgbench script (`deploy/bench/tenant_tx.pgbench`) draws from the same
/// ranges.
pub const BENCH_GUILD_BASE: i64 = 8_000_000_000_000_000_000;
pub const BENCH_USER_BASE: i64 = 7_000_000_000_000_000_000;
const RULES_PER_COMMUNITY: i64 = 3;

/// The seeded communities of one database and their members' count.
#[derive(Clone)]
pub struct Tenants {
    pub ids: Vec<TenantId>,
    pub members: u32,
}

impl Tenants {
    /// A random community and one of its seeded members, as the pgbench
    /// script draws them.
    pub fn pick(&self, rng: &mut SmallRng) -> Option<(TenantId, UserId)> {
        let tenant = *self.ids.get(rng.random_range(0..self.ids.len().max(1)))?;
        let offset = i64::from(rng.random_range(0..self.members.max(1)));
        let user = u64::try_from(BENCH_USER_BASE + offset)
            .ok()
            .and_then(UserId::new)?;
        Some((tenant, user))
    }
}

pub async fn seed(store: &Store, communities: u32, members: u32) -> Result<Tenants, StoreError> {
    let ids = provision(store, communities).await?;
    for &tenant in &ids {
        let tx = store.begin(tenant).await?;
        tx.seed()
            .members(BENCH_USER_BASE..=BENCH_USER_BASE + i64::from(members) - 1)
            .await?;
        tx.seed().score_rules(RULES_PER_COMMUNITY).await?;
        tx.commit().await?;
    }
    Ok(Tenants { ids, members })
}

/// The bench communities (guilds `BENCH_GUILD_BASE` onwards), empty: what a
/// pgbench script that draws `:communities` guilds from that base needs.
/// Provisioning is idempotent, so a second call returns the same tenants.
pub async fn provision(store: &Store, communities: u32) -> Result<Vec<TenantId>, StoreError> {
    let mut ids = Vec::with_capacity(communities as usize);
    for i in 0..i64::from(communities) {
        let guild = u64::try_from(BENCH_GUILD_BASE + i)
            .ok()
            .and_then(GuildId::new)
            .ok_or_else(|| StoreError::InvalidSetting {
                setting: "communities",
                reason: format!("no Discord id for bench community {i}"),
            })?;
        ids.push(
            store
                .directory()
                .provision_guild(guild, &format!("bench community {i}"))
                .await?,
        );
    }
    Ok(ids)
}

/// Opens every connection of the pool (and, behind PgBouncer, its server
/// connections) before the clock starts, as a running worker's pool is:
/// the figures are for transactions, not for TCP and SCRAM handshakes.
pub async fn warm_up(store: &Store, tenants: &Tenants) -> Result<(), StoreError> {
    let Some(&tenant) = tenants.ids.first() else {
        return Ok(());
    };
    let size = store.config().pool_size;
    let transactions = (0..size).map(|_| async move {
        let tx = store.begin(tenant).await?;
        // A statement makes PgBouncer give it a server connection (a
        // transaction begins with its first statement).
        tx.rules().list_enabled().await?;
        // Hold every connection at once, so the pool has to open them all.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.commit().await
    });
    futures::future::try_join_all(transactions).await?;
    Ok(())
}

/// One tenant transaction: read the member's profile and the enabled rules,
/// upsert the profile and append an audit row. Returns how many rows it saw
/// that belong to another tenant (always 0 unless isolation is broken).
pub async fn transaction(store: &Store, tenant: TenantId, user: UserId) -> Result<u64, StoreError> {
    let tx = store.begin(tenant).await?;
    let mut foreign = 0u64;
    let mut check = |owner: TenantId| {
        if owner != tenant {
            foreign += 1;
        }
    };
    // Statements that do not depend on each other go out together:
    // tokio-postgres pipelines requests issued concurrently on one
    // connection, so each pair costs one round trip.
    let profiles = tx.profiles();
    let rules = tx.rules();
    let (existing, enabled) =
        tokio::try_join!(profiles.find_by_discord_user(user), rules.list_enabled())?;
    if let Some(p) = existing {
        check(p.community_id);
    }
    for rule in enabled {
        check(rule.community_id);
    }
    let member = MemberUpsert {
        discord_user_id: user,
        role_ids: Vec::new(),
        joined_at: Utc::now(),
    };
    let entry =
        AuditEntry::system(AuditAction::BenchVisit).target("discord_user", user.to_string());
    // The writes, with the commit behind them in their round trip.
    let (profile, audit) = tx
        .commit_with(async |tx| {
            let (profiles, audit_log) = (tx.profiles(), tx.audit());
            tokio::try_join!(profiles.upsert_member(&member), audit_log.append(&entry))
        })
        .await?;
    check(profile.community_id);
    check(audit.community_id);
    Ok(foreign)
}

/// Counts a transaction's outcome into `recorder`; logs the first few
/// failures of a run (`logged` counts them), enough to diagnose without
/// flooding the terminal.
pub fn record(
    recorder: &Recorder,
    logged: &AtomicU32,
    latency: Duration,
    outcome: Result<u64, StoreError>,
) {
    match outcome {
        Ok(foreign) => {
            recorder.success(latency);
            if foreign > 0 {
                recorder
                    .cross_tenant_rows
                    .fetch_add(foreign, Ordering::Relaxed);
            }
        }
        Err(e) => {
            let counter = if e.is_connection_error() {
                &recorder.connection_errors
            } else {
                &recorder.query_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if logged.fetch_add(1, Ordering::Relaxed) < 5 {
                tracing::warn!(error = %e, "bench transaction failed");
            }
        }
    }
}
