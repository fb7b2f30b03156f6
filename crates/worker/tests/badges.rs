//! Badges: evaluated after a member joins and in the periodic scan,
//! awarded once, audited.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{guild_join, AsId, Harness};
use domain::{badges, role_sync::RoleSyncConfig};
use eligibility::fake_chain::FakeChain;
use serde_json::json;
use store::{
    repo::{BadgeEvaluator, NewBadge},
    TenantId,
};
use wire::{payload, Envelope, Payload};

const GUILD: u64 = 7_000;

fn sf<M>(v: u64) -> wire::Id<M> {
    v.id()
}

/// A member.join with an explicit join time.
fn join_at(user: u64, seq: u64, joined_at_ms: i64) -> Envelope {
    Envelope::for_dispatch(
        0,
        "badges",
        seq,
        joined_at_ms,
        Payload::MemberJoin(payload::MemberJoin {
            username: format!("user{user}"),
            joined_at: Some(joined_at_ms),
            ..Default::default()
        }),
    )
    .with_guild(GUILD.id())
    .with_user(user.id())
}

fn days_ago_ms(days: i64) -> i64 {
    (Utc::now() - chrono::Duration::days(days)).timestamp_millis()
}

async fn community(h: &Harness) -> TenantId {
    h.publish(&guild_join(GUILD, "badges", 1)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM communities", 1)
            .await,
        1
    );
    h.store
        .directory()
        .resolve_guild(sf(GUILD))
        .await
        .unwrap()
        .unwrap()
}

