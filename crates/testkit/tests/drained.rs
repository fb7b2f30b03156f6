//! The drained wait itself: it must not return while a durable consumer
//! still has a message to deliver or to be acknowledged, or every test that
//! relies on it to prove "no second effect" would prove nothing.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use testkit::{nats::NatsScope, StackEnv};

const SHORT: Duration = Duration::from_millis(500);

/// Runs the drained wait for `within` and says whether it returned (rather
/// than failing because the consumers were not drained).
async fn drains_within(scope: &NatsScope, within: Duration) -> bool {
    let js = scope.js.clone();
    let ns = scope.ns.clone();
    tokio::spawn(async move { testkit::drained(&js, &ns, within).await })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_undelivered_and_unacknowledged_messages() {
    let scope = NatsScope::new(&StackEnv::load().nats).await;
    let spec = wire::subjects::EVENTS;
    let stream = scope
        .js
        .create_stream(jetstream::stream::Config {
            name: scope.ns.stream_name(&spec),
            subjects: scope.ns.stream_subjects(&spec),
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("stream created");
    let durable = scope.ns.name("handler");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer created");
    scope
        .js
        .publish(scope.ns.subject(wire::subjects::MEMBER_JOIN), "{}".into())
        .await
        .expect("published")
        .await
        .expect("stored");

    assert!(
        !drains_within(&scope, SHORT).await,
        "drained with a message never delivered"
    );

    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let message = batch.next().await.expect("a message").expect("a delivery");
    assert!(
        !drains_within(&scope, SHORT).await,
        "drained with a message delivered but not acknowledged"
    );

    message.double_ack().await.expect("acknowledged");
    assert!(
        drains_within(&scope, Duration::from_secs(5)).await,
        "not drained once everything was acknowledged"
    );
}
