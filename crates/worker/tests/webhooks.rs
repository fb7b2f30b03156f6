//! Webhook deliveries end to end: Discord events through the worker into
//! the audit log, out through the dispatcher and JetStream to a receiver on
//! this machine, with real NATS and PostgreSQL.

mod common;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use common::{guild_join, member_join, member_leave, Harness, WAIT};
use domain::{
    webhooks::{self, DeliveryState, NewWebhook, UrlPolicy, WebhookEvent},
    Actor, CommunityRef,
};
use settings::Secret;
use wire::GuildId;
use worker::WebhookConfig;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    event: String,
    delivery: String,
    signature: String,
    body: Bytes,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order; then `then` for ever.
    next: VecDeque<u16>,
    then: u16,
    seen: Vec<Received>,
}

/// A webhook endpoint on 127.0.0.1 that answers from a script and records
/// every request.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(first: &[u16], then: u16) -> Receiver {
        let script = Arc::new(Mutex::new(Script {
            next: first.iter().copied().collect(),
            then,
            seen: Vec::new(),
        }));
        let app = Router::new()
            .route("/hook", post(answer))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Received> {
        self.script.lock().unwrap().seen.clone()
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut script = script.lock().unwrap();
    script.seen.push(Received {
        event: header(webhooks::EVENT_HEADER),
        delivery: header(webhooks::DELIVERY_HEADER),
        signature: header(webhooks::SIGNATURE_HEADER),
        body,
    });
    let status = script.next.pop_front().unwrap_or(script.then);
    StatusCode::from_u16(status).unwrap()
}

const LOOPBACK: UrlPolicy = UrlPolicy {
    allow_insecure_loopback: true,
};

/// A harness whose webhook retries are quick: three attempts 50ms apart.
async fn harness(label: &str) -> Harness {
    let mut h = Harness::new(label).await;
    h.config.webhooks = WebhookConfig {
        max_attempts: 3,
        backoff: vec![Duration::from_millis(50)],
        timeout: Duration::from_secs(1),
        dispatch_interval: Duration::from_millis(50),
        url_policy: LOOPBACK,
    };
    h.start_worker();
    h
}

/// Provisions `guild` through the worker, as Discord would.
async fn community(h: &Harness, guild: u64) -> CommunityRef {
    h.publish(&guild_join(guild, "s1", 1)).await;
    let guild = GuildId::new(guild).unwrap();
    testkit::eventually("the guild's community", WAIT, || async {
        domain::community::resolve(&h.store, guild).await.is_ok()
    })
    .await;
    domain::community::resolve(&h.store, guild).await.unwrap()
}

async fn register(
    h: &Harness,
    c: CommunityRef,
    receiver: &Receiver,
    events: &[WebhookEvent],
) -> webhooks::Registered {
    webhooks::register(
        &h.store,
        c,
        &Actor::Admin(Some("test".into())),
        &NewWebhook {
            url: receiver.url(),
            events: events.to_vec(),
            description: String::new(),
        },
        &LOOPBACK,
    )
    .await
    .unwrap()
}

async fn requests(receiver: &Receiver, n: usize) -> Vec<Received> {
    testkit::eventually(&format!("{n} request(s) at the receiver"), WAIT, || async {
        receiver.seen().len() >= n
    })
    .await;
    receiver.seen()
}

