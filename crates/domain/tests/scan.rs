//! The periodic scan against a real database: a member claimed for a
//! re-check is pushed a full period ahead only once their check committed,
//! so a worker that dies mid-check leaves them due again soon, not skipped
//! for a whole period.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::role_sync::{RoleChange, RoleChangeError, RoleSync, RoleSyncConfig, RoleWriter};
use store::repo::{MemberUpsert, NewRule, RuleType};
use testkit::TestDb;
use wire::check::CheckPriority;
use wire::{GuildId, RoleId, UserId};

/// Discord that never answers: the check hangs in its role change, where a
/// crash would find it.
struct Hanging;

impl RoleWriter for Hanging {
    async fn change_role(
        &self,
        _change: RoleChange,
        _priority: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        std::future::pending().await
    }
}

struct Accepting;

impl RoleWriter for Accepting {
    async fn change_role(
        &self,
        _change: RoleChange,
        _priority: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        Ok(())
    }
}

const PERIOD: Duration = Duration::from_secs(24 * 3600);

fn config() -> RoleSyncConfig {
    RoleSyncConfig {
        grace: Duration::ZERO,
        recheck_period: PERIOD,
        scan_interval: Duration::from_secs(1),
        scan_batch: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_dies_mid_check_leaves_its_members_due_again_soon() {
    let db = TestDb::create("domain_scan_crash").await;
    let store = db.store(4).await;
    let guild = GuildId::new(901).unwrap();
    let tenant = store
        .directory()
        .provision_guild(guild, "scan")
        .await
        .unwrap();
    let tx = store.begin(tenant).await.unwrap();
    for user in 1..=3 {
        tx.profiles()
            .upsert_member(&MemberUpsert {
                discord_user_id: UserId::new(user).unwrap(),
                role_ids: vec![],
                joined_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    tx.rules()
        .create(&NewRule {
            chain: None,
            contract_address: None,
            rule_type: RuleType::ScoreThreshold,
            parameters: serde_json::json!({ "min_score": 0 }),
            role_discord_id: RoleId::new(77).unwrap(),
            tier_mapping: None,
            priority: 0,
            enabled: true,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let evaluator = Arc::new(eligibility::Evaluator::new(&Default::default()).unwrap());

    // The scan claims everyone, then hangs granting the role; it dies there.
    let hanging = RoleSync::new(store.clone(), evaluator.clone(), Hanging, config());
    let scan = tokio::spawn(async move { hanging.scan_due().await });
    testkit::eventually(
        "the scan to claim the members",
        Duration::from_secs(10),
        || async {
            db.count("SELECT count(*) FROM profiles WHERE next_check_at IS NOT NULL")
                .await
                == 3
        },
    )
    .await;
    scan.abort();
    let soon = db
        .count("SELECT count(*) FROM profiles WHERE next_check_at <= now() + interval '15 minutes'")
        .await;
    assert_eq!(
        soon, 3,
        "members claimed by a scan that died are skipped for a whole period"
    );

    // A scan that completes pushes them a period ahead (spread over it).
    db.admin()
        .await
        .batch_execute("UPDATE profiles SET next_check_at = NULL, check_lease_until = NULL")
        .await
        .unwrap();
    let accepting = RoleSync::new(store.clone(), evaluator, Accepting, config());
    let report = accepting.scan_due().await.unwrap();
    assert_eq!(report.granted, 3);
    let later = db
        .count("SELECT count(*) FROM profiles WHERE next_check_at > now() + interval '15 minutes'")
        .await;
    let due = db
        .count("SELECT count(*) FROM profiles WHERE next_check_at IS NULL")
        .await;
    assert_eq!(
        (later, due),
        (3, 0),
        "a completed check schedules the next one a period on"
    );
}
