//! The rule model: what a stored rule row means, and the validation that runs
//! when a rule is written.
//!
//! The store keeps a rule as loose columns (`rule_type`, `chain`,
//! `contract_address`, `parameters` JSON). [`RuleSpec::parse`] is the single
//! gate from those columns into typed rules, so the same checks run when an
//! admin writes a rule and when the worker loads one.

use std::collections::BTreeSet;
use std::fmt;

use alloy_primitives::{Address, U256};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The most token ids one `nft_ownership` rule may list. Each id is one chain
/// read per member, so an unbounded list would let one rule dominate a batch.
pub const MAX_TOKEN_IDS: usize = 100;

/// The most sub-rules one `custom` rule may combine.
pub const MAX_CUSTOM_RULES: usize = 50;

/// A validated rule: the rule type with its typed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSpec {
    /// ERC-20 `balanceOf(holder) >= min_balance` (base units), summed over
    /// the member's wallets.
    TokenBalance {
        chain: String,
        contract: Address,
        min_balance: U256,
        /// Whether wallets that delegated to the member's wallets in the
        /// delegate.xyz v2 registry count too.
        delegations: bool,
    },
    /// The member holds at least `min_count` NFTs of `contract`.
    NftOwnership {
        chain: String,
        contract: Address,
        standard: NftStandard,
        min_count: U256,
        /// Empty means "any token of the contract" (ERC-721 only).
        token_ids: Vec<U256>,
        /// Whether wallets that delegated to the member's wallets in the
        /// delegate.xyz v2 registry count too.
        delegations: bool,
    },
    /// The member's profile score is at least `min_score`.
    ScoreThreshold { min_score: i64 },
    /// A boolean combination of other rules of the same community.
    Custom { op: CustomOp, rules: Vec<Uuid> },
}

/// Which NFT standard a contract implements; it decides which calls we make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NftStandard {
    Erc721,
    Erc1155,
}

/// How a `custom` rule combines its sub-rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomOp {
    All,
    Any,
    AtLeast(usize),
}

impl fmt::Display for CustomOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomOp::All => write!(f, "all"),
            CustomOp::Any => write!(f, "any"),
            CustomOp::AtLeast(n) => write!(f, "at least {n}"),
        }
    }
}

/// The rule types the store accepts, by their stored name.
pub const RULE_TYPES: [&str; 4] = [
    "token_balance",
    "nft_ownership",
    "score_threshold",
    "custom",
];

