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
        check_min_read_age: Duration::ZERO,
    }
}

/// An evaluator of the default configuration (no chains: these tests' rules
/// read none).
fn evaluator() -> Arc<eligibility::Evaluator> {
    Arc::new(eligibility::Evaluator::new(&Default::default()).unwrap())
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
    let evaluator = evaluator();

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
    let before = Utc::now();
    let report = accepting.scan_due().await.unwrap();
    assert_eq!(report.granted, 3);
    // Each member's slot in the next period (spread over it by a hash, so
    // it may fall anywhere in it — not the claim's 15 minutes).
    let rows = db
        .admin()
        .await
        .query(
            "SELECT discord_user_id, next_check_at FROM profiles ORDER BY discord_user_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let user = UserId::new(row.get::<_, i64>(0) as u64).unwrap();
        let at: Option<chrono::DateTime<Utc>> = row.get(1);
        let expected = domain::role_sync::next_check(tenant, user, PERIOD, before);
        let at = at.expect("a completed check schedules the next one");
        assert!(
            (at - expected).num_seconds().abs() < 5,
            "user {user}: next check at {at}, its slot is {expected}"
        );
    }
}

/// Records the order of role changes, by guild.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<GuildId>>>);

impl RoleWriter for Recorder {
    async fn change_role(
        &self,
        change: RoleChange,
        _priority: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(change.guild_id);
        }
        Ok(())
    }
}

/// A community with `members` present members and a rule every one of them
/// meets (score ≥ 0), so each check grants one role.
async fn community(store: &store::Store, guild: u64, members: u64) -> store::TenantId {
    let guild = GuildId::new(guild).unwrap();
    let tenant = store
        .directory()
        .provision_guild(guild, "scan")
        .await
        .unwrap();
    add_members(store, tenant, 1..=members).await;
    let tx = store.begin(tenant).await.unwrap();
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
    tenant
}

