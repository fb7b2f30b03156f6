//! Evaluating members against a community's rules.
//!
//! Evaluation runs in three steps so that a whole community can be
//! re-checked with a handful of requests: collect every chain read all the
//! members need, fetch them per chain in batches (concurrently across
//! chains), then decide each member's rules from the fetched values.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alloy_primitives::{Address, B256, U256};
use uuid::Uuid;

use crate::chain::abi::{Read, ReadValue};
use crate::chain::rpc::{ChainError, EndpointHealth};
use crate::chain::{ChainReader, ChainStats, ContractSignature, Freshness, ReadResults};
use crate::config::{ConfigError, EligibilityConfig};
use crate::outcome::{combine, Outcome, UnknownReason};
use crate::rule::{NftStandard, RuleSpec};

/// One rule of a community, as loaded from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDef {
    pub id: Uuid,
    /// Disabled rules produce no outcome of their own, but a custom rule
    /// that refers to one still evaluates it: disabling a building block
    /// should not silently change what a combination means.
    pub enabled: bool,
    pub spec: RuleSpec,
}

impl RuleDef {
    /// Parses a stored rule row (see [`RuleSpec::parse`]).
    pub fn parse(
        id: Uuid,
        enabled: bool,
        rule_type: &str,
        chain: Option<&str>,
        contract_address: Option<&str>,
        parameters: &serde_json::Value,
    ) -> Result<RuleDef, crate::rule::RuleError> {
        Ok(RuleDef {
            id,
            enabled,
            spec: RuleSpec::parse(rule_type, chain, contract_address, parameters)?,
        })
    }
}

/// A problem in how a community's rules refer to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    pub rule: Uuid,
    pub reason: UnknownReason,
}

/// A community's rules, with cross-references checked once up front.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<RuleDef>,
    index: HashMap<Uuid, usize>,
    problems: HashMap<usize, UnknownReason>,
    /// Rules whose outcome is needed: enabled ones and everything they refer
    /// to, in index order.
    needed: Vec<usize>,
}

impl RuleSet {
    /// Builds a rule set. Ids are expected to be unique (they are primary
    /// keys); a repeated id keeps its first definition.
    pub fn new(rules: impl IntoIterator<Item = RuleDef>) -> Self {
        let mut defs = Vec::new();
        let mut index = HashMap::new();
        for rule in rules {
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(rule.id) {
                slot.insert(defs.len());
                defs.push(rule);
            }
        }
        let mut set = RuleSet {
            rules: defs,
            index,
            problems: HashMap::new(),
            needed: Vec::new(),
        };
        set.problems = set.find_problems();
        set.needed = set.find_needed();
        set
    }

    pub fn rules(&self) -> &[RuleDef] {
        &self.rules
    }

    pub fn get(&self, id: Uuid) -> Option<&RuleDef> {
        self.index.get(&id).map(|&i| &self.rules[i])
    }

    /// Custom rules that refer to missing rules or take part in a cycle.
    /// The worker can refuse a rule write that would add one; at evaluation
    /// such rules are Unknown (so they never remove a role).
    pub fn problems(&self) -> Vec<RuleProblem> {
        let mut problems: Vec<RuleProblem> = self
            .problems
            .iter()
            .map(|(&i, reason)| RuleProblem {
                rule: self.rules[i].id,
                reason: reason.clone(),
            })
            .collect();
        problems.sort_by_key(|p| p.rule);
        problems
    }

    /// The chains these rules read.
    pub fn chains(&self) -> BTreeSet<&str> {
        self.needed
            .iter()
            .filter_map(|&i| self.rules[i].spec.chain())
            .collect()
    }