impl RuleSpec {
    /// Parses and validates a rule from the store's columns.
    ///
    /// Every bad field is reported (not only the first), each naming the
    /// field, what is wrong with it and what is expected, so an admin fixes
    /// a rule in one round trip.
    pub fn parse(
        rule_type: &str,
        chain: Option<&str>,
        contract: Option<&str>,
        parameters: &Value,
    ) -> Result<RuleSpec, RuleError> {
        let mut errs = Errors::default();
        let spec = match rule_type {
            "token_balance" => {
                let chain = required_chain(&mut errs, chain, rule_type);
                let contract = required_contract(&mut errs, contract, rule_type);
                let params = params_object(&mut errs, parameters, &["min_balance", "delegations"]);
                let min_balance = params.and_then(|p| {
                    positive_u256(&mut errs, p, "min_balance", "base units, e.g. \"1000000\"")
                });
                let delegations = params.and_then(|p| delegations(&mut errs, p));
                match (chain, contract, min_balance, delegations) {
                    (Some(chain), Some(contract), Some(min_balance), Some(delegations)) => {
                        Some(RuleSpec::TokenBalance {
                            chain,
                            contract,
                            min_balance,
                            delegations,
                        })
                    }
                    _ => None,
                }
            }
            "nft_ownership" => {
                let chain = required_chain(&mut errs, chain, rule_type);
                let contract = required_contract(&mut errs, contract, rule_type);
                let params = params_object(
                    &mut errs,
                    parameters,
                    &["standard", "min_count", "token_ids", "delegations"],
                );
                let parsed = params.and_then(|p| nft_params(&mut errs, p));
                let delegations = params.and_then(|p| delegations(&mut errs, p));
                match (chain, contract, parsed, delegations) {
                    (
                        Some(chain),
                        Some(contract),
                        Some((standard, min_count, token_ids)),
                        Some(delegations),
                    ) => Some(RuleSpec::NftOwnership {
                        chain,
                        contract,
                        standard,
                        min_count,
                        token_ids,
                        delegations,
                    }),
                    _ => None,
                }
            }
            "score_threshold" => {
                forbidden(&mut errs, "chain", chain, rule_type);
                forbidden(&mut errs, "contract_address", contract, rule_type);
                let params = params_object(&mut errs, parameters, &["min_score"]);
                params
                    .and_then(|p| min_score(&mut errs, p))
                    .map(|min_score| RuleSpec::ScoreThreshold { min_score })
            }
            "custom" => {
                forbidden(&mut errs, "chain", chain, rule_type);
                forbidden(&mut errs, "contract_address", contract, rule_type);
                let params = params_object(&mut errs, parameters, &["op", "n", "rules"]);
                params
                    .and_then(|p| custom_params(&mut errs, p))
                    .map(|(op, rules)| RuleSpec::Custom { op, rules })
            }
            other => {
                errs.push(
                    "rule_type",
                    format!("unknown rule type {other:?}"),
                    format!("one of {}", RULE_TYPES.join(", ")),
                );
                None
            }
        };
        match (spec, errs.0.is_empty()) {
            (Some(spec), true) => Ok(spec),
            // A spec without errors cannot be missing, but stay total rather
            // than panic on a logic slip.
            (None, true) => Err(RuleError {
                errors: vec![FieldError {
                    field: "parameters".into(),
                    problem: "could not be parsed".into(),
                    expected: "the documented parameters for this rule type".into(),
                }],
            }),
            (_, false) => Err(RuleError { errors: errs.0 }),
        }
    }

    /// The stored name of this rule's type.
    pub fn rule_type(&self) -> &'static str {
        match self {
            RuleSpec::TokenBalance { .. } => "token_balance",
            RuleSpec::NftOwnership { .. } => "nft_ownership",
            RuleSpec::ScoreThreshold { .. } => "score_threshold",
            RuleSpec::Custom { .. } => "custom",
        }
    }

    /// The chain this rule reads, if it reads one.
    pub fn chain(&self) -> Option<&str> {
        match self {
            RuleSpec::TokenBalance { chain, .. } | RuleSpec::NftOwnership { chain, .. } => {
                Some(chain)
            }
            _ => None,
        }
    }

    /// The canonical store columns for this rule: what to write after
    /// [`RuleSpec::parse`] accepted an admin's input, so equal rules are
    /// stored identically (lowercase addresses, decimal strings, no
    /// stray keys).
    pub fn to_columns(&self) -> RuleColumns {
        let decimal = |v: &U256| Value::String(v.to_string());
        let (chain, contract, parameters) = match self {
            RuleSpec::TokenBalance {
                chain,
                contract,
                min_balance,
                delegations,
            } => {
                let mut params = serde_json::json!({ "min_balance": decimal(min_balance) });
                if *delegations {
                    params["delegations"] = Value::Bool(true);
                }
                (Some(chain.clone()), Some(*contract), params)
            }
            RuleSpec::NftOwnership {
                chain,
                contract,
                standard,
                min_count,
                token_ids,
                delegations,
            } => {
                let mut params = serde_json::json!({
                    "standard": match standard {
                        NftStandard::Erc721 => "erc721",
                        NftStandard::Erc1155 => "erc1155",
                    },
                    // min_count was parsed from a u64, so it converts back.
                    "min_count": u64::try_from(*min_count).unwrap_or(u64::MAX),
                });
                if !token_ids.is_empty() {
                    params["token_ids"] = token_ids.iter().map(decimal).collect();
                }
                // Left out when false, so rules written before the
                // parameter existed keep their canonical form.
                if *delegations {
                    params["delegations"] = Value::Bool(true);
                }
                (Some(chain.clone()), Some(*contract), params)
            }
            RuleSpec::ScoreThreshold { min_score } => {
                (None, None, serde_json::json!({ "min_score": min_score }))
            }
            RuleSpec::Custom { op, rules } => {
                let rules: Vec<String> = rules.iter().map(Uuid::to_string).collect();
                let params = match op {
                    CustomOp::All => serde_json::json!({"op": "all", "rules": rules}),
                    CustomOp::Any => serde_json::json!({"op": "any", "rules": rules}),
                    CustomOp::AtLeast(n) => {
                        serde_json::json!({"op": "at_least", "n": n, "rules": rules})
                    }
                };
                (None, None, params)
            }
        };
        RuleColumns {
            rule_type: self.rule_type(),
            chain,
            contract_address: contract.map(|c| format!("{c:#x}")),
            parameters,
        }
    }

    /// Whether delegators' holdings count for this rule (`delegations`).
    pub fn delegations(&self) -> bool {
        match self {
            RuleSpec::TokenBalance { delegations, .. }
            | RuleSpec::NftOwnership { delegations, .. } => *delegations,
            _ => false,
        }
    }

    /// The rules a `custom` rule refers to (empty for other types).
    pub fn references(&self) -> &[Uuid] {
        match self {
            RuleSpec::Custom { rules, .. } => rules,
            _ => &[],
        }
    }
}

