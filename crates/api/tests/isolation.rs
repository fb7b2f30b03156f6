//! A key of one community can never read, change or detect another
//! community's data: every endpoint, not a sample.

mod common;

use common::{json, role, Api};
use domain::keys::Scope;
use reqwest::Method;
use serde_json::json;

/// Every endpoint that names a resource, as (method, path, body), for a rule
/// id, a member id, a badge slug and a webhook id.
fn targeted(
    rule: &str,
    user: &str,
    badge: &str,
    hook: &str,
) -> Vec<(Method, String, Option<serde_json::Value>)> {
    let rule_body =
        json!({"role_id": "4242", "rule_type": "score_threshold", "parameters": {"min_score": 5}});
    vec![
        (Method::GET, format!("/v1/rules/{rule}"), None),
        (Method::PUT, format!("/v1/rules/{rule}"), Some(rule_body)),
        (Method::POST, format!("/v1/rules/{rule}/enable"), None),
        (Method::POST, format!("/v1/rules/{rule}/disable"), None),
        (Method::DELETE, format!("/v1/rules/{rule}"), None),
        (
            Method::POST,
            "/v1/rules/preview".to_owned(),
            Some(json!({"change": "disable", "rule_id": rule})),
        ),
        (Method::GET, format!("/v1/members/{user}"), None),
        (Method::POST, format!("/v1/members/{user}/recheck"), None),
        (
            Method::PUT,
            format!("/v1/members/{user}/score"),
            Some(json!({"score": 99})),
        ),
        (
            Method::PUT,
            format!("/v1/badges/{badge}/holders/{user}"),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/v1/badges/{badge}/holders/{user}"),
            None,
        ),
        (Method::GET, format!("/v1/webhooks/{hook}/deliveries"), None),
        (Method::DELETE, format!("/v1/webhooks/{hook}"), None),
    ]
}

/// Whether `text` holds `secret` as a whole value or word: not run on
/// into letters or digits on either side, so that a short id is not found
/// inside a timestamp's microseconds (where a plain substring made this test
/// fail once in a while).
fn shows(text: &str, secret: &str) -> bool {
    let bounded = |c: Option<char>| !c.is_some_and(char::is_alphanumeric);
    text.match_indices(secret).any(|(at, _)| {
        bounded(text[..at].chars().next_back()) && bounded(text[at + secret.len()..].chars().next())
    })
}

