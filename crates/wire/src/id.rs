//! Typed Discord ids.
//!
//! A Discord id (a "snowflake") is a non-zero 64-bit number. Guild, user, role,
//! channel and application ids share that representation, which makes them
//! easy to swap by mistake; [`Id<M>`] carries a zero-sized marker so that the
//! compiler refuses a [`UserId`] where a [`GuildId`] is expected, and it wraps a
//! [`NonZeroU64`] so that 0 — never a valid id — cannot be represented.
//!
//! The contract writes ids as decimal strings, as Discord does: they exceed
//! what JavaScript (and many JSON readers) hold exactly in a number.
//!
//! ```compile_fail
//! use wire::{GuildId, UserId};
//!
//! fn kick(_guild: GuildId, _user: UserId) {}
//!
//! let guild = GuildId::new(1).unwrap();
//! let user = UserId::new(2).unwrap();
//! kick(user, guild); // swapped: does not compile
//! ```
//!
//! ```
//! use wire::{GuildId, UserId};
//!
//! fn kick(_guild: GuildId, _user: UserId) {}
//!
//! let guild = GuildId::new(1).unwrap();
//! let user = UserId::new(2).unwrap();
//! kick(guild, user);
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What kind of object an [`Id`] names; implemented by zero-sized markers.
pub trait Marker {
    /// The alias used in `Debug` output, e.g. `GuildId`.
    const NAME: &'static str;
    /// The object in prose, e.g. `guild`, for error messages.
    const NOUN: &'static str;
}

macro_rules! markers {
    ($($(#[$doc:meta])* $marker:ident => $alias:ident, $noun:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub struct $marker;

        impl Marker for $marker {
            const NAME: &'static str = stringify!($alias);
            const NOUN: &'static str = $noun;
        }

        #[doc = concat!("The id of a Discord ", $noun, ".")]
        pub type $alias = Id<$marker>;
    )*};
}

markers! {
    /// Marks a guild (a community's Discord server).
    GuildMarker => GuildId, "guild";
    /// Marks a user.
    UserMarker => UserId, "user";
    /// Marks a role.
    RoleMarker => RoleId, "role";
    /// Marks a channel.
    ChannelMarker => ChannelId, "channel";
    /// Marks an application (the bot).
    ApplicationMarker => ApplicationId, "application";
    /// Marks an interaction.
    InteractionMarker => InteractionId, "interaction";
    /// Marks an application command.
    CommandMarker => CommandId, "application command";
    /// Marks a message.
    MessageMarker => MessageId, "message";
}

/// A Discord id of the kind `M` names. See the [module docs](self).
pub struct Id<M> {
    value: NonZeroU64,
    // `fn() -> M` keeps `Id` Send, Sync and covariant whatever `M` is.
    marker: PhantomData<fn() -> M>,
}

impl<M> Id<M> {
    /// The id with this value; `None` for 0.
    pub const fn new(value: u64) -> Option<Self> {
        match NonZeroU64::new(value) {
            Some(value) => Some(Self::from_nonzero(value)),
            None => None,
        }
    }

    /// Same as [`Id::new`]: the name Twilight uses for its fallible constructor.
    pub const fn new_checked(value: u64) -> Option<Self> {
        Self::new(value)
    }

    pub const fn from_nonzero(value: NonZeroU64) -> Self {
        Self {
            value,
            marker: PhantomData,
        }
    }

    pub const fn get(self) -> u64 {
        self.value.get()
    }

    pub const fn into_nonzero(self) -> NonZeroU64 {
        self.value
    }

    /// The same number as an id of another kind. Only for the few places where
    /// Discord itself reuses an id (a guild's `@everyone` role has the guild's id).
    pub const fn cast<N>(self) -> Id<N> {
        Id::from_nonzero(self.value)
    }
}

// Manual impls: derives would require `M: Clone`, `M: PartialEq`, … although
// the marker is never stored.
impl<M> Clone for Id<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for Id<M> {}

impl<M> PartialEq for Id<M> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<M> Eq for Id<M> {}

// Comparing with the bare number, as Twilight's ids allow: what the number
// means is then the other side's business, but it cannot be another kind of id.
impl<M> PartialEq<u64> for Id<M> {
    fn eq(&self, other: &u64) -> bool {
        self.get() == *other
    }
}

impl<M> PartialEq<Id<M>> for u64 {
    fn eq(&self, other: &Id<M>) -> bool {
        *self == other.get()
    }
}

impl<M> PartialOrd for Id<M> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<M> Ord for Id<M> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

impl<M> Hash for Id<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl<M: Marker> fmt::Debug for Id<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", M::NAME, self.value)
    }
}

