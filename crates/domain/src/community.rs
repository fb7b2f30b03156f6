//! Which community a front end is acting on.

use store::{Store, StoreError, TenantId};
use wire::GuildId;

/// A community as front ends address it: the tenant its rows belong to and
/// the Discord guild it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommunityRef {
    pub tenant: TenantId,
    pub guild: GuildId,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no community for guild {0}: has the bot joined it?")]
    Unknown(GuildId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The community serving `guild`.
pub async fn resolve(store: &Store, guild: GuildId) -> Result<CommunityRef, LookupError> {
    let tenant = store
        .directory()
        .resolve_guild(guild)
        .await?
        .ok_or(LookupError::Unknown(guild))?;
    Ok(CommunityRef { tenant, guild })
}