async fn define(
    h: &Harness,
    tenant: TenantId,
    slug: &str,
    evaluator: BadgeEvaluator,
    criteria: serde_json::Value,
) {
    let tx = h.store.begin(tenant).await.unwrap();
    badges::define(
        &tx,
        &domain::Actor::System,
        &NewBadge {
            slug: slug.into(),
            name: format!("Badge {slug}"),
            description: String::new(),
            evaluator,
            criteria,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Discord user ids holding `slug`, sorted.
async fn holders(h: &Harness, slug: &str) -> Vec<i64> {
    let admin = h.db.admin().await;
    admin
        .query(
            "SELECT p.discord_user_id FROM badge_awards a
             JOIN badges b ON b.id = a.badge_id JOIN profiles p ON p.id = a.profile_id
             WHERE b.slug = $1 ORDER BY 1",
            &[&slug],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn audit_rows(h: &Harness, slug: &str) -> i64 {
    let admin = h.db.admin().await;
    admin
        .query_one(
            "SELECT count(*) FROM audit_logs WHERE action = 'badge.awarded' AND metadata->>'badge' = $1",
            &[&slug],
        )
        .await
        .unwrap()
        .get(0)
}

/// Runs one periodic scan with every present member due.
async fn scan_now(h: &Harness, tenant: TenantId) -> usize {
    let tx = h.store.begin(tenant).await.unwrap();
    tx.profiles().mark_all_due().await.unwrap();
    tx.commit().await.unwrap();
    h.role_sync
        .as_ref()
        .expect("role sync enabled")
        .scan_due()
        .await
        .unwrap()
        .badges_awarded
}

/// Role sync with nothing to sync (no rules), for its periodic scan.
async fn with_scan(h: &mut Harness) -> FakeChain {
    let chain = FakeChain::start().await.unwrap();
    h.enable_role_sync(
        "http://127.0.0.1:9",
        chain.url(),
        RoleSyncConfig {
            scan_interval: Duration::from_secs(3600),
            ..RoleSyncConfig::default()
        },
    );
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn criteria_are_validated_when_a_badge_is_defined() {
    let mut h = Harness::new("badges_validate").await;
    h.start_worker();
    let tenant = community(&h).await;
    let tx = h.store.begin(tenant).await.unwrap();
    let err = badges::define(
        &tx,
        &domain::Actor::System,
        &NewBadge {
            slug: "early".into(),
            name: "Early".into(),
            description: String::new(),
            evaluator: BadgeEvaluator::JoinOrder,
            criteria: json!({"first": "ten"}),
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("criteria.first"), "{err}");
    tx.commit().await.unwrap();
    assert_eq!(h.count("SELECT count(*) FROM badges").await, 0);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_order_awards_the_first_n_only_and_a_redelivered_join_awards_once() {
    let mut h = Harness::new("badges_join_order").await;
    h.start_worker();
    let tenant = community(&h).await;
    define(
        &h,
        tenant,
        "pioneer",
        BadgeEvaluator::JoinOrder,
        json!({"first": 3}),
    )
    .await;
    // One at a time, so "first" is unambiguous.
    let base = days_ago_ms(1);
    let joins: Vec<Envelope> = (1..=6u64)
        .map(|user| join_at(100 + user, 10 + user, base + user as i64 * 1000))
        .collect();
    for (i, join) in joins.iter().enumerate() {
        h.publish(join).await;
        assert_eq!(
            h.wait_for_count("SELECT count(*) FROM profiles", i as i64 + 1)
                .await,
            i as i64 + 1
        );
    }
    // Evaluation follows the join's commit, before its acknowledgement.
    h.drained().await;
    assert_eq!(holders(&h, "pioneer").await, vec![101, 102, 103]);
    assert_eq!(audit_rows(&h, "pioneer").await, 3);

    // Redeliveries (past JetStream's dedupe) change nothing.
    for copy in 0..3 {
        h.publish_with_msg_id(&joins[0], &format!("again-{copy}"))
            .await;
    }
    h.drained().await;
    assert_eq!(holders(&h, "pioneer").await, vec![101, 102, 103]);
    assert_eq!(audit_rows(&h, "pioneer").await, 3);
    let reason: String =
        h.db.admin()
            .await
            .query_one(
                "SELECT metadata->>'reason' FROM audit_logs WHERE action = 'badge.awarded' LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(reason, "one of the first 3 members to join");
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_order_never_exceeds_n_when_joins_arrive_at_once() {
    join_order_burst("badges_join_burst", false).await;
}

/// With role sync, a batch of joins asks for one check of its members, and
/// that check evaluates their badges in the transaction leasing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_order_never_exceeds_n_when_the_joins_checks_award_it() {
    join_order_burst("badges_join_burst_checked", true).await;
}

async fn join_order_burst(label: &str, role_sync: bool) {
    let mut h = Harness::new(label).await;
    let _chain = if role_sync {
        Some(with_scan(&mut h).await)
    } else {
        None
    };
    h.start_worker();
    let tenant = community(&h).await;
    define(
        &h,
        tenant,
        "first-five",
        BadgeEvaluator::JoinOrder,
        json!({"first": 5}),
    )
    .await;
    let base = days_ago_ms(1);
    for user in 1..=30u64 {
        h.publish(&join_at(200 + user, 10 + user, base + user as i64))
            .await;
    }
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 30).await,
        30
    );
    h.drained().await;
    // Whatever order the workers took the joins in: exactly five.
    assert_eq!(holders(&h, "first-five").await.len(), 5);
    assert_eq!(audit_rows(&h, "first-five").await, 5);
    let checks = h.checks_requested().await;
    if role_sync {
        let named: usize = checks.iter().map(|c| c.members().count()).sum();
        assert_eq!(named, 30, "{checks:?}");
    } else {
        assert!(checks.is_empty(), "{checks:?}");
    }
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenure_counts_days_since_joining_on_join_and_in_the_periodic_scan() {
    let mut h = Harness::new("badges_tenure").await;
    let _chain = with_scan(&mut h).await;
    h.start_worker();
    let tenant = community(&h).await;
    define(
        &h,
        tenant,
        "veteran",
        BadgeEvaluator::Tenure,
        json!({"days": 30}),
    )
    .await;
    h.publish(&join_at(301, 10, days_ago_ms(40))).await;
    h.publish(&join_at(302, 11, days_ago_ms(2))).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 2).await,
        2
    );
    // Awarded on join: 40 days ago is long enough, 2 days is not.
    h.drained().await;
    assert_eq!(holders(&h, "veteran").await, vec![301]);

    // Time passes (the join is moved back): the scan awards it.
    h.db.admin()
        .await
        .batch_execute(
            "UPDATE profiles SET joined_at = now() - interval '31 days' WHERE discord_user_id = 302",
        )
        .await
        .unwrap();
    assert_eq!(scan_now(&h, tenant).await, 1);
    assert_eq!(holders(&h, "veteran").await, vec![301, 302]);
    // Nothing new the second time.
    assert_eq!(scan_now(&h, tenant).await, 0);
    assert_eq!(audit_rows(&h, "veteran").await, 2);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_reached_awards_at_or_above_the_tier_along_the_ladder() {
    let mut h = Harness::new("badges_tier").await;
    let _chain = with_scan(&mut h).await;
    h.start_worker();
    let tenant = community(&h).await;
    define(
        &h,
        tenant,
        "silver-plus",
        BadgeEvaluator::TierReached,
        json!({"tier": "silver", "ladder": ["bronze", "silver", "gold"]}),
    )
    .await;
    define(
        &h,
        tenant,
        "gold-only",
        BadgeEvaluator::TierReached,
        json!({"tier": "gold"}),
    )
    .await;
    for (i, user) in [401u64, 402, 403].iter().enumerate() {
        h.publish(&join_at(*user, 10 + i as u64, days_ago_ms(1)))
            .await;
    }
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 3).await,
        3
    );
    // Default tier "member": nothing yet.
    h.drained().await;
    assert_eq!(h.count("SELECT count(*) FROM badge_awards").await, 0);
    let tx = h.store.begin(tenant).await.unwrap();
    for (user, tier) in [(401, "gold"), (402, "silver"), (403, "bronze")] {
        tx.profiles()
            .set_standing(sf(user), 0, tier, None)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(scan_now(&h, tenant).await, 3);
    assert_eq!(holders(&h, "silver-plus").await, vec![401, 402]);
    assert_eq!(holders(&h, "gold-only").await, vec![401]);
    assert_eq!(audit_rows(&h, "silver-plus").await, 2);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_grant_badges_come_only_from_the_grant_api() {
    let mut h = Harness::new("badges_manual").await;
    let _chain = with_scan(&mut h).await;
    h.start_worker();
    let tenant = community(&h).await;
    define(&h, tenant, "helper", BadgeEvaluator::ManualGrant, json!({})).await;
    h.publish(&join_at(501, 10, days_ago_ms(400))).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 1).await,
        1
    );
    assert_eq!(scan_now(&h, tenant).await, 0);
    assert!(holders(&h, "helper").await.is_empty());

    let tx = h.store.begin(tenant).await.unwrap();
    assert!(
        badges::grant(&tx, "helper", sf(501), "admin-1", "answered questions")
            .await
            .unwrap()
    );
    assert!(!badges::grant(&tx, "helper", sf(501), "admin-1", "again")
        .await
        .unwrap());
    assert!(matches!(
        badges::grant(&tx, "nope", sf(501), "admin-1", "").await,
        Err(badges::BadgeError::UnknownBadge(_))
    ));
    tx.commit().await.unwrap();
    assert_eq!(holders(&h, "helper").await, vec![501]);
    let admin = h.db.admin().await;
    let row = admin
        .query_one(
            "SELECT actor_type, actor_id, metadata->>'reason' FROM audit_logs WHERE action = 'badge.awarded'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "admin");
    assert_eq!(row.get::<_, String>(1), "admin-1");
    assert_eq!(row.get::<_, String>(2), "answered questions");
    h.stop_worker().await;
}