async fn settled(h: &Harness, c: CommunityRef, hook: webhooks::WebhookId) -> webhooks::Delivery {
    testkit::eventually("the delivery to settle", WAIT, || async {
        webhooks::deliveries(&h.store, c, hook, None, 10)
            .await
            .unwrap()
            .first()
            .is_some_and(|d| d.state != DeliveryState::Pending)
    })
    .await;
    let log = webhooks::deliveries(&h.store, c, hook, None, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    log[0].clone()
}

fn verify(secret: &Secret, r: &Received) -> Result<(), webhooks::SignatureError> {
    webhooks::verify(
        secret,
        &r.signature,
        &r.body,
        chrono::Utc::now().timestamp(),
        webhooks::DEFAULT_TOLERANCE,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_join_is_delivered_once_signed_and_never_again() {
    let mut h = harness("webhooks_once").await;
    let receiver = Receiver::start(&[], 204).await;
    let c = community(&h, 901).await;
    let registered = register(&h, c, &receiver, &[WebhookEvent::MemberJoined]).await;
    let hook = registered.webhook.id;

    h.publish(&member_join(901, 5, "s1", 2)).await;
    let seen = requests(&receiver, 1).await;
    let r = &seen[0];
    assert_eq!(verify(&registered.secret, r), Ok(()));
    let wrong = Secret::new("whsec_not-the-secret-of-this-webhook");
    assert!(verify(&wrong, r).is_err());
    let body = r.json();
    assert_eq!(r.event, "member.joined");
    assert_eq!(body["type"], "member.joined");
    assert_eq!(body["id"], r.delivery.as_str());
    assert_eq!(body["community"]["guild_id"], "901");
    assert_eq!(body["data"]["details"]["discord_user_id"], "5");
    assert!(body["occurred_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let delivered = settled(&h, c, hook).await;
    assert_eq!(delivered.state, DeliveryState::Delivered);
    assert_eq!((delivered.attempts, delivered.last_status), (1, Some(204)));
    assert_eq!(delivered.public_id.to_string(), r.delivery);

    // An event it did not subscribe to, then every consumer drained and
    // the dispatcher run again by hand: nothing new for this webhook.
    h.publish(&member_leave(901, 5, "s1", 3)).await;
    h.wait_for_count(
        "SELECT count(*) FROM audit_logs WHERE action = 'member.left'",
        1,
    )
    .await;
    h.drained().await;
    for _ in 0..2 {
        let report = worker::dispatch_webhooks(&h.store, &h.worker_js, &h.nats.ns)
            .await
            .unwrap();
        assert_eq!(report.created, 0, "{report:?}");
    }
    // A stray copy of the delivery's message (a re-publish after the
    // duplicate window) finds it delivered and sends nothing.
    let stray = wire::webhook::WebhookDelivery {
        community: *c.tenant.as_uuid(),
        delivery: delivered.id,
    };
    h.nats
        .js
        .publish(
            h.nats.ns.subject(wire::subjects::WEBHOOK_DELIVER),
            stray.to_json().unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    h.drained().await;
    assert_eq!(receiver.seen().len(), 1, "{:?}", receiver.seen());
    assert_eq!(h.count("SELECT count(*) FROM webhook_deliveries").await, 1);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_three_attempts_and_the_log_says_delivered() {
    let mut h = harness("webhooks_retry").await;
    let receiver = Receiver::start(&[500, 500], 200).await;
    let c = community(&h, 902).await;
    let registered = register(&h, c, &receiver, &[WebhookEvent::MemberJoined]).await;

    h.publish(&member_join(902, 6, "s1", 2)).await;
    let delivered = settled(&h, c, registered.webhook.id).await;
    assert_eq!(delivered.state, DeliveryState::Delivered);
    assert_eq!((delivered.attempts, delivered.last_status), (3, Some(200)));
    assert_eq!(delivered.last_error, None);

    let seen = requests(&receiver, 3).await;
    assert_eq!(seen.len(), 3);
    // Every retry is the same event: same id, same body, each signed anew.
    for r in &seen {
        assert_eq!(r.delivery, seen[0].delivery);
        assert_eq!(r.body, seen[0].body);
        assert_eq!(verify(&registered.secret, r), Ok(()));
    }
    h.drained().await;
    assert!(h.dead_letters().await.is_empty());
    assert_eq!(receiver.seen().len(), 3);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_in_the_dead_letters_after_the_last_attempt_or_at_once_when_refused() {
    let mut h = harness("webhooks_dead").await;
    let down = Receiver::start(&[], 500).await;
    let gone = Receiver::start(&[], 404).await;
    let c = community(&h, 903).await;
    let failing = register(&h, c, &down, &[WebhookEvent::MemberJoined]).await;
    let refused = register(&h, c, &gone, &[WebhookEvent::MemberJoined]).await;

    h.publish(&member_join(903, 7, "s1", 2)).await;
    let failed = settled(&h, c, failing.webhook.id).await;
    assert_eq!(failed.state, DeliveryState::Failed);
    assert_eq!((failed.attempts, failed.last_status), (3, Some(500)));
    assert!(failed.finished_at.is_some());
    // A 404 will not change by retrying: one attempt, then failed.
    let not_found = settled(&h, c, refused.webhook.id).await;
    assert_eq!(not_found.state, DeliveryState::Failed);
    assert_eq!((not_found.attempts, not_found.last_status), (1, Some(404)));

    testkit::eventually("two dead letters", WAIT, || async {
        h.dead_letters().await.len() == 2
    })
    .await;
    h.drained().await;
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let subject = h.nats.ns.subject("dead.webhooks.deliver");
    assert!(dead.iter().all(|(s, _)| *s == subject), "{dead:?}");
    let reasons: Vec<&str> = dead.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("after 3 attempt(s)") && r.contains("HTTP 500")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("after 1 attempt(s)") && r.contains("HTTP 404")),
        "{reasons:?}"
    );
    // No reason shows the receiver's URL or a secret.
    for r in &reasons {
        assert!(!r.contains("/hook") && !r.contains("whsec_"), "{r}");
    }
    assert_eq!((down.seen().len(), gone.seen().len()), (3, 1));
    h.stop_worker().await;
}
