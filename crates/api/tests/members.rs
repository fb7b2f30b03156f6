//! Members, scores, badges and the audit log through the API.

mod common;

use common::{json, role, Api};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_page_by_id_and_filter() {
    let api = Api::start("api_members").await;
    let a = api.community(4001).await;
    let key = api.all_scopes(a).await;
    for n in 1..=7u64 {
        let wallet = (n % 2 == 0).then(|| common::wallet(n as u8));
        let roles = if n <= 3 { vec![role(55)] } else { vec![] };
        api.member(a, 100 + n, wallet.as_deref(), &roles).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/members?limit=3".to_owned();
    loop {
        let (status, page) = json(api.get(&path, &key).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        for m in page["members"].as_array().unwrap() {
            seen.push(m["user_id"].as_str().unwrap().parse::<u64>().unwrap());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/members?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, (101..=107).collect::<Vec<_>>());
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, with_wallet) = json(
        api.get("/v1/members?has_wallet=true", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&with_wallet), ["102", "104", "106"]);
    let (_, holders) = json(
        api.get("/v1/members?holds_role=55", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&holders), ["101", "102", "103"]);
    let (status, body) = json(
        api.get("/v1/members?holds_role=abc", &key)
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
async fn a_score_import_run_twice_changes_nothing_the_second_time() {
    let api = Api::start("api_scores").await;
    let a = api.community(4101).await;
    let key = api.all_scopes(a).await;
    for n in 1..=3 {
        api.member(a, 200 + n, None, &[]).await;
    }
    let csv = "user_id,score\n201,10\n202,20\n203,0\n999,5\n";
    let import = || {
        api.send(Method::POST, "/v1/scores/import", &key)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
    };
    let (status, first) = json(import().await.unwrap()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (
            first["changed"].clone(),
            first["unchanged"].clone(),
            first["unknown"].clone()
        ),
        (json!(2), json!(1), json!(["999"]))
    );
    let audit = api.audit_rows().await;
    let (_, second) = json(import().await.unwrap()).await;
    assert_eq!(
        (second["changed"].clone(), second["unchanged"].clone()),
        (json!(0), json!(3))
    );
    assert_eq!(api.audit_rows().await, audit, "a re-run audits nothing");
    let (_, member) = json(api.get("/v1/members/202", &key).send().await.unwrap()).await;
    assert_eq!(member["member"]["score"], 20);
    // JSON lines, one member.
    let (status, body) = json(
        api.send(Method::POST, "/v1/scores/import", &key)
            .header("content-type", "application/x-ndjson")
            .body("{\"user_id\": \"201\", \"score\": 11}\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["changed"].clone()), (200, json!(1)));
    // Every bad line named; nothing stored.
    let (status, body) = json(
        api.send(Method::POST, "/v1/scores/import", &key)
            .header("content-type", "text/csv")
            .body("201,x\n202,30\nabc,1\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let lines: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 1", "line 3"]);
    let (_, member) = json(api.get("/v1/members/202", &key).send().await.unwrap()).await;
    assert_eq!(member["member"]["score"], 20);
    // One score, audited as a change from the old value.
    let (status, body) = json(
        api.send(Method::PUT, "/v1/members/203/score", &key)
            .json(&json!({"score": 7}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["changed"].clone()), (200, json!(1)));
    let (_, audit) = json(
        api.get("/v1/audit?action=score.changed&target_id=203", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(audit["entries"][0]["metadata"], json!({"from": 0, "to": 7}));
    assert!(audit["entries"][0]["actor_id"]
        .as_str()
        .unwrap()
        .starts_with("api_key:"));
    // An import may be far larger than a JSON body (64 KiB): 6,000 rows.
    let big: String = (0..6000).fold(String::from("user_id,score\n"), |mut csv, n| {
        csv.push_str(&format!("{},{}\n", 900_000 + n, n));
        csv
    });
    assert!(big.len() > 64 * 1024);
    let (status, body) = json(
        api.send(Method::POST, "/v1/scores/import", &key)
            .header("content-type", "text/csv")
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", body["error"]);
    assert_eq!(body["unknown"].as_array().map(Vec::len), Some(6000));
    // An unsupported content type is named.
    let (status, body) = json(
        api.send(Method::POST, "/v1/scores/import", &key)
            .header("content-type", "text/plain")
            .body("1,2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badges_are_defined_granted_and_revoked_with_an_audit_trail() {
    let api = Api::start("api_badges").await;
    let a = api.community(4201).await;
    let key = api.all_scopes(a).await;
    api.member(a, 301, None, &[]).await;
    let (status, body) = json(
        api.send(Method::POST, "/v1/badges", &key)
            .json(&json!({"slug": "helper", "name": "Helper", "evaluator": "manual_grant"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = json(
        api.send(Method::POST, "/v1/badges", &key)
            .json(&json!({"slug": "early", "name": "Early", "evaluator": "join_order", "criteria": {"frist": 5}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("criteria.frist")),
        "{body}"
    );
    let grant = || {
        api.send(Method::PUT, "/v1/badges/helper/holders/301", &key)
            .json(&json!({"reason": "answers questions"}))
            .send()
    };
    assert_eq!(json(grant().await.unwrap()).await.1["changed"], true);
    assert_eq!(json(grant().await.unwrap()).await.1["changed"], false);
    let (_, list) = json(api.get("/v1/badges", &key).send().await.unwrap()).await;
    assert_eq!(list[0]["holders"], 1);
    let (_, member) = json(api.get("/v1/members/301", &key).send().await.unwrap()).await;
    assert_eq!(member["badges"][0]["reason"], "answers questions");
    let revoke = || {
        api.send(Method::DELETE, "/v1/badges/helper/holders/301", &key)
            .send()
    };
    assert_eq!(json(revoke().await.unwrap()).await.1["changed"], true);
    assert_eq!(json(revoke().await.unwrap()).await.1["changed"], false);
    let (_, audit) = json(
        api.get("/v1/audit?action=badge.revoked", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_newest_first_and_filters() {
    let api = Api::start("api_audit").await;
    let a = api.community(4301).await;
    let key = api.all_scopes(a).await;
    for n in 1..=5 {
        api.member(a, 400 + n, None, &[]).await;
        let (status, _) = json(
            api.send(Method::PUT, &format!("/v1/members/{}/score", 400 + n), &key)
                .json(&json!({"score": n}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut ids = Vec::new();
    let mut path = "/v1/audit?action=score.changed&limit=2".to_owned();
    loop {
        let (status, page) = json(api.get(&path, &key).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        ids.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next"].as_i64() {
            Some(next) => path = format!("/v1/audit?action=score.changed&limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let (_, admin) = json(
        api.get("/v1/audit?actor_type=admin&action=api_key.created", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(admin["entries"].as_array().unwrap().len(), 1);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, later) = json(
        api.get("/v1/audit", &key)
            .query(&[("since", future.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{later}");
    assert_eq!(later["entries"], json!([]));
}
