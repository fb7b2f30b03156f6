//! A local Discord for tests, the demo and benchmarks.
//!
//! [`Simulator::start`] binds a gateway WebSocket (Discord gateway v10, JSON,
//! optionally `compress=zstd-stream`) and an HTTP listener serving the REST
//! endpoints the project uses under `/api/v10` plus a control API under
//! `/_sim`. Point a Twilight shard at [`Simulator::gateway_url`] (its
//! `proxy_url`) and twilight-http at [`Simulator::api_host`] (its
//! `proxy(host, true)`): the production code path runs unchanged.
//!
//! Drive it in-process through [`SimControl`] ([`Simulator::control`]) or
//! over HTTP; both do the same things.
//!
//! # Gateway behaviour
//!
//! - Hello, then Identify (token with or without `Bot `; unknown intent bits
//!   close 4013, privileged intents not in
//!   [`SimConfig::allowed_privileged_intents`] close 4014, a bad `[shard,
//!   count]` closes 4010, more than 2,500 guilds on one shard closes 4011) or
//!   Resume. Identifies in one `shard % max_concurrency` bucket closer than
//!   [`SimConfig::identify_interval_ms`] get op 9 `false`.
//! - READY (with `resume_gateway_url` = this gateway) and one GUILD_CREATE
//!   per available guild of the shard (`(guild_id >> 22) % shard_count`),
//!   then dispatches with gap-free sequence numbers.
//! - Every session keeps a log of its dispatches, also while no connection
//!   is attached; Resume replays everything after the client's `seq`, then
//!   sends RESUMED whose `s` is the last replayed sequence. A client close
//!   with 1000/1001, a fatal close code or op 9 `false` ends the session.
//! - Request Guild Members (op 8) is answered with GUILD_MEMBERS_CHUNK
//!   dispatches: up to 1,000 members each, the nonce echoed, `not_found`
//!   for `user_ids`. They are built as the client reads, so that dispatches
//!   of the meantime go out between them. All members of one guild once
//!   per [`SimConfig::member_request_window_ms`] (Discord: 30 s), else a
//!   RATE_LIMITED dispatch; no answer without the GUILD_MEMBERS intent or
//!   for a guild the shard does not serve, as on Discord. Invalid requests
//!   close 4001 or 4002. Each request and its answer is in the shard's
//!   transcript ([`ShardTranscript::member_requests`]).
//! - Frames always put `op`, `s`, `t` before `d`.
//! - Faults ([`Fault`]): close with any code, drop the TCP connection, op 7,
//!   op 9 (resumable or not), zombie (no ACKs, no dispatches).
//!
//! Interaction callbacks take queued [`CallbackFault`]s: held until
//! released (Discord slow to take the answer), answered 500 untaken, or
//! taken and answered 500 (the answer reached the member, the application
//! never heard).
//!
//! # HTTP
//!
//! Discord REST (rate limited per route bucket and globally, with
//! `X-RateLimit-*` headers and 429 + `retry_after`):
//! `GET /api/v10/gateway/bot`,
//! `PUT|DELETE /api/v10/guilds/{g}/members/{u}/roles/{r}`,
//! `POST /api/v10/interactions/{id}/{token}/callback`,
//! `PATCH /api/v10/webhooks/{app}/{token}/messages/@original`.
//!
//! OAuth2 for dashboard logins (`docs/simulator-oauth2.md`): `GET
//! /oauth2/authorize` (code flow, PKCE S256; the simulator-only `login_as`
//! and `deny` parameters pick what the person does), `POST
//! /api[/v10]/oauth2/token` (`authorization_code`, `refresh_token`), and with
//! `Authorization: Bearer …` `GET /api[/v10]/users/@me` and
//! `GET /api[/v10]/users/@me/guilds`.
//!
//! Control (ids as strings; bodies are the serde forms of this crate's types):
//! `GET /_sim/health`, `GET /_sim/stats`, `GET|POST /_sim/guilds`
//! ([`GuildsSpec`]), `GET|DELETE /_sim/guilds/{g}` (`?unavailable=true` for
//! an outage), `POST /_sim/guilds/{g}/restore`,
//! `GET|POST /_sim/guilds/{g}/members` ([`NewMember`]),
//! `GET|PATCH|DELETE /_sim/guilds/{g}/members/{u}` ([`MemberPatch`]),
//! `GET|POST /_sim/interactions` ([`NewInteraction`]),
//! `GET /_sim/interactions/{id}`, `POST /_sim/interactions/faults?count=n`
//! ([`CallbackFault`]), `GET /_sim/interactions/held`,
//! `POST /_sim/interactions/release`, `GET /_sim/shards`,
//! `GET /_sim/shards/{n}` ([`ShardTranscript`]),
//! `POST /_sim/shards/{n}/faults` ([`Fault`]), `POST /_sim/traffic`
//! ([`TrafficSpec`]), `GET /_sim/traffic/{id}`, `POST /_sim/scenario`
//! ([`Scenario`]), `GET|POST /_sim/oauth2/users` ([`OAuthUser`]),
//! `POST /_sim/oauth2/next-login` (`{"user_id"}` or `{"deny": true}`),
//! `PUT /_sim/guilds/{g}/members/{u}/permissions` (`{"permissions": "8"}`),
//! `POST /_sim/oauth2/expire` (`{"codes", "tokens"}`, both by default).
//!
//! Not for production code paths: nothing here authenticates anyone beyond
//! comparing a configured token.

