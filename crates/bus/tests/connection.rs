//! Against the stack's NATS (`scripts/stack up`): `NATS_URL` may list
//! several servers, as a cluster's clients are given it.

use bus::{NatsSettings, Process};

#[tokio::test]
async fn a_list_of_servers_connects_to_one_that_answers() {
    let stack = testkit::StackEnv::load().nats;
    // Port 1 on loopback refuses at once: the client must move on to the
    // next server rather than fail on the list or on the first entry.
    let settings = NatsSettings {
        url: format!("nats://127.0.0.1:1, {}", stack.url()),
        ..stack.settings(Process::Admin)
    };
    let client = settings
        .connect(Process::Admin)
        .await
        .expect("connected through the second server of the list");
    client.flush().await.expect("the connection works");
    // The stack's NATS may itself be a cluster: any of its nodes will do.
    let ports: Vec<u16> = stack
        .url()
        .split(',')
        .filter_map(|url| url.trim().rsplit(':').next()?.parse().ok())
        .collect();
    assert!(
        ports.contains(&client.server_info().port),
        "connected to port {}, not one of the stack's {ports:?}",
        client.server_info().port
    );
}
