//! The community an admin verb acts on.

use domain::{community, CommunityRef, LookupError};
use store::Store;
use wire::GuildId;

use crate::db_args::DbArgs;

/// Which community, and how to reach its database.
#[derive(Debug, clap::Args)]
pub struct Community {
    #[command(flatten)]
    pub db: DbArgs,

    /// The community's Discord guild id.
    #[arg(long)]
    pub guild: GuildId,
}

impl Community {
    /// Connects and finds the guild's community.
    pub async fn open(&self) -> anyhow::Result<(Store, CommunityRef)> {
        let guild = self.guild;
        let store = self.db.connect(2).await?;
        let community = community::resolve(&store, guild)
            .await
            .map_err(|e| match e {
                LookupError::Store(e) => crate::db_args::explain(e, "DATABASE_URL"),
                unknown => anyhow::Error::new(unknown),
            })?;
        Ok((store, community))
    }
}