impl<M> fmt::Display for Id<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<M> From<NonZeroU64> for Id<M> {
    fn from(value: NonZeroU64) -> Self {
        Self::from_nonzero(value)
    }
}

impl<M> From<Id<M>> for u64 {
    fn from(id: Id<M>) -> Self {
        id.get()
    }
}

impl<M: Marker> TryFrom<u64> for Id<M> {
    type Error = ParseIdError;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value).ok_or_else(|| ParseIdError::new::<M>("0", ParseIdErrorKind::Zero))
    }
}

/// Why a text (or number) is not an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseIdErrorKind {
    /// Empty, or something other than ASCII digits (a sign included).
    NotDecimal,
    /// More than 64 bits.
    Overflow,
    /// 0, which Discord never uses as an id.
    Zero,
}

/// A text that is not an id of the expected kind; names the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {noun} id {input:?}: {}", reason(*.kind))]
pub struct ParseIdError {
    noun: &'static str,
    input: String,
    kind: ParseIdErrorKind,
}

fn reason(kind: ParseIdErrorKind) -> &'static str {
    match kind {
        ParseIdErrorKind::NotDecimal => "expected a decimal number",
        ParseIdErrorKind::Overflow => "larger than 18446744073709551615",
        ParseIdErrorKind::Zero => "0 is not an id",
    }
}

/// Enough of the input to recognise it without letting a hostile input flood a log.
const MAX_ECHOED_INPUT: usize = 32;

impl ParseIdError {
    fn new<M: Marker>(input: &str, kind: ParseIdErrorKind) -> Self {
        Self {
            noun: M::NOUN,
            input: input.chars().take(MAX_ECHOED_INPUT).collect(),
            kind,
        }
    }

    /// The offending text (at most 32 characters of it).
    pub fn input(&self) -> &str {
        &self.input
    }

    pub fn kind(&self) -> ParseIdErrorKind {
        self.kind
    }
}

impl<M: Marker> FromStr for Id<M> {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // u64's parser also takes a leading `+`, which is not an id.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseIdError::new::<M>(s, ParseIdErrorKind::NotDecimal));
        }
        let value: u64 = s
            .parse()
            .map_err(|_| ParseIdError::new::<M>(s, ParseIdErrorKind::Overflow))?;
        Self::new(value).ok_or_else(|| ParseIdError::new::<M>(s, ParseIdErrorKind::Zero))
    }
}

impl<M> Serialize for Id<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Digits without `fmt`: every envelope carries a guild, a user and
        // often a list of roles, and `collect_str` went through the
        // formatter for each (`gatehouse bench gateway` profiles).
        serializer.serialize_str(itoa::Buffer::new().format(self.value.get()))
    }
}

impl<'de, M: Marker> Deserialize<'de> for Id<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor(PhantomData))
    }
}

struct IdVisitor<M>(PhantomData<fn() -> M>);

