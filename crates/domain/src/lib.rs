//! Gatehouse's community operations: what a community's rules, badges,
//! wallets and roles *do*, written once for every front end.
//!
//! The CLI, the workers, the demo and the admin API all call these
//! functions; none of them holds business logic of its own. This crate
//! parses no command line or HTTP request and holds no socket: the database
//! is reached through `store`'s tenant transactions, and the two effects
//! that leave the process — asking for an eligibility re-check and changing
//! a Discord role — go through traits ([`recheck::Rechecks`],
//! [`role_sync::RoleWriter`]) that the caller implements with the bus and
//! Discord's REST API.

pub mod audit;
pub mod badges;
pub mod community;
pub mod dead_letters;
pub mod keys;
pub mod link_page;
pub mod members;
pub mod preview;
pub mod recheck;
pub mod role_sync;
pub mod rules;
pub mod scores;
pub mod wallets;
pub mod webhooks;

pub use audit::{Actor, AuditAction};
pub use community::{CommunityRef, LookupError};
pub use recheck::{RecheckError, Rechecks};
