//! Registering, listing and deleting webhooks against a real database.

use domain::{
    webhooks::{self, NewWebhook, UrlPolicy, WebhookError, WebhookEvent},
    Actor, CommunityRef,
};
use testkit::TestDb;
use wire::GuildId;

const TESTS: UrlPolicy = UrlPolicy {
    allow_insecure_loopback: true,
};
const STRICT: UrlPolicy = UrlPolicy {
    allow_insecure_loopback: false,
};

async fn community(store: &store::Store, guild: u64) -> CommunityRef {
    let guild = GuildId::new(guild).unwrap();
    let tenant = store
        .directory()
        .provision_guild(guild, "hooks")
        .await
        .unwrap();
    CommunityRef { tenant, guild }
}

fn hook(url: &str) -> NewWebhook {
    NewWebhook {
        url: url.into(),
        events: vec![WebhookEvent::MemberJoined, WebhookEvent::RoleGranted],
        description: "  ops channel  ".into(),
    }
}

fn field_of(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other}"),
    }
}

#[tokio::test]
async fn register_validates_each_field_and_names_the_bad_one() {
    let db = TestDb::create("domain_webhooks_validate").await;
    let store = db.store(2).await;
    let c = community(&store, 801).await;
    let admin = Actor::Admin(Some("alice".into()));
    let cases = [
        (hook("http://hooks.example.com/x"), STRICT, "url"),
        (hook("http://127.0.0.1:9/x"), STRICT, "url"),
        (hook("https://bob:pw@hooks.example.com/x"), TESTS, "url"),
        (hook("https://10.0.0.1/x"), TESTS, "url"),
        (
            NewWebhook {
                events: vec![],
                ..hook("https://hooks.example.com/x")
            },
            STRICT,
            "events",
        ),
        (
            NewWebhook {
                description: "d".repeat(501),
                ..hook("https://hooks.example.com/x")
            },
            STRICT,
            "description",
        ),
    ];
    for (new, policy, field) in cases {
        let e = webhooks::register(&store, c, &admin, &new, &policy)
            .await
            .unwrap_err();
        assert_eq!(field_of(&e), field, "{new:?}: {e}");
        assert!(e.to_string().starts_with(field), "{e}");
    }
    assert!(webhooks::list(&store, c).await.unwrap().is_empty());
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE action = 'webhook.registered'")
            .await,
        0,
        "a refusal audited something"
    );

    // Loopback over plain HTTP is fine when the policy allows it.
    let ok = webhooks::register(&store, c, &admin, &hook("http://127.0.0.1:9/x"), &TESTS)
        .await
        .unwrap();
    assert_eq!(ok.webhook.url, "http://127.0.0.1:9/x");
    // The same URL again: refused, naming the URL.
    let e = webhooks::register(&store, c, &admin, &hook("http://127.0.0.1:9/x"), &TESTS)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), "url");
    assert!(e.to_string().contains("already registered"), "{e}");
}

#[tokio::test]
async fn the_secret_is_returned_once_and_reads_never_show_it() {
    let db = TestDb::create("domain_webhooks_secret").await;
    let store = db.store(2).await;
    let c = community(&store, 802).await;
    let other = community(&store, 803).await;
    let admin = Actor::Admin(Some("alice".into()));
    let new = NewWebhook {
        events: vec![
            WebhookEvent::RoleGranted,
            WebhookEvent::MemberJoined,
            WebhookEvent::RoleGranted,
        ],
        ..hook("https://hooks.example.com/gatehouse")
    };
    let registered = webhooks::register(&store, c, &admin, &new, &STRICT)
        .await
        .unwrap();
    let secret = registered.secret.expose().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(format!("{:?}", registered.secret), "[redacted]");
    // Duplicates dropped, description trimmed.
    assert_eq!(
        registered.webhook.events,
        [WebhookEvent::RoleGranted, WebhookEvent::MemberJoined]
    );
    assert_eq!(registered.webhook.description, "ops channel");

    let listed = webhooks::list(&store, c).await.unwrap();
    assert_eq!(listed, vec![registered.webhook.clone()]);
    assert!(
        !format!("{listed:?}").contains(&secret),
        "a read showed the secret"
    );
    // Another community sees none of it, and cannot delete it.
    assert!(webhooks::list(&store, other).await.unwrap().is_empty());
    let id = registered.webhook.id;
    assert!(matches!(
        webhooks::delete(&store, other, &admin, id).await,
        Err(WebhookError::NotFound(i)) if i == id
    ));
    assert!(matches!(
        webhooks::deliveries(&store, other, id, None, 10).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(webhooks::deliveries(&store, c, id, None, 10)
        .await
        .unwrap()
        .is_empty());
    for bad in [0, 101] {
        let e = webhooks::deliveries(&store, c, id, None, bad)
            .await
            .unwrap_err();
        assert_eq!(field_of(&e), "limit");
    }

    // The audit trail records both ends, never the secret.
    let deleted = webhooks::delete(&store, c, &admin, id).await.unwrap();
    assert_eq!(deleted.id, id);
    assert!(webhooks::list(&store, c).await.unwrap().is_empty());
    let audit: Vec<String> = db
        .column("SELECT action || ' ' || coalesce(actor_id, '') || ' ' || metadata::text FROM audit_logs WHERE action LIKE 'webhook.%' ORDER BY id")
        .await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(
        audit[0].starts_with("webhook.registered alice"),
        "{audit:?}"
    );
    assert!(audit[0].contains("https://hooks.example.com"), "{audit:?}");
    assert!(audit[1].starts_with("webhook.deleted alice"), "{audit:?}");
    assert!(audit.iter().all(|a| !a.contains(&secret)));
}

#[tokio::test]
async fn a_community_has_at_most_ten_webhooks() {
    let db = TestDb::create("domain_webhooks_limit").await;
    let store = db.store(2).await;
    let c = community(&store, 804).await;
    for i in 0..webhooks::MAX_WEBHOOKS_PER_COMMUNITY {
        webhooks::register(
            &store,
            c,
            &Actor::System,
            &hook(&format!("https://hooks.example.com/{i}")),
            &STRICT,
        )
        .await
        .unwrap();
    }
    let e = webhooks::register(
        &store,
        c,
        &Actor::System,
        &hook("https://hooks.example.com/one-more"),
        &STRICT,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, WebhookError::TooMany { limit: 10 }), "{e}");
}
