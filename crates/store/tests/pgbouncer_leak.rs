//! Tenant transactions through PgBouncer in transaction pooling mode, under
//! load, next to a rogue client that pollutes pooled server connections with
//! a session-level `SET app.current_tenant`. No tenant transaction may ever
//! see or write another tenant's rows.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use rand::Rng;
use store::{repo::MemberUpsert, Store, TenantId};
use testkit::TestDb;
use wire::{GuildId, UserId};

const TASKS: usize = 100;
const TENANTS: u64 = 8;
const RUN_FOR: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Tally {
    transactions: AtomicU64,
    rows_checked: AtomicU64,
    foreign_rows: AtomicU64,
    lost_writes: AtomicU64,
    errors: AtomicU64,
}

async fn worker(store: Store, tenants: Arc<Vec<TenantId>>, tally: Arc<Tally>, task: u64) {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN_FOR {
        let tenant = tenants[rand::rng().random_range(0..tenants.len())];
        // Unique per task and iteration, so every write can be found again.
        let user = UserId::new(1_000_000 + task * 1_000_000 + n).expect("not 0");
        n += 1;
        let result: Result<(), store::StoreError> = async {
            let tx = store.begin(tenant).await?;
            let written = tx
                .profiles()
                .upsert_member(&MemberUpsert {
                    discord_user_id: user,
                    role_ids: vec![],
                    joined_at: Utc::now(),
                })
                .await?;
            if written.community_id != tenant {
                tally.foreign_rows.fetch_add(1, Ordering::Relaxed);
            }
            for p in tx.profiles().list(None, 50).await? {
                tally.rows_checked.fetch_add(1, Ordering::Relaxed);
                if p.community_id != tenant {
                    tally.foreign_rows.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Unfiltered by community: only the policy stands between this
            // query and every tenant's rows.
            let rows = tx
                .raw_query("SELECT DISTINCT community_id FROM profiles")
                .await?;
            for row in rows {
                let id: uuid::Uuid = row.get(0);
                tally.rows_checked.fetch_add(1, Ordering::Relaxed);
                if TenantId::from(id) != tenant {
                    tally.foreign_rows.fetch_add(1, Ordering::Relaxed);
                }
            }
            tx.commit().await?;

            // The write landed in this tenant, and only there.
            let check = store.begin(tenant).await?;
            if check.profiles().find_by_discord_user(user).await?.is_none() {
                tally.lost_writes.fetch_add(1, Ordering::Relaxed);
            }
            check.commit().await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => tally.transactions.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("task {task}: {e}");
                tally.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tenant_transaction_is_affected_by_pooling_or_a_rogue_client() {
    let db = TestDb::create("pgbouncer_leak").await;
    let store = db.store(TASKS).await;
    let mut tenants = Vec::new();
    for g in 1..=TENANTS {
        tenants.push(
            store
                .directory()
                .provision_guild(GuildId::new(g).expect("not 0"), &format!("g{g}"))
                .await
                .unwrap(),
        );
    }
    let tenants = Arc::new(tenants);
    let victim = tenants[0];

    // The rogue: plain sessions through PgBouncer that set the tenant at
    // session level, which sticks to whichever server connection served it.
    let stop = Arc::new(AtomicBool::new(false));
    let polluted = Arc::new(AtomicU64::new(0));
    let mut rogues = Vec::new();
    for _ in 0..4 {
        let client = db.app_pgbouncer().await;
        let stop = stop.clone();
        let polluted = polluted.clone();
        rogues.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client
                    .batch_execute(&format!("SET app.current_tenant = '{victim}'"))
                    .await
                    .is_ok()
                {
                    polluted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..TASKS as u64)
        .map(|t| tokio::spawn(worker(store.clone(), tenants.clone(), tally.clone(), t)))
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in rogues {
        r.await.unwrap();
    }

    let transactions = tally.transactions.load(Ordering::Relaxed);
    eprintln!(
        "{transactions} transactions, {} rows checked, rogue SETs {}",
        tally.rows_checked.load(Ordering::Relaxed),
        polluted.load(Ordering::Relaxed)
    );
    assert!(transactions >= 200, "only {transactions} transactions ran");
    assert!(
        polluted.load(Ordering::Relaxed) > 100,
        "the rogue barely ran"
    );
    assert_eq!(
        tally.foreign_rows.load(Ordering::Relaxed),
        0,
        "rows of another tenant were visible"
    );
    assert_eq!(
        tally.lost_writes.load(Ordering::Relaxed),
        0,
        "writes went missing"
    );
    assert_eq!(
        tally.errors.load(Ordering::Relaxed),
        0,
        "transactions failed"
    );

    // Finally, from the database's point of view: every profile was written
    // under the tenant it claims.
    let admin = db.admin().await;
    let per_tenant: i64 = admin
        .query_one("SELECT count(DISTINCT community_id) FROM profiles", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_tenant as u64, TENANTS);
}