#[test]
fn an_id_shows_as_a_value_or_a_word_not_inside_a_timestamp() {
    // B's guild id inside the microseconds of A's own timestamp is not B's.
    let a = r#"{"created_at":"2026-12-06T15:04:43.771002Z","guild_id":"1001","name":"guild 1001"}"#;
    assert!(!shows(a, "1002"), "{a}");
    for leak in [
        r#"{"guild_id":"1002"}"#,
        r#"{"guild_id":1002}"#,
        r#"{"name":"guild 1002"}"#,
        r#"["1002"]"#,
    ] {
        assert!(shows(leak, "1002"), "{leak}");
    }
    assert!(shows(
        r#"{"url":"https://hooks.example.com/b"}"#,
        "hooks.example.com"
    ));
    assert!(shows(r#"{"slug":"b-badge"}"#, "b-badge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_communitys_resources_answer_exactly_as_missing_ones() {
    let api = Api::start("api_isolation").await;
    let a = api.community(1001).await;
    let b = api.community(1002).await;
    let key_a = api.all_scopes(a).await;
    let key_b = api.all_scopes(b).await;

    // B's data, made through B's own key.
    let (status, rule_b) = json(
        api.send(Method::POST, "/v1/rules", &key_b)
            .json(&json!({"role_id": "77", "rule_type": "score_threshold", "parameters": {"min_score": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{rule_b}");
    let rule_b = rule_b["id"].as_str().unwrap().to_owned();
    let user_b = api
        .member(b, 5000, Some(&common::wallet(5)), &[role(77)])
        .await
        .to_string();
    let (status, _) = json(
        api.send(Method::POST, "/v1/badges", &key_b)
            .json(&json!({"slug": "b-badge", "name": "B", "evaluator": "manual_grant"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let (status, hook_b) = json(
        api.send(Method::POST, "/v1/webhooks", &key_b)
            .json(&json!({"url": "https://hooks.example.com/b", "events": ["member.joined"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{hook_b}");
    let hook_b = hook_b["webhook"]["id"].as_str().unwrap().to_owned();
    let b_audit_before = api
        .db
        .count(&format!(
            "SELECT count(*) FROM audit_logs WHERE community_id = '{}'",
            b.tenant
        ))
        .await;

    // A's key on B's resources, and on resources that exist nowhere.
    let missing_rule = uuid::Uuid::new_v4().to_string();
    let theirs = targeted(&rule_b, &user_b, "b-badge", &hook_b);
    let nowhere = targeted(&missing_rule, "5999", "no-such-badge", &missing_rule);
    for ((method, path, body), (_, missing_path, missing_body)) in theirs.into_iter().zip(nowhere) {
        let send = |method: Method, path: String, body: Option<serde_json::Value>| {
            let mut request = api.send(method, &path, &key_a);
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send()
        };
        let (status, body_theirs) =
            json(send(method.clone(), path.clone(), body).await.unwrap()).await;
        let (missing_status, body_missing) = json(
            send(method.clone(), missing_path, missing_body)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            status, 404,
            "{method} {path} with another community's key: {body_theirs}"
        );
        assert_eq!(
            (status, &body_theirs),
            (missing_status, &body_missing),
            "{method} {path}: another community's resource must read exactly like a missing one"
        );
        assert_eq!(body_theirs["error"]["code"], "not_found");
    }

    // Lists and reads of A show nothing of B's.
    for path in [
        "/v1/community",
        "/v1/rules",
        "/v1/members",
        "/v1/badges",
        "/v1/audit",
        "/v1/sync-status",
        "/v1/webhooks",
    ] {
        let (status, body) = json(api.get(path, &key_a).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
        let text = body.to_string();
        for secret in [
            &rule_b,
            &user_b,
            "b-badge",
            "1002",
            &b.tenant.to_string(),
            &hook_b,
            "hooks.example.com",
        ] {
            assert!(
                !shows(&text, secret),
                "{path} with A's key shows B's {secret}: {text}"
            );
        }
    }
    // A score import naming B's member stores nothing for them.
    let (status, body) = json(
        api.send(Method::POST, "/v1/scores/import", &key_a)
            .header("content-type", "text/csv")
            .body(format!("{user_b},1234\n"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["changed"]), (200, &json!(0)), "{body}");
    assert_eq!(body["unknown"], json!([user_b]));
    // Changing A's settings leaves B's alone.
    let (status, _) = json(
        api.send(Method::PATCH, "/v1/community", &key_a)
            .json(&json!({"theme_id": "dark"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    // B is exactly as it was.
    let (_, rule) = json(
        api.get(&format!("/v1/rules/{rule_b}"), &key_b)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (rule["enabled"].clone(), rule["parameters"].clone()),
        (json!(true), json!({"min_score": 1}))
    );
    let (_, member) = json(
        api.get(&format!("/v1/members/{user_b}"), &key_b)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(member["member"]["score"], 0);
    assert_eq!(member["badges"], json!([]));
    let (_, community) = json(api.get("/v1/community", &key_b).send().await.unwrap()).await;
    assert_eq!(community["theme_id"], "default");
    let (_, hooks) = json(api.get("/v1/webhooks", &key_b).send().await.unwrap()).await;
    assert_eq!(hooks[0]["id"].as_str(), Some(hook_b.as_str()));
    let b_audit_after = api
        .db
        .count(&format!(
            "SELECT count(*) FROM audit_logs WHERE community_id = '{}'",
            b.tenant
        ))
        .await;
    assert_eq!(b_audit_after, b_audit_before, "nothing was done to B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_needs_its_scope() {
    let api = Api::start("api_scopes").await;
    let a = api.community(2001).await;
    let read_only = api.key(a, &[Scope::Read]).await;
    let writer = api.all_scopes(a).await;
    let (_, rule) = json(
        api.send(Method::POST, "/v1/rules", &writer)
            .json(&json!({"role_id": "77", "rule_type": "score_threshold", "parameters": {"min_score": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let rule = rule["id"].as_str().unwrap().to_owned();
    let user = api.member(a, 6000, None, &[]).await.to_string();
    let rule_body =
        json!({"role_id": "78", "rule_type": "score_threshold", "parameters": {"min_score": 5}});
    let writes: Vec<(Method, String, Option<serde_json::Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/rules".into(),
            Some(rule_body.clone()),
            "rules:write",
        ),
        (
            Method::PUT,
            format!("/v1/rules/{rule}"),
            Some(rule_body),
            "rules:write",
        ),
        (
            Method::POST,
            format!("/v1/rules/{rule}/disable"),
            None,
            "rules:write",
        ),
        (
            Method::POST,
            format!("/v1/rules/{rule}/enable"),
            None,
            "rules:write",
        ),
        (
            Method::DELETE,
            format!("/v1/rules/{rule}"),
            None,
            "rules:write",
        ),
        (
            Method::PATCH,
            "/v1/community".into(),
            Some(json!({"theme_id": "x"})),
            "rules:write",
        ),
        (
            Method::POST,
            format!("/v1/members/{user}/recheck"),
            None,
            "members:write",
        ),
        (
            Method::PUT,
            format!("/v1/members/{user}/score"),
            Some(json!({"score": 3})),
            "members:write",
        ),
        (
            Method::POST,
            "/v1/badges".into(),
            Some(json!({"slug": "s", "name": "S", "evaluator": "manual_grant"})),
            "badges:write",
        ),
        (
            Method::PUT,
            format!("/v1/badges/s/holders/{user}"),
            Some(json!({})),
            "badges:write",
        ),
        (
            Method::DELETE,
            format!("/v1/badges/s/holders/{user}"),
            None,
            "badges:write",
        ),
        (
            Method::POST,
            "/v1/webhooks".into(),
            Some(json!({"url": "https://hooks.example.com/a", "events": ["role.granted"]})),
            "webhooks:write",
        ),
        (
            Method::DELETE,
            format!("/v1/webhooks/{}", uuid::Uuid::new_v4()),
            None,
            "webhooks:write",
        ),
    ];
    let audit_before = api.audit_rows().await;
    for (method, path, body, scope) in &writes {
        let mut request = api.send(method.clone(), path, &read_only);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, body) = json(request.send().await.unwrap()).await;
        assert_eq!(status, 403, "{method} {path} with a read-only key: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(scope),
            "{body}"
        );
    }
    let (status, _) = json(
        api.send(Method::POST, "/v1/scores/import", &read_only)
            .header("content-type", "text/csv")
            .body(format!("{user},5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        api.audit_rows().await,
        audit_before,
        "a refused write writes nothing"
    );
    // Reads work with the read scope.
    for path in [
        "/v1/rules",
        "/v1/members",
        "/v1/audit",
        "/v1/badges",
        "/v1/sync-status",
        "/v1/community",
        "/v1/webhooks",
    ] {
        assert_eq!(
            api.get(path, &read_only).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
}
