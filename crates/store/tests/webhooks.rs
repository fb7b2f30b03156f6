//! The webhook outbox: audit rows become deliveries once each, in commit
//! safety order, and the delivery log settles attempts.

use std::time::Duration;

use store::{
    repo::{AttemptRecord, AuditAction, AuditEntry, DeliveryState, NewWebhook},
    Store, StoreError, TenantId, WebhookId,
};
use testkit::TestDb;

const VOCABULARY: &[(&str, &str)] = &[
    ("member.joined", "member.joined"),
    ("rule.created", "rule.changed"),
    ("rule.deleted", "rule.changed"),
];

fn sf<M>(v: u64) -> wire::Id<M> {
    wire::Id::new(v).expect("test ids are not 0")
}

async fn community(store: &Store, guild: u64) -> TenantId {
    store
        .directory()
        .provision_guild(sf(guild), "webhooks")
        .await
        .unwrap()
}

async fn register(store: &Store, tenant: TenantId, url: &str, events: &[&str]) -> WebhookId {
    let tx = store.begin(tenant).await.unwrap();
    let hook = tx
        .webhooks()
        .create(&NewWebhook {
            url: url.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: settings::Secret::new("k".repeat(40)),
            description: "test".into(),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    hook.id
}

async fn append(store: &Store, tenant: TenantId, action: AuditAction) -> i64 {
    let tx = store.begin(tenant).await.unwrap();
    let id = tx
        .audit()
        .append(&AuditEntry::system(action))
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    id
}

/// One dispatcher pass over the community, page after page (of 2, to
/// exercise paging); returns the deliveries created.
async fn dispatch(store: &Store, tenant: TenantId) -> u64 {
    let tx = store.begin(tenant).await.unwrap();
    let mut created = 0;
    loop {
        let scan = tx.webhooks().lock_cursors().await.unwrap();
        let mut more = false;
        for cursor in &scan.cursors {
            let page = tx
                .webhooks()
                .enqueue(&scan, cursor, VOCABULARY, 2)
                .await
                .unwrap();
            created += page.created;
            more |= page.more;
        }
        if !more {
            break;
        }
    }
    tx.commit().await.unwrap();
    created
}

/// Audit ids that have a delivery for `hook`.
async fn delivered_audit_ids(db: &TestDb, hook: WebhookId) -> Vec<i64> {
    db.column(&format!(
        "SELECT audit_id FROM webhook_deliveries WHERE webhook_id = '{hook}' ORDER BY audit_id"
    ))
    .await
}

#[tokio::test]
async fn a_row_committed_late_is_delivered_not_skipped_and_nothing_twice() {
    let db = TestDb::create("webhooks_outbox").await;
    let store = db.store(4).await;
    let tenant = community(&store, 501).await;
    let hook = register(&store, tenant, "https://a.example/hook", &["member.joined"]).await;

    // A transaction that writes its audit row first and commits last: the
    // row's id is lower than the one below, its commit later.
    let slow = store.begin(tenant).await.unwrap();
    let early = slow
        .audit()
        .append(&AuditEntry::system(AuditAction::MemberJoined))
        .await
        .unwrap()
        .id;
    let late = append(&store, tenant, AuditAction::MemberJoined).await;
    assert!(early < late);
    // Not heard by this webhook: no delivery, whatever else happens.
    append(&store, tenant, AuditAction::RuleCreated).await;

    // While the slow transaction runs, nothing at or after it is taken,
    // even the committed row: taking it would move the cursor past `early`.
    assert_eq!(dispatch(&store, tenant).await, 0);
    assert!(delivered_audit_ids(&db, hook).await.is_empty());

    slow.commit().await.unwrap();
    // Other tests' transactions on the same server can hold the horizon
    // back for a moment; both rows arrive once it passes.
    testkit::eventually(
        "both joins to become deliveries",
        Duration::from_secs(10),
        || async {
            dispatch(&store, tenant).await;
            delivered_audit_ids(&db, hook).await.len() == 2
        },
    )
    .await;
    assert_eq!(delivered_audit_ids(&db, hook).await, vec![early, late]);

    // More rows than a page: all of them, in pages.
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(append(&store, tenant, AuditAction::MemberJoined).await);
    }
    testkit::eventually("five more deliveries", Duration::from_secs(10), || async {
        dispatch(&store, tenant).await;
        delivered_audit_ids(&db, hook).await.len() == 7
    })
    .await;
    // Re-running finds nothing new.
    assert_eq!(dispatch(&store, tenant).await, 0);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = '{hook}' AND event_type = 'member.joined'"
        ))
        .await,
        7
    );
}

#[tokio::test]
async fn a_new_webhook_hears_only_what_follows_and_rule_actions_arrive_as_rule_changed() {
    let db = TestDb::create("webhooks_vocabulary").await;
    let store = db.store(4).await;
    let tenant = community(&store, 502).await;
    let before = append(&store, tenant, AuditAction::RuleCreated).await;
    let hook = register(&store, tenant, "https://b.example/hook", &["rule.changed"]).await;
    let created = append(&store, tenant, AuditAction::RuleCreated).await;
    let deleted = append(&store, tenant, AuditAction::RuleDeleted).await;
    append(&store, tenant, AuditAction::MemberJoined).await;
    testkit::eventually("two rule changes", Duration::from_secs(10), || async {
        dispatch(&store, tenant).await;
        delivered_audit_ids(&db, hook).await.len() >= 2
    })
    .await;
    let ids = delivered_audit_ids(&db, hook).await;
    assert_eq!(ids, vec![created, deleted], "before: {before}");
    let types: Vec<String> = db
        .column(&format!(
            "SELECT event_type FROM webhook_deliveries WHERE webhook_id = '{hook}'"
        ))
        .await;
    assert_eq!(types, ["rule.changed", "rule.changed"]);
}

