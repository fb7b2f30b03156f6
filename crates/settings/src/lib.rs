//! The configuration pieces every Gatehouse crate shares, kept in one small
//! crate so that there is one way to do each of them:
//!
//! - [`Secret`]: a token or password whose `Debug` and `Display` print
//!   `[redacted]`, so it can sit in any struct that is logged;
//! - [`redact`]: the one function that makes a URL (or a connection string,
//!   or a token) safe to print;
//! - [`parse_duration`]: humantime durations (`500ms`, `5s`, `2m`, `7d`);
//! - [`Problems`] / [`ConfigErrors`]: validation that reports every bad
//!   setting at once, each named by the variable (and flag) that sets it.

mod duration;
mod problems;
mod redact;
mod secret;

pub use duration::{format_duration, parse_duration, parse_durations, DurationError};
pub use problems::{label, ConfigErrors, Problem, Problems};
pub use redact::{looks_like_token, redact};
pub use secret::Secret;
