//! Typed access to each tenant table. Every repository borrows a
//! [`TenantTx`](crate::TenantTx), so it can only ever run inside one.

mod api_keys;
mod audit;
mod badges;
mod communities;
mod counters;
mod grants;
mod member_syncs;
mod nonces;
mod processed;
mod profiles;
mod replies;
mod rules;
mod seed;
mod stats;
mod wallets;
mod webhooks;

pub use api_keys::{ApiKey, ApiKeys, NewApiKey};
pub use audit::COLUMNS as AUDIT_COLUMNS;
pub use audit::{ActorType, Audit, AuditAction, AuditEntry, AuditFilter, AuditRecord};
pub use badges::{
    Badge, BadgeAward, BadgeEvaluator, BadgeWithHolders, Badges, JoinPosition, NewBadge,
};
pub use communities::{Communities, Community, SubscriptionTier};
pub use counters::{SyncCounter, SyncCounters};
pub use grants::{RoleGrant, RoleGrants};
pub use member_syncs::{ChunkOf, Ingested, ListedMember, MemberSync, MemberSyncs};
pub use nonces::{WalletNonce, WalletNonces};
pub use processed::ProcessedEvents;
pub use profiles::COLUMNS as PROFILE_COLUMNS;
pub use profiles::{
    AppliedEvent, LockedMembers, MemberChange, MemberEvent, MemberFilter, MemberUpsert, NextCheck,
    Profile, Profiles, ScoreChange,
};
pub use replies::{InteractionReplies, PendingReply, ReplyBody};
pub use rules::COLUMNS as RULE_COLUMNS;
pub use rules::{EligibilityRule, NewRule, RuleType, Rules};
pub use seed::Seed;
pub use stats::{CommunityCounts, Stats, SyncStatus};
pub use wallets::{LinkToken, LinkTokens, Linked, MemberWallet, MemberWallets, WalletProof};
pub use webhooks::{
    AttemptRecord, DeliveryJob, DeliveryState, DispatchScan, Enqueued, NewWebhook, Webhook,
    WebhookCursor, WebhookDelivery, Webhooks,
};

use tokio_postgres::{types::FromSql, Row};

use crate::StoreError;

/// Reads a column, turning a type mismatch into an error that names it.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &'static str) -> Result<T, StoreError> {
    row.try_get(name).map_err(|e| StoreError::Corrupt {
        what: "column",
        reason: format!("{name}: {e}"),
    })
}

/// Reads a `bigint` column holding a Discord id.
pub(crate) fn id_col<M>(row: &Row, name: &'static str) -> Result<wire::Id<M>, StoreError> {
    crate::ids::id_from_db(col(row, name)?, name)
}

/// Reads an `int8[]` column of Discord ids.
pub(crate) fn ids_col<M>(row: &Row, name: &'static str) -> Result<Vec<wire::Id<M>>, StoreError> {
    col::<Vec<i64>>(row, name)?
        .into_iter()
        .map(|v| crate::ids::id_from_db(v, name))
        .collect()
}

/// Declares a closed set of database strings (a CHECK constraint's values)
/// as a Rust enum with conversions both ways.
macro_rules! db_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::StoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(crate::StoreError::Corrupt {
                        what: stringify!($name),
                        reason: format!("unknown value {other:?}"),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use db_enum;