    fn find_problems(&self) -> HashMap<usize, UnknownReason> {
        let mut problems = HashMap::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let refs = rule.spec.references();
            if let Some(missing) = refs.iter().find(|id| !self.index.contains_key(id)) {
                problems.insert(i, UnknownReason::MissingRule { missing: *missing });
            } else if let Some(path) = self.cycle_through(i) {
                problems.insert(i, UnknownReason::Cycle { path });
            }
        }
        problems
    }

    /// A path of rule ids from `start` back to itself, if there is one.
    /// Quadratic in the worst case, which is fine for a community's few
    /// dozen rules and keeps the path easy to report.
    fn cycle_through(&self, start: usize) -> Option<Vec<Uuid>> {
        let mut stack = vec![(start, 0usize)];
        let mut on_path = vec![start];
        let mut visited = BTreeSet::new();
        while let Some((node, next_child)) = stack.last_mut() {
            let refs = self.rules[*node].spec.references();
            if *next_child >= refs.len() {
                stack.pop();
                on_path.pop();
                continue;
            }
            let child_id = refs[*next_child];
            *next_child += 1;
            let Some(&child) = self.index.get(&child_id) else {
                continue;
            };
            if child == start {
                let mut path: Vec<Uuid> = on_path.iter().map(|&i| self.rules[i].id).collect();
                path.push(self.rules[start].id);
                return Some(path);
            }
            if visited.insert(child) {
                stack.push((child, 0));
                on_path.push(child);
            }
        }
        None
    }

    fn find_needed(&self) -> Vec<usize> {
        let mut needed = BTreeSet::new();
        let mut todo: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].enabled)
            .collect();
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(
                    self.rules[i]
                        .spec
                        .references()
                        .iter()
                        .filter_map(|id| self.index.get(id).copied()),
                );
            }
        }
        needed.into_iter().collect()
    }

    /// The chain reads this member needs, by chain.
    fn reads_for(&self, member: &MemberFacts, out: &mut BTreeMap<String, Vec<Read>>) {
        let Some(holder) = member.wallet else {
            return;
        };
        for &i in &self.needed {
            if let Some((chain, reads)) = chain_reads(&self.rules[i].spec, holder) {
                out.entry(chain.to_string()).or_default().extend(reads);
            }
        }
    }

    /// Decides every enabled rule for one member from already-fetched reads.
    fn decide(&self, member: &MemberFacts, reads: &dyn ReadLookup) -> MemberEvaluation {
        let mut memo: Vec<Option<Decision>> = vec![None; self.rules.len()];
        let outcomes = (0..self.rules.len())
            .filter(|&i| self.rules[i].enabled)
            .map(|i| {
                let d = self.decide_rule(i, member, reads, &mut memo);
                RuleOutcome {
                    rule_id: self.rules[i].id,
                    outcome: d.outcome,
                    detail: d.detail,
                }
            })
            .collect();
        MemberEvaluation { outcomes }
    }

    fn decide_rule(
        &self,
        i: usize,
        member: &MemberFacts,
        reads: &dyn ReadLookup,
        memo: &mut Vec<Option<Decision>>,
    ) -> Decision {
        if let Some(d) = &memo[i] {
            return d.clone();
        }
        let decision = if let Some(reason) = self.problems.get(&i) {
            Decision {
                detail: reason.to_string(),
                outcome: Outcome::Unknown {
                    reason: reason.clone(),
                },
            }
        } else {
            match (&self.rules[i].spec, member.wallet) {
                (RuleSpec::ScoreThreshold { min_score }, _) => {
                    let ok = member.score >= *min_score;
                    Decision {
                        outcome: if ok {
                            Outcome::Eligible
                        } else {
                            Outcome::NotEligible
                        },
                        detail: format!("score {} (needs {min_score})", member.score),
                    }
                }
                (RuleSpec::Custom { op, rules }, _) => {
                    // Problems were checked above, so every id resolves and
                    // no path leads back here: the recursion terminates.
                    let parts: Vec<(Uuid, Decision)> = rules
                        .iter()
                        .filter_map(|id| self.index.get(id).map(|&j| (*id, j)))
                        .map(|(id, j)| (id, self.decide_rule(j, member, reads, memo)))
                        .collect();
                    let refs: Vec<(Uuid, &Outcome)> =
                        parts.iter().map(|(id, d)| (*id, &d.outcome)).collect();
                    let (outcome, met) = combine(*op, &refs);
                    Decision {
                        outcome,
                        detail: format!("{met} of {} rules met (needs {op})", rules.len()),
                    }
                }
                // Without a wallet there is nothing to read: the member
                // definitely does not hold the tokens.
                (RuleSpec::TokenBalance { .. } | RuleSpec::NftOwnership { .. }, None) => Decision {
                    outcome: Outcome::NotEligible,
                    detail: "no wallet linked".to_string(),
                },
                (
                    RuleSpec::TokenBalance {
                        chain,
                        contract,
                        min_balance,
                    },
                    Some(holder),
                ) => decide_balance(chain, *contract, holder, *min_balance, "balance", reads),
                (
                    RuleSpec::NftOwnership {
                        chain,
                        contract,
                        min_count,
                        token_ids,
                        ..
                    },
                    Some(holder),
                ) if token_ids.is_empty() => {
                    decide_balance(chain, *contract, holder, *min_count, "tokens held", reads)
                }
                (
                    RuleSpec::NftOwnership {
                        chain,
                        contract,
                        standard,
                        min_count,
                        token_ids,
                    },
                    Some(holder),
                ) => decide_token_ids(
                    chain, *contract, *standard, token_ids, *min_count, holder, reads,
                ),
            }
        };
        memo[i] = Some(decision.clone());
        decision
    }
}

