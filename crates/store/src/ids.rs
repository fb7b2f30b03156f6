use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// A Discord id (guild, user, role). Discord sends them as decimal strings;
/// they fit in 63 bits, which is how PostgreSQL stores them (`bigint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Snowflake(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid Discord id {input:?}: expected a decimal number between 1 and 9223372036854775807"
)]
pub struct SnowflakeError {
    input: String,
}

impl Snowflake {
    pub fn new(raw: u64) -> Result<Self, SnowflakeError> {
        match i64::try_from(raw) {
            Ok(v) if v > 0 => Ok(Snowflake(v)),
            _ => Err(SnowflakeError {
                input: raw.to_string(),
            }),
        }
    }

    pub const fn get(self) -> u64 {
        self.0 as u64
    }

    /// The value as PostgreSQL stores it.
    pub const fn as_i64(self) -> i64 {
        self.0
    }

    pub(crate) fn from_db(v: i64) -> Result<Self, crate::StoreError> {
        if v > 0 {
            Ok(Snowflake(v))
        } else {
            Err(crate::StoreError::Corrupt {
                what: "Discord id",
                reason: format!("{v} is not positive"),
            })
        }
    }
}

impl FromStr for Snowflake {
    type Err = SnowflakeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SnowflakeError {
            input: s.chars().take(32).collect(),
        };
        let raw: u64 = s.parse().map_err(|_| err())?;
        Snowflake::new(raw).map_err(|_| err())
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Snowflake {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Snowflake {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflakes_parse_from_discord_strings() {
        let id: Snowflake = "1234567890123456789".parse().unwrap();
        assert_eq!(id.get(), 1_234_567_890_123_456_789);
        assert_eq!(id.to_string(), "1234567890123456789");
    }

    #[test]
    fn snowflakes_reject_zero_overflow_and_garbage() {
        for bad in ["0", "-1", "18446744073709551615", "12a", ""] {
            assert!(bad.parse::<Snowflake>().is_err(), "{bad} accepted");
        }
    }
}
