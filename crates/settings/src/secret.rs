use std::{convert::Infallible, fmt, str::FromStr};

/// A token or password. `Debug` and `Display` print `[redacted]`, so a
/// `Secret` can sit in a config struct that is logged or shown in an error
/// without ever reaching the output; [`Secret::expose`] is the one way out,
/// for the code that must send it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the places that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Empty or only whitespace: an unset variable written as `VAR=`.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

/// Read from a config file like any string; it never prints itself back.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Lets clap (or any parser) produce a `Secret` straight from a flag or
/// variable, so the plain string never lives in a `Debug` struct.
impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-token");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");

        #[derive(Debug)]
        #[allow(dead_code)] // only read through Debug
        struct Config {
            token: Secret,
            maybe: Option<Secret>,
        }
        let config = Config {
            token: secret.clone(),
            maybe: Some(secret.clone()),
        };
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(secret.expose(), "hunter2-token");
    }

    #[test]
    fn blank_means_unset() {
        assert!(Secret::new("  ").is_blank());
        assert!(!Secret::from_str("x").unwrap().is_blank());
    }
}