/// The chain reads a rule needs for one holder; `None` for rules that read
/// no chain.
fn chain_reads(spec: &RuleSpec, holder: Address) -> Option<(&str, Vec<Read>)> {
    match spec {
        RuleSpec::TokenBalance {
            chain, contract, ..
        } => Some((
            chain,
            vec![Read::BalanceOf {
                contract: *contract,
                holder,
            }],
        )),
        RuleSpec::NftOwnership {
            chain,
            contract,
            standard,
            token_ids,
            ..
        } => {
            let reads = if token_ids.is_empty() {
                vec![Read::BalanceOf {
                    contract: *contract,
                    holder,
                }]
            } else {
                token_ids
                    .iter()
                    .map(|&id| token_read(*standard, *contract, holder, id))
                    .collect()
            };
            Some((chain, reads))
        }
        RuleSpec::ScoreThreshold { .. } | RuleSpec::Custom { .. } => None,
    }
}

/// The read that tells how much of one token id the holder has. ERC-721's
/// `ownerOf` does not depend on the holder, so all members share it.
fn token_read(standard: NftStandard, contract: Address, holder: Address, token_id: U256) -> Read {
    match standard {
        NftStandard::Erc721 => Read::OwnerOf { contract, token_id },
        NftStandard::Erc1155 => Read::Erc1155Balance {
            contract,
            holder,
            token_id,
        },
    }
}

#[derive(Debug, Clone)]
struct Decision {
    outcome: Outcome,
    detail: String,
}

/// Where decided rules find their chain values.
trait ReadLookup {
    fn lookup(&self, chain: &str, read: &Read) -> Result<ReadValue, ChainError>;
}

impl ReadLookup for HashMap<String, ReadResults> {
    fn lookup(&self, chain: &str, read: &Read) -> Result<ReadValue, ChainError> {
        match self.get(chain) {
            None => Err(ChainError::Unconfigured {
                chain: chain.to_string(),
            }),
            Some(results) => results.get(read).cloned().unwrap_or_else(|| {
                // Every planned read gets a result; reaching this is a bug,
                // and Unknown is the answer that harms no one.
                Err(ChainError::Call {
                    chain: chain.to_string(),
                    contract: read.contract(),
                    detail: "read was not fetched".to_string(),
                })
            }),
        }
    }
}

fn unknown(e: ChainError) -> Decision {
    Decision {
        detail: e.to_string(),
        outcome: Outcome::Unknown {
            reason: UnknownReason::Chain(e),
        },
    }
}

