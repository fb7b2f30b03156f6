//! Eligibility for Gatehouse: which members meet which rules.
//!
//! - [`rule`]: the rule model and the validation that runs when a rule is
//!   written ([`RuleSpec::parse`]).
//! - [`evaluate`]: deciding members' rules ([`Evaluator::evaluate_many`]),
//!   with three-valued [`Outcome`]s so a provider failure never removes a
//!   role.
//! - [`chain`]: EVM JSON-RPC reads, batched (JSON-RPC batches or Multicall3),
//!   cached, with failover across URLs, a circuit breaker per URL and a
//!   read budget per community.
//! - [`delegation`]: delegate.xyz v2 delegations, so a member's cold
//!   wallets can count without being linked.
//! - [`schedule`]: spreading periodic re-checks over their period.
//! - [`siwe`]: Sign-In with Ethereum (EIP-4361) messages and their
//!   verification, EIP-191 for ordinary wallets and EIP-1271 (through the
//!   chain readers) for contract wallets.
//! - `fake_chain` (feature `fake-chain`): a local JSON-RPC chain for tests
//!   and the demo.
//!
//! This crate knows nothing of Discord or SQL: callers hand it rules and
//! member facts and get outcomes per rule id back.

pub mod chain;
pub mod config;
pub mod delegation;
pub mod evaluate;
pub mod outcome;
pub mod rule;
pub mod schedule;
pub mod siwe;

#[cfg(feature = "fake-chain")]
pub mod fake_chain;

pub use alloy_primitives::{Address, B256, U256};
pub use chain::breaker::BreakerState;
pub use chain::clock::{Clock, ManualClock, SystemClock};
pub use chain::rpc::{ChainError, EndpointError, EndpointHealth};
pub use chain::{ChainStats, ContractSignature, Freshness};
pub use config::{
    BreakerConfig, ChainConfig, CommunityBudget, ConfigError, EligibilityConfig, MULTICALL3_ADDRESS,
};
pub use delegation::{Delegation, DelegationKind, DELEGATE_REGISTRY_V2};
pub use evaluate::{
    Evaluator, EvaluatorError, MemberEvaluation, MemberFacts, RuleDef, RuleOutcome, RuleProblem,
    RuleSet,
};
pub use outcome::{Outcome, UnknownReason};
pub use rule::{
    parse_address, CustomOp, FieldError, NftStandard, RuleColumns, RuleError, RuleSpec,
};
pub use schedule::{next_recheck_ms, recheck_offset};
pub use siwe::{SiweMessage, Timestamp};
