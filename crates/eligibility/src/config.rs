//! Chain configuration: which RPC endpoints serve which chain, and how
//! patiently we talk to them.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy_primitives::{address, Address};
use serde::Deserialize;
use url::Url;

use crate::delegation::DELEGATE_REGISTRY_V2;
use crate::rule::{is_valid_chain_name, parse_address};

/// Multicall3's address on nearly every EVM chain (deployed with a keyless
/// transaction, so it is the same everywhere it exists).
pub const MULTICALL3_ADDRESS: Address = address!("cA11bde05977b3631167028862bE2a173976CA11");

/// All chains the evaluator can read, by the name rules use (`"ethereum"`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EligibilityConfig {
    #[serde(default)]
    pub chains: BTreeMap<String, ChainConfig>,
}

/// How to read one chain. `Debug` shows the RPC URLs redacted: providers
/// put API keys in them.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Tried in order; later URLs are fallbacks for earlier ones.
    pub rpc_urls: Vec<Url>,
    /// Upper bound on one HTTP request, including connecting.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// How long a read result may be reused.
    #[serde(default = "defaults::cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Entries kept per chain; beyond this, new results are not cached until
    /// old ones expire, which bounds memory for very large communities.
    #[serde(default = "defaults::cache_max_entries")]
    pub cache_max_entries: usize,
    /// Multicall3 contract; when set, reads are packed into `aggregate3`
    /// calls. Without it they go out as plain `eth_call`s in a JSON-RPC batch.
    #[serde(default)]
    pub multicall_address: Option<String>,
    /// Calls packed into one `aggregate3` (bounded by the node's gas cap for
    /// `eth_call`; a balance read costs a few thousand gas).
    #[serde(default = "defaults::max_calls_per_multicall")]
    pub max_calls_per_multicall: usize,
    /// Entries in one JSON-RPC batch (providers cap this, often at 100–1000).
    #[serde(default = "defaults::max_batch_size")]
    pub max_batch_size: usize,
    /// HTTP requests one evaluation keeps in flight per chain.
    #[serde(default = "defaults::max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Largest JSON-RPC reply body accepted, in bytes. A bigger one is an
    /// endpoint error, noticed while reading: a broken or hostile endpoint
    /// must not make the worker buffer an unbounded body.
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// When set, every request also asks `eth_chainId`, and a URL serving
    /// another chain is treated as failed: balances read from the wrong
    /// chain would strip roles from members who meet the rules.
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// Where delegate.xyz's DelegateRegistry v2 lives, for rules with
    /// `delegations`; unset means its canonical address
    /// ([`DELEGATE_REGISTRY_V2`]), which is the same on every chain it is
    /// deployed to. Set it for a chain (or a local test chain) that has it
    /// elsewhere.
    #[serde(default)]
    pub delegate_registry: Option<String>,
    /// RPC calls each community may make on this chain (per process);
    /// `None` (`null`): no per-community limit.
    #[serde(default = "defaults::community_budget")]
    pub community_budget: Option<CommunityBudget>,
}

/// A community's share of a chain's RPC calls: a token bucket of `burst`
/// calls refilling at `calls_per_second`. A call is one `eth_call` sent to
/// the provider (each entry of a JSON-RPC batch counts, as providers count
/// them; an `aggregate3` of many reads counts once). Reads answered from
/// the cache cost nothing.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommunityBudget {
    pub calls_per_second: f64,
    pub burst: u32,
}

impl Default for CommunityBudget {
    fn default() -> Self {
        CommunityBudget {
            calls_per_second: defaults::community_calls_per_second(),
            burst: defaults::community_burst(),
        }
    }
}

/// When an RPC URL is taken out of rotation, and for how long.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open the breaker.
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker refuses requests before letting one probe
    /// through (half-open).
    #[serde(default = "defaults::cooldown_ms")]
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: defaults::failure_threshold(),
            cooldown_ms: defaults::cooldown_ms(),
        }
    }
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        5_000
    }
    pub fn cache_ttl_secs() -> u64 {
        60
    }
    pub fn cache_max_entries() -> usize {
        200_000
    }
    pub fn max_calls_per_multicall() -> usize {
        500
    }
    pub fn max_batch_size() -> usize {
        // With 500 calls per multicall this is up to 5,000 reads (about
        // 2 MB of hex) per request: large, but within common provider limits.
        10
    }
    pub fn max_response_bytes() -> usize {
        // A full default request (10 aggregate3 results of 500 balance
        // reads) answers in about 1.6 MB of hex; this leaves room for
        // delegation lists. Raising the batch limits may need it raised too.
        8 * 1024 * 1024
    }
    pub fn max_concurrent_requests() -> usize {
        4
    }
    pub fn failure_threshold() -> u32 {
        3
    }
    pub fn cooldown_ms() -> u64 {
        30_000
    }
    pub fn community_budget() -> Option<super::CommunityBudget> {
        Some(super::CommunityBudget::default())
    }
    pub fn community_calls_per_second() -> f64 {
        // A 100,000-member community with two rules, read without
        // multicall (one call per member and rule), is re-checked in under
        // three hours at this rate: well inside the default six-hour period.
        // It is also within a typical paid provider plan's rate, so one
        // community cannot take all of it.
        20.0
    }
    pub fn community_burst() -> u32 {
        // One periodic scan batch (500 members) with two rules, without
        // multicall, goes out at once.
        1_000
    }
}

