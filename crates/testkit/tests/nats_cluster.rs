//! The test cluster itself: three nodes form one JetStream, a replicated
//! stream outlives its leader's crash, and the restarted node catches up.

use std::time::Duration;

use async_nats::jetstream::stream;
use bus::Process;
use testkit::nats_cluster::NatsCluster;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_outlives_its_leader_and_the_leader_catches_up() {
    let mut cluster = NatsCluster::start(3);
    cluster.ready(WAIT).await;
    assert_eq!(cluster.access().url().split(',').count(), 3);

    let js = cluster.access().jetstream(Process::Admin).await;
    js.create_stream(stream::Config {
        name: "R3".into(),
        subjects: vec!["r3.>".into()],
        num_replicas: 3,
        ..stream::Config::default()
    })
    .await
    .expect("an R3 stream on three nodes");
    let publish = |n: u32| {
        let js = js.clone();
        async move {
            js.publish(format!("r3.{n}"), n.to_string().into())
                .await
                .expect("published")
                .await
                .unwrap_or_else(|e| panic!("message {n} not acknowledged: {e}"));
        }
    };
    for n in 0..100 {
        publish(n).await;
    }
    cluster.caught_up("R3", WAIT).await;
    let leader = cluster.stream_leader("R3").await.expect("R3 has a leader");

    cluster.kill(leader);
    testkit::eventually("another node to lead R3", WAIT, || async {
        cluster
            .stream_leader("R3")
            .await
            .is_some_and(|now| now != leader)
    })
    .await;
    // Two of three replicas are a quorum: publishing goes on.
    for n in 100..200 {
        publish(n).await;
    }

    cluster.restart(leader);
    cluster.caught_up("R3", WAIT).await;
    let info = js.get_stream("R3").await.expect("R3").cached_info().clone();
    assert_eq!(info.state.messages, 200);
    let peers = info.cluster.expect("cluster info");
    assert!(
        peers
            .replicas
            .iter()
            .any(|p| p.name == cluster.server_name(leader))
            || peers.leader.as_deref() == Some(&cluster.server_name(leader)),
        "the restarted node is not among R3's replicas: {peers:?}"
    );
}
