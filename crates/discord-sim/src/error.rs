use std::net::SocketAddr;

use wire::{GuildId, RoleId, UserId};

/// Why the simulator could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading scenario {path}: {source}")]
    ScenarioRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing scenario {path}: {message}")]
    ScenarioParse { path: String, message: String },
    #[error("unknown guild {0}")]
    UnknownGuild(GuildId),
    #[error("unknown member {user_id} in guild {guild_id}")]
    UnknownMember { guild_id: GuildId, user_id: UserId },
    #[error("unknown role {role_id} in guild {guild_id}")]
    UnknownRole { guild_id: GuildId, role_id: RoleId },
    #[error("unknown user {0}: neither an OAuth2 user nor a member of any guild")]
    UnknownUser(UserId),
    #[error("timed out waiting for {0}")]
    Timeout(String),
}