fn threshold(have: U256, need: U256, what: &str) -> Decision {
    Decision {
        outcome: if have >= need {
            Outcome::Eligible
        } else {
            Outcome::NotEligible
        },
        detail: format!("{what} {have} (needs {need})"),
    }
}

/// `balanceOf(holder) >= min`, for ERC-20 balances and ERC-721 counts.
fn decide_balance(
    chain: &str,
    contract: Address,
    holder: Address,
    min: U256,
    what: &str,
    reads: &dyn ReadLookup,
) -> Decision {
    match reads.lookup(chain, &Read::BalanceOf { contract, holder }) {
        Ok(ReadValue::Amount(b)) => threshold(b, min, what),
        Ok(other) => unknown(unexpected(chain, contract, &other)),
        Err(e) => unknown(e),
    }
}

/// Counts the named token ids the holder owns (ERC-721) or the units it
/// holds of them (ERC-1155). An unreadable id makes the outcome unknown
/// only if it could still change the answer.
fn decide_token_ids(
    chain: &str,
    contract: Address,
    standard: NftStandard,
    token_ids: &[U256],
    min_count: U256,
    holder: Address,
    reads: &dyn ReadLookup,
) -> Decision {
    let mut held = U256::ZERO;
    let mut first_error = None;
    let mut unknown_ids = 0usize;
    for &token_id in token_ids {
        match reads.lookup(chain, &token_read(standard, contract, holder, token_id)) {
            Ok(ReadValue::Owner(owner)) => {
                if owner == Some(holder) {
                    held = held.saturating_add(U256::from(1));
                }
            }
            Ok(ReadValue::Amount(n)) => held = held.saturating_add(n),
            Err(e) => {
                unknown_ids += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let cannot_reach_min = match standard {
        // Each unknown ERC-721 id can add at most one.
        NftStandard::Erc721 => held.saturating_add(U256::from(unknown_ids)) < min_count,
        // An unknown ERC-1155 balance could be anything.
        NftStandard::Erc1155 => unknown_ids == 0 && held < min_count,
    };
    match first_error {
        Some(e) if held < min_count && !cannot_reach_min => unknown(e),
        _ => threshold(held, min_count, "tokens held"),
    }
}

fn unexpected(chain: &str, contract: Address, value: &ReadValue) -> ChainError {
    ChainError::Call {
        chain: chain.to_string(),
        contract,
        detail: format!("unexpected value {value:?}"),
    }
}

/// What eligibility knows about a member. Nothing Discord-specific: the
/// worker maps its profile to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberFacts {
    /// The member's verified wallet, if linked.
    pub wallet: Option<Address>,
    pub score: i64,
}

/// One rule's outcome for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    pub rule_id: Uuid,
    pub outcome: Outcome,
    /// Why, in words, for the audit trail (e.g. "balance 5 (needs 10)").
    pub detail: String,
}

/// Every enabled rule's outcome for one member, in rule-set order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberEvaluation {
    pub outcomes: Vec<RuleOutcome>,
}

impl MemberEvaluation {
    pub fn get(&self, rule_id: Uuid) -> Option<&RuleOutcome> {
        self.outcomes.iter().find(|o| o.rule_id == rule_id)
    }
}