/// A rule as the store's columns hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleColumns {
    pub rule_type: &'static str,
    pub chain: Option<String>,
    pub contract_address: Option<String>,
    pub parameters: Value,
}

/// One bad field of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `rule_type`, `chain`, `contract_address`, `parameters` or
    /// `parameters.<name>`.
    pub field: String,
    pub problem: String,
    pub expected: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}; expected {}",
            self.field, self.problem, self.expected
        )
    }
}

/// Why a rule was refused: one entry per bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub errors: Vec<FieldError>,
}

impl RuleError {
    /// The error for `field`, if that field was bad.
    pub fn field(&self, field: &str) -> Option<&FieldError> {
        self.errors.iter().find(|e| e.field == field)
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rule: ")?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &str, problem: impl Into<String>, expected: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            problem: problem.into(),
            expected: expected.into(),
        });
    }
}

/// Validates a chain name as the store's check constraint does
/// (`^[a-z0-9][a-z0-9_-]{0,31}$`), so a rule that passes here is never
/// refused by the database.
pub fn is_valid_chain_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(alnum)
        && bytes.len() <= 32
        && bytes.iter().all(|b| alnum(b) || *b == b'_' || *b == b'-')
}

fn required_chain(errs: &mut Errors, chain: Option<&str>, rule_type: &str) -> Option<String> {
    const EXPECTED: &str =
        "a chain name of up to 32 lowercase letters, digits, '_' or '-', starting with a letter or digit (e.g. \"ethereum\")";
    match chain {
        None => {
            errs.push(
                "chain",
                format!("missing; {rule_type} rules read a chain"),
                EXPECTED,
            );
            None
        }
        Some(c) if !is_valid_chain_name(c) => {
            errs.push(
                "chain",
                format!("{c:?} is not a valid chain name"),
                EXPECTED,
            );
            None
        }
        Some(c) => Some(c.to_string()),
    }
}

fn required_contract(
    errs: &mut Errors,
    contract: Option<&str>,
    rule_type: &str,
) -> Option<Address> {
    const EXPECTED: &str = "\"0x\" followed by 40 lowercase hex digits";
    let Some(raw) = contract else {
        errs.push(
            "contract_address",
            format!("missing; {rule_type} rules read a contract"),
            EXPECTED,
        );
        return None;
    };
    match parse_address(raw) {
        Ok(a) => Some(a),
        Err(problem) => {
            errs.push("contract_address", problem, EXPECTED);
            None
        }
    }
}

/// Parses the store's canonical address form. Lowercase only, because the
/// store compares addresses as text and a checksummed duplicate would slip
/// past a uniqueness check.
pub fn parse_address(raw: &str) -> Result<Address, String> {
    let Some(hex) = raw.strip_prefix("0x") else {
        return Err(format!("{raw:?} does not start with \"0x\""));
    };
    if hex.len() != 40 {
        return Err(format!(
            "{raw:?} has {} hex digits after \"0x\", not 40",
            hex.len()
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "{raw:?} contains characters other than lowercase hex digits"
        ));
    }
    raw.parse::<Address>()
        .map_err(|e| format!("{raw:?} is not an address: {e}"))
}

