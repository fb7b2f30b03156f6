//! What every client relies on: authentication, the error shape, request
//! ids, limits, and the OpenAPI document matching the code.

mod common;

use std::num::NonZeroU32;

use api::ApiSettings;
use common::{json, Api};
use domain::keys;
use domain::Actor;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_by_every_process_on_its_next_request() {
    let api = Api::start("api_revoke").await;
    let a = api.community(3001).await;
    let key = api.all_scopes(a).await;
    let (other_url, _other) = api.another_process().await;
    let other = |key: &str| {
        api.http
            .get(format!("{other_url}/v1/rules"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(
        api.get("/v1/rules", &key).send().await.unwrap().status(),
        200
    );
    assert_eq!(other(&key).await.unwrap().status(), 200);

    let id = keys::list(&api.store, a).await.unwrap()[0].id;
    keys::revoke(&api.store, a, &Actor::Admin(None), id)
        .await
        .unwrap();
    let revoked_at = std::time::Instant::now();
    let (status, body) = json(api.get("/v1/rules", &key).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(other(&key).await.unwrap().status(), 401);
    assert!(revoked_at.elapsed() < std::time::Duration::from_secs(1));

    // Malformed, unknown and missing keys read the same.
    let unknown = format!("ghk_0123456789ab_{}", "0".repeat(64));
    for bad in ["", "Bearer", "ghk_nope", unknown.as_str()] {
        let (status, body) = json(api.get("/v1/rules", bad).send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{bad:?}"
        );
    }
    let (status, _) = json(
        api.http
            .get(format!("{}/v1/rules", api.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_and_last_use_is_recorded() {
    let api = Api::start("api_expiry").await;
    let a = api.community(3101).await;
    let created = keys::create(
        &api.store,
        a,
        &Actor::Admin(None),
        &keys::NewKey {
            name: "short".into(),
            scopes: [keys::Scope::Read].into_iter().collect(),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::milliseconds(1500)),
        },
    )
    .await
    .unwrap();
    let key = created.secret.expose().to_owned();
    assert_eq!(
        api.get("/v1/rules", &key).send().await.unwrap().status(),
        200
    );
    let listed = keys::list(&api.store, a).await.unwrap();
    assert!(listed[0].last_used_at.is_some(), "last use is recorded");
    testkit::eventually("the expired key is refused", common::WITHIN, || async {
        api.get("/v1/rules", &key).send().await.unwrap().status() == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rule_answers_422_with_every_bad_field() {
    let api = Api::start("api_422").await;
    let a = api.community(3201).await;
    let key = api.all_scopes(a).await;
    let (status, body) = json(
        api.send(Method::POST, "/v1/rules", &key)
            .json(&json!({
                "role_id": "not-a-role",
                "rule_type": "token_balance",
                "chain": "Bad Chain!",
                "contract_address": "0x123",
                "parameters": {"min_balance": "-5", "surprise": 1}
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for field in [
        "role_id",
        "chain",
        "contract_address",
        "parameters.min_balance",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    for f in body["error"]["fields"].as_array().unwrap() {
        assert!(
            !f["problem"].as_str().unwrap().is_empty()
                && !f["expected"].as_str().unwrap().is_empty(),
            "{f}"
        );
    }
    assert_eq!(
        api.db.count("SELECT count(*) FROM eligibility_rules").await,
        0,
        "nothing was stored"
    );
    // A body that is not the documented shape at all is 422 too, naming it.
    let (status, body) = json(
        api.send(Method::POST, "/v1/rules", &key)
            .json(&json!({"role": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // Not JSON: 400.
    let (status, body) = json(
        api.send(Method::POST, "/v1/rules", &key)
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id_and_errors_share_one_shape() {
    let api = Api::start("api_shape").await;
    let a = api.community(3301).await;
    let key = api.all_scopes(a).await;
    let responses = [
        api.get("/v1/rules", &key).send().await.unwrap(),
        api.get("/v1/nope", &key).send().await.unwrap(),
        api.get("/v1/rules", "wrong").send().await.unwrap(),
        api.get("/v1/members?limit=100000", &key)
            .send()
            .await
            .unwrap(),
        api.http
            .get(format!("{}/healthz", api.url))
            .send()
            .await
            .unwrap(),
    ];
    for response in responses {
        let status = response.status();
        let id = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            id.as_deref().is_some_and(|id| id.len() >= 32),
            "{status}: {id:?}"
        );
        if status.is_client_error() {
            let body: serde_json::Value = response.json().await.unwrap();
            let error = &body["error"];
            assert!(
                error["code"].is_string()
                    && error["message"].is_string()
                    && error["fields"].is_array(),
                "{body}"
            );
        }
    }
    // A caller's own request id is kept.
    let response = api
        .get("/v1/rules", &key)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_in_the_error_shape() {
    let settings = ApiSettings {
        rate_per_second: NonZeroU32::new(1).unwrap(),
        burst: NonZeroU32::new(3).unwrap(),
        ..ApiSettings::default()
    };
    let api = Api::start_with(
        "api_limits",
        settings,
        eligibility::EligibilityConfig::default(),
    )
    .await;
    let a = api.community(3401).await;
    let key = api.all_scopes(a).await;
    let other = api.all_scopes(a).await;
    // A body over the JSON limit.
    let huge = json!({"theme_id": "x", "settings": {"blob": "x".repeat(100_000)}});
    let (status, body) = json(
        api.send(Method::PATCH, "/v1/community", &other)
            .json(&huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // The burst, then 429 with Retry-After; another key is unaffected.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let response = api.get("/v1/rules", &key).send().await.unwrap();
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    assert_eq!(
        api.get("/v1/rules", &other).send().await.unwrap().status(),
        200
    );
    // Pages are capped.
    let (status, body) = json(api.get("/v1/audit?limit=501", &other).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_answer_without_a_key() {
    let api = Api::start("api_probes").await;
    let get = |path: &str| api.http.get(format!("{}{path}", api.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let a = api.community(3501).await;
    let key = api.all_scopes(a).await;
    api.get("/v1/rules", &key).send().await.unwrap();
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("api_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/rules\""), "{metrics}");
    // Latency is a histogram, which dashboards can add up across API
    // processes; a summary's quantiles could not be.
    assert!(
        metrics.contains("# TYPE api_request_duration_seconds histogram"),
        "{metrics}"
    );
    let buckets: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("api_request_duration_seconds_bucket{")
                && l.contains("route=\"/v1/rules\"")
        })
        .collect();
    assert!(
        buckets.iter().any(|l| l.contains("le=\"0.1\"")),
        "{metrics}"
    );
    assert!(
        buckets
            .iter()
            .any(|l| l.contains("le=\"+Inf\"") && !l.ends_with(" 0")),
        "the request is counted: {metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("api_request_duration_seconds{")),
        "no summary quantiles left: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_openapi_document_is_the_one_the_code_serves() {
    let api = Api::start("api_openapi").await;
    let served = api
        .http
        .get(format!("{}/v1/openapi.json", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let path = testkit::db::workspace_root().join("docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed.trim() != served.trim() {
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, format!("{}\n", served.trim())).unwrap();
        } else {
            panic!(
                "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p api --test contract` and commit it"
            );
        }
    }
}

/// Found by the OpenAPI fuzzer (scripts/api-fuzz): a NUL character, which
/// PostgreSQL cannot store, answered 500; a number no double can hold was
/// stored and then could not be read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_numbers_the_database_cannot_keep_are_refused_up_front() {
    let api = Api::start("api_unstorable").await;
    let a = api.community(3601).await;
    let key = api.all_scopes(a).await;
    let patch = |body: serde_json::Value| {
        api.send(Method::PATCH, "/v1/community", &key)
            .json(&body)
            .send()
    };
    let (status, body) = json(
        patch(json!({"settings": {"motto": "a\u{0}b"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = json(
        patch(json!({"settings": {"big": -1.797_693_134_862_315_7e308}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("settings")),
        "{body}"
    );
    let (status, body) = json(api.get("/v1/community", &key).send().await.unwrap()).await;
    assert_eq!(
        (status, body["settings"].clone()),
        (200, json!({})),
        "the community is still readable"
    );
    let (status, body) = json(
        api.get("/v1/audit?action=a%00b", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

/// A key's prefix is public (listings, logs). Requests that carry it with a
/// wrong secret must not spend the real key's rate budget: otherwise anyone
/// who has seen a prefix could lock its holder out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_secrets_under_a_keys_prefix_does_not_lock_its_holder_out() {
    let settings = ApiSettings {
        rate_per_second: NonZeroU32::new(1).unwrap(),
        burst: NonZeroU32::new(3).unwrap(),
        ..ApiSettings::default()
    };
    let api = Api::start_with(
        "api_prefix_flood",
        settings,
        eligibility::EligibilityConfig::default(),
    )
    .await;
    let a = api.community(3701).await;
    let key = api.all_scopes(a).await;
    let prefix = keys::public_prefix(&key).unwrap().to_owned();
    let forged = format!("ghk_{prefix}_{}", "0".repeat(64));
    for _ in 0..10 {
        let status = api.get("/v1/rules", &forged).send().await.unwrap().status();
        assert!(status == 401 || status == 429, "{status}");
    }
    let (status, body) = json(api.get("/v1/rules", &key).send().await.unwrap()).await;
    assert_eq!(status, 200, "the holder was locked out: {body}");
    // One address sending made-up keys is held back before the database is
    // asked (its budget is ten keys' worth: here 30 at once).
    let mut limited = 0;
    for _ in 0..40 {
        if api.get("/v1/rules", &forged).send().await.unwrap().status() == 429 {
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "40 made-up keys from one address were all looked up"
    );
}
