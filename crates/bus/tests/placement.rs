//! Issue 13: stream placement on a clustered JetStream (three nats-servers
//! on loopback). Streams and buckets land where the definition places them,
//! JetStream reports the placement back as defined (so ensuring again finds
//! no drift), a placement nobody can satisfy is refused at start, and a
//! process whose placement differs reports drift and changes nothing.

use std::time::Duration;

use bus::{Namespace, Placement, Process, Storage, Topology};
use testkit::nats_cluster::NatsCluster;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_buckets_are_placed_as_defined_and_a_different_placement_is_drift() {
    let cluster = NatsCluster::start(3);
    cluster.ready(WAIT).await;
    let js = cluster.access().jetstream(Process::Admin).await;
    let topology = |prefix: &str, placement: Placement| {
        Topology::new(Namespace::prefixed(prefix).unwrap())
            .with_storage(Storage::Memory)
            .with_replicas(3)
            .with_placement(placement)
    };
    let here = Placement {
        cluster: Some(cluster.name().to_owned()),
        tags: vec![],
    };

    let placed = topology("placed", here.clone());
    assert!(bus::ensure_streams(&js, &placed).await.unwrap().is_empty());
    bus::open_sessions_bucket(&js, &placed).await.unwrap();
    bus::open_discord_budget_bucket(&js, &placed).await.unwrap();
    for want in placed.stream_configs().into_iter().chain([
        placed.sessions_stream_config(),
        placed.discord_budget_stream_config(),
    ]) {
        let mut stream = js.get_stream(&want.name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.placement, want.placement, "{}", want.name);
        assert_eq!(
            info.cluster.as_ref().and_then(|c| c.name.as_deref()),
            Some(cluster.name()),
            "{}",
            want.name
        );
    }
    // JetStream reports the placement as defined: nothing to report again.
    assert_eq!(bus::ensure_streams(&js, &placed).await.unwrap(), []);

    // A process whose definition places nothing finds the difference and
    // leaves the streams where they are.
    let mut anywhere = placed.clone();
    anywhere.events.placement = Placement::default();
    let drift = bus::ensure_streams(&js, &anywhere).await.unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        drift[0].differences,
        [format!(
            "placement: existing cluster {}, defined anywhere",
            cluster.name()
        )]
    );

    // Without a placement JetStream does not invent one: no drift either.
    let unplaced = topology("unplaced", Placement::default());
    assert!(bus::ensure_streams(&js, &unplaced)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(bus::ensure_streams(&js, &unplaced).await.unwrap(), []);

    // A placement no server satisfies is refused, naming the stream.
    let nowhere = topology(
        "nowhere",
        Placement {
            cluster: None,
            tags: vec!["no-such-tag".into()],
        },
    );
    let error = bus::ensure_streams(&js, &nowhere)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("nowhere_EVENTS"), "{error}");

    for t in [&placed, &unplaced, &nowhere] {
        for config in t
            .stream_configs()
            .into_iter()
            .chain([t.sessions_stream_config(), t.discord_budget_stream_config()])
        {
            let _ = js.delete_stream(&config.name).await;
        }
    }
}