impl<M: Marker> Visitor<'_> for IdVisitor<M> {
    type Value = Id<M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} id as a decimal string", M::NOUN)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Id<M>, E> {
        v.parse().map_err(E::custom)
    }

    // Writers must use strings, but a reader that rejected a number would turn
    // a harmless producer slip into a poison message.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id<M>, E> {
        Id::new(v).ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id<M>, E> {
        u64::try_from(v)
            .ok()
            .and_then(Id::new)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn writes_a_string_and_reads_string_or_number() {
        let id = GuildId::new(1_234_567_890_123_456_789).unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"1234567890123456789\""
        );
        let from_str: GuildId = serde_json::from_str("\"1234567890123456789\"").unwrap();
        let from_num: GuildId = serde_json::from_str("1234567890123456789").unwrap();
        assert_eq!(from_str, id);
        assert_eq!(from_num, id);
    }

    #[test]
    fn the_largest_id_round_trips() {
        let id = UserId::new(u64::MAX).unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
        assert_eq!(id.to_string().parse::<UserId>().unwrap(), id);
    }

    #[test]
    fn zero_is_refused_everywhere() {
        assert_eq!(GuildId::new(0), None);
        assert_eq!(GuildId::new_checked(0), None);
        assert!(GuildId::try_from(0).is_err());
        let err = "0".parse::<GuildId>().unwrap_err();
        assert_eq!(err.kind(), ParseIdErrorKind::Zero);
        assert!(serde_json::from_str::<GuildId>("\"0\"").is_err());
        assert!(serde_json::from_str::<GuildId>("0").is_err());
    }

    #[test]
    fn overflow_is_refused() {
        let err = "18446744073709551616".parse::<RoleId>().unwrap_err();
        assert_eq!(err.kind(), ParseIdErrorKind::Overflow);
        assert!(serde_json::from_str::<RoleId>("\"18446744073709551616\"").is_err());
        assert!(serde_json::from_str::<RoleId>("18446744073709551616").is_err());
    }

    #[test]
    fn rejects_non_numeric_strings_and_negative_numbers() {
        for bad in ["abc", "-1", "+1", "", " 1", "1 ", "1.0"] {
            let err = bad.parse::<UserId>().unwrap_err();
            assert_eq!(err.kind(), ParseIdErrorKind::NotDecimal, "{bad:?}");
            let json = serde_json::to_string(bad).unwrap();
            assert!(serde_json::from_str::<UserId>(&json).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<UserId>("-1").is_err());
        assert!(serde_json::from_str::<UserId>("1.5").is_err());
    }

    #[test]
    fn parse_errors_name_the_kind_and_the_input() {
        let err = "12a".parse::<ChannelId>().unwrap_err();
        assert_eq!(err.input(), "12a");
        assert_eq!(
            err.to_string(),
            "invalid channel id \"12a\": expected a decimal number"
        );
        let long = "x".repeat(1000);
        assert_eq!(long.parse::<ChannelId>().unwrap_err().input().len(), 32);
    }

    #[test]
    fn debug_names_the_kind_and_display_is_the_number() {
        let id = GuildId::new(123).unwrap();
        assert_eq!(format!("{id:?}"), "GuildId(123)");
        assert_eq!(format!("{:?}", id.cast::<RoleMarker>()), "RoleId(123)");
        assert_eq!(id.to_string(), "123");
        assert_eq!(
            format!("{:?}", Some(UserId::new(7).unwrap())),
            "Some(UserId(7))"
        );
    }

    #[test]
    fn ordering_and_hashing_follow_the_number() {
        let a = ApplicationId::new(1).unwrap();
        let b = ApplicationId::new(2).unwrap();
        assert!(a < b);
        assert!(a == 1 && 2 == b && a != 2);
        let set: HashSet<_> = [a, b, a].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert_eq!(u64::from(b), 2);
    }

    #[test]
    fn ids_stay_one_word() {
        assert_eq!(std::mem::size_of::<GuildId>(), 8);
        // The niche of NonZeroU64 makes an optional id free.
        assert_eq!(std::mem::size_of::<Option<GuildId>>(), 8);
    }
}
