//! `gatehouse bench …`: load generators that print a report, optionally
//! write it as JSON, and fail when a threshold is missed. Figures quoted
//! anywhere in the project come from here, never from timed tests.

pub mod db;
#[cfg(feature = "sim")]
pub mod gateway;
mod load_profile;
mod recorder;
