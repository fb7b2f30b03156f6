//! Why the gateway could not start or had to stop. Each message is one line
//! naming the setting to fix, and never contains a secret.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] settings::ConfigErrors),
    /// Connecting to NATS, or a stream or the session bucket.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("session store (JetStream key-value bucket {bucket}): {problem}")]
    Sessions { bucket: String, problem: String },
    #[error("DISCORD_TOKEN was rejected by Discord's REST API (HTTP {status}): set DISCORD_TOKEN (or DISCORD_BOT_TOKEN) to the bot's token")]
    TokenRejected { status: u16 },
    #[error("DISCORD_API_URL ({api}): GET /gateway/bot failed: {problem}")]
    DiscordApi { api: String, problem: String },
    #[error("HTTP_ADDR {addr}: cannot listen: {source}")]
    HttpBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// Discord closed a shard with a code after which reconnecting cannot help.
    #[error("{advice} (shard {shard}: gateway close code {code} {name})")]
    FatalClose {
        shard: u32,
        code: u16,
        name: String,
        advice: String,
    },
}

impl GatewayError {
    /// The error for a fatal close code, naming the setting that causes it.
    pub fn fatal_close(shard: u32, total: u32, code: u16) -> Self {
        let name = twilight_model::gateway::CloseCode::try_from(code)
            .map_or_else(|_| "unknown".into(), |c| c.to_string());
        let advice = match code {
            4004 => "DISCORD_TOKEN was rejected by the gateway: set DISCORD_TOKEN (or DISCORD_BOT_TOKEN) to the bot's token".to_owned(),
            4010 => format!("SHARDS/TOTAL_SHARDS: shard {shard} of {total} is not a valid shard; shard ids must be below TOTAL_SHARDS"),
            4011 => format!("TOTAL_SHARDS: the bot is in too many guilds for {total} shard(s); raise TOTAL_SHARDS or leave it unset (auto)"),
            4012 => "DISCORD_GATEWAY_URL: the server does not speak gateway API v10".to_owned(),
            4013 => "INTENTS: the gateway refused the intents as invalid; use names like GUILDS|GUILD_MEMBERS".to_owned(),
            4014 => "INTENTS: asks for privileged intents the application is not allowed (disallowed intents); enable them for the bot in the Discord developer portal or remove them from INTENTS".to_owned(),
            _ => "the gateway closed the connection and does not allow reconnecting".to_owned(),
        };
        Self::FatalClose {
            shard,
            code,
            name,
            advice,
        }
    }
}

/// Close codes after which a shard must not reconnect (Twilight stops the
/// shard; this process stops with [`GatewayError::FatalClose`]).
pub fn is_fatal_close(code: u16) -> bool {
    matches!(code, 4004 | 4010 | 4011 | 4012 | 4013 | 4014)
}

impl From<ConfigError> for GatewayError {
    fn from(e: ConfigError) -> Self {
        GatewayError::Config(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_codes_name_the_setting() {
        let bad_token = GatewayError::fatal_close(0, 1, 4004).to_string();
        assert!(bad_token.starts_with("DISCORD_TOKEN"), "{bad_token}");
        assert!(bad_token.contains("4004"));
        let intents = GatewayError::fatal_close(1, 2, 4014).to_string();
        assert!(intents.starts_with("INTENTS"), "{intents}");
        assert!(GatewayError::fatal_close(3, 2, 4010)
            .to_string()
            .contains("shard 3 of 2"));
        assert!(is_fatal_close(4014));
        assert!(!is_fatal_close(4000));
        assert!(!is_fatal_close(1006));
    }
}
