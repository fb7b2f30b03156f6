use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// An EVM account address, normalised to `0x` + 40 lowercase hex digits.
///
/// The database CHECK accepts only this form; parsing here first means a bad
/// address is reported as a typed error naming the problem instead of a
/// constraint violation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("wallet address must be 20 bytes of hex (0x followed by 40 hex digits), got {len} characters")]
    Length { len: usize },
    #[error("wallet address must be hex: {found:?} at position {position} is not a hex digit")]
    NotHex { found: char, position: usize },
}

impl WalletAddress {
    pub fn parse(input: &str) -> Result<Self, WalletError> {
        let trimmed = input.trim();
        let digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        if digits.len() != 40 {
            return Err(WalletError::Length {
                len: trimmed.chars().count(),
            });
        }
        if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(WalletError::NotHex {
                found: c,
                position: i + (trimmed.len() - digits.len()),
            });
        }
        Ok(WalletAddress(format!("0x{}", digits.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WalletAddress {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WalletAddress::parse(s)
    }
}

impl fmt::Display for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletAddress({})", self.0)
    }
}

impl Serialize for WalletAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WalletAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WalletAddress::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_lowercase_with_prefix() {
        let a = WalletAddress::parse("0xAbCdEf0123456789abcdef0123456789ABCDEF01").unwrap();
        assert_eq!(a.as_str(), "0xabcdef0123456789abcdef0123456789abcdef01");
        let b = WalletAddress::parse("abcdef0123456789abcdef0123456789abcdef01").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert_eq!(
            WalletAddress::parse("0x1234"),
            Err(WalletError::Length { len: 6 })
        );
        assert!(matches!(
            WalletAddress::parse("0xzbcdef0123456789abcdef0123456789abcdef01"),
            Err(WalletError::NotHex {
                found: 'z',
                position: 2
            })
        ));
        // 32-byte values (e.g. a tx hash pasted by mistake) are not addresses.
        assert!(WalletAddress::parse(&format!("0x{}", "ab".repeat(32))).is_err());
    }
}
