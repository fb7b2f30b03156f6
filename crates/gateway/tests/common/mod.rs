//! Gateways built by the production code path, pointed at the simulator and
//! a private NATS (both from `testkit`), logged in as the gateway user.

#![allow(dead_code)]

use std::time::Duration;

use discord_sim::Simulator;
use gateway::{Gateway, GatewayConfig, Settings, Token};
use testkit::nats::NatsServer;

pub const TOKEN: &str = "gw-test-token-5ecret";
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn simulator() -> Simulator {
    testkit::sim::start_fast(TOKEN).await
}

/// Settings for a gateway owning `shards` of `total` against `sim` and `nats`.
pub fn settings(sim: &Simulator, nats: &NatsServer, shards: &str, total: u32) -> Settings {
    Settings {
        discord_token: Some(Token::new(TOKEN)),
        shards: Some(shards.into()),
        total_shards: Some(total.to_string()),
        discord_gateway_url: Some(sim.gateway_url()),
        discord_api_url: Some(sim.api_url()),
        identify_queue: Some("unlimited".into()),
        nats_url: Some(nats.url().into()),
        http_addr: Some("127.0.0.1:0".into()),
        ..Settings::default()
    }
}

/// Starts a gateway with `settings`, connecting to `nats` as the gateway
/// user (what `gatehouse gateway` does with NATS_USER and NATS_PASSWORD).
pub async fn start(settings: Settings, nats: &NatsServer) -> Gateway {
    let mut config = GatewayConfig::from_settings(settings).expect("valid test config");
    config.nats = nats.access().settings(bus::Process::Gateway);
    Gateway::start(config).await.expect("gateway starts")
}

pub async fn ready(gateway: &Gateway) -> bool {
    testkit::http::get(gateway.http_addr(), "/readyz").await.0 == 200
}

/// Waits until the gateway reports ready; `when` says at which point of the
/// scenario, for the failure message.
pub async fn until_ready(gateway: &Gateway, when: &str) {
    testkit::eventually(&format!("/readyz to be ready {when}"), WAIT, || {
        ready(gateway)
    })
    .await;
}
