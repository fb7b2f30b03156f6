//! The sync status shows what an admin needs when roles lag: who is due,
//! the last periodic pass, what was applied and what Discord refused.

mod common;

use std::time::Duration;

use common::{json, Api};
use domain::role_sync::{RoleChange, RoleChangeError, RoleSync, RoleSyncConfig, RoleWriter};
use reqwest::Method;
use serde_json::json;
use wire::check::CheckPriority;

/// Discord refusing every change with 429.
struct Throttled;

impl RoleWriter for Throttled {
    async fn change_role(&self, _: RoleChange, _: CheckPriority) -> Result<(), RoleChangeError> {
        Err(RoleChangeError::RateLimited("429 Too Many Requests".into()))
    }
}

/// Discord accepting every change.
struct Accepting;

impl RoleWriter for Accepting {
    async fn change_role(&self, _: RoleChange, _: CheckPriority) -> Result<(), RoleChangeError> {
        Ok(())
    }
}

fn config() -> RoleSyncConfig {
    RoleSyncConfig {
        grace: Duration::ZERO,
        recheck_period: Duration::from_secs(3600),
        scan_interval: Duration::from_secs(3600),
        scan_batch: 100,
        check_min_read_age: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_counts_due_members_passes_changes_and_discords_429s() {
    let api = Api::start("api_sync").await;
    let a = api.community(7001).await;
    let b = api.community(7002).await;
    let key = api.all_scopes(a).await;
    let key_b = api.all_scopes(b).await;
    for n in 1..=3 {
        api.member(a, 700 + n, None, &[]).await;
    }
    api.member(b, 800, None, &[]).await;
    // A score rule every member of A meets once scored.
    let (status, _) = json(
        api.send(Method::POST, "/v1/rules", &key)
            .json(&json!({"role_id": "950", "rule_type": "score_threshold", "parameters": {"min_score": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = json(
        api.send(Method::POST, "/v1/scores/import", &key)
            .header("content-type", "text/csv")
            .body("701,5\n702,5\n703,5\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    // And a token rule on a chain this deployment cannot read: a member with
    // a wallet is left undecided on it.
    let (status, _) = json(
        api.send(Method::POST, "/v1/rules", &key)
            .json(
                &json!({"role_id": "951", "rule_type": "token_balance", "chain": "offline",
                          "contract_address": common::TOKEN, "parameters": {"min_balance": "1"}}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let tx = api.store.begin(a.tenant).await.unwrap();
    tx.profiles()
        .link_wallet(
            wire::UserId::new(701).unwrap(),
            &store::WalletAddress::parse(&common::wallet(1)).unwrap(),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (_, before) = json(api.get("/v1/sync-status", &key).send().await.unwrap()).await;
    assert_eq!(
        (before["members"].clone(), before["due"].clone()),
        (json!(3), json!(3)),
        "{before}"
    );
    assert_eq!(before["last_pass_at"], json!(null));
    assert_eq!(before["discord_429s_last_hour"], 0);

    // Discord refuses all three grants.
    let throttled = RoleSync::new(
        api.store.clone(),
        api.evaluator.clone(),
        Throttled,
        config(),
    );
    let report = throttled.scan_due().await.unwrap();
    assert_eq!(report.rate_limited, 3);
    let (_, after) = json(api.get("/v1/sync-status", &key).send().await.unwrap()).await;
    assert_eq!(after["discord_429s_last_hour"], 3, "{after}");
    assert_eq!(
        after["chain_reads_failing_last_hour"],
        json!({"offline": 1}),
        "{after}"
    );
    assert!(after["last_pass_at"].is_string(), "{after}");
    assert_eq!(after["role_changes_applied_last_hour"], 0);
    // Another community's status is its own.
    let (_, other) = json(api.get("/v1/sync-status", &key_b).send().await.unwrap()).await;
    assert_eq!(
        (
            other["members"].clone(),
            other["discord_429s_last_hour"].clone()
        ),
        (json!(1), json!(0)),
        "{other}"
    );
    assert_eq!(other["chain_reads_failing_last_hour"], json!({}));

    // Once Discord accepts, the changes are applied and counted.
    let tx = api.store.begin(a.tenant).await.unwrap();
    tx.profiles().mark_all_due().await.unwrap();
    tx.commit().await.unwrap();
    let accepting = RoleSync::new(
        api.store.clone(),
        api.evaluator.clone(),
        Accepting,
        config(),
    );
    assert_eq!(accepting.scan_due().await.unwrap().granted, 3);
    let (_, settled) = json(api.get("/v1/sync-status", &key).send().await.unwrap()).await;
    assert_eq!(
        (
            settled["due"].clone(),
            settled["role_changes_applied_last_hour"].clone(),
            settled["role_changes_queued"].clone()
        ),
        (json!(0), json!(3), json!(0)),
        "{settled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_shows_how_far_the_member_list_sync_has_come() {
    let api = Api::start("api_member_list").await;
    let a = api.community(7101).await;
    let b = api.community(7102).await;
    let key = api.all_scopes(a).await;
    let key_b = api.all_scopes(b).await;
    let (_, never) = json(api.get("/v1/sync-status", &key).send().await.unwrap()).await;
    assert_eq!(never["member_list"], json!(null), "{never}");

    let chunk = |seq: i64, users: std::ops::RangeInclusive<u64>| {
        let store = api.store.clone();
        async move {
            let tx = store.begin(a.tenant).await.unwrap();
            let members: Vec<_> = users
                .map(|u| store::repo::ListedMember {
                    discord_user_id: wire::UserId::new(u).unwrap(),
                    role_ids: Vec::new(),
                    joined_at: None,
                })
                .collect();
            tx.member_syncs()
                .ingest_chunk(
                    store::repo::ChunkOf {
                        nonce: "n1",
                        chunk_count: 2,
                        seq,
                    },
                    &members,
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    chunk(10, 1..=1000).await;
    let (_, halfway) = json(api.get("/v1/sync-status", &key).send().await.unwrap()).await;
    let list = &halfway["member_list"];
    assert_eq!(
        (
            list["chunks_received"].clone(),
            list["chunks_expected"].clone(),
            list["members_received"].clone(),
            list["completed_at"].clone()
        ),
        (json!(1), json!(2), json!(1000), json!(null)),
        "{halfway}"
    );
    chunk(11, 1001..=1400).await;
    let (_, done) = json(api.get("/v1/sync-status", &key).send().await.unwrap()).await;
    let list = &done["member_list"];
    assert_eq!(list["members_received"], 1400, "{done}");
    assert!(list["completed_at"].is_string(), "{done}");
    assert_eq!(list["members_left"], 0, "{done}");
    assert_eq!(done["members"], 1400, "{done}");
    let (_, other) = json(api.get("/v1/sync-status", &key_b).send().await.unwrap()).await;
    assert_eq!(other["member_list"], json!(null), "{other}");
}
