//! The dashboard's pages, one module per part of a community. Each handler
//! takes a [`Managed`](super::session::Managed) (signed in, allowed here),
//! calls the same `domain` operation as the `/v1` route, and renders.

pub(crate) mod audit;
pub(crate) mod badges;
pub(crate) mod communities;
pub(crate) mod keys;
pub(crate) mod layout;
pub(crate) mod members;
pub(crate) mod rules;
pub(crate) mod webhooks;

use chrono::{DateTime, Utc};

/// A timestamp as admins read it.
pub(crate) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn when_opt(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), when)
}