impl ChainConfig {
    /// A chain with the default limits, reading through `rpc_urls`.
    pub fn new(rpc_urls: Vec<Url>) -> Self {
        ChainConfig {
            rpc_urls,
            timeout_ms: defaults::timeout_ms(),
            cache_ttl_secs: defaults::cache_ttl_secs(),
            cache_max_entries: defaults::cache_max_entries(),
            multicall_address: None,
            max_calls_per_multicall: defaults::max_calls_per_multicall(),
            max_batch_size: defaults::max_batch_size(),
            max_concurrent_requests: defaults::max_concurrent_requests(),
            max_response_bytes: defaults::max_response_bytes(),
            breaker: BreakerConfig::default(),
            chain_id: None,
            delegate_registry: None,
            community_budget: defaults::community_budget(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    /// The parsed Multicall3 address; call after [`EligibilityConfig::validate`].
    pub fn multicall(&self) -> Option<Address> {
        self.multicall_address
            .as_deref()
            .and_then(|a| a.to_ascii_lowercase().parse().ok())
    }
}

impl ChainConfig {
    /// The DelegateRegistry v2 address; call after
    /// [`EligibilityConfig::validate`].
    pub fn delegate_registry(&self) -> Address {
        self.delegate_registry
            .as_deref()
            .and_then(|a| a.to_ascii_lowercase().parse().ok())
            .unwrap_or(DELEGATE_REGISTRY_V2)
    }
}

impl BreakerConfig {
    pub fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }
}

/// A configuration mistake, naming the chain and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("eligibility config: chains.{chain}.{field}: {problem}")]
pub struct ConfigError {
    pub chain: String,
    pub field: &'static str,
    pub problem: String,
}

impl EligibilityConfig {
    /// Checks every chain; reports the first mistake found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, chain) in &self.chains {
            chain.validate(name)?;
        }
        Ok(())
    }
}

impl ChainConfig {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let err = |field: &'static str, problem: String| ConfigError {
            chain: name.to_string(),
            field,
            problem,
        };
        if !is_valid_chain_name(name) {
            return Err(err(
                "name",
                format!("{name:?} is not a chain name; use up to 32 lowercase letters, digits, '_' or '-', starting with a letter or digit, as rules do"),
            ));
        }
        if self.rpc_urls.is_empty() {
            return Err(err(
                "rpc_urls",
                "is empty; list at least one http(s) URL".into(),
            ));
        }
        for (i, url) in self.rpc_urls.iter().enumerate() {
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(err(
                    "rpc_urls",
                    format!(
                        "entry {i} ({}) is not an http(s) URL with a host",
                        redact_url(url)
                    ),
                ));
            }
        }
        if self.timeout_ms == 0 {
            return Err(err(
                "timeout_ms",
                "is 0; give the request timeout in milliseconds".into(),
            ));
        }
        if self.cache_max_entries == 0 && self.cache_ttl_secs > 0 {
            return Err(err(
                "cache_max_entries",
                "is 0 while cache_ttl_secs is set; set cache_ttl_secs = 0 to disable caching"
                    .into(),
            ));
        }
        if let Some(raw) = &self.multicall_address {
            // Multicall addresses are usually copied in checksummed form, so
            // case is accepted here (unlike rule contracts, which are keys).
            parse_address(&raw.to_ascii_lowercase()).map_err(|p| err("multicall_address", p))?;
        }
        if let Some(raw) = &self.delegate_registry {
            // Checksummed like the multicall address, for the same reason.
            parse_address(&raw.to_ascii_lowercase()).map_err(|p| err("delegate_registry", p))?;
        }
        for (field, value) in [
            ("max_calls_per_multicall", self.max_calls_per_multicall),
            ("max_batch_size", self.max_batch_size),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_response_bytes", self.max_response_bytes),
        ] {
            if value == 0 {
                return Err(err(field, "is 0; it must be at least 1".into()));
            }
        }
        if self.breaker.failure_threshold == 0 {
            return Err(err(
                "breaker",
                "failure_threshold is 0; it must be at least 1".into(),
            ));
        }
        if let Some(budget) = &self.community_budget {
            budget
                .validate(self.max_batch_size)
                .map_err(|p| err("community_budget", p))?;
        }
        Ok(())
    }
}

