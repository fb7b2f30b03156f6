use std::fmt;
use std::str::FromStr;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use uuid::Uuid;
use wire::Id;

use crate::StoreError;

/// A community's id: the tenant every row-level policy is keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(Uuid);

impl TenantId {
    pub const fn from_uuid(id: Uuid) -> Self {
        TenantId(id)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for TenantId {
    fn from(id: Uuid) -> Self {
        TenantId(id)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hyphenated lowercase hex; the tenant transaction relies on this
        // format containing nothing but [0-9a-f-].
        self.0.hyphenated().fmt(f)
    }
}

/// A UUID primary key with a type of its own, so that a rule's id cannot be
/// passed where a profile's is expected. Reads and writes as a PostgreSQL
/// `uuid` and serialises as the bare UUID.
macro_rules! uuid_id {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.0.to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <Uuid as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Uuid::from_sql(ty, raw).map($name)
            }

            fn accepts(ty: &Type) -> bool {
                <Uuid as FromSql>::accepts(ty)
            }
        }
    )*};
}

uuid_id! {
    /// A member's profile in one community.
    ProfileId;
    /// An eligibility rule.
    RuleId;
    /// A badge definition.
    BadgeId;
    /// An admin API key.
    ApiKeyId;
    /// A community's webhook endpoint.
    WebhookId;
}

/// Discord ids meet PostgreSQL here. Columns are `bigint`, which holds the
/// 63 bits Discord actually uses; the wire type allows all 64, so an id above
/// `i64::MAX` is refused on the way in rather than stored as a negative number.
pub(crate) fn db_id<M>(id: Id<M>, column: &'static str) -> Result<i64, StoreError> {
    i64::try_from(id.get()).map_err(|_| StoreError::IdOutOfRange {
        column,
        id: id.get(),
    })
}

/// [`db_id`] for a list (an `int8[]` column).
pub(crate) fn db_ids<M>(ids: &[Id<M>], column: &'static str) -> Result<Vec<i64>, StoreError> {
    ids.iter().map(|id| db_id(*id, column)).collect()
}

/// Ids as the text form of a `bigint[]` (`{1,2,3}`), for a list of them
/// in a set-based statement: ragged lists cannot go through `unnest` as one
/// 2-D array, so each travels as text and is cast back in SQL
/// (`roles::bigint[]`).
pub(crate) fn db_id_array_text<M>(
    ids: &[Id<M>],
    column: &'static str,
) -> Result<String, StoreError> {
    let ids = db_ids(ids, column)?;
    Ok(format!(
        "{{{}}}",
        ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    ))
}

/// A stored `bigint` read back as an id; 0 or a negative number means the
/// row was written by something other than this crate.
pub(crate) fn id_from_db<M>(value: i64, column: &'static str) -> Result<Id<M>, StoreError> {
    u64::try_from(value)
        .ok()
        .and_then(Id::new)
        .ok_or_else(|| StoreError::Corrupt {
            what: "Discord id",
            reason: format!("{column}: {value} is not positive"),
        })
}

#[cfg(test)]
mod tests {
    use wire::{GuildId, RoleMarker};

    use super::*;

    #[test]
    fn uuid_ids_print_and_parse_as_the_bare_uuid() {
        let raw = "6f1c2a4e-0b7d-4c1e-9a3f-2d5e8b7c9a10";
        let id: RuleId = raw.parse().unwrap();
        assert_eq!(id.to_string(), raw);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{raw}\""));
        assert!("not-a-uuid".parse::<ProfileId>().is_err());
    }

    #[test]
    fn ids_above_bigint_are_refused_naming_the_column() {
        let too_big = GuildId::new(1 << 63).unwrap();
        let err = db_id(too_big, "discord_guild_id").unwrap_err();
        assert!(err.to_string().contains("discord_guild_id"), "{err}");
        let largest = GuildId::new(i64::MAX as u64).unwrap();
        assert_eq!(db_id(largest, "discord_guild_id").unwrap(), i64::MAX);
    }

    #[test]
    fn zero_or_negative_from_the_database_is_corrupt() {
        for bad in [0, -1, i64::MIN] {
            let err = id_from_db::<RoleMarker>(bad, "role_discord_id").unwrap_err();
            assert!(err.to_string().contains("role_discord_id"), "{err}");
        }
        assert_eq!(id_from_db::<RoleMarker>(7, "role_ids").unwrap().get(), 7);
    }
}
