//! Gatehouse's NATS plumbing, shared by the gateway, the worker and the CLI:
//! the connection ([`NatsSettings`]), the [`Namespace`], the one definition of
//! every stream, consumer and key-value bucket with its limits
//! ([`Topology`], [`DurableConsumer`]), publishing eligibility checks and
//! dead letters, and reading and replaying dead letters ([`DeadLetters`]).
//!
//! This crate moves bytes and names; it never looks inside a message. The
//! subject contract (subject strings, stream subjects, header names) is
//! `wire`'s.

pub mod authorization;
mod connection;
mod consumer;
mod dead_letters;
mod discord_budget;
mod ensure;
mod error;
mod namespace;
mod publish;
mod sessions;
mod settings;
mod topology;

pub use authorization::Process;
pub use connection::{Auth, NatsSettings, Secret, TlsSettings, DEFAULT_URL};
pub use consumer::{ensure_consumer, DurableConsumer};
pub use dead_letters::{DeadLetter, DeadLetters, Replayed, Scan};
pub use discord_budget::open_discord_budget_bucket;
pub use ensure::{ensure_streams, update_streams, Drift};
pub use error::BusError;
pub use namespace::{Namespace, NamespaceError};
pub use publish::{publish_check, publish_dead_letter, publish_webhook_delivery};
pub use sessions::open_sessions_bucket;
pub use settings::{StreamLimitSettings, StreamSettings};
pub use topology::{
    BucketLimits, Placement, Retention, Storage, StreamLimits, Topology, DISCORD_BUDGET_BUCKET,
    SESSIONS_BUCKET,
};
