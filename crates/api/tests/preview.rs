//! The dry-run preview says what saving a change does: the same members
//! gain and lose the same roles when the worker's role sync then runs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{json, Api, TOKEN};
use domain::role_sync::{RoleChange, RoleChangeError, RoleSyncConfig, RoleWriter};
use eligibility::fake_chain::{FakeChain, FakeContract};
use eligibility::U256;
use reqwest::Method;
use serde_json::json;
use wire::check::CheckPriority;

/// Discord as the role sync sees it, recording every change.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<RoleChange>>>);

impl RoleWriter for Recorder {
    async fn change_role(
        &self,
        change: RoleChange,
        _: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        self.0.lock().unwrap().push(change);
        Ok(())
    }
}

impl Recorder {
    /// (user, role, add) of every change since the last call, sorted.
    fn take(&self) -> Vec<(String, String, bool)> {
        let mut changes: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .drain(..)
            .map(|c| (c.user_id.to_string(), c.role_id.to_string(), c.add))
            .collect();
        changes.sort();
        changes
    }
}

fn sample(effect: &serde_json::Value, which: &str) -> Vec<String> {
    effect[which]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_counts_match_what_the_role_sync_then_does() {
    let chain = FakeChain::start().await.unwrap();
    let token: eligibility::Address = TOKEN.parse().unwrap();
    chain.deploy(token, FakeContract::Erc20);
    let mut config = eligibility::ChainConfig::new(vec![chain.url()]);
    config.timeout_ms = 1000;
    let chains = eligibility::EligibilityConfig {
        chains: [("testchain".to_owned(), config)].into_iter().collect(),
    };
    let api = Api::start_with("api_preview", api::ApiSettings::default(), chains).await;
    let a = api.community(5001).await;
    let key = api.all_scopes(a).await;
    let balances = [(1u64, 100u64), (2, 20), (3, 5), (4, 60)];
    for (user, balance) in balances {
        let wallet = common::wallet(user as u8);
        chain.set_erc20_balance(token, wallet.parse().unwrap(), U256::from(balance));
        api.member(a, 500 + user, Some(&wallet), &[]).await;
    }
    api.member(a, 505, None, &[]).await;
    let writer = Recorder::default();
    let sync = domain::role_sync::RoleSync::new(
        api.store.clone(),
        api.evaluator.clone(),
        writer.clone(),
        RoleSyncConfig {
            grace: Duration::ZERO,
            recheck_period: Duration::from_secs(3600),
            scan_interval: Duration::from_secs(3600),
            scan_batch: 100,
            check_min_read_age: Duration::ZERO,
        },
    );
    // What the worker does after a change: every member due, one pass.
    let run_worker = || async {
        let tx = api.store.begin(a.tenant).await.unwrap();
        tx.profiles().mark_all_due().await.unwrap();
        tx.commit().await.unwrap();
        sync.scan_due().await.unwrap();
        writer.take()
    };
    let token_rule = |min: &str| {
        json!({"role_id": "900", "rule_type": "token_balance", "chain": "testchain",
               "contract_address": TOKEN, "parameters": {"min_balance": min}})
    };

    // 1. A new rule: preview, save, compare.
    let (status, preview) = json(
        api.send(Method::POST, "/v1/rules/preview", &key)
            .json(&json!({"change": "create", "rule": token_rule("10")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["members"], 5);
    let effect = &preview["roles"][0];
    assert_eq!(
        (
            effect["role_id"].as_str(),
            effect["gain"].as_u64(),
            effect["lose"].as_u64()
        ),
        (Some("900"), Some(3), Some(0))
    );
    assert_eq!(sample(effect, "gain_sample"), ["501", "502", "504"]);
    assert!(writer.take().is_empty(), "a preview changes nothing");
    assert_eq!(
        api.db.count("SELECT count(*) FROM eligibility_rules").await,
        0,
        "and saves nothing"
    );
    let (status, rule) = json(
        api.send(Method::POST, "/v1/rules", &key)
            .json(&token_rule("10"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let done = run_worker().await;
    let granted: Vec<String> = done.iter().filter(|c| c.2).map(|c| c.0.clone()).collect();
    assert_eq!(granted, sample(effect, "gain_sample"));
    assert_eq!(done.len(), 3);

    // 2. A stricter threshold: who loses is who the preview named.
    let (_, preview) = json(
        api.send(Method::POST, "/v1/rules/preview", &key)
            .json(&json!({"change": "update", "rule_id": rule_id, "rule": token_rule("50")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let effect = &preview["roles"][0];
    assert_eq!(
        (effect["gain"].as_u64(), effect["lose"].as_u64()),
        (Some(0), Some(1)),
        "{preview}"
    );
    let (status, _) = json(
        api.send(Method::PUT, &format!("/v1/rules/{rule_id}"), &key)
            .json(&token_rule("50"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let done = run_worker().await;
    assert_eq!(done, vec![("502".to_owned(), "900".to_owned(), false)]);
    assert_eq!(sample(effect, "lose_sample"), ["502"]);

    // 3. Disabling or deleting: members keep the role, so nobody loses it.
    for change in ["disable", "delete"] {
        let (status, preview) = json(
            api.send(Method::POST, "/v1/rules/preview", &key)
                .json(&json!({"change": change, "rule_id": rule_id}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(
            (
                preview["roles"][0]["gain"].as_u64(),
                preview["roles"][0]["lose"].as_u64()
            ),
            (Some(0), Some(0)),
            "{change}: {preview}"
        );
    }

    // 4. With the chain down the new rule cannot be decided: undecided, not lost.
    chain.set_fault(eligibility::fake_chain::Fault::Unavailable);
    let (_, preview) = json(
        api.send(Method::POST, "/v1/rules/preview", &key)
            .json(&json!({"change": "create", "rule": {"role_id": "901", "rule_type": "token_balance", "chain": "testchain",
               "contract_address": "0x2222222222222222222222222222222222222222", "parameters": {"min_balance": "1"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let effect = &preview["roles"][0];
    assert_eq!(
        (
            effect["gain"].as_u64(),
            effect["lose"].as_u64(),
            effect["undecided"].as_u64()
        ),
        (Some(0), Some(0), Some(4)),
        "{preview}"
    );

    // 5. A preview of an invalid change answers like saving it would.
    let (status, body) = json(
        api.send(Method::POST, "/v1/rules/preview", &key)
            .json(&json!({"change": "create", "rule": token_rule("50")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "role 900 is taken: {body}"
    );
}
