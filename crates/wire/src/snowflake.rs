//! Discord ids on the wire.
//!
//! Snowflakes are 64-bit, beyond what JavaScript (and many JSON readers) hold
//! exactly in a number, so the contract writes them as decimal strings, as
//! Discord itself does.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Discord id (guild, user, channel, role, interaction, application).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snowflake(pub u64);

impl Snowflake {
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The shard that receives this guild's events: Discord routes a guild to
    /// shard `(guild_id >> 22) % shard_count`.
    pub const fn shard_for(self, shard_count: u32) -> u32 {
        if shard_count == 0 {
            return 0;
        }
        ((self.0 >> 22) % shard_count as u64) as u32
    }
}

impl From<u64> for Snowflake {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Snowflake {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl Serialize for Snowflake {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Snowflake {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SnowflakeVisitor)
    }
}

struct SnowflakeVisitor;

impl Visitor<'_> for SnowflakeVisitor {
    type Value = Snowflake;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a snowflake as a decimal string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Snowflake, E> {
        // u64's parser also takes a leading `+`, which is not a snowflake.
        let digits_only = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        match v.parse() {
            Ok(n) if digits_only => Ok(Snowflake(n)),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }

    // Writers must use strings, but a reader that rejected a number would turn
    // a harmless producer slip into a poison message.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Snowflake, E> {
        Ok(Snowflake(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_string_and_reads_string_or_number() {
        let id = Snowflake(1_234_567_890_123_456_789);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"1234567890123456789\""
        );
        let from_str: Snowflake = serde_json::from_str("\"1234567890123456789\"").unwrap();
        let from_num: Snowflake = serde_json::from_str("1234567890123456789").unwrap();
        assert_eq!(from_str, id);
        assert_eq!(from_num, id);
    }

    #[test]
    fn rejects_non_numeric_strings() {
        assert!(serde_json::from_str::<Snowflake>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Snowflake>("\"-1\"").is_err());
        assert!(serde_json::from_str::<Snowflake>("\"+1\"").is_err());
        assert!(serde_json::from_str::<Snowflake>("\"\"").is_err());
    }

    #[test]
    fn shard_routing_matches_discord_formula() {
        let guild = Snowflake((7u64 << 22) | 12345);
        assert_eq!(guild.shard_for(2), 1);
        assert_eq!(guild.shard_for(4), 3);
        assert_eq!(guild.shard_for(1), 0);
        assert_eq!(guild.shard_for(0), 0);
    }
}
