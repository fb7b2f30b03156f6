//! The community an admin verb acts on, and the transaction it acts in.

use anyhow::Context;
use store::{repo::ActorType, repo::AuditEntry, Snowflake, Store, TenantTx};

use crate::db_args::DbArgs;

/// Which community, and how to reach its database.
#[derive(Debug, clap::Args)]
pub struct Community {
    #[command(flatten)]
    pub db: DbArgs,

    /// The community's Discord guild id.
    #[arg(long)]
    pub guild: String,
}

impl Community {
    pub fn guild_id(&self) -> anyhow::Result<Snowflake> {
        self.guild
            .parse()
            .with_context(|| format!("--guild {:?}", self.guild))
    }

    /// Connects and opens a transaction in the guild's community. The store
    /// is returned too: the transaction's connection belongs to its pool.
    pub async fn open(&self) -> anyhow::Result<(Store, TenantTx, Snowflake)> {
        let guild = self.guild_id()?;
        let store = self.db.connect(2).await?;
        let tenant = store
            .directory()
            .resolve_guild(guild)
            .await
            .map_err(|e| crate::db_args::explain(e, "DATABASE_URL"))?
            .with_context(|| format!("no community for guild {guild}: has the bot joined it?"))?;
        let tx = store.begin(tenant).await?;
        Ok((store, tx, guild))
    }
}

/// An audit entry for a change made by an operator through the CLI.
pub fn admin_entry(action: &str) -> AuditEntry {
    AuditEntry {
        actor_type: ActorType::Admin,
        ..AuditEntry::system(action)
    }
}