impl CommunityBudget {
    /// Parses `<calls per second>` or `<calls per second>,<burst>` (the
    /// burst defaulting to [`CommunityBudget::default`]'s), or `off` for no
    /// budget, as `CHAIN_READS_PER_COMMUNITY` gives it. Checked further by
    /// [`EligibilityConfig::validate`].
    pub fn parse(text: &str) -> Result<Option<CommunityBudget>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text, None),
        };
        let calls_per_second = rate.parse::<f64>().map_err(|_| {
            format!("{rate:?} is not a number of calls per second; give e.g. `20` or `20,1000` (rate, burst), or `off`")
        })?;
        let burst = match burst {
            Some(b) => b.parse::<u32>().map_err(|_| {
                format!("the burst {b:?} is not a whole number of calls; give e.g. `20,1000`")
            })?,
            None => defaults::community_burst(),
        };
        let budget = CommunityBudget {
            calls_per_second,
            burst,
        };
        // Checked here as far as it can be without a chain, so a bad value
        // is refused even while no chain is configured.
        budget.validate(1)?;
        Ok(Some(budget))
    }

    fn validate(&self, max_batch_size: usize) -> Result<(), String> {
        if !self.calls_per_second.is_finite() || self.calls_per_second <= 0.0 {
            return Err(format!(
                "calls_per_second is {}; it must be a number above 0 (or no budget at all: null, `off`)",
                self.calls_per_second
            ));
        }
        if self.burst == 0 {
            return Err("burst is 0; it must be at least 1 (and at least max_batch_size)".into());
        }
        if (self.burst as usize) < max_batch_size {
            return Err(format!(
                "burst is {}, below max_batch_size ({max_batch_size}): a full batch of calls could never be sent; raise the burst or lower max_batch_size",
                self.burst
            ));
        }
        Ok(())
    }
}

/// An RPC URL safe to log: provider URLs carry API keys in the path or query
/// (`/v3/<key>`), which [`settings::redact`] hides.
pub fn redact_url(url: &Url) -> String {
    settings::redact(url.as_str())
}