fn small_batches() -> RoleSyncConfig {
    RoleSyncConfig {
        scan_batch: 2,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn communities_take_turns_so_a_backlog_delays_others_by_one_batch() {
    let db = TestDb::create("domain_scan_turns").await;
    let store = db.store(4).await;
    let a = community(&store, 911, 0).await;
    let b = community(&store, 912, 0).await;
    // The backlog goes to the community visited first (id order), where it
    // would hold up the other longest.
    let ((big, _), (small, small_guild)) = if a.to_string() < b.to_string() {
        ((a, 911), (b, 912))
    } else {
        ((b, 912), (a, 911))
    };
    add_members(&store, big, 1..=10).await;
    add_members(&store, small, 1..=2).await;
    let recorder = Recorder::default();
    let evaluator = evaluator();
    let sync = RoleSync::new(store.clone(), evaluator, recorder.clone(), small_batches());
    assert_eq!(sync.scan_due().await.unwrap().granted, 12);
    let order = recorder.0.lock().unwrap().clone();
    let small_guild = GuildId::new(small_guild).unwrap();
    let last_small = order
        .iter()
        .rposition(|g| *g == small_guild)
        .expect("the small community was checked");
    // One batch of the backlog (2 changes), then the small community's 2.
    assert_eq!(
        last_small, 3,
        "the small community waited behind the backlog: {order:?}"
    );
}

async fn add_members(
    store: &store::Store,
    tenant: store::TenantId,
    users: std::ops::RangeInclusive<u64>,
) {
    let tx = store.begin(tenant).await.unwrap();
    for user in users {
        tx.profiles()
            .upsert_member(&MemberUpsert {
                discord_user_id: UserId::new(user).unwrap(),
                role_ids: vec![],
                joined_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_that_fails_does_not_stop_the_pass_for_the_others() {
    let db = TestDb::create("domain_scan_failure").await;
    let store = db.store(4).await;
    let a = community(&store, 921, 2).await;
    let b = community(&store, 922, 2).await;
    // Corrupt the community the scan visits first, so that reading its
    // members fails (a role id the store refuses to read back).
    let first = if a.to_string() < b.to_string() { a } else { b };
    db.admin()
        .await
        .batch_execute(&format!(
            "UPDATE profiles SET role_ids = '{{-5}}' WHERE community_id = '{first}'"
        ))
        .await
        .unwrap();
    let evaluator = evaluator();
    let sync = RoleSync::new(store.clone(), evaluator, Accepting, config());
    let report = sync.scan_due().await.expect("the pass completes");
    assert_eq!(report.failed_communities, 1);
    assert_eq!(report.granted, 2, "the healthy community was checked");
}

/// Grants that wait, the first time, until told to go on: a check caught in
/// the middle, for something to happen to its members meanwhile.
#[derive(Clone)]
struct Paused {
    reached: Arc<tokio::sync::Notify>,
    go_on: Arc<tokio::sync::Notify>,
}

impl RoleWriter for Paused {
    async fn change_role(
        &self,
        _change: RoleChange,
        _priority: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        self.reached.notify_one();
        self.go_on.notified().await;
        Ok(())
    }
}

fn users(ids: std::ops::RangeInclusive<u64>) -> Vec<UserId> {
    ids.map(|u| UserId::new(u).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_checked_on_request_is_not_checked_again_by_the_scan_before_a_period() {
    let db = TestDb::create("domain_scan_checked_on_request").await;
    let store = db.store(4).await;
    let tenant = community(&store, 951, 3).await;
    let sync = RoleSync::new(store.clone(), evaluator(), Accepting, config());
    // The check each join asks for.
    let before = Utc::now();
    let report = sync
        .check_members(
            tenant,
            GuildId::new(951).unwrap(),
            &users(1..=3),
            CheckPriority::Interactive,
            "joined",
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.granted, 3);

    // The scan has nobody to check: the join's check counts as their check
    // this period (checking them again only doubled every join's work).
    let scan = sync.scan_due().await.unwrap();
    assert_eq!(
        scan.members, 0,
        "the scan checked members whose check had just committed"
    );
    for user in users(1..=3) {
        let at: Option<chrono::DateTime<Utc>> = db
            .admin()
            .await
            .query_one(
                "SELECT next_check_at FROM profiles WHERE discord_user_id = $1",
                &[&(u64::from(user) as i64)],
            )
            .await
            .unwrap()
            .get(0);
        let expected = domain::role_sync::next_check(tenant, user, PERIOD, before);
        let at = at.expect("a completed check schedules the next one");
        assert!(
            (at - expected).num_seconds().abs() < 5,
            "user {user}: next check at {at}, its slot is {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_made_due_while_their_check_runs_stays_due() {
    let db = TestDb::create("domain_scan_due_meanwhile").await;
    let store = db.store(4).await;
    let guild = GuildId::new(952).unwrap();
    let tenant = community(&store, 952, 1).await;
    let paused = Paused {
        reached: Arc::new(tokio::sync::Notify::new()),
        go_on: Arc::new(tokio::sync::Notify::new()),
    };
    let sync = Arc::new(RoleSync::new(
        store.clone(),
        evaluator(),
        paused.clone(),
        config(),
    ));
    let check = {
        let sync = sync.clone();
        tokio::spawn(async move {
            sync.check_members(
                tenant,
                guild,
                &users(1..=1),
                CheckPriority::Interactive,
                "joined",
                &tokio_util::sync::CancellationToken::new(),
            )
            .await
        })
    };
    // The check has read the rules and is granting the role when a rule
    // changes: everyone is due for the new rules, this member too.
    paused.reached.notified().await;
    let tx = store.begin(tenant).await.unwrap();
    assert_eq!(tx.profiles().mark_all_due().await.unwrap(), 1);
    tx.commit().await.unwrap();
    paused.go_on.notify_one();
    assert_eq!(check.await.unwrap().unwrap().granted, 1);

    let due = db
        .count(
            "SELECT count(*) FROM profiles WHERE next_check_at IS NULL OR next_check_at <= now()",
        )
        .await;
    assert_eq!(
        due, 1,
        "a check that read the rules before they changed put off the member's check with the new ones for a period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_by_user_leases_present_members_only_and_reports_held_ones_busy() {
    let db = TestDb::create("domain_check_by_user").await;
    let store = db.store(4).await;
    let guild = GuildId::new(953).unwrap();
    let tenant = community(&store, 953, 3).await;
    let [present, held, gone] = [1, 2, 3].map(|u| UserId::new(u).unwrap());
    let stranger = UserId::new(99).unwrap();
    // Another check holds one member; another has left.
    let tx = store.begin(tenant).await.unwrap();
    let leased = tx
        .profiles()
        .lease_members_for_check(&[held, gone, stranger], Duration::from_secs(600))
        .await
        .unwrap();
    tx.profiles().mark_left(gone, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(leased.len(), 2, "a member who had not left yet is leased");
    let tx = store.begin(tenant).await.unwrap();
    tx.profiles()
        .finish_checks(
            &leased
                .iter()
                .filter(|p| p.discord_user_id == gone)
                .map(|p| p.id)
                .collect::<Vec<_>>(),
            &[],
        )
        .await
        .unwrap();
    let again = tx
        .profiles()
        .lease_members_for_check(&[gone], Duration::from_secs(600))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(again.is_empty(), "a member who left was leased for a check");

    let sync = RoleSync::new(store.clone(), evaluator(), Accepting, config());
    let check = |user| sync.check_member(tenant, guild, user, CheckPriority::Interactive, "test");
    let report = check(held).await.unwrap();
    assert_eq!((report.members, report.busy, report.granted), (0, 1, 0));
    for nobody in [gone, stranger] {
        let report = check(nobody).await.unwrap();
        assert_eq!(
            (report.members, report.busy, report.granted),
            (0, 0, 0),
            "user {nobody} is nobody to sync"
        );
    }
    let report = check(present).await.unwrap();
    assert_eq!((report.members, report.busy, report.granted), (1, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_badges_are_being_evaluated_is_not_held_from_their_check() {
    let db = TestDb::create("domain_check_beside_badges").await;
    let store = db.store(4).await;
    let guild = GuildId::new(954).unwrap();
    let tenant = community(&store, 954, 1).await;
    let user = UserId::new(1).unwrap();
    // A badge evaluation of the same member (the follow-up of their join,
    // beside their check) holds the key-share lock that rows referring to
    // a profile take.
    let badges = store.begin(tenant).await.unwrap();
    let profile = badges
        .profiles()
        .find_by_discord_user(user)
        .await
        .unwrap()
        .expect("the member's profile");
    let shared = badges
        .profiles()
        .share_present(&[profile.id])
        .await
        .unwrap();
    assert!(shared.contains(&profile.id), "the member is present");

    let sync = RoleSync::new(store.clone(), evaluator(), Accepting, config());
    let report = sync
        .check_member(tenant, guild, user, CheckPriority::Interactive, "joined")
        .await
        .unwrap();
    assert_eq!(
        (report.members, report.busy, report.granted),
        (1, 0, 1),
        "the check found the member held by a badge evaluation"
    );
    badges.commit().await.unwrap();
}
