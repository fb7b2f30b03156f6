//! The one REST call the gateway makes: `GET /gateway/bot`, for the
//! recommended shard count, the gateway URL and the identify limits.

use std::time::Duration;

use twilight_http::error::ErrorType;
use twilight_model::gateway::connection_info::BotConnectionInfo;

use crate::config::{GatewayConfig, Token};
use crate::GatewayError;

/// Discord's REST API when `DISCORD_API_URL` is not set.
const DISCORD_API: &str = "https://discord.com";

pub async fn gateway_bot(
    token: &Token,
    api_proxy: Option<&(String, bool)>,
) -> Result<BotConnectionInfo, GatewayError> {
    let mut builder = twilight_http::Client::builder()
        .token(token.expose().to_owned())
        .timeout(Duration::from_secs(10));
    let api = match api_proxy {
        Some((host, plain_http)) => {
            builder = builder.proxy(host.clone(), *plain_http);
            format!("{}://{host}", if *plain_http { "http" } else { "https" })
        }
        None => DISCORD_API.to_owned(),
    };
    let client = builder.build();
    let fail = |problem: String| GatewayError::DiscordApi {
        api: api.clone(),
        problem,
    };
    let response = client
        .gateway()
        .authed()
        .await
        .map_err(|e| match e.kind() {
            ErrorType::Unauthorized => GatewayError::TokenRejected { status: 401 },
            ErrorType::Response { status, .. } if matches!(status.get(), 401 | 403) => {
                GatewayError::TokenRejected {
                    status: status.get(),
                }
            }
            // The error's Display may quote the response body; the status and
            // the kind are enough and cannot carry a secret.
            ErrorType::Response { status, .. } => fail(format!("HTTP {}", status.get())),
            ErrorType::RequestTimedOut => fail("timed out after 10s".into()),
            _ => fail(describe(&e)),
        })?;
    response
        .model()
        .await
        .map_err(|e| fail(format!("unexpected response body: {e}")))
}

/// The error and its causes on one line (connection errors say little
/// without their io cause).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Whether start-up needs `/gateway/bot`: for the shard count, or for the
/// identify limits that Discord's queue must respect.
pub fn needed(config: &GatewayConfig) -> bool {
    config.total_shards.is_none() || config.identify_queue == crate::config::IdentifyQueue::Discord
}
