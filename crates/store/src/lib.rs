//! Gatehouse's PostgreSQL layer.
//!
//! Every community's rows live in shared tables behind row-level security
//! keyed on the transaction-local setting `app.current_tenant`. This crate is
//! the only code that talks to those tables, and it offers exactly one way to
//! do so: a [`TenantTx`], obtained from [`Store::begin`], which opens the
//! transaction and sets the tenant in the same round trip. There is no API for
//! tenant SQL outside one.
//!
//! The few operations that must work across tenants (finding a guild's
//! community, provisioning one) go through narrow `SECURITY DEFINER` functions
//! wrapped in [`Directory`]; they never expose tenant rows.
//!
//! Everything here is written for PgBouncer in transaction pooling mode: no
//! session state outlives a transaction, and no named prepared statement is
//! ever created (all queries use the unnamed statement of the extended
//! protocol; see the `tenant` module).

mod config;
mod directory;
mod error;
mod guild_cache;
mod ids;
pub mod migrate;
mod pool;
pub mod repo;
mod tenant;
mod wallet;
mod web_sessions;

pub use config::{redact_url, StoreConfig};
pub use directory::{AuthenticatedKey, Directory, ResolvedLinkToken};
pub use error::StoreError;
pub use ids::{ApiKeyId, BadgeId, ProfileId, RuleId, TenantId, WebhookId};
pub use pool::{PoolWaits, Store};
pub use tenant::TenantTx;
pub use wallet::{WalletAddress, WalletError};
pub use web_sessions::{ActiveCommunity, NewWebSession, WebSession, WebSessions};

/// Names the rest of the system relies on.
pub mod names {
    /// The role that owns the schema and runs migrations.
    pub const OWNER_ROLE: &str = "gatehouse_owner";
    /// The runtime role: no BYPASSRLS, owns nothing.
    pub const APP_ROLE: &str = "gatehouse_app";
    /// Owner of the cross-tenant SECURITY DEFINER functions. NOLOGIN.
    pub const DEFINER_ROLE: &str = "gatehouse_definer";
    /// The transaction-local setting every policy reads.
    pub const TENANT_SETTING: &str = "app.current_tenant";
    /// The default database name.
    pub const DATABASE: &str = "gatehouse";
}
