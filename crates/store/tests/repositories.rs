//! The typed repositories, through PgBouncer as the runtime role.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;
use store::{
    repo::{
        ActorType, AuditAction, AuditEntry, BadgeEvaluator, Linked, MemberFilter, MemberUpsert,
        NewBadge, NewRule, RuleType, WalletProof,
    },
    StoreError, WalletAddress, WalletError,
};
use testkit::TestDb;

/// A test id of whatever kind the call site needs.
fn sf<M>(v: u64) -> wire::Id<M> {
    wire::Id::new(v).expect("test ids are not 0")
}

fn member(user: u64) -> MemberUpsert {
    MemberUpsert {
        discord_user_id: sf(user),
        role_ids: vec![sf(11), sf(12)],
        joined_at: Utc::now(),
    }
}

#[tokio::test]
async fn provisioning_resolves_reactivates_and_keeps_one_community_per_guild() {
    let db = TestDb::create("repo_directory").await;
    let store = db.store(2).await;
    let dir = store.directory();
    assert_eq!(dir.resolve_guild(sf(42)).await.unwrap(), None);
    let id = dir.provision_guild(sf(42), "First name").await.unwrap();
    assert_eq!(dir.resolve_guild(sf(42)).await.unwrap(), Some(id));

    let tx = store.begin(id).await.unwrap();
    let c = tx.communities().get().await.unwrap();
    assert_eq!((c.name.as_str(), c.active), ("First name", true));
    assert_eq!(c.subscription_tier.as_str(), "free");
    assert_eq!(c.theme_id, "default");
    let inactive = tx.communities().set_active(false).await.unwrap();
    assert!(!inactive.active);
    assert!(inactive.updated_at >= c.updated_at);
    tx.commit().await.unwrap();

    // A guild re-adding the bot gets its old community back, active.
    let again = dir.provision_guild(sf(42), "Renamed").await.unwrap();
    assert_eq!(again, id);

    // Discord ids fit 63 bits; a larger one is refused before it could be
    // stored as a negative bigint.
    let err = dir
        .provision_guild(sf(1 << 63), "Too big")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IdOutOfRange {
                column: "discord_guild_id",
                ..
            }
        ),
        "{err}"
    );
    let tx = store.begin(id).await.unwrap();
    let c = tx.communities().get().await.unwrap();
    assert_eq!((c.name.as_str(), c.active), ("Renamed", true));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_community_is_announced_once_whoever_asks_first() {
    let db = TestDb::create("repo_announce").await;
    let store = db.store(4).await;
    let id = store.directory().provision_guild(sf(7), "g").await.unwrap();
    // Concurrent guild events: exactly one claims the announcement, and a
    // rolled-back claim leaves it unclaimed.
    let tx = store.begin(id).await.unwrap();
    assert!(tx.communities().claim_announcement().await.unwrap());
    tx.rollback().await.unwrap();
    let claims = futures::future::join_all((0..4).map(|_| async {
        let tx = store.begin(id).await.unwrap();
        let first = tx.communities().claim_announcement().await.unwrap();
        tx.commit().await.unwrap();
        first
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
}

#[tokio::test]
async fn profiles_follow_members_through_join_update_leave_and_rejoin() {
    let db = TestDb::create("repo_profiles").await;
    let store = db.store(2).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let tx = store.begin(t).await.unwrap();
    let p = tx.profiles().upsert_member(&member(500)).await.unwrap();
    assert_eq!(p.role_ids, vec![sf(11), sf(12)]);
    assert_eq!(p.community_id, t);
    let first_join = p.joined_at.unwrap();

    let left = tx
        .profiles()
        .mark_left(sf(500), Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(left.left_at.is_some());
    assert!(tx
        .profiles()
        .mark_left(sf(501), Utc::now())
        .await
        .unwrap()
        .is_none());

    let mut rejoin = member(500);
    rejoin.role_ids = vec![sf(13)];
    rejoin.joined_at = Utc::now() + ChronoDuration::hours(1);
    let back = tx.profiles().upsert_member(&rejoin).await.unwrap();
    assert_eq!(back.id, p.id);
    assert_eq!(back.left_at, None);
    assert_eq!(back.role_ids, vec![sf(13)]);
    assert_eq!(back.joined_at, Some(first_join), "first join time is kept");

    let ranked = tx
        .profiles()
        .set_standing(sf(500), 120, "gold", Some(3))
        .await
        .unwrap();
    assert_eq!(
        (ranked.score, ranked.tier.as_str(), ranked.current_rank),
        (120, "gold", Some(3))
    );
    for u in 600..610 {
        tx.profiles().upsert_member(&member(u)).await.unwrap();
    }
    let page = tx.profiles().list(Some(sf(600)), 5).await.unwrap();
    let ids: Vec<u64> = page.iter().map(|p| p.discord_user_id.get()).collect();
    assert_eq!(ids, vec![601, 602, 603, 604, 605]);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn role_snapshots_of_many_members_are_written_in_one_statement_and_only_theirs() {
    let db = TestDb::create("repo_set_roles_many").await;
    let store = db.store(2).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let other = store.directory().provision_guild(sf(2), "h").await.unwrap();
    for tenant in [t, other] {
        let tx = store.begin(tenant).await.unwrap();
        for u in [500, 501, 502] {
            tx.profiles().upsert_member(&member(u)).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    let tx = store.begin(t).await.unwrap();
    let (gated, none): (Vec<wire::RoleId>, Vec<wire::RoleId>) = (vec![sf(11), sf(40)], vec![]);
    tx.profiles()
        .set_roles_many(&[(sf(500), &gated), (sf(501), &none), (sf(999), &gated)])
        .await
        .unwrap();
    tx.profiles().set_roles_many(&[]).await.unwrap();
    tx.commit().await.unwrap();

    let roles_of = async |tenant, user: u64| {
        let tx = store.begin(tenant).await.unwrap();
        let p = tx.profiles().find_by_discord_user(sf(user)).await.unwrap();
        tx.commit().await.unwrap();
        p.map(|p| p.role_ids)
    };
    assert_eq!(roles_of(t, 500).await, Some(vec![sf(11), sf(40)]));
    assert_eq!(roles_of(t, 501).await, Some(vec![]));
    assert_eq!(
        roles_of(t, 502).await,
        Some(vec![sf(11), sf(12)]),
        "not listed, not changed"
    );
    assert_eq!(
        roles_of(t, 999).await,
        None,
        "no profile is made for a stranger"
    );
    for u in [500, 501] {
        assert_eq!(
            roles_of(other, u).await,
            Some(vec![sf(11), sf(12)]),
            "another community's member of the same id is untouched"
        );
    }
}

#[tokio::test]
async fn the_profile_functions_return_the_columns_every_other_profile_read_returns() {
    // The profile functions of migrations 0019 and 0020 return the
    // `member_profile` type; every other read of a profile selects
    // `PROFILE_COLUMNS`. One `Profile::from_row` reads both.
    let db = TestDb::create("repo_profile_type").await;
    let store = db.store(1).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let tx = store.begin(t).await.unwrap();
    let typed: Vec<String> = tx
        .raw_query_one(
            "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
             WHERE attrelid = 'member_profile'::regclass AND attnum > 0 AND NOT attisdropped",
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    // Each column is the last word of its item, `(SELECT …) AS wallets`
    // included; the subquery's own commas are inside parentheses.
    let mut named = Vec::new();
    let (mut depth, mut item) = (0, String::new());
    for c in store::repo::PROFILE_COLUMNS.chars().chain([',']) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                let last = item.split_whitespace().last().unwrap_or_default();
                named.push(last.to_owned());
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    assert_eq!(typed, named);
}

#[tokio::test]
async fn a_member_holds_several_wallets_and_a_proof_moves_one_from_another_member() {
    let db = TestDb::create("repo_member_wallets").await;
    let store = db.store(2).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let w = |n: u8| WalletAddress::parse(&format!("0x{}", hex_byte(n).repeat(20))).unwrap();

    let tx = store.begin(a).await.unwrap();
    let one = tx.profiles().upsert_member(&member(1)).await.unwrap();
    let two = tx.profiles().upsert_member(&member(2)).await.unwrap();
    let wallets = tx.member_wallets();
    assert_eq!(
        wallets.link(one.id, &w(1), WalletProof::Eoa).await.unwrap(),
        Linked::New
    );
    assert_eq!(
        wallets
            .link(one.id, &w(2), WalletProof::Erc1271)
            .await
            .unwrap(),
        Linked::New
    );
    assert_eq!(
        wallets.link(one.id, &w(1), WalletProof::Eoa).await.unwrap(),
        Linked::Again
    );
    let profile = tx
        .profiles()
        .find_by_discord_user(sf(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(profile.wallets, [w(1), w(2)], "in the order linked");
    let listed = wallets.of(one.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].proof, WalletProof::Erc1271);
    assert_eq!(listed[1].discord_user_id, sf(1));

    // Member two proves wallet 2: it moves, and the link says from whom.
    assert_eq!(
        wallets.link(two.id, &w(2), WalletProof::Eoa).await.unwrap(),
        Linked::MovedFrom {
            profile_id: one.id,
            user: sf(1)
        }
    );
    let one_now = tx
        .profiles()
        .find_by_discord_user(sf(1))
        .await
        .unwrap()
        .unwrap();
    let two_now = tx
        .profiles()
        .find_by_discord_user(sf(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one_now.wallets, [w(1)]);
    assert_eq!(two_now.wallets, [w(2)]);
    assert_eq!(
        tx.profiles()
            .find_by_wallet(&w(2))
            .await
            .unwrap()
            .map(|p| p.discord_user_id),
        Some(sf(2))
    );

    // Unlinking only works on one's own wallet.
    assert!(!wallets.unlink(one.id, &w(2)).await.unwrap());
    assert!(wallets.unlink(one.id, &w(1)).await.unwrap());
    let one_now = tx
        .profiles()
        .find_by_discord_user(sf(1))
        .await
        .unwrap()
        .unwrap();
    assert!(one_now.wallets.is_empty());

    // Members filter on having any wallet.
    let with = tx
        .profiles()
        .search(&MemberFilter {
            has_wallet: Some(true),
            limit: 10,
            ..MemberFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        with.iter().map(|p| p.discord_user_id).collect::<Vec<_>>(),
        [sf(2)]
    );
    tx.commit().await.unwrap();
}

fn hex_byte(n: u8) -> String {
    format!("{n:02x}")
}

#[tokio::test]
async fn wallets_are_normalised_unique_per_community_and_bad_ones_are_not_stored() {
    let db = TestDb::create("repo_wallets").await;
    let store = db.store(2).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let b = store.directory().provision_guild(sf(2), "b").await.unwrap();
    let wallet = WalletAddress::parse("0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();

    let tx = store.begin(a).await.unwrap();
    tx.profiles().upsert_member(&member(1)).await.unwrap();
    tx.profiles().upsert_member(&member(2)).await.unwrap();
    let linked = tx.profiles().link_wallet(sf(1), &wallet).await.unwrap();
    let linked: Vec<&str> = linked.wallets.iter().map(WalletAddress::as_str).collect();
    assert_eq!(linked, ["0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    let found = tx
        .profiles()
        .find_by_wallet(&wallet)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.discord_user_id, sf(1));
    tx.commit().await.unwrap();

    // The same wallet on another member of the same community is refused.
    let tx = store.begin(a).await.unwrap();
    let err = tx.profiles().link_wallet(sf(2), &wallet).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    drop(tx);

    // Another community is independent.
    let tx = store.begin(b).await.unwrap();
    tx.profiles().upsert_member(&member(1)).await.unwrap();
    tx.profiles().link_wallet(sf(1), &wallet).await.unwrap();
    tx.commit().await.unwrap();

    // Malformed input never reaches the database: it is a typed error.
    for bad in [
        "0x1234",
        "not a wallet",
        "0xgggggggggggggggggggggggggggggggggggggggg",
    ] {
        let err = WalletAddress::parse(bad).unwrap_err();
        assert!(matches!(
            err,
            WalletError::Length { .. } | WalletError::NotHex { .. }
        ));
        let as_store: StoreError = err.into();
        assert!(
            as_store.to_string().contains("wallet address"),
            "{as_store}"
        );
    }
    // And the database refuses one that bypasses the type.
    let tx = store.begin(a).await.unwrap();
    let err = tx
        .raw_query(
            "INSERT INTO member_wallets (community_id, profile_id, address, proof)
             SELECT community_id, id, 'ABC', 'eoa' FROM profiles WHERE discord_user_id = 2",
        )
        .await
        .unwrap_err();
    assert_eq!(err.sql_state(), Some("23514"), "{err}");
    drop(tx);
    let admin = db.admin().await;
    let stored: i64 = admin
        .query_one("SELECT count(*) FROM member_wallets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn rules_list_enabled_by_priority_and_one_rule_per_role() {
    let db = TestDb::create("repo_rules").await;
    let store = db.store(2).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let tx = store.begin(t).await.unwrap();
    let contract = WalletAddress::parse(&format!("0x{}", "12".repeat(20))).unwrap();
    let token = NewRule {
        chain: Some("ethereum".into()),
        contract_address: Some(contract.clone()),
        rule_type: RuleType::TokenBalance,
        parameters: json!({"min_balance": "1000"}),
        role_discord_id: sf(900),
        tier_mapping: Some("holder".into()),
        priority: 5,
        enabled: true,
    };
    let low = tx.rules().create(&token).await.unwrap();
    let high = tx
        .rules()
        .create(&NewRule {
            rule_type: RuleType::ScoreThreshold,
            chain: None,
            contract_address: None,
            parameters: json!({"min_score": 50}),
            role_discord_id: sf(901),
            priority: 10,
            ..token.clone()
        })
        .await
        .unwrap();
    let disabled = tx
        .rules()
        .create(&NewRule {
            role_discord_id: sf(902),
            enabled: false,
            ..token.clone()
        })
        .await
        .unwrap();
    let enabled: Vec<_> = tx
        .rules()
        .list_enabled()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(enabled, vec![high.id, low.id]);
    assert_eq!(low.contract_address, Some(contract));

    tx.rules()
        .set_enabled(disabled.id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tx.rules().list_enabled().await.unwrap().len(), 3);
    assert!(tx.rules().delete(high.id).await.unwrap());
    assert!(!tx.rules().delete(high.id).await.unwrap());
    tx.commit().await.unwrap();

    let tx = store.begin(t).await.unwrap();
    let dup = tx.rules().create(&token).await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup:?}");
    drop(tx);

    // On-chain rules need a chain and a contract.
    let tx = store.begin(t).await.unwrap();
    let err = tx
        .rules()
        .create(&NewRule {
            chain: None,
            role_discord_id: sf(903),
            ..token
        })
        .await
        .unwrap_err();
    assert_eq!(err.sql_state(), Some("23514"), "{err}");
}

#[tokio::test]
async fn badges_are_awarded_once_and_listed_per_profile() {
    let db = TestDb::create("repo_badges").await;
    let store = db.store(2).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let tx = store.begin(t).await.unwrap();
    let p = tx.profiles().upsert_member(&member(7)).await.unwrap();
    let badge = tx
        .badges()
        .define(&NewBadge {
            slug: "pioneer".into(),
            name: "Pioneer".into(),
            description: "one of the first 100".into(),
            evaluator: BadgeEvaluator::JoinOrder,
            criteria: json!({"first": 100}),
        })
        .await
        .unwrap();
    assert!(tx
        .badges()
        .award(badge.id, p.id, "joined early")
        .await
        .unwrap());
    assert!(
        !tx.badges().award(badge.id, p.id, "again").await.unwrap(),
        "second award changed something"
    );
    let awards = tx.badges().awards_for(p.id).await.unwrap();
    assert_eq!(awards.len(), 1);
    assert_eq!(awards[0].badge.slug, "pioneer");
    assert_eq!(awards[0].reason, "joined early");

    // Redefining by slug updates in place.
    let renamed = tx
        .badges()
        .define(&NewBadge {
            slug: "pioneer".into(),
            name: "Trailblazer".into(),
            description: String::new(),
            evaluator: BadgeEvaluator::JoinOrder,
            criteria: json!({"first": 50}),
        })
        .await
        .unwrap();
    assert_eq!(renamed.id, badge.id);
    assert_eq!(tx.badges().list().await.unwrap().len(), 1);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn audit_entries_append_and_read_newest_first() {
    let db = TestDb::create("repo_audit").await;
    let store = db.store(2).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let tx = store.begin(t).await.unwrap();
    let steps = [
        AuditAction::MemberJoined,
        AuditAction::MemberUpdated,
        AuditAction::MemberLeft,
    ];
    for (i, action) in steps.into_iter().enumerate() {
        let mut entry = AuditEntry::system(action)
            .target("profile", "42")
            .metadata(json!({"i": i}));
        entry.ip_address = Some("127.0.0.1".parse().unwrap());
        let rec = tx.audit().append(&entry).await.unwrap();
        assert_eq!(rec.community_id, t);
        assert_eq!(rec.actor_type, ActorType::System);
    }
    let recent = tx.audit().recent(2).await.unwrap();
    let actions: Vec<_> = recent.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, vec!["member.left", "member.updated"]);
    assert_eq!(recent[0].metadata, json!({"i": 2}));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn commit_with_commits_behind_the_last_statement_or_rolls_back_with_its_error() {
    let db = TestDb::create("repo_commit_with").await;
    let store = db.store(1).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let present = async |user: u64| {
        let tx = store.begin(t).await.unwrap();
        let found = tx.profiles().find_by_discord_user(sf(user)).await.unwrap();
        tx.commit().await.unwrap();
        found.is_some()
    };

    // A write, then the last statement with COMMIT behind it: both land,
    // the statement's rows come back, the connection goes back to the pool.
    let tx = store.begin(t).await.unwrap();
    tx.profiles().upsert_member(&member(1)).await.unwrap();
    let entry = AuditEntry::system(AuditAction::MemberJoined).target("profile", "1");
    let rec = tx
        .commit_with(async |tx| tx.audit().append(&entry).await)
        .await
        .unwrap();
    assert_eq!(rec.community_id, t);
    assert_eq!(
        store.pool_status(),
        (1, 1),
        "a committed connection is reused"
    );
    assert!(present(1).await);

    // The transaction's only statement: BEGIN, it and COMMIT in one go.
    let tx = store.begin(t).await.unwrap();
    tx.commit_with(async |tx| tx.profiles().upsert_member(&member(2)).await)
        .await
        .unwrap();
    assert!(present(2).await);

    // The last statement fails: its error is the transaction's, and what
    // came before it is rolled back, though COMMIT went out.
    let tx = store.begin(t).await.unwrap();
    tx.profiles().upsert_member(&member(3)).await.unwrap();
    let bad = AuditEntry::system(AuditAction::MemberJoined).target("profile", "nul \0 here");
    match tx
        .commit_with(async |tx| tx.audit().append(&bad).await)
        .await
    {
        Err(StoreError::Unstorable { .. }) => {}
        other => panic!("the failed statement's error was not returned: {other:?}"),
    }
    assert!(
        !present(3).await,
        "a write before the failed statement was committed"
    );

    // `last` sends nothing: a plain commit.
    let tx = store.begin(t).await.unwrap();
    tx.profiles().upsert_member(&member(4)).await.unwrap();
    assert_eq!(tx.commit_with(async |_| Ok(7)).await.unwrap(), 7);
    assert!(present(4).await);

    // Statements pipelined together all go ahead of COMMIT.
    let tx = store.begin(t).await.unwrap();
    tx.commit_with(async |tx| {
        let (a, b) = (tx.profiles(), tx.profiles());
        let (seven, eight) = (member(7), member(8));
        tokio::try_join!(a.upsert_member(&seven), b.upsert_member(&eight))
    })
    .await
    .unwrap();
    assert!(present(7).await && present(8).await);

    // `last` awaits something else before its statement: nothing to ride
    // behind at once, so it is awaited and committed after.
    let tx = store.begin(t).await.unwrap();
    tx.commit_with(async |tx| {
        tokio::task::yield_now().await;
        tx.profiles().upsert_member(&member(9)).await
    })
    .await
    .unwrap();
    assert!(present(9).await);

    // A statement sent after COMMIT went out is refused unsent: it would
    // run outside the transaction.
    let tx = store.begin(t).await.unwrap();
    let second = tx
        .commit_with(async |tx| {
            tx.profiles().upsert_member(&member(5)).await?;
            tx.profiles().upsert_member(&member(6)).await
        })
        .await;
    assert!(
        matches!(second, Err(StoreError::AfterCommit { .. })),
        "a statement after COMMIT: {second:?}"
    );
    assert!(present(5).await, "the statement COMMIT rode behind");
    assert!(!present(6).await, "a statement after COMMIT was sent");
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back_and_does_not_poison_the_pool() {
    let db = TestDb::create("repo_drop").await;
    let store = db.store(1).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    {
        let tx = store.begin(t).await.unwrap();
        tx.profiles().upsert_member(&member(1)).await.unwrap();
        // Dropped without commit.
    }
    // The connection still inside that transaction was closed, not pooled.
    assert_eq!(
        store.pool_status().0,
        0,
        "an open transaction went back to the pool"
    );
    let tx = store.begin(t).await.unwrap();
    assert!(tx
        .profiles()
        .find_by_discord_user(sf(1))
        .await
        .unwrap()
        .is_none());
    tx.commit().await.unwrap();
    assert_eq!(
        store.pool_status(),
        (1, 1),
        "a committed connection is reused"
    );
}

#[tokio::test]
async fn waiting_for_a_connection_is_counted_and_timed() {
    let db = TestDb::create("repo_pool_waits").await;
    let store = db.store(1).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    static OBSERVED: std::sync::Mutex<Vec<std::time::Duration>> = std::sync::Mutex::new(Vec::new());
    assert!(store.observe_pool_waits(|d| OBSERVED.lock().unwrap().push(d)));
    assert!(
        !store.clone().observe_pool_waits(|_| {}),
        "one observer per pool"
    );
    let before = store.pool_waits();
    // A free connection is taken at once: asked for, not waited for.
    store.begin(t).await.unwrap().commit().await.unwrap();
    let free = store.pool_waits();
    assert_eq!(free.acquisitions - before.acquisitions, 1);
    assert_eq!((free.waits, free.waited), (before.waits, before.waited));

    // The only connection is held: the next caller queues until it is back.
    let held = store.begin(t).await.unwrap();
    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.begin(t).await.unwrap().commit().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        store.pool_waits().waits - free.waits,
        0,
        "counted when it ends"
    );
    held.commit().await.unwrap();
    waiter.await.unwrap();
    let waited = store.pool_waits();
    assert_eq!(waited.acquisitions - free.acquisitions, 2);
    assert_eq!(waited.waits - free.waits, 1);
    let time = waited.waited - free.waited;
    assert!(
        time >= std::time::Duration::from_millis(150) && time < std::time::Duration::from_secs(5),
        "waited {time:?}"
    );
    assert_eq!(
        *OBSERVED.lock().unwrap(),
        [time],
        "the observer saw the one wait"
    );
}

#[tokio::test]
async fn background_work_leaves_a_quarter_of_the_pool_to_the_rest() {
    let db = TestDb::create("repo_pool_background").await;
    let wait = std::time::Duration::from_millis(300);
    let config = store::StoreConfig::from_url(&db.app_pgbouncer_url())
        .and_then(|c| c.with_pool_size(4))
        .unwrap()
        .with_acquire_timeout(wait);
    let store = store::Store::connect(config).await.unwrap();
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    // Handles made apart share one limit: three connections of four.
    let (checks, scans) = (store.background(), store.clone().background());
    let held = vec![
        checks.begin(t).await.unwrap(),
        checks.begin(t).await.unwrap(),
        scans.begin(t).await.unwrap(),
    ];
    let before = store.pool_waits();
    match scans.begin(t).await {
        Err(StoreError::PoolTimeout(after)) => assert_eq!(after, wait),
        Err(e) => panic!("a fourth background transaction failed otherwise: {e}"),
        Ok(_) => panic!("background work took the connection kept for the rest"),
    }
    assert_eq!(
        store.pool_waits().waits - before.waits,
        1,
        "the background wait is counted"
    );
    // The quarter kept back is there at once for the rest.
    let before = store.pool_waits();
    let event = store.begin(t).await.unwrap();
    event.profiles().upsert_member(&member(5)).await.unwrap();
    event.commit().await.unwrap();
    assert_eq!(
        store.pool_waits().waits,
        before.waits,
        "the rest did not wait"
    );
    // One background transaction done: the next one starts.
    let mut held = held;
    held.pop().unwrap().commit().await.unwrap();
    let next = checks.begin(t).await.unwrap();
    assert!(next
        .profiles()
        .find_by_discord_user(sf(5))
        .await
        .unwrap()
        .is_some());
    next.commit().await.unwrap();
    for tx in held {
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn begin_goes_out_with_the_first_statements_even_when_they_are_pipelined() {
    let db = TestDb::create("repo_lazy_begin").await;
    let store = db.store(1).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let b = store.directory().provision_guild(sf(2), "b").await.unwrap();
    let tx = store.begin(b).await.unwrap();
    tx.profiles().upsert_member(&member(5)).await.unwrap();
    tx.commit().await.unwrap();

    // Two first statements issued together: whichever goes first carries
    // BEGIN and the tenant, and both run inside that one transaction.
    let tx = store.begin(a).await.unwrap();
    let setting =
        "SELECT current_setting('app.current_tenant', true), (SELECT count(*) FROM profiles)";
    let (first, second) =
        tokio::try_join!(tx.raw_query_one(setting), tx.raw_query_one(setting)).unwrap();
    for row in [&first, &second] {
        assert_eq!(row.get::<_, String>(0), a.to_string());
        assert_eq!(row.get::<_, i64>(1), 0, "tenant b's member is visible to a");
    }
    // `now()` is the transaction's start, earlier than a later
    // statement's own start only inside a transaction; and what it wrote
    // is gone with the rollback.
    tx.profiles().upsert_member(&member(6)).await.unwrap();
    let in_tx = tx
        .raw_query_one("SELECT now() < statement_timestamp()")
        .await
        .unwrap();
    assert!(
        in_tx.get::<_, bool>(0),
        "statements ran outside a transaction"
    );
    tx.rollback().await.unwrap();
    let tx = store.begin(a).await.unwrap();
    assert!(tx
        .profiles()
        .find_by_discord_user(sf(6))
        .await
        .unwrap()
        .is_none());
    tx.commit().await.unwrap();

    // A transaction that sent nothing has nothing to end: its connection
    // goes straight back to the pool, dropped or committed.
    drop(store.begin(a).await.unwrap());
    assert_eq!(
        store.pool_status(),
        (1, 1),
        "an unused connection was closed"
    );
    store.begin(a).await.unwrap().commit().await.unwrap();
    assert_eq!(store.pool_status(), (1, 1));
}

#[tokio::test]
async fn no_named_prepared_statement_is_left_on_the_connection() {
    // Straight to PostgreSQL with one connection, so the statement below
    // runs on the very session that served every repository call.
    let db = TestDb::create("repo_no_prepared").await;
    let config = store::StoreConfig::from_url(&db.app_direct_url())
        .unwrap()
        .with_pool_size(1)
        .unwrap();
    let store = store::Store::connect(config).await.unwrap();
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    for round in 0..3 {
        let tx = store.begin(t).await.unwrap();
        tx.profiles()
            .upsert_member(&member(round + 1))
            .await
            .unwrap();
        tx.profiles().find_by_discord_user(sf(1)).await.unwrap();
        tx.rules().list_enabled().await.unwrap();
        tx.audit()
            .append(&AuditEntry::system(AuditAction::BenchVisit))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let tx = store.begin(t).await.unwrap();
    let named: i64 = tx
        .raw_query_one("SELECT count(*) FROM pg_prepared_statements")
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(
        named, 0,
        "named prepared statements would break under PgBouncer 1.18"
    );
}

#[tokio::test]
async fn membership_events_apply_in_stream_order_whatever_order_they_arrive_in() {
    use store::repo::{MemberChange, MemberEvent};
    let db = TestDb::create("repo_member_order").await;
    let store = db.store(2).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let event = |seq: i64, change: MemberChange| MemberEvent {
        discord_user_id: sf(77),
        seq,
        at: Utc::now(),
        change,
    };
    let tx = store.begin(t).await.unwrap();
    // The leave (seq 3) is handled before the join (1) and update (2).
    let left = tx
        .profiles()
        .apply_member_event(&event(3, MemberChange::Left))
        .await
        .unwrap()
        .expect("first event applies");
    assert!(left.left_at.is_some());
    for stale in [
        event(
            1,
            MemberChange::Present {
                role_ids: vec![sf(5)],
            },
        ),
        event(
            2,
            MemberChange::Present {
                role_ids: vec![sf(6)],
            },
        ),
    ] {
        assert!(
            tx.profiles()
                .apply_member_event(&stale)
                .await
                .unwrap()
                .is_none(),
            "a stale event changed the profile"
        );
    }
    let p = tx
        .profiles()
        .find_by_discord_user(sf(77))
        .await
        .unwrap()
        .unwrap();
    assert!(
        p.left_at.is_some(),
        "a late join resurrected a member who left"
    );
    assert_eq!(p.last_event_seq, 3);

    // A newer join brings them back with its roles.
    let back = tx
        .profiles()
        .apply_member_event(&event(
            4,
            MemberChange::Present {
                role_ids: vec![sf(9)],
            },
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((back.left_at, back.role_ids.clone()), (None, vec![sf(9)]));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_batch_of_membership_events_has_the_effect_of_applying_them_one_by_one() {
    use store::repo::{MemberChange, MemberEvent};
    let db = TestDb::create("repo_member_batch").await;
    let store = db.store(2).await;
    let one_by_one = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let batched = store.directory().provision_guild(sf(2), "b").await.unwrap();
    let base = Utc::now();
    let event = |user: u64, seq: i64, roles: Option<&[u64]>| MemberEvent {
        discord_user_id: sf(user),
        seq,
        at: base + chrono::Duration::seconds(seq),
        change: match roles {
            Some(roles) => MemberChange::Present {
                role_ids: roles.iter().map(|r| sf(*r)).collect(),
            },
            None => MemberChange::Left,
        },
    };
    // Known before the batch: 77 (seq 5, roles 4); 80 (seq 1, left).
    let before = [event(77, 5, Some(&[4])), event(80, 1, None)];
    let batch = [
        event(77, 3, Some(&[5])), // stale
        event(78, 4, None),       // a member first seen leaving
        event(77, 6, None),       // leaves, keeping roles 4
        event(78, 2, Some(&[6])), // stale: the leave is newer
        event(79, 9, Some(&[])),
        event(77, 7, Some(&[9])), // back
        event(78, 8, Some(&[5])),
        event(79, 10, Some(&[1, 2])),
        event(80, 11, Some(&[3])), // back, first join time now
        event(79, 10, Some(&[7])), // the same position again: not newer
    ];
    let roles_of =
        |outcomes: &[Option<store::repo::AppliedEvent>]| -> Vec<Option<Vec<wire::RoleId>>> {
            outcomes
                .iter()
                .map(|o| o.as_ref().map(|o| o.role_ids.clone()))
                .collect()
        };
    let mut expected = Vec::new();
    let tx = store.begin(one_by_one).await.unwrap();
    for e in &before {
        tx.profiles().apply_member_event(e).await.unwrap();
    }
    for e in &batch {
        let applied = tx.profiles().apply_member_event(e).await.unwrap();
        expected.push(applied.map(|p| p.role_ids));
    }
    tx.commit().await.unwrap();

    // When the profiles each batch creates are first due (whole seconds, as
    // the database keeps microseconds).
    let (due_before, due_batch) = (
        chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
        chrono::DateTime::from_timestamp(1_900_000_600, 0).unwrap(),
    );
    let tx = store.begin(batched).await.unwrap();
    assert_eq!(
        tx.profiles()
            .apply_member_events(&before, due_before)
            .await
            .unwrap()
            .len(),
        2
    );
    let outcomes = tx
        .profiles()
        .apply_member_events(&batch, due_batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(roles_of(&outcomes), expected);
    assert_eq!(
        expected.iter().filter(|e| e.is_some()).count(),
        7,
        "the three stale events are not applied"
    );

    let profiles = |tenant| {
        let store = store.clone();
        async move {
            let tx = store.begin(tenant).await.unwrap();
            let mut all = Vec::new();
            for user in [77, 78, 79, 80] {
                let p = tx
                    .profiles()
                    .find_by_discord_user(sf(user))
                    .await
                    .unwrap()
                    .unwrap();
                all.push((p.role_ids, p.joined_at, p.left_at, p.last_event_seq, p.id));
            }
            tx.commit().await.unwrap();
            all
        }
    };
    let (a, b) = (profiles(one_by_one).await, profiles(batched).await);
    let strip = |v: &[(Vec<wire::RoleId>, _, _, i64, store::ProfileId)]| {
        v.iter()
            .map(|(r, j, l, s, _)| (r.clone(), *j, *l, *s))
            .collect::<Vec<(
                Vec<wire::RoleId>,
                Option<chrono::DateTime<Utc>>,
                Option<chrono::DateTime<Utc>>,
                i64,
            )>>()
    };
    assert_eq!(strip(&b), strip(&a));
    // Each outcome names its member's profile.
    for (e, o) in batch.iter().zip(&outcomes) {
        if let Some(o) = o {
            let n = [77, 78, 79, 80]
                .iter()
                .position(|u| sf(*u) == e.discord_user_id)
                .unwrap();
            assert_eq!(o.profile_id, b[n].4);
        }
    }
    // A profile is first due when the batch that created it said; a later
    // batch's events leave that alone.
    let tx = store.begin(batched).await.unwrap();
    for (user, due) in [
        (77, due_before),
        (78, due_batch),
        (79, due_batch),
        (80, due_before),
    ] {
        let p = tx
            .profiles()
            .find_by_discord_user(sf(user))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.next_check_at, Some(due), "member {user}");
    }
    tx.commit().await.unwrap();

    // Locked ahead for only some of the members (as a caller pipelining
    // the lock would if it missed one): the others are read when applied,
    // to the same effect.
    let apart = store.directory().provision_guild(sf(3), "c").await.unwrap();
    let tx = store.begin(apart).await.unwrap();
    tx.profiles()
        .apply_member_events(&before, due_before)
        .await
        .unwrap();
    let locked = tx
        .profiles()
        .lock_for_events(&[sf(77), sf(80)])
        .await
        .unwrap();
    let outcomes = tx
        .profiles()
        .apply_locked_member_events(locked, &batch, due_batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(roles_of(&outcomes), expected);
    assert_eq!(strip(&profiles(apart).await), strip(&a));

    // Audited by the same statement, COMMIT behind it (the worker's
    // membership batch): the same effect, and one entry per event applied,
    // in the batch's order, pointing at its member's profile.
    let audited = store.directory().provision_guild(sf(4), "d").await.unwrap();
    let tx = store.begin(audited).await.unwrap();
    tx.profiles()
        .apply_member_events(&before, due_before)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = store.begin(audited).await.unwrap();
    let locked = tx
        .profiles()
        .lock_for_events(&[sf(77), sf(78), sf(79), sf(80)])
        .await
        .unwrap();
    let outcomes = tx
        .commit_with(async |tx| {
            tx.profiles()
                .apply_locked_member_events_audited(locked, &batch, due_batch, |n, roles| {
                    AuditEntry::system(AuditAction::MemberUpdated)
                        .target_kind("profile")
                        .metadata(json!({ "n": n, "roles": roles.len() }))
                })
                .await
        })
        .await
        .unwrap();
    assert_eq!(roles_of(&outcomes), expected);
    let c = profiles(audited).await;
    assert_eq!(strip(&c), strip(&a));
    let tx = store.begin(audited).await.unwrap();
    let mut entries = tx.audit().recent(100).await.unwrap();
    tx.commit().await.unwrap();
    entries.reverse();
    let wanted: Vec<(String, serde_json::Value)> = batch
        .iter()
        .zip(&expected)
        .enumerate()
        .filter_map(|(n, (e, roles))| {
            let roles = roles.as_ref()?;
            let profile = [77, 78, 79, 80]
                .iter()
                .position(|u| sf(*u) == e.discord_user_id)
                .unwrap();
            Some((
                c[profile].4.to_string(),
                json!({ "n": n, "roles": roles.len() }),
            ))
        })
        .collect();
    let written: Vec<(String, serde_json::Value)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e.target_type.as_deref(), Some("profile"));
            assert_eq!(e.action, "member.updated");
            (e.target_id.clone().unwrap(), e.metadata.clone())
        })
        .collect();
    assert_eq!(written, wanted);
}

#[tokio::test]
async fn an_audited_batch_audits_nothing_of_a_member_someone_else_wrote_newer() {
    use store::repo::{MemberChange, MemberEvent};
    let db = TestDb::create("repo_member_audited_race").await;
    let store = db.store(2).await;
    let tenant = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let join = |user: u64, seq: i64| MemberEvent {
        discord_user_id: sf(user),
        seq,
        at: Utc::now(),
        change: MemberChange::Present {
            role_ids: vec![sf(seq as u64)],
        },
    };
    let due = Utc::now();
    // The batch reads and locks 90 and 91, who have no profile yet: nothing
    // to lock, so a newer event of 90 lands meanwhile.
    let tx = store.begin(tenant).await.unwrap();
    let locked = tx
        .profiles()
        .lock_for_events(&[sf(90), sf(91)])
        .await
        .unwrap();
    let other = store.begin(tenant).await.unwrap();
    other
        .profiles()
        .apply_member_events(&[join(90, 100)], due)
        .await
        .unwrap();
    other.commit().await.unwrap();
    let outcomes = tx
        .commit_with(async |tx| {
            tx.profiles()
                .apply_locked_member_events_audited(
                    locked,
                    &[join(90, 50), join(91, 51)],
                    due,
                    |n, _| {
                        AuditEntry::system(AuditAction::MemberJoined).metadata(json!({ "n": n }))
                    },
                )
                .await
        })
        .await
        .unwrap();
    assert!(outcomes[0].is_none(), "90's older join is not applied");
    let ninety_one = outcomes[1].as_ref().expect("91's join is applied");
    let tx = store.begin(tenant).await.unwrap();
    let entries = tx.audit().recent(10).await.unwrap();
    let ninety = tx
        .profiles()
        .find_by_discord_user(sf(90))
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (ninety.last_event_seq, ninety.role_ids),
        (100, vec![sf(100)])
    );
    let audited: Vec<(Option<String>, serde_json::Value)> = entries
        .into_iter()
        .map(|e| (e.target_id, e.metadata))
        .collect();
    assert_eq!(
        audited,
        vec![(Some(ninety_one.profile_id.to_string()), json!({ "n": 1 }))],
        "only 91's join is audited"
    );
}

#[tokio::test]
async fn an_event_id_is_claimed_once_per_community() {
    let db = TestDb::create("repo_processed").await;
    let store = db.store(2).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let b = store.directory().provision_guild(sf(2), "b").await.unwrap();
    let tx = store.begin(a).await.unwrap();
    assert!(tx
        .processed_events()
        .claim("evt-1", "member.join")
        .await
        .unwrap());
    assert!(!tx
        .processed_events()
        .claim("evt-1", "member.join")
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let tx = store.begin(a).await.unwrap();
    assert!(!tx
        .processed_events()
        .claim("evt-1", "member.join")
        .await
        .unwrap());
    assert_eq!(
        tx.processed_events()
            .prune(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tx.processed_events()
            .prune(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    // Ids are per community (RLS hides the other's claim).
    let tx = store.begin(b).await.unwrap();
    assert!(tx
        .processed_events()
        .claim("evt-1", "member.join")
        .await
        .unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn many_event_ids_are_claimed_in_one_statement_each_once() {
    let db = TestDb::create("repo_processed_many").await;
    let store = db.store(2).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let tx = store.begin(a).await.unwrap();
    assert!(tx
        .processed_events()
        .claim("evt-1", "member.join")
        .await
        .unwrap());
    // Already claimed, new, and new but listed twice (a redelivery that
    // arrived beside its original).
    let claimed = tx
        .processed_events()
        .claim_many(&[
            ("evt-1", "member.join"),
            ("evt-2", "member.update"),
            ("evt-3", "member.update"),
            ("evt-3", "member.update"),
        ])
        .await
        .unwrap();
    let mut claimed: Vec<String> = claimed.into_iter().collect();
    claimed.sort();
    assert_eq!(claimed, ["evt-2", "evt-3"]);
    assert!(tx
        .processed_events()
        .claim_many(&[])
        .await
        .unwrap()
        .is_empty());
    tx.commit().await.unwrap();
    let tx = store.begin(a).await.unwrap();
    assert!(!tx
        .processed_events()
        .claim("evt-3", "member.update")
        .await
        .unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn an_interaction_reply_waits_with_its_claim_until_forgotten() {
    use store::repo::{PendingReply, ReplyBody};
    let db = TestDb::create("repo_replies").await;
    let store = db.store(2).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let b = store.directory().provision_guild(sf(2), "b").await.unwrap();
    let linked = PendingReply {
        body: ReplyBody::Message("Linked `0xabc`.".into()),
        recheck_self: true,
        recheck_other: Some(sf(77)),
    };
    let tx = store.begin(a).await.unwrap();
    // Only with its claim.
    let unclaimed = tx
        .interaction_replies()
        .record("evt-0", &linked)
        .await
        .unwrap_err();
    assert_eq!(unclaimed.sql_state(), Some("23503"), "{unclaimed}");
    drop(tx);
    let tx = store.begin(a).await.unwrap();
    for (id, reply) in [
        ("evt-1", linked.clone()),
        ("evt-2", PendingReply::only(ReplyBody::Deferred)),
    ] {
        assert!(tx
            .processed_events()
            .claim(id, "interaction.create")
            .await
            .unwrap());
        tx.interaction_replies().record(id, &reply).await.unwrap();
    }
    tx.commit().await.unwrap();

    let tx = store.begin(a).await.unwrap();
    let replies = tx.interaction_replies();
    assert_eq!(
        replies.pending("evt-1").await.unwrap(),
        Some(linked.clone())
    );
    assert_eq!(
        replies.pending("evt-2").await.unwrap(),
        Some(PendingReply::only(ReplyBody::Deferred))
    );
    assert!(replies.forget("evt-1").await.unwrap());
    assert!(!replies.forget("evt-1").await.unwrap());
    assert_eq!(replies.pending("evt-1").await.unwrap(), None);
    // The claim stays: the interaction was answered.
    assert!(!tx
        .processed_events()
        .claim("evt-1", "interaction.create")
        .await
        .unwrap());
    tx.commit().await.unwrap();

    // Another community sees none of them.
    let tx = store.begin(b).await.unwrap();
    assert_eq!(
        tx.interaction_replies().pending("evt-2").await.unwrap(),
        None
    );
    assert!(!tx.interaction_replies().forget("evt-2").await.unwrap());
    tx.commit().await.unwrap();

    let tx = store.begin(a).await.unwrap();
    let replies = tx.interaction_replies();
    assert_eq!(
        replies
            .prune(std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(replies.prune(std::time::Duration::ZERO).await.unwrap(), 1);
    assert!(tx
        .processed_events()
        .claim("evt-3", "interaction.create")
        .await
        .unwrap());
    replies.record("evt-3", &linked).await.unwrap();
    tx.commit().await.unwrap();

    // A pruned claim takes its reply with it.
    let tx = store.begin(a).await.unwrap();
    assert_eq!(
        tx.processed_events()
            .prune(std::time::Duration::ZERO)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        tx.interaction_replies().pending("evt-3").await.unwrap(),
        None
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn members_claimed_for_a_recheck_can_still_receive_awards_meanwhile() {
    // A periodic scan holds its claimed members for its whole batch; rows
    // pointing at them (badge awards, role grants) must not wait for it,
    // or a join's badge evaluation and the scan deadlock.
    let db = TestDb::create("repo_claim_locks").await;
    let store = db.store(4).await;
    let t = store.directory().provision_guild(sf(1), "g").await.unwrap();
    let setup = store.begin(t).await.unwrap();
    let p = setup.profiles().upsert_member(&member(7)).await.unwrap();
    let badge = setup
        .badges()
        .define(&NewBadge {
            slug: "pioneer".into(),
            name: "Pioneer".into(),
            description: String::new(),
            evaluator: BadgeEvaluator::JoinOrder,
            criteria: json!({"first": 10}),
        })
        .await
        .unwrap();
    setup.commit().await.unwrap();

    let scan = store.begin(t).await.unwrap();
    let claimed = scan.profiles().claim_due(Utc::now(), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let award = async {
        let tx = store.begin(t).await.unwrap();
        let awarded = tx.badges().award(badge.id, p.id, "early").await.unwrap();
        tx.commit().await.unwrap();
        awarded
    };
    // A lock wait lasts until the scan commits, which it does only after
    // this, so any bound detects it; 30 s also rides out PgBouncer waiting
    // to log in to a busy server (server_login_retry is 15 s).
    let awarded = tokio::time::timeout(std::time::Duration::from_secs(30), award)
        .await
        .expect("the award waited for the scan's claim");
    assert!(awarded);
    scan.commit().await.unwrap();
}

#[tokio::test]
async fn audit_retention_prunes_old_rows_in_every_community_and_never_the_last_day() {
    let db = TestDb::create("repo_audit_retention").await;
    let store = db.store(2).await;
    let a = store.directory().provision_guild(sf(1), "a").await.unwrap();
    let b = store.directory().provision_guild(sf(2), "b").await.unwrap();
    for tenant in [a, b] {
        let tx = store.begin(tenant).await.unwrap();
        for _ in 0..3 {
            tx.audit()
                .append(&AuditEntry::system(AuditAction::MemberJoined))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // Two rows of each community are a year old (only a superuser can
    // backdate them).
    db.admin()
        .await
        .batch_execute(
            "UPDATE audit_logs SET created_at = now() - interval '365 days'
             WHERE id IN (SELECT id FROM audit_logs WHERE action = 'member.joined'
                          ORDER BY id LIMIT 2)
                OR id IN (SELECT id FROM audit_logs WHERE action = 'member.joined'
                          ORDER BY id DESC LIMIT 2)",
        )
        .await
        .unwrap();
    let before = db.count("SELECT count(*) FROM audit_logs").await;
    let cutoff = Utc::now() - ChronoDuration::days(90);
    // A batch at a time.
    assert_eq!(store.directory().prune_audit(cutoff, 3).await.unwrap(), 3);
    assert_eq!(store.directory().prune_audit(cutoff, 3).await.unwrap(), 1);
    assert_eq!(store.directory().prune_audit(cutoff, 3).await.unwrap(), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs").await,
        before - 4
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE created_at < now() - interval '1 day'")
            .await,
        0
    );
    // The last day is never pruned, whatever the setting says.
    let err = store
        .directory()
        .prune_audit(Utc::now() - ChronoDuration::hours(1), 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least a day"), "{err}");
    // And the runtime role cannot delete audit rows itself.
    let tx = store.begin(a).await.unwrap();
    let err = tx.raw_query("DELETE FROM audit_logs").await.unwrap_err();
    assert_eq!(err.sql_state(), Some("42501"), "{err}");
}

#[tokio::test]
async fn a_known_guild_resolves_without_a_connection_and_an_unknown_one_is_asked_again() {
    // Every event resolves its guild; that must not cost a connection (a
    // round trip and a transaction of its own) once the answer is known.
    let db = TestDb::create("repo_guild_cache").await;
    let store = db.store(1).await;
    let known = store.directory().provision_guild(sf(7), "g").await.unwrap();
    let other = db.store(1).await;
    assert_eq!(store.directory().resolve_guild(sf(8)).await.unwrap(), None);

    // The only connection is taken: a lookup that needed one would wait
    // for the pool (and time out).
    let busy = store.begin(known).await.unwrap();
    let resolved = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        store.directory().resolve_guild(sf(7)),
    )
    .await
    .expect("resolving a known guild waited for a connection")
    .unwrap();
    assert_eq!(resolved, Some(known));
    busy.commit().await.unwrap();

    // "No community" is not remembered: provisioned elsewhere, it is found.
    let provisioned = other
        .directory()
        .provision_guild(sf(8), "later")
        .await
        .unwrap();
    assert_eq!(
        store.directory().resolve_guild(sf(8)).await.unwrap(),
        Some(provisioned)
    );
}
