use std::net::SocketAddr;

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
    UnknownGuild(u64),
    #[error("unknown member {user_id} in guild {guild_id}")]
    UnknownMember { guild_id: u64, user_id: u64 },
    #[error("unknown role {role_id} in guild {guild_id}")]
    UnknownRole { guild_id: u64, role_id: u64 },
    #[error("timed out waiting for {0}")]
    Timeout(String),
}