fn forbidden(errs: &mut Errors, field: &str, value: Option<&str>, rule_type: &str) {
    if let Some(v) = value {
        errs.push(
            field,
            format!("{v:?} given, but {rule_type} rules do not read a chain"),
            "no value (null)",
        );
    }
}

fn params_object<'a>(
    errs: &mut Errors,
    parameters: &'a Value,
    allowed: &[&str],
) -> Option<&'a Map<String, Value>> {
    let Some(obj) = parameters.as_object() else {
        errs.push(
            "parameters",
            format!("is {}, not an object", json_kind(parameters)),
            format!("a JSON object with keys {}", allowed.join(", ")),
        );
        return None;
    };
    // Unknown keys are refused so that a typo ("min_blance") is an error
    // rather than a rule that silently ignores the intended value.
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            errs.push(
                &format!("parameters.{key}"),
                "is not a parameter of this rule type",
                format!("only {}", allowed.join(", ")),
            );
        }
    }
    Some(obj)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a decimal string into a U256. Amounts are strings because JSON
/// numbers lose precision above 2^53 and token amounts routinely exceed it.
pub fn parse_decimal_u256(raw: &str) -> Result<U256, String> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{raw:?} is not a decimal number"));
    }
    U256::from_str_radix(raw, 10).map_err(|_| format!("{raw:?} does not fit in 256 bits"))
}

fn positive_u256(
    errs: &mut Errors,
    params: &Map<String, Value>,
    key: &str,
    example: &str,
) -> Option<U256> {
    let field = format!("parameters.{key}");
    let expected = format!("a decimal string greater than 0 of {example}");
    match params.get(key) {
        None => {
            errs.push(&field, "missing", expected);
            None
        }
        Some(Value::String(s)) => match parse_decimal_u256(s) {
            Ok(v) if v.is_zero() => {
                errs.push(
                    &field,
                    "is 0, which every wallet meets; link-a-wallet gating is not what this rule is for",
                    expected,
                );
                None
            }
            Ok(v) => Some(v),
            Err(problem) => {
                errs.push(&field, problem, expected);
                None
            }
        },
        Some(other) => {
            errs.push(
                &field,
                format!("is {}, not a string", json_kind(other)),
                expected,
            );
            None
        }
    }
}

fn nft_params(errs: &mut Errors, p: &Map<String, Value>) -> Option<(NftStandard, U256, Vec<U256>)> {
    let standard = match p.get("standard") {
        Some(Value::String(s)) if s == "erc721" => Some(NftStandard::Erc721),
        Some(Value::String(s)) if s == "erc1155" => Some(NftStandard::Erc1155),
        Some(other) => {
            errs.push(
                "parameters.standard",
                format!("{other} is not a supported standard"),
                "\"erc721\" or \"erc1155\"",
            );
            None
        }
        None => {
            errs.push(
                "parameters.standard",
                "missing",
                "\"erc721\" or \"erc1155\"",
            );
            None
        }
    };

    let count_expected = "a whole number of tokens, at least 1 (e.g. 1)";
    let min_count = match p.get("min_count") {
        None => {
            errs.push("parameters.min_count", "missing", count_expected);
            None
        }
        Some(v) => match v.as_u64() {
            Some(0) => {
                errs.push("parameters.min_count", "is 0", count_expected);
                None
            }
            Some(n) => Some(U256::from(n)),
            None => {
                errs.push(
                    "parameters.min_count",
                    format!("{v} is not a positive whole number"),
                    count_expected,
                );
                None
            }
        },
    };

    let ids_expected =
        format!("an array of 1 to {MAX_TOKEN_IDS} distinct decimal strings (e.g. [\"1\", \"42\"])");
    let token_ids = match p.get("token_ids") {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            let mut seen = BTreeSet::new();
            let mut ok = true;
            if items.is_empty() || items.len() > MAX_TOKEN_IDS {
                errs.push(
                    "parameters.token_ids",
                    format!("has {} entries", items.len()),
                    ids_expected.clone(),
                );
                ok = false;
            }
            for (i, item) in items.iter().enumerate() {
                let parsed = match item {
                    Value::String(s) => parse_decimal_u256(s),
                    other => Err(format!("is {}, not a string", json_kind(other))),
                };
                match parsed {
                    Ok(id) if !seen.insert(id) => {
                        errs.push(
                            &format!("parameters.token_ids[{i}]"),
                            format!("repeats token id {id}"),
                            ids_expected.clone(),
                        );
                        ok = false;
                    }
                    Ok(id) => ids.push(id),
                    Err(problem) => {
                        errs.push(
                            &format!("parameters.token_ids[{i}]"),
                            problem,
                            ids_expected.clone(),
                        );
                        ok = false;
                    }
                }
            }
            ok.then_some(ids)
        }
        Some(other) => {
            errs.push(
                "parameters.token_ids",
                format!("is {}, not an array", json_kind(other)),
                ids_expected,
            );
            None
        }
    };

    // ERC-1155 has no "balance across all ids" call, so the ids must be named.
    if standard == Some(NftStandard::Erc1155) && token_ids.as_ref().is_some_and(Vec::is_empty) {
        errs.push(
            "parameters.token_ids",
            "missing; erc1155 balances are per token id",
            "an array of the token ids that count (e.g. [\"1\"])",
        );
        return None;
    }
    Some((standard?, min_count?, token_ids?))
}