#[tokio::test]
async fn attempts_settle_a_delivery_and_the_log_reads_newest_first() {
    let db = TestDb::create("webhooks_attempts").await;
    let store = db.store(4).await;
    let tenant = community(&store, 503).await;
    let hook = register(&store, tenant, "https://c.example/hook", &["member.joined"]).await;
    for _ in 0..4 {
        append(&store, tenant, AuditAction::MemberJoined).await;
    }
    testkit::eventually("four deliveries", Duration::from_secs(10), || async {
        dispatch(&store, tenant).await;
        delivered_audit_ids(&db, hook).await.len() == 4
    })
    .await;

    let tx = store.begin(tenant).await.unwrap();
    let log = tx.webhooks().deliveries(hook, None, 10).await.unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let page = tx
        .webhooks()
        .deliveries(hook, Some(log[0].id), 10)
        .await
        .unwrap();
    assert_eq!(page, log[1..].to_vec());
    // Each new delivery waits to be published.
    let mut unpublished = tx.webhooks().unpublished(10).await.unwrap();
    unpublished.sort_unstable();
    let mut ids: Vec<i64> = log.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    assert_eq!(unpublished, ids);
    assert_eq!(tx.webhooks().mark_published(&ids).await.unwrap(), 4);
    assert!(tx.webhooks().unpublished(10).await.unwrap().is_empty());

    let (ok, retried, dead, refused) = (log[0].id, log[1].id, log[2].id, log[3].id);
    let failure = AttemptRecord {
        status: Some(500),
        error: Some("HTTP 500".into()),
        delivered: false,
        retryable: true,
    };
    let success = AttemptRecord {
        status: Some(204),
        error: None,
        delivered: true,
        retryable: false,
    };
    let settled = tx
        .webhooks()
        .record_attempt(ok, &success, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (settled.state, settled.attempts),
        (DeliveryState::Delivered, 1)
    );
    assert!(settled.finished_at.is_some());
    // A settled delivery takes no further attempt.
    assert!(tx
        .webhooks()
        .record_attempt(ok, &failure, 3)
        .await
        .unwrap()
        .is_none());

    let first = tx
        .webhooks()
        .record_attempt(retried, &failure, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.state, first.attempts), (DeliveryState::Pending, 1));
    assert_eq!(first.last_status, Some(500));
    assert!(first.finished_at.is_none());
    let second = tx
        .webhooks()
        .record_attempt(retried, &success, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.state, second.attempts),
        (DeliveryState::Delivered, 2)
    );
    assert_eq!((second.last_status, second.last_error), (Some(204), None));

    for expected in [
        DeliveryState::Pending,
        DeliveryState::Pending,
        DeliveryState::Failed,
    ] {
        let d = tx
            .webhooks()
            .record_attempt(dead, &failure, 3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.state, expected, "after {} attempts", d.attempts);
    }
    // A final refusal fails at once.
    let gone = AttemptRecord {
        status: Some(410),
        error: Some("HTTP 410".into()),
        delivered: false,
        retryable: false,
    };
    let d = tx
        .webhooks()
        .record_attempt(refused, &gone, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 1));

    let job = tx.webhooks().delivery_job(dead).await.unwrap().unwrap();
    assert_eq!(job.delivery.state, DeliveryState::Failed);
    assert_eq!(job.secret.expose(), "k".repeat(40));
    assert_eq!(job.guild_id.get(), 503);
    assert_eq!(job.audit.action, "member.joined");
    tx.commit().await.unwrap();

    // Deleting the webhook takes its log with it.
    let tx = store.begin(tenant).await.unwrap();
    assert!(tx.webhooks().delete(hook).await.unwrap().is_some());
    assert!(tx.webhooks().delivery_job(ok).await.unwrap().is_none());
    assert!(tx.webhooks().delete(hook).await.unwrap().is_none());
    tx.commit().await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM webhook_deliveries").await, 0);
}

#[tokio::test]
async fn one_url_per_community_and_only_communities_with_active_webhooks_are_listed() {
    let db = TestDb::create("webhooks_unique").await;
    let store = db.store(4).await;
    let with = community(&store, 504).await;
    let without = community(&store, 505).await;
    register(&store, with, "https://d.example/hook", &["member.joined"]).await;
    let tx = store.begin(with).await.unwrap();
    let again = tx
        .webhooks()
        .create(&NewWebhook {
            url: "https://d.example/hook".into(),
            events: vec!["member.left".into()],
            secret: settings::Secret::new("k".repeat(40)),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict { .. }), "{again}");
    drop(tx);
    // Another community may use the same URL.
    register(
        &store,
        without,
        "https://d.example/hook",
        &["member.joined"],
    )
    .await;
    let tx = store.begin(without).await.unwrap();
    let hooks = tx.webhooks().list().await.unwrap();
    assert_eq!(hooks.len(), 1);
    tx.webhooks().delete(hooks[0].id).await.unwrap();
    tx.commit().await.unwrap();

    let listed = store.directory().webhook_communities().await.unwrap();
    assert_eq!(listed, vec![with]);
}