mod config;
mod control;
mod discord_json;
mod error;
mod faults;
mod gateway;
mod http;
mod ids;
mod oauth;
mod scenario;
mod state;
mod traffic;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{intents, OAuth2Config, RestLimits, SimConfig};
pub use control::{GuildsSpec, ShardStatus, SimControl, SimStats, TrafficRun};
pub use error::SimError;
pub use faults::{CallbackFault, Fault};
pub use gateway::transcript::{
    IgnoredMemberRequest, MemberRequest, MemberRequestAnswer, SentFrame, ShardEvent,
    ShardTranscript,
};
pub use ids::shard_for_guild;
pub use oauth::{permissions, OAuthUser, SUPPORTED_SCOPES};
pub use scenario::{Scenario, ScenarioReport, Step};
pub use traffic::{TrafficMix, TrafficProgress, TrafficReport, TrafficSpec};
pub use world::{
    CreatedInteraction, GuildInfo, InteractionInfo, InteractionResponse, MemberInfo, MemberPatch,
    NewInteraction, NewMember,
};

use state::Shared;

/// A poisoned lock only means another task panicked mid-update; the
/// simulator's state stays usable for inspection, so carry on.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulator. Dropping it without [`Simulator::shutdown`] leaves
/// its tasks running until the runtime ends.
pub struct Simulator {
    control: SimControl,
    gateway_addr: SocketAddr,
    api_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds both listeners and starts serving. Must run inside a Tokio runtime.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let bind = |port| SocketAddr::new(config.bind, port);
        let gateway_listener = bind_listener(bind(config.gateway_port)).await?;
        let api_listener = bind_listener(bind(config.api_port)).await?;
        let gateway_addr = local_addr(&gateway_listener, bind(config.gateway_port))?;
        let api_addr = local_addr(&api_listener, bind(config.api_port))?;
        let shared = Arc::new(Shared::new(config, format!("ws://{gateway_addr}")));

        let gateway_task =
            tokio::spawn(gateway::accept_loop(gateway_listener, Arc::clone(&shared)));
        let router = http::router(Arc::clone(&shared));
        let mut shutdown = shared.shutdown.subscribe();
        let api_task = tokio::spawn(async move {
            let served = axum::serve(api_listener, router)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.changed().await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "simulator HTTP server stopped");
            }
        });
        tracing::info!(gateway = %gateway_addr, api = %api_addr, "discord simulator listening");
        Ok(Self {
            control: SimControl { shared },
            gateway_addr,
            api_addr,
            tasks: vec![gateway_task, api_task],
        })
    }

    /// The gateway base URL, e.g. `ws://127.0.0.1:40123`: Twilight's
    /// `proxy_url`, and what READY hands out as `resume_gateway_url`.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.gateway_addr)
    }

    /// The REST base URL, e.g. `http://127.0.0.1:40124` (Discord's routes are
    /// under `/api/v10`, the control API under `/_sim`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `host:port` of the REST API, the form twilight-http's
    /// `ClientBuilder::proxy(host, true)` takes.
    pub fn api_host(&self) -> String {
        self.api_addr.to_string()
    }

    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn config(&self) -> &SimConfig {
        &self.control.shared.config
    }

    /// The in-process control API.
    pub fn control(&self) -> &SimControl {
        &self.control
    }

    /// Closes every gateway connection (code 1001), stops both listeners and
    /// waits for them, at most a few seconds.
    pub async fn shutdown(self) {
        self.control.shared.shutdown.send_replace(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, requested: SocketAddr) -> Result<SocketAddr, SimError> {
    listener.local_addr().map_err(|source| SimError::Bind {
        addr: requested,
        source,
    })
}
