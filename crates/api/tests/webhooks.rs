//! Webhook endpoints: registered with a secret shown once, validated,
//! listed without it, with a delivery log per webhook.

mod common;

use common::{json, Api};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_registered_once_listed_without_its_secret_and_deleted() {
    let api = Api::start("api_webhooks").await;
    let a = api.community(6001).await;
    let key = api.all_scopes(a).await;
    let register = |body: serde_json::Value| {
        api.send(Method::POST, "/v1/webhooks", &key)
            .json(&body)
            .send()
    };

    let (status, body) = json(
        register(
            json!({"url": "http://hooks.example.com/x", "events": ["member.joined", "made.up"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("events")),
        "{body}"
    );
    let (status, body) = json(
        register(json!({"url": "http://hooks.example.com/x", "events": ["member.joined"]}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("url")),
        "plain http is refused: {body}"
    );
    let (status, body) = json(
        register(
            json!({"url": "https://user:pw@hooks.example.com/x", "events": ["member.joined"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("url")),
        "{body}"
    );

    let (status, created) = json(
        register(json!({"url": "https://hooks.example.com/x", "events": ["member.joined", "role.granted"], "description": "ops"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{created}");
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let (status, listed) = json(api.get("/v1/webhooks", &key).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let mut events: Vec<&str> = listed[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(events, ["member.joined", "role.granted"], "{listed}");
    assert_eq!(listed[0]["description"], "ops");
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is never shown again: {listed}"
    );
    let (_, audit) = json(
        api.get("/v1/audit?action=webhook.registered", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    assert!(!audit.to_string().contains(&secret), "nor audited");

    let (status, log) = json(
        api.get(&format!("/v1/webhooks/{id}/deliveries"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, log["deliveries"].clone(), log["next"].clone()),
        (200, json!([]), json!(null)),
        "{log}"
    );
    let (status, body) = json(
        api.get(&format!("/v1/webhooks/{id}/deliveries?limit=0"), &key)
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

    assert_eq!(
        api.send(Method::DELETE, &format!("/v1/webhooks/{id}"), &key)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (status, _) = json(
        api.get(&format!("/v1/webhooks/{id}/deliveries"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
}

/// The worked example of docs/api.md, checked against the code that signs.
#[test]
fn the_documented_signature_example_is_what_gatehouse_sends() {
    let secret = settings::Secret::new(format!("whsec_{}", "0123456789abcdef".repeat(4)));
    let body = br#"{"id":"8672ebe7-c5e2-4f68-bbcd-065d5e21634c","type":"member.joined"}"#;
    let header = domain::webhooks::sign(&secret, 1_764_662_400, body);
    assert_eq!(
        header,
        "t=1764662400,v1=cab45660fd1af5f3f76e82339298a3e2d30471a43c6106b53a667958e1685f92"
    );
    domain::webhooks::verify(
        &secret,
        &header,
        body,
        1_764_662_400 + 60,
        domain::webhooks::DEFAULT_TOLERANCE,
    )
    .expect("a fresh, untampered delivery verifies");
}