impl std::fmt::Debug for ChainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.rpc_urls.iter().map(redact_url).collect();
        f.debug_struct("ChainConfig")
            .field("rpc_urls", &urls)
            .field("timeout_ms", &self.timeout_ms)
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .field("cache_max_entries", &self.cache_max_entries)
            .field("multicall_address", &self.multicall_address)
            .field("max_calls_per_multicall", &self.max_calls_per_multicall)
            .field("max_batch_size", &self.max_batch_size)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("breaker", &self.breaker)
            .field("chain_id", &self.chain_id)
            .field("delegate_registry", &self.delegate_registry)
            .field("community_budget", &self.community_budget)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_like: serde_json::Value) -> Result<EligibilityConfig, String> {
        let cfg: EligibilityConfig =
            serde_json::from_value(toml_like).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_fill_in() {
        let cfg = config(serde_json::json!({
            "chains": {"ethereum": {"rpc_urls": ["https://rpc.example/v3/secret"]}}
        }))
        .expect("valid");
        let eth = &cfg.chains["ethereum"];
        assert_eq!(eth.timeout(), Duration::from_secs(5));
        assert_eq!(eth.breaker.failure_threshold, 3);
        assert_eq!(eth.max_response_bytes, 8 * 1024 * 1024);
        assert_eq!(eth.multicall(), None);
    }

    #[test]
    fn errors_name_chain_and_field() {
        let e = config(serde_json::json!({"chains": {"ethereum": {"rpc_urls": []}}}))
            .expect_err("empty");
        assert!(e.contains("chains.ethereum.rpc_urls"), "{e}");

        let e = config(serde_json::json!({
            "chains": {"Eth": {"rpc_urls": ["https://a.example"]}}
        }))
        .expect_err("name");
        assert!(e.contains("chains.Eth.name"), "{e}");

        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["https://a.example"], "multicall_address": "0x12"}}
        }))
        .expect_err("multicall");
        assert!(e.contains("chains.eth.multicall_address"), "{e}");

        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["https://a.example"], "max_batch_size": 0}}
        }))
        .expect_err("batch");
        assert!(e.contains("chains.eth.max_batch_size"), "{e}");

        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["https://a.example"], "max_response_bytes": 0}}
        }))
        .expect_err("reply cap");
        assert!(e.contains("chains.eth.max_response_bytes"), "{e}");
    }

    #[test]
    fn non_http_url_is_refused_without_leaking_the_key() {
        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["wss://node.example/v3/topsecret"]}}
        }))
        .expect_err("wss");
        assert!(e.contains("chains.eth.rpc_urls"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn checksummed_multicall_is_accepted() {
        let cfg = config(serde_json::json!({
            "chains": {"eth": {
                "rpc_urls": ["http://127.0.0.1:8545"],
                "multicall_address": "0xcA11bde05977b3631167028862bE2a173976CA11"
            }}
        }))
        .expect("valid");
        assert_eq!(cfg.chains["eth"].multicall(), Some(MULTICALL3_ADDRESS));
    }

    #[test]
    fn delegate_registry_defaults_to_the_canonical_address_and_can_be_moved() {
        let cfg = config(serde_json::json!({
            "chains": {
                "eth": {"rpc_urls": ["http://127.0.0.1:8545"]},
                "local": {
                    "rpc_urls": ["http://127.0.0.1:8546"],
                    "delegate_registry": "0x00000000000000000000000000000000000000D1"
                }
            }
        }))
        .expect("valid");
        assert_eq!(cfg.chains["eth"].delegate_registry(), DELEGATE_REGISTRY_V2);
        assert_eq!(
            cfg.chains["local"].delegate_registry(),
            Address::left_padding_from(&[0xd1])
        );

        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["http://127.0.0.1:8545"], "delegate_registry": "0xd1"}}
        }))
        .expect_err("short address");
        assert!(e.contains("chains.eth.delegate_registry"), "{e}");
    }

    #[test]
    fn community_budget_defaults_on_and_can_be_turned_off() {
        let cfg = config(serde_json::json!({
            "chains": {
                "eth": {"rpc_urls": ["http://127.0.0.1:8545"]},
                "own": {"rpc_urls": ["http://127.0.0.1:8546"], "community_budget": null},
                "slow": {
                    "rpc_urls": ["http://127.0.0.1:8547"],
                    "community_budget": {"calls_per_second": 0.5, "burst": 10}
                }
            }
        }))
        .expect("valid");
        assert_eq!(
            cfg.chains["eth"].community_budget,
            Some(CommunityBudget::default())
        );
        assert_eq!(cfg.chains["own"].community_budget, None);
        assert_eq!(
            cfg.chains["slow"].community_budget,
            Some(CommunityBudget {
                calls_per_second: 0.5,
                burst: 10
            })
        );
    }

    #[test]
    fn community_budget_problems_name_the_field_and_the_fix() {
        for (budget, says) in [
            (
                serde_json::json!({"calls_per_second": 0, "burst": 100}),
                "above 0",
            ),
            (
                serde_json::json!({"calls_per_second": -1, "burst": 100}),
                "above 0",
            ),
            (
                serde_json::json!({"calls_per_second": 5, "burst": 9}),
                "raise the burst",
            ),
        ] {
            let e = config(serde_json::json!({
                "chains": {"eth": {"rpc_urls": ["http://127.0.0.1:8545"], "community_budget": budget}}
            }))
            .expect_err("bad budget");
            assert!(e.contains("chains.eth.community_budget"), "{e}");
            assert!(e.contains(says), "{e}");
        }
        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["http://127.0.0.1:8545"], "community_budget": {"calls_per_second": 5}}}
        }))
        .expect_err("burst missing");
        assert!(e.contains("burst"), "{e}");
    }

    #[test]
    fn community_budget_parses_from_one_setting() {
        assert_eq!(CommunityBudget::parse("off"), Ok(None));
        assert_eq!(
            CommunityBudget::parse(" 2.5 , 40 "),
            Ok(Some(CommunityBudget {
                calls_per_second: 2.5,
                burst: 40
            }))
        );
        assert_eq!(
            CommunityBudget::parse("7"),
            Ok(Some(CommunityBudget {
                calls_per_second: 7.0,
                ..CommunityBudget::default()
            }))
        );
        let e = CommunityBudget::parse("fast").expect_err("not a number");
        assert!(e.contains("calls per second") && e.contains("off"), "{e}");
        let e = CommunityBudget::parse("5,lots").expect_err("bad burst");
        assert!(e.contains("burst"), "{e}");
        let e = CommunityBudget::parse("-1").expect_err("negative");
        assert!(e.contains("above 0"), "{e}");
        let e = CommunityBudget::parse("5,0").expect_err("no burst");
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = config(serde_json::json!({
            "chains": {"eth": {"rpc_urls": ["http://127.0.0.1:8545"], "timeout": 5}}
        }))
        .expect_err("typo");
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn redaction_keeps_host_only() {
        let url: Url = "https://eth.example:8443/v3/key?apikey=x"
            .parse()
            .expect("url");
        assert_eq!(redact_url(&url), "https://eth.example:8443/***?***");
        let chain = ChainConfig::new(vec![url]);
        let debug = format!("{chain:?}");
        assert!(
            !debug.contains("apikey") && !debug.contains("v3/key"),
            "{debug}"
        );
    }
}