/// The optional `delegations` flag; absent means false.
fn delegations(errs: &mut Errors, p: &Map<String, Value>) -> Option<bool> {
    match p.get("delegations") {
        None => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            errs.push(
                "parameters.delegations",
                format!("is {}, not a boolean", json_kind(other)),
                "true (delegate.xyz v2 delegators' holdings count too) or false (the default)",
            );
            None
        }
    }
}

fn min_score(errs: &mut Errors, p: &Map<String, Value>) -> Option<i64> {
    let expected = "a whole number (e.g. 100)";
    match p.get("min_score") {
        None => {
            errs.push("parameters.min_score", "missing", expected);
            None
        }
        Some(v) => match v.as_i64() {
            Some(n) => Some(n),
            None => {
                errs.push(
                    "parameters.min_score",
                    format!("{v} is not a whole number that fits in 64 bits"),
                    expected,
                );
                None
            }
        },
    }
}

fn custom_params(errs: &mut Errors, p: &Map<String, Value>) -> Option<(CustomOp, Vec<Uuid>)> {
    let rules_expected = format!(
        "an array of 1 to {MAX_CUSTOM_RULES} distinct rule ids (UUID strings) of this community"
    );
    let rules = match p.get("rules") {
        None => {
            errs.push("parameters.rules", "missing", rules_expected.clone());
            None
        }
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            let mut ok = true;
            if items.is_empty() || items.len() > MAX_CUSTOM_RULES {
                errs.push(
                    "parameters.rules",
                    format!("has {} entries", items.len()),
                    rules_expected.clone(),
                );
                ok = false;
            }
            for (i, item) in items.iter().enumerate() {
                match item.as_str().map(Uuid::parse_str) {
                    Some(Ok(id)) if ids.contains(&id) => {
                        errs.push(
                            &format!("parameters.rules[{i}]"),
                            format!("repeats rule {id}"),
                            rules_expected.clone(),
                        );
                        ok = false;
                    }
                    Some(Ok(id)) => ids.push(id),
                    _ => {
                        errs.push(
                            &format!("parameters.rules[{i}]"),
                            format!("{item} is not a rule id"),
                            rules_expected.clone(),
                        );
                        ok = false;
                    }
                }
            }
            ok.then_some(ids)
        }
        Some(other) => {
            errs.push(
                "parameters.rules",
                format!("is {}, not an array", json_kind(other)),
                rules_expected.clone(),
            );
            None
        }
    };

    let op_expected = "\"all\", \"any\" or \"at_least\"";
    let op = match p.get("op").and_then(Value::as_str) {
        Some("all") => Some(CustomOp::All),
        Some("any") => Some(CustomOp::Any),
        Some("at_least") => {
            let n_expected = "a whole number from 1 to the number of rules";
            match p.get("n") {
                None => {
                    errs.push("parameters.n", "missing; at_least needs n", n_expected);
                    None
                }
                Some(v) => match v.as_u64() {
                    Some(n)
                        if n >= 1
                            && rules
                                .as_ref()
                                .is_none_or(|r| usize::try_from(n).is_ok_and(|n| n <= r.len())) =>
                    {
                        usize::try_from(n).ok().map(CustomOp::AtLeast)
                    }
                    _ => {
                        errs.push("parameters.n", format!("{v} is out of range"), n_expected);
                        None
                    }
                },
            }
        }
        _ => {
            let problem = match p.get("op") {
                None => "missing".to_string(),
                Some(v) => format!("{v} is not a supported operation"),
            };
            errs.push("parameters.op", problem, op_expected);
            None
        }
    };
    if matches!(op, Some(CustomOp::All | CustomOp::Any)) && p.contains_key("n") {
        errs.push(
            "parameters.n",
            "given, but only at_least uses n",
            "no n unless op is \"at_least\"",
        );
        return None;
    }
    Some((op?, rules?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONTRACT: &str = "0x1111111111111111111111111111111111111111";

    fn only_error(err: RuleError) -> FieldError {
        assert_eq!(err.errors.len(), 1, "expected one error, got {err}");
        err.errors.into_iter().next().expect("one error")
    }

    #[test]
    fn token_balance_parses() {
        let spec = RuleSpec::parse(
            "token_balance",
            Some("ethereum"),
            Some(CONTRACT),
            &json!({"min_balance": "1000000000000000000000000"}),
        )
        .expect("valid");
        match spec {
            RuleSpec::TokenBalance {
                chain, min_balance, ..
            } => {
                assert_eq!(chain, "ethereum");
                assert_eq!(min_balance.to_string(), "1000000000000000000000000");
            }
            other => panic!("wrong spec {other:?}"),
        }
    }

    #[test]
    fn token_balance_number_is_refused_naming_the_field() {
        let err = RuleSpec::parse(
            "token_balance",
            Some("ethereum"),
            Some(CONTRACT),
            &json!({"min_balance": 5}),
        )
        .expect_err("numbers lose precision");
        let e = only_error(err);
        assert_eq!(e.field, "parameters.min_balance");
        assert!(e.problem.contains("not a string"), "{e}");
        assert!(e.expected.contains("decimal string"), "{e}");
    }

    #[test]
    fn zero_min_balance_is_refused() {
        let err = RuleSpec::parse(
            "token_balance",
            Some("ethereum"),
            Some(CONTRACT),
            &json!({"min_balance": "0"}),
        )
        .expect_err("zero");
        assert_eq!(only_error(err).field, "parameters.min_balance");
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = RuleSpec::parse(
            "token_balance",
            Some("Ethereum Mainnet"),
            Some("0xABCDEF"),
            &json!({"min_blance": "1"}),
        )
        .expect_err("all bad");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "chain",
                "contract_address",
                "parameters.min_blance",
                "parameters.min_balance"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("chain: \"Ethereum Mainnet\" is not a valid chain name"),
            "{text}"
        );
    }

    #[test]
    fn chain_names_follow_the_store_constraint() {
        for ok in ["ethereum", "base-sepolia", "0g", "a_b", &"x".repeat(32)] {
            assert!(is_valid_chain_name(ok), "{ok}");
        }
        for bad in ["", "-eth", "_eth", "Eth", "eth mainnet", &"x".repeat(33)] {
            assert!(!is_valid_chain_name(bad), "{bad}");
        }
    }

    #[test]
    fn checksummed_contract_is_refused() {
        let err = RuleSpec::parse(
            "token_balance",
            Some("ethereum"),
            Some("0xAbCdEf0000000000000000000000000000000000"),
            &json!({"min_balance": "1"}),
        )
        .expect_err("uppercase");
        let e = only_error(err);
        assert_eq!(e.field, "contract_address");
        assert!(e.expected.contains("lowercase"), "{e}");
    }

    #[test]
    fn missing_chain_for_chain_rule() {
        let err = RuleSpec::parse(
            "nft_ownership",
            None,
            Some(CONTRACT),
            &json!({"standard": "erc721", "min_count": 1}),
        )
        .expect_err("no chain");
        assert_eq!(only_error(err).field, "chain");
    }

    #[test]
    fn nft_erc721_without_ids_parses() {
        let spec = RuleSpec::parse(
            "nft_ownership",
            Some("polygon"),
            Some(CONTRACT),
            &json!({"standard": "erc721", "min_count": 2}),
        )
        .expect("valid");
        assert_eq!(
            spec,
            RuleSpec::NftOwnership {
                chain: "polygon".into(),
                contract: CONTRACT.parse().expect("address"),
                standard: NftStandard::Erc721,
                min_count: U256::from(2),
                token_ids: vec![],
                delegations: false,
            }
        );
    }

    #[test]
    fn delegations_parse_as_a_boolean_and_round_trip() {
        for (rule_type, mut params) in [
            ("token_balance", json!({"min_balance": "5"})),
            (
                "nft_ownership",
                json!({"standard": "erc721", "min_count": 1}),
            ),
        ] {
            params["delegations"] = json!(true);
            let spec =
                RuleSpec::parse(rule_type, Some("base"), Some(CONTRACT), &params).expect("valid");
            assert!(spec.delegations(), "{spec:?}");
            assert_eq!(spec.to_columns().parameters, params);

            params["delegations"] = json!(false);
            let spec =
                RuleSpec::parse(rule_type, Some("base"), Some(CONTRACT), &params).expect("valid");
            assert!(!spec.delegations());
            let stored = spec.to_columns().parameters;
            assert!(stored.get("delegations").is_none(), "{stored}");
        }
    }

    #[test]
    fn a_non_boolean_delegations_is_refused_naming_the_field() {
        let err = RuleSpec::parse(
            "nft_ownership",
            Some("base"),
            Some(CONTRACT),
            &json!({"standard": "erc721", "min_count": 0, "delegations": "yes"}),
        )
        .expect_err("a string is not a boolean");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["parameters.min_count", "parameters.delegations"]);
        let e = err.field("parameters.delegations").expect("named");
        assert!(e.problem.contains("not a boolean"), "{e}");
        assert!(e.expected.contains("true"), "{e}");

        let err = RuleSpec::parse(
            "token_balance",
            Some("base"),
            Some(CONTRACT),
            &json!({"min_balance": "1", "delegations": 1}),
        )
        .expect_err("a number is not a boolean");
        assert_eq!(only_error(err).field, "parameters.delegations");

        let err = RuleSpec::parse(
            "score_threshold",
            None,
            None,
            &json!({"min_score": 1, "delegations": true}),
        )
        .expect_err("only chain rules read delegations");
        assert_eq!(only_error(err).field, "parameters.delegations");
    }

    #[test]
    fn erc1155_requires_token_ids() {
        let err = RuleSpec::parse(
            "nft_ownership",
            Some("polygon"),
            Some(CONTRACT),
            &json!({"standard": "erc1155", "min_count": 1}),
        )
        .expect_err("needs ids");
        let e = only_error(err);
        assert_eq!(e.field, "parameters.token_ids");
        assert!(e.problem.contains("per token id"), "{e}");
    }

    #[test]
    fn bad_token_id_names_its_index() {
        let err = RuleSpec::parse(
            "nft_ownership",
            Some("polygon"),
            Some(CONTRACT),
            &json!({"standard": "erc1155", "min_count": 1, "token_ids": ["1", "x", "1"]}),
        )
        .expect_err("bad ids");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["parameters.token_ids[1]", "parameters.token_ids[2]"]
        );
    }

    #[test]
    fn nft_bad_standard_and_zero_count() {
        let err = RuleSpec::parse(
            "nft_ownership",
            Some("polygon"),
            Some(CONTRACT),
            &json!({"standard": "erc20", "min_count": 0}),
        )
        .expect_err("bad");
        assert!(err.field("parameters.standard").is_some(), "{err}");
        assert!(err.field("parameters.min_count").is_some(), "{err}");
    }

    #[test]
    fn score_threshold_parses_and_refuses_chain() {
        assert_eq!(
            RuleSpec::parse("score_threshold", None, None, &json!({"min_score": -5})),
            Ok(RuleSpec::ScoreThreshold { min_score: -5 })
        );
        let err = RuleSpec::parse(
            "score_threshold",
            Some("ethereum"),
            None,
            &json!({"min_score": 1.5}),
        )
        .expect_err("bad");
        assert!(err.field("chain").is_some(), "{err}");
        assert!(err.field("parameters.min_score").is_some(), "{err}");
    }

    #[test]
    fn custom_parses_each_op() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let rules = json!([a.to_string(), b.to_string()]);
        assert_eq!(
            RuleSpec::parse("custom", None, None, &json!({"op": "all", "rules": rules})),
            Ok(RuleSpec::Custom {
                op: CustomOp::All,
                rules: vec![a, b]
            })
        );
        assert_eq!(
            RuleSpec::parse(
                "custom",
                None,
                None,
                &json!({"op": "at_least", "n": 2, "rules": rules})
            ),
            Ok(RuleSpec::Custom {
                op: CustomOp::AtLeast(2),
                rules: vec![a, b]
            })
        );
    }

    #[test]
    fn custom_at_least_n_out_of_range() {
        let rules = json!([Uuid::from_u128(1).to_string()]);
        let err = RuleSpec::parse(
            "custom",
            None,
            None,
            &json!({"op": "at_least", "n": 2, "rules": rules}),
        )
        .expect_err("n too big");
        assert_eq!(only_error(err).field, "parameters.n");
    }

    #[test]
    fn custom_n_without_at_least_is_refused() {
        let rules = json!([Uuid::from_u128(1).to_string()]);
        let err = RuleSpec::parse(
            "custom",
            None,
            None,
            &json!({"op": "any", "n": 1, "rules": rules}),
        )
        .expect_err("stray n");
        assert_eq!(only_error(err).field, "parameters.n");
    }

    #[test]
    fn custom_bad_rule_ids() {
        let err = RuleSpec::parse(
            "custom",
            None,
            None,
            &json!({"op": "any", "rules": ["not-a-uuid"]}),
        )
        .expect_err("bad id");
        assert_eq!(only_error(err).field, "parameters.rules[0]");
        let err = RuleSpec::parse("custom", None, None, &json!({"op": "any", "rules": []}))
            .expect_err("empty");
        assert_eq!(only_error(err).field, "parameters.rules");
    }

    #[test]
    fn columns_round_trip_through_parse() {
        let cases = [
            (
                "token_balance",
                Some("ethereum"),
                Some(CONTRACT),
                json!({"min_balance": "12"}),
            ),
            (
                "nft_ownership",
                Some("base"),
                Some(CONTRACT),
                json!({"standard": "erc1155", "min_count": 3, "token_ids": ["1", "2"]}),
            ),
            (
                "nft_ownership",
                Some("base"),
                Some(CONTRACT),
                json!({"standard": "erc721", "min_count": 1}),
            ),
            ("score_threshold", None, None, json!({"min_score": 7})),
            (
                "custom",
                None,
                None,
                json!({"op": "at_least", "n": 1, "rules": [Uuid::from_u128(5).to_string()]}),
            ),
        ];
        for (rule_type, chain, contract, params) in cases {
            let spec = RuleSpec::parse(rule_type, chain, contract, &params).expect("valid");
            let cols = spec.to_columns();
            assert_eq!(cols.rule_type, rule_type);
            assert_eq!(cols.chain.as_deref(), chain);
            assert_eq!(cols.contract_address.as_deref(), contract);
            assert_eq!(cols.parameters, params);
            let again = RuleSpec::parse(
                cols.rule_type,
                cols.chain.as_deref(),
                cols.contract_address.as_deref(),
                &cols.parameters,
            );
            assert_eq!(again, Ok(spec));
        }
    }

    #[test]
    fn unknown_rule_type_and_non_object_parameters() {
        let err = RuleSpec::parse("tokens", None, None, &json!({})).expect_err("type");
        let e = only_error(err);
        assert_eq!(e.field, "rule_type");
        assert!(e.expected.contains("token_balance"), "{e}");
        let err = RuleSpec::parse("score_threshold", None, None, &json!([1])).expect_err("params");
        assert_eq!(only_error(err).field, "parameters");
    }
}
