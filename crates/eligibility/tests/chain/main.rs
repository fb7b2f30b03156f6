//! Eligibility against a local fake JSON-RPC chain: rule outcomes, batching,
//! caching, failover, circuit breakers and outages.

mod batching;
mod budget;
mod delegations;
mod fake;
mod resilience;
mod rules;
mod siwe;
mod wallets;

use eligibility::fake_chain::FakeChain;
use eligibility::{
    Address, ChainConfig, EligibilityConfig, Evaluator, MemberFacts, RuleDef, RuleSet, U256,
};
use url::Url;
use uuid::Uuid;

pub const CHAIN: &str = "testnet";

/// The community the tests read for, where which one does not matter.
pub const COMMUNITY: Uuid = Uuid::nil();

/// An evaluator for one chain served by `urls`, with `tweak` applied to the
/// chain's config.
pub fn evaluator(urls: Vec<Url>, tweak: impl FnOnce(&mut ChainConfig)) -> Evaluator {
    let mut chain = ChainConfig::new(urls);
    chain.multicall_address = Some(eligibility::MULTICALL3_ADDRESS.to_string());
    tweak(&mut chain);
    let config = EligibilityConfig {
        chains: [(CHAIN.to_string(), chain)].into(),
    };
    Evaluator::new(&config).expect("valid config")
}

/// As [`evaluator`], with cache ages and read budgets going by `clock`.
pub fn evaluator_with_clock(
    urls: Vec<Url>,
    clock: &eligibility::ManualClock,
    tweak: impl FnOnce(&mut ChainConfig),
) -> Evaluator {
    let mut chain = ChainConfig::new(urls);
    chain.multicall_address = Some(eligibility::MULTICALL3_ADDRESS.to_string());
    tweak(&mut chain);
    let config = EligibilityConfig {
        chains: [(CHAIN.to_string(), chain)].into(),
    };
    Evaluator::with_clock(&config, std::sync::Arc::new(clock.clone())).expect("valid config")
}

pub async fn chain() -> FakeChain {
    FakeChain::start().await.expect("fake chain starts")
}

/// A rule parsed from store-shaped columns, so the tests exercise the same
/// entry point as the worker.
pub fn rule(
    n: u128,
    rule_type: &str,
    contract: Option<Address>,
    parameters: serde_json::Value,
) -> RuleDef {
    let contract = contract.map(|c| format!("{c:#x}"));
    let chain = contract.as_ref().map(|_| CHAIN);
    RuleDef::parse(
        Uuid::from_u128(n),
        true,
        rule_type,
        chain,
        contract.as_deref(),
        &parameters,
    )
    .unwrap_or_else(|e| panic!("test rule {n} is invalid: {e}"))
}

pub fn rules(defs: impl IntoIterator<Item = RuleDef>) -> RuleSet {
    let set = RuleSet::new(defs);
    assert!(set.problems().is_empty(), "{:?}", set.problems());
    set
}

pub fn wallet(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xee;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

pub fn member(wallet: Address) -> MemberFacts {
    MemberFacts {
        wallets: vec![wallet],
        score: 0,
    }
}

pub fn contract(n: u8) -> Address {
    Address::repeat_byte(n)
}

pub fn units(n: u64) -> U256 {
    U256::from(n)
}

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}