/// Why an evaluator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EvaluatorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("eligibility: could not build the HTTP client for chain {chain}: {source}")]
    Http {
        chain: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Evaluates members against rule sets, reading chains through cached,
/// batched, failover-protected readers. Share one per process: its caches
/// and circuit breakers are most useful when every evaluation goes through
/// them.
pub struct Evaluator {
    chains: BTreeMap<String, ChainReader>,
}

impl Evaluator {
    pub fn new(config: &EligibilityConfig) -> Result<Self, EvaluatorError> {
        config.validate()?;
        let mut chains = BTreeMap::new();
        for (name, chain) in &config.chains {
            let reader = ChainReader::new(name, chain).map_err(|source| EvaluatorError::Http {
                chain: name.clone(),
                source,
            })?;
            chains.insert(name.clone(), reader);
        }
        Ok(Evaluator { chains })
    }

    /// Whether rules on `chain` can be evaluated; check when a rule is
    /// written so an unconfigured chain is refused up front.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains_key(chain)
    }

    /// Evaluates one member.
    pub async fn evaluate(
        &self,
        rules: &RuleSet,
        member: &MemberFacts,
        freshness: Freshness,
    ) -> MemberEvaluation {
        self.evaluate_many(rules, std::slice::from_ref(member), freshness)
            .await
            .pop()
            .unwrap_or_default()
    }

    /// Evaluates many members of one community at once: every chain read
    /// they need goes out together (one JSON-RPC batch or a few multicalls
    /// per chain), so re-checking a community costs a few requests, not one
    /// per member. Results are in `members` order.
    pub async fn evaluate_many(
        &self,
        rules: &RuleSet,
        members: &[MemberFacts],
        freshness: Freshness,
    ) -> Vec<MemberEvaluation> {
        let mut wanted: BTreeMap<String, Vec<Read>> = BTreeMap::new();
        for member in members {
            rules.reads_for(member, &mut wanted);
        }
        let fetches = wanted.into_iter().filter_map(|(chain, reads)| {
            let reader = self.chains.get(&chain)?;
            Some(async move { (chain, reader.read(&reads, freshness).await) })
        });
        let fetched: HashMap<String, ReadResults> = futures::future::join_all(fetches)
            .await
            .into_iter()
            .collect();
        members.iter().map(|m| rules.decide(m, &fetched)).collect()
    }

    /// The configured chain whose `chain_id` is `chain_id` (the first by
    /// name if several are). Chains configured without a `chain_id` are
    /// never matched: their RPC URLs are not checked to serve any
    /// particular chain.
    pub fn chain_with_id(&self, chain_id: u64) -> Option<&str> {
        self.chains
            .iter()
            .find(|(_, reader)| reader.chain_id() == Some(chain_id))
            .map(|(name, _)| name.as_str())
    }

    /// Asks the contract wallet `contract` on `chain` whether `signature` is
    /// valid for `hash` (EIP-1271). An unreachable chain is an error, never
    /// a verdict.
    pub async fn is_valid_signature(
        &self,
        chain: &str,
        contract: Address,
        hash: B256,
        signature: &[u8],
    ) -> Result<ContractSignature, ChainError> {
        let reader = self
            .chains
            .get(chain)
            .ok_or_else(|| ChainError::Unconfigured {
                chain: chain.to_string(),
            })?;
        reader.is_valid_signature(contract, hash, signature).await
    }

    /// Counters per chain since start.
    pub fn stats(&self) -> BTreeMap<String, ChainStats> {
        self.chains
            .iter()
            .map(|(name, reader)| (name.clone(), reader.stats()))
            .collect()
    }

    /// Breaker state of every RPC URL.
    pub fn health(&self) -> Vec<EndpointHealth> {
        self.chains.values().flat_map(ChainReader::health).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::CustomOp;
    use alloy_primitives::address;

    const TOKEN: Address = address!("1111111111111111111111111111111111111111");
    const NFT: Address = address!("2222222222222222222222222222222222222222");
    const ALICE: Address = address!("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    const BOB: Address = address!("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn rule(n: u128, spec: RuleSpec) -> RuleDef {
        RuleDef {
            id: id(n),
            enabled: true,
            spec,
        }
    }

    fn custom(n: u128, op: CustomOp, refs: &[u128]) -> RuleDef {
        rule(
            n,
            RuleSpec::Custom {
                op,
                rules: refs.iter().map(|&r| id(r)).collect(),
            },
        )
    }

    fn score(n: u128, min_score: i64) -> RuleDef {
        rule(n, RuleSpec::ScoreThreshold { min_score })
    }

    fn token(n: u128, min: u64) -> RuleDef {
        rule(
            n,
            RuleSpec::TokenBalance {
                chain: "eth".into(),
                contract: TOKEN,
                min_balance: U256::from(min),
            },
        )
    }

    struct Fixed(HashMap<Read, Result<ReadValue, ChainError>>);

    impl ReadLookup for Fixed {
        fn lookup(&self, chain: &str, read: &Read) -> Result<ReadValue, ChainError> {
            self.0
                .get(read)
                .cloned()
                .unwrap_or(Err(ChainError::CircuitOpen {
                    chain: chain.to_string(),
                }))
        }
    }

    fn outcome(set: &RuleSet, member: &MemberFacts, reads: &Fixed, rule: u128) -> Outcome {
        set.decide(member, reads)
            .get(id(rule))
            .map(|o| o.outcome.clone())
            .expect("rule evaluated")
    }

    fn balance(holder: Address, amount: u64) -> (Read, Result<ReadValue, ChainError>) {
        (
            Read::BalanceOf {
                contract: TOKEN,
                holder,
            },
            Ok(ReadValue::Amount(U256::from(amount))),
        )
    }

    #[test]
    fn missing_reference_and_cycle_are_problems() {
        let set = RuleSet::new([
            custom(1, CustomOp::All, &[2]),
            custom(2, CustomOp::Any, &[1]),
            custom(3, CustomOp::Any, &[99]),
            custom(4, CustomOp::Any, &[1]),
        ]);
        let problems = set.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(
            problems[0].reason,
            UnknownReason::Cycle {
                path: vec![id(1), id(2), id(1)]
            }
        );
        assert_eq!(
            problems[2].reason,
            UnknownReason::MissingRule { missing: id(99) }
        );
        // Rule 4 only depends on a cycle: it is undecided, not itself a problem.
        let member = MemberFacts::default();
        let out = outcome(&set, &member, &Fixed(HashMap::new()), 4);
        assert!(
            matches!(
                out,
                Outcome::Unknown {
                    reason: UnknownReason::Undecided { .. }
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let set = RuleSet::new([custom(1, CustomOp::Any, &[1])]);
        assert_eq!(
            set.problems()[0].reason,
            UnknownReason::Cycle {
                path: vec![id(1), id(1)]
            }
        );
    }

    #[test]
    fn no_wallet_is_not_eligible_for_chain_rules_but_score_still_counts() {
        let set = RuleSet::new([token(1, 10), score(2, 5)]);
        let member = MemberFacts {
            wallet: None,
            score: 5,
        };
        let reads = Fixed(HashMap::new());
        assert_eq!(outcome(&set, &member, &reads, 1), Outcome::NotEligible);
        assert_eq!(outcome(&set, &member, &reads, 2), Outcome::Eligible);
    }

    #[test]
    fn custom_over_chain_and_score_with_unknown_chain() {
        let set = RuleSet::new([
            token(1, 10),
            score(2, 100),
            custom(3, CustomOp::Any, &[1, 2]),
            custom(4, CustomOp::All, &[1, 2]),
        ]);
        let member = MemberFacts {
            wallet: Some(ALICE),
            score: 50,
        };
        // No reads at all: the chain is down.
        let reads = Fixed(HashMap::new());
        assert!(outcome(&set, &member, &reads, 1).is_unknown());
        assert!(
            outcome(&set, &member, &reads, 3).is_unknown(),
            "score fails, token unknown"
        );
        assert_eq!(
            outcome(&set, &member, &reads, 4),
            Outcome::NotEligible,
            "score alone decides all()"
        );
    }

    #[test]
    fn disabled_rules_have_no_outcome_but_feed_custom_rules() {
        let mut hidden = score(1, 0);
        hidden.enabled = false;
        let set = RuleSet::new([hidden, custom(2, CustomOp::All, &[1])]);
        let eval = set.decide(&MemberFacts::default(), &Fixed(HashMap::new()));
        assert!(eval.get(id(1)).is_none());
        assert_eq!(
            eval.get(id(2)).map(|o| &o.outcome),
            Some(&Outcome::Eligible)
        );
    }

    #[test]
    fn erc721_ids_count_owned_tokens_and_tolerate_irrelevant_unknowns() {
        let spec = RuleSpec::NftOwnership {
            chain: "eth".into(),
            contract: NFT,
            standard: NftStandard::Erc721,
            min_count: U256::from(2),
            token_ids: vec![U256::from(1), U256::from(2), U256::from(3)],
        };
        let set = RuleSet::new([rule(1, spec)]);
        let owner = |t: u64, who: Option<Address>| {
            (
                Read::OwnerOf {
                    contract: NFT,
                    token_id: U256::from(t),
                },
                Ok(ReadValue::Owner(who)),
            )
        };
        let alice = MemberFacts {
            wallet: Some(ALICE),
            score: 0,
        };
        // Owns 1 and 2; 3 unreadable: already enough.
        let reads = Fixed([owner(1, Some(ALICE)), owner(2, Some(ALICE))].into());
        assert_eq!(outcome(&set, &alice, &reads, 1), Outcome::Eligible);
        // Owns 1 only, 2 is Bob's, 3 unreadable: could still reach 2.
        let reads = Fixed([owner(1, Some(ALICE)), owner(2, Some(BOB))].into());
        assert!(outcome(&set, &alice, &reads, 1).is_unknown());
        // Owns none, 3 does not exist: cannot reach 2 whatever 3 is.
        let reads = Fixed([owner(1, Some(BOB)), owner(2, None)].into());
        assert_eq!(outcome(&set, &alice, &reads, 1), Outcome::NotEligible);
    }

    #[test]
    fn reads_are_shared_and_holder_independent_where_possible() {
        let nft = RuleSpec::NftOwnership {
            chain: "eth".into(),
            contract: NFT,
            standard: NftStandard::Erc721,
            min_count: U256::from(1),
            token_ids: vec![U256::from(7)],
        };
        let set = RuleSet::new([token(1, 1), rule(2, nft)]);
        let mut wanted = BTreeMap::new();
        for wallet in [ALICE, BOB] {
            set.reads_for(
                &MemberFacts {
                    wallet: Some(wallet),
                    score: 0,
                },
                &mut wanted,
            );
        }
        let reads: BTreeSet<_> = wanted["eth"].iter().cloned().collect();
        assert_eq!(reads.len(), 3, "two balances and one ownerOf: {reads:?}");
    }

    #[tokio::test]
    async fn evaluations_run_on_spawned_tasks() {
        // The worker spawns evaluations; this fails to compile if the
        // future stops being Send.
        let evaluator = std::sync::Arc::new(
            Evaluator::new(&EligibilityConfig::default()).expect("empty config is valid"),
        );
        let rules = std::sync::Arc::new(RuleSet::new([score(1, 0)]));
        let task = tokio::spawn({
            let evaluator = evaluator.clone();
            let rules = rules.clone();
            async move {
                evaluator
                    .evaluate_many(&rules, &[MemberFacts::default()], Freshness::Cached)
                    .await
            }
        });
        let results = task.await.expect("task completes");
        assert_eq!(results[0].outcomes[0].outcome, Outcome::Eligible);
    }

    #[test]
    fn balance_threshold_is_inclusive() {
        let set = RuleSet::new([token(1, 10)]);
        let reads = Fixed([balance(ALICE, 10), balance(BOB, 9)].into());
        let member = |w| MemberFacts {
            wallet: Some(w),
            score: 0,
        };
        assert_eq!(outcome(&set, &member(ALICE), &reads, 1), Outcome::Eligible);
        assert_eq!(outcome(&set, &member(BOB), &reads, 1), Outcome::NotEligible);
        let detail = set.decide(&member(BOB), &reads).outcomes[0].detail.clone();
        assert_eq!(detail, "balance 9 (needs 10)");

        let combo = RuleSet::new([token(1, 10), custom(2, CustomOp::AtLeast(1), &[1])]);
        let eval = combo.decide(&member(ALICE), &reads);
        assert_eq!(
            eval.outcomes[1].detail,
            "1 of 1 rules met (needs at least 1)"
        );
    }
}
