//! Evaluating members against a community's rules.
//!
//! Evaluation runs in three steps so that a whole community can be
//! re-checked with a handful of requests: collect every chain read all the
//! members need, fetch them per chain in batches (concurrently across
//! chains), then decide each member's rules from the fetched values.
//!
//! Rules that count delegate.xyz delegations add a second fetch: which
//! wallets delegated to a member is known only once the registry has
//! answered (in the first fetch), and only then can their holdings be read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use uuid::Uuid;

use crate::chain::abi::{Read, ReadValue};
use crate::chain::clock::{Clock, SystemClock};
use crate::chain::rpc::{ChainError, EndpointHealth};
use crate::chain::{ChainReader, ChainStats, ContractSignature, Freshness, ReadResults};
use crate::config::{ConfigError, EligibilityConfig};
use crate::delegation::{Asset, Delegation, Granted, DELEGATE_REGISTRY_V2};
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

    /// The chain reads this member needs, by chain: the member's own
    /// holdings, and for rules with `delegations` the incoming delegations
    /// of each of its wallets (`registry` says where each chain's registry
    /// is).
    fn reads_for(
        &self,
        member: &MemberFacts,
        registry: &dyn Fn(&str) -> Address,
        out: &mut BTreeMap<String, Vec<Read>>,
    ) {
        let wallets = member.distinct_wallets();
        if wallets.is_empty() {
            return;
        }
        for gate in self
            .needed
            .iter()
            .filter_map(|&i| gate(&self.rules[i].spec))
        {
            let reads = out.entry(gate.chain.to_string()).or_default();
            reads.extend(gate.shared_reads());
            reads.extend(wallets.iter().flat_map(|&w| gate.holder_reads(w)));
            if gate.delegations {
                let registry = registry(gate.chain);
                reads.extend(
                    wallets
                        .iter()
                        .map(|&to| Read::IncomingDelegations { registry, to }),
                );
            }
        }
    }

    /// The reads of delegators' holdings, once the member's incoming
    /// delegations (from [`RuleSet::reads_for`]) have been fetched.
    fn delegated_reads_for(
        &self,
        member: &MemberFacts,
        reads: &dyn ReadLookup,
        out: &mut BTreeMap<String, Vec<Read>>,
    ) {
        let wallets = member.distinct_wallets();
        if wallets.is_empty() {
            return;
        }
        for gate in self
            .needed
            .iter()
            .filter_map(|&i| gate(&self.rules[i].spec))
        {
            if let Some(delegated) = gate.delegated(&wallets, reads) {
                let wanted = gate.delegated_reads(&delegated.granted);
                if !wanted.is_empty() {
                    out.entry(gate.chain.to_string())
                        .or_default()
                        .extend(wanted);
                }
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
            let wallets = member.distinct_wallets();
            match &self.rules[i].spec {
                RuleSpec::ScoreThreshold { min_score } => {
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
                RuleSpec::Custom { op, rules } => {
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
                RuleSpec::TokenBalance { .. } | RuleSpec::NftOwnership { .. }
                    if wallets.is_empty() =>
                {
                    Decision {
                        outcome: Outcome::NotEligible,
                        detail: "no wallet linked".to_string(),
                    }
                }
                spec => match gate(spec) {
                    Some(gate) => {
                        let delegated = gate.delegated(&wallets, reads);
                        gate.decide(&wallets, delegated.as_ref(), reads)
                    }
                    // Every other rule type was matched above; stay total
                    // rather than panic on a logic slip.
                    None => Decision {
                        outcome: Outcome::Unknown {
                            reason: UnknownReason::Undecided { unknown: vec![] },
                        },
                        detail: format!("rule type {} cannot be decided", spec.rule_type()),
                    },
                },
            }
        };
        memo[i] = Some(decision.clone());
        decision
    }
}

/// What a token_balance or nft_ownership rule counts, in one shape for
/// reading and deciding.
struct Gate<'a> {
    chain: &'a str,
    contract: Address,
    min: U256,
    counted: Counted<'a>,
    asset: Asset,
    /// The audit detail's noun: "balance" or "tokens held".
    what: &'static str,
    delegations: bool,
}

#[derive(Clone, Copy)]
enum Counted<'a> {
    /// `balanceOf(holder)`: ERC-20 units, or ERC-721 tokens of any id.
    Balance,
    /// The listed ERC-721 ids whose owner counts.
    Erc721Ids(&'a [U256]),
    /// The balances of the listed ERC-1155 ids.
    Erc1155Ids(&'a [U256]),
}

/// The gate of a rule that counts holdings; `None` for rules that read no
/// chain.
fn gate(spec: &RuleSpec) -> Option<Gate<'_>> {
    match spec {
        RuleSpec::TokenBalance {
            chain,
            contract,
            min_balance,
            delegations,
        } => Some(Gate {
            chain,
            contract: *contract,
            min: *min_balance,
            counted: Counted::Balance,
            asset: Asset::Erc20,
            what: "balance",
            delegations: *delegations,
        }),
        RuleSpec::NftOwnership {
            chain,
            contract,
            standard,
            min_count,
            token_ids,
            delegations,
        } => Some(Gate {
            chain,
            contract: *contract,
            min: *min_count,
            counted: match standard {
                _ if token_ids.is_empty() => Counted::Balance,
                NftStandard::Erc721 => Counted::Erc721Ids(token_ids),
                NftStandard::Erc1155 => Counted::Erc1155Ids(token_ids),
            },
            asset: match standard {
                NftStandard::Erc721 => Asset::Erc721,
                NftStandard::Erc1155 => Asset::Erc1155,
            },
            what: "tokens held",
            delegations: *delegations,
        }),
        RuleSpec::ScoreThreshold { .. } | RuleSpec::Custom { .. } => None,
    }
}

/// A member's incoming delegations as they bear on one rule.
struct Delegated {
    granted: Granted,
    /// A registry read that failed: delegations we do not know of may exist.
    error: Option<ChainError>,
}

impl Gate<'_> {
    /// Reads that do not depend on the holder: `ownerOf` of listed ERC-721
    /// ids, shared by every wallet and every member.
    fn shared_reads(&self) -> Vec<Read> {
        match self.counted {
            Counted::Erc721Ids(ids) => ids
                .iter()
                .map(|&token_id| Read::OwnerOf {
                    contract: self.contract,
                    token_id,
                })
                .collect(),
            Counted::Balance | Counted::Erc1155Ids(_) => Vec::new(),
        }
    }

    /// Reads of one wallet's whole holdings.
    fn holder_reads(&self, holder: Address) -> Vec<Read> {
        let contract = self.contract;
        match self.counted {
            Counted::Balance => vec![Read::BalanceOf { contract, holder }],
            Counted::Erc721Ids(_) => Vec::new(),
            Counted::Erc1155Ids(ids) => ids
                .iter()
                .map(|&token_id| Read::Erc1155Balance {
                    contract,
                    holder,
                    token_id,
                })
                .collect(),
        }
    }

    /// Reads of what delegators granted.
    fn delegated_reads(&self, granted: &Granted) -> Vec<Read> {
        let contract = self.contract;
        let mut reads: Vec<Read> = granted
            .full
            .iter()
            .flat_map(|&d| self.holder_reads(d))
            .collect();
        reads.extend(
            granted
                .erc20
                .keys()
                .map(|&holder| Read::BalanceOf { contract, holder }),
        );
        match self.counted {
            Counted::Balance => reads.extend(
                granted
                    .erc721
                    .iter()
                    .map(|&(_, token_id)| Read::OwnerOf { contract, token_id }),
            ),
            // Listed ids' owners are shared reads already; a delegated id
            // that is not listed does not count.
            Counted::Erc721Ids(_) => {}
            Counted::Erc1155Ids(ids) => reads.extend(
                granted
                    .erc1155
                    .keys()
                    .filter(|(_, id)| ids.contains(id))
                    .map(|&(holder, token_id)| Read::Erc1155Balance {
                        contract,
                        holder,
                        token_id,
                    }),
            ),
        }
        reads
    }

    /// The member's incoming delegations for this rule; `None` when the rule
    /// does not count delegations.
    fn delegated(&self, wallets: &[Address], reads: &dyn ReadLookup) -> Option<Delegated> {
        if !self.delegations {
            return None;
        }
        let registry = reads.delegate_registry(self.chain);
        let mut all: Vec<Delegation> = Vec::new();
        let mut error = None;
        for &to in wallets {
            let read = Read::IncomingDelegations { registry, to };
            match reads.lookup(self.chain, &read) {
                Ok(ReadValue::Delegations(ds)) => all.extend(ds),
                Ok(other) => {
                    error.get_or_insert(unexpected(self.chain, registry, &other));
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        Some(Delegated {
            granted: Granted::collect(&all, wallets, self.contract, self.asset),
            error,
        })
    }

    /// Counts the member's wallets and, with delegations, what its
    /// delegators granted, then compares with the minimum.
    fn decide(
        &self,
        wallets: &[Address],
        delegated: Option<&Delegated>,
        reads: &dyn ReadLookup,
    ) -> Decision {
        let none = Granted::default();
        let granted = delegated.map_or(&none, |d| &d.granted);
        let (chain, contract) = (self.chain, self.contract);
        // Wallets whose whole holdings count.
        let whole: Vec<Address> = wallets.iter().chain(&granted.full).copied().collect();
        let one = U256::from(1);
        let mut tally = Tally::new();
        // Listed ERC-721 ids that exist and belong to someone else: the
        // only ones an unread delegation could still add.
        let mut others = 0u64;
        match self.counted {
            Counted::Balance => {
                for &holder in &whole {
                    match amount(reads, chain, &Read::BalanceOf { contract, holder }) {
                        Ok(n) => tally.add(n),
                        Err(e) => tally.failed(e, None),
                    }
                }
                for (&holder, &cap) in &granted.erc20 {
                    match amount(reads, chain, &Read::BalanceOf { contract, holder }) {
                        Ok(n) => tally.add(n.min(cap)),
                        Err(e) => tally.failed(e, Some(cap)),
                    }
                }
                for &(from, token_id) in &granted.erc721 {
                    match owner(reads, chain, &Read::OwnerOf { contract, token_id }) {
                        Ok(Some(o)) if o == from => tally.add(one),
                        Ok(_) => {}
                        Err(e) => tally.failed(e, Some(one)),
                    }
                }
            }
            Counted::Erc721Ids(ids) => {
                for &token_id in ids {
                    match owner(reads, chain, &Read::OwnerOf { contract, token_id }) {
                        Ok(Some(o))
                            if whole.contains(&o) || granted.erc721.contains(&(o, token_id)) =>
                        {
                            tally.add(one);
                        }
                        Ok(Some(_)) => others += 1,
                        Ok(None) => {}
                        // An unknown ERC-721 id can add at most one.
                        Err(e) => tally.failed(e, Some(one)),
                    }
                }
            }
            Counted::Erc1155Ids(ids) => {
                for &token_id in ids {
                    for &holder in &whole {
                        let read = Read::Erc1155Balance {
                            contract,
                            holder,
                            token_id,
                        };
                        match amount(reads, chain, &read) {
                            Ok(n) => tally.add(n),
                            Err(e) => tally.failed(e, None),
                        }
                    }
                }
                for (&(holder, token_id), &cap) in &granted.erc1155 {
                    if !ids.contains(&token_id) {
                        continue;
                    }
                    let read = Read::Erc1155Balance {
                        contract,
                        holder,
                        token_id,
                    };
                    match amount(reads, chain, &read) {
                        Ok(n) => tally.add(n.min(cap)),
                        Err(e) => tally.failed(e, Some(cap)),
                    }
                }
            }
        }
        if let Some(e) = delegated.and_then(|d| d.error.clone()) {
            // An unreadable registry could hide a delegator of any size;
            // for listed ERC-721 ids, of at most the ids held by others.
            let at_most = match self.counted {
                Counted::Erc721Ids(_) => Some(U256::from(others)),
                Counted::Balance | Counted::Erc1155Ids(_) => None,
            };
            tally.failed(e, at_most);
        }
        tally.decide(
            self.min,
            self.what,
            &scope(wallets.len(), granted.delegators()),
        )
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

    /// Where `chain`'s delegate.xyz registry is.
    fn delegate_registry(&self, _chain: &str) -> Address {
        DELEGATE_REGISTRY_V2
    }
}

/// The values fetched for one evaluation.
struct Fetched<'a> {
    results: HashMap<String, ReadResults>,
    chains: &'a BTreeMap<String, ChainReader>,
}

impl ReadLookup for Fetched<'_> {
    fn delegate_registry(&self, chain: &str) -> Address {
        registry_of(self.chains, chain)
    }

    fn lookup(&self, chain: &str, read: &Read) -> Result<ReadValue, ChainError> {
        match self.results.get(chain) {
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

/// `scope` says where the count came from (" across 2 wallets"); empty for
/// the common one-wallet case, so its detail reads as it always has.
fn threshold(have: U256, need: U256, what: &str, scope: &str) -> Decision {
    Decision {
        outcome: if have >= need {
            Outcome::Eligible
        } else {
            Outcome::NotEligible
        },
        detail: format!("{what} {have}{scope} (needs {need})"),
    }
}

/// Where a count came from, for the audit detail.
fn scope(wallets: usize, delegators: usize) -> String {
    let plural = |n: usize, noun: &str| {
        if n == 1 {
            format!("1 {noun}")
        } else {
            format!("{n} {noun}s")
        }
    };
    match (wallets, delegators) {
        (0 | 1, 0) => String::new(),
        (n, 0) => format!(" across {}", plural(n, "wallet")),
        (n, m) => format!(
            " across {} and {}",
            plural(n, "wallet"),
            plural(m, "delegator")
        ),
    }
}

/// A count summed over several reads, some of which may have failed.
///
/// A failed read makes the outcome Unknown only when it could change the
/// answer: the known part alone may already reach the minimum, or even the
/// most the failed reads could add may fall short of it.
struct Tally {
    known: U256,
    /// The most the failed reads could add together; `None` once one of
    /// them could add any amount (a balance).
    headroom: Option<U256>,
    first_error: Option<ChainError>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            known: U256::ZERO,
            headroom: Some(U256::ZERO),
            first_error: None,
        }
    }

    fn add(&mut self, n: U256) {
        self.known = self.known.saturating_add(n);
    }

    /// Records a failed read that could have added at most `at_most`
    /// (`None`: any amount).
    fn failed(&mut self, e: ChainError, at_most: Option<U256>) {
        self.headroom = self.headroom.zip(at_most).map(|(h, m)| h.saturating_add(m));
        self.first_error.get_or_insert(e);
    }

    fn decide(self, min: U256, what: &str, scope: &str) -> Decision {
        let reachable = self
            .headroom
            .is_none_or(|h| self.known.saturating_add(h) >= min);
        match self.first_error {
            Some(e) if self.known < min && reachable => unknown(e),
            _ => threshold(self.known, min, what, scope),
        }
    }
}

/// An amount read (a balance), or why there is none.
fn amount(reads: &dyn ReadLookup, chain: &str, read: &Read) -> Result<U256, ChainError> {
    match reads.lookup(chain, read)? {
        ReadValue::Amount(n) => Ok(n),
        other => Err(unexpected(chain, read.contract(), &other)),
    }
}

/// An ERC-721 token's owner (`None`: the token does not exist), or why
/// there is none.
fn owner(reads: &dyn ReadLookup, chain: &str, read: &Read) -> Result<Option<Address>, ChainError> {
    match reads.lookup(chain, read)? {
        ReadValue::Owner(owner) => Ok(owner),
        other => Err(unexpected(chain, read.contract(), &other)),
    }
}

/// A chain's delegate registry; unconfigured chains get the canonical
/// address, and their reads fail as unconfigured anyway.
fn registry_of(chains: &BTreeMap<String, ChainReader>, chain: &str) -> Address {
    chains
        .get(chain)
        .map_or(DELEGATE_REGISTRY_V2, ChainReader::delegate_registry)
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberFacts {
    /// The member's verified wallets; holdings are summed across them.
    /// Empty when none is linked.
    pub wallets: Vec<Address>,
    pub score: i64,
}

impl MemberFacts {
    /// The wallets without repeats, in first-seen order: a wallet listed
    /// twice still holds its tokens once.
    fn distinct_wallets(&self) -> Vec<Address> {
        let mut seen = BTreeSet::new();
        self.wallets
            .iter()
            .copied()
            .filter(|w| seen.insert(*w))
            .collect()
    }
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
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Evaluator::new`], with the age of cached reads and the refill
    /// of read budgets going by `clock`: tests pass a
    /// [`ManualClock`](crate::ManualClock) and move time on by hand.
    pub fn with_clock(
        config: &EligibilityConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EvaluatorError> {
        config.validate()?;
        let mut chains = BTreeMap::new();
        for (name, chain) in &config.chains {
            let reader = ChainReader::with_clock(name, chain, clock.clone()).map_err(|source| {
                EvaluatorError::Http {
                    chain: name.clone(),
                    source,
                }
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

    /// Evaluates one member of `community`.
    pub async fn evaluate(
        &self,
        community: Uuid,
        rules: &RuleSet,
        member: &MemberFacts,
        freshness: Freshness,
    ) -> MemberEvaluation {
        self.evaluate_many(community, rules, std::slice::from_ref(member), freshness)
            .await
            .pop()
            .unwrap_or_default()
    }

    /// Evaluates many members of one community at once: every chain read
    /// they need goes out together (one JSON-RPC batch or a few multicalls
    /// per chain), so re-checking a community costs a few requests, not one
    /// per member. Results are in `members` order.
    ///
    /// The calls are paid from `community`'s read budget on each chain;
    /// reads it cannot pay for now are Unknown (or cached), see
    /// [`ChainReader::read`].
    pub async fn evaluate_many(
        &self,
        community: Uuid,
        rules: &RuleSet,
        members: &[MemberFacts],
        freshness: Freshness,
    ) -> Vec<MemberEvaluation> {
        let registry = |chain: &str| registry_of(&self.chains, chain);
        let mut wanted: BTreeMap<String, Vec<Read>> = BTreeMap::new();
        for member in members {
            rules.reads_for(member, &registry, &mut wanted);
        }
        let mut fetched = Fetched {
            results: self.fetch(community, wanted, freshness).await,
            chains: &self.chains,
        };
        // Delegators are known only once the registry has answered, so
        // their holdings take a second round, which rules without
        // delegations never need.
        let mut delegated: BTreeMap<String, Vec<Read>> = BTreeMap::new();
        for member in members {
            rules.delegated_reads_for(member, &fetched, &mut delegated);
        }
        for (chain, reads) in &mut delegated {
            if let Some(done) = fetched.results.get(chain) {
                reads.retain(|r| !done.contains_key(r));
            }
        }
        delegated.retain(|_, reads| !reads.is_empty());
        if !delegated.is_empty() {
            for (chain, results) in self.fetch(community, delegated, freshness).await {
                fetched.results.entry(chain).or_default().extend(results);
            }
        }
        members.iter().map(|m| rules.decide(m, &fetched)).collect()
    }

    /// Fetches reads per chain, concurrently across chains. Reads of
    /// unconfigured chains are left out; looking them up says so.
    async fn fetch(
        &self,
        community: Uuid,
        wanted: BTreeMap<String, Vec<Read>>,
        freshness: Freshness,
    ) -> HashMap<String, ReadResults> {
        let fetches = wanted.into_iter().filter_map(|(chain, reads)| {
            let reader = self.chains.get(&chain)?;
            Some(async move { (chain, reader.read(community, &reads, freshness).await) })
        });
        futures::future::join_all(fetches)
            .await
            .into_iter()
            .collect()
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
                delegations: false,
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
            wallets: vec![],
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
            wallets: vec![ALICE],
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
            delegations: false,
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
            wallets: vec![ALICE],
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
            delegations: false,
        };
        let set = RuleSet::new([token(1, 1), rule(2, nft)]);
        let mut wanted = BTreeMap::new();
        for wallet in [ALICE, BOB] {
            set.reads_for(
                &MemberFacts {
                    wallets: vec![wallet],
                    score: 0,
                },
                &|_| DELEGATE_REGISTRY_V2,
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
                    .evaluate_many(
                        Uuid::nil(),
                        &rules,
                        &[MemberFacts::default()],
                        Freshness::Cached,
                    )
                    .await
            }
        });
        let results = task.await.expect("task completes");
        assert_eq!(results[0].outcomes[0].outcome, Outcome::Eligible);
    }

    fn nft_ids(n: u128, ids: &[u64], min: u64, delegations: bool) -> RuleDef {
        rule(
            n,
            RuleSpec::NftOwnership {
                chain: "eth".into(),
                contract: NFT,
                standard: NftStandard::Erc721,
                min_count: U256::from(min),
                token_ids: ids.iter().map(|&i| U256::from(i)).collect(),
                delegations,
            },
        )
    }

    fn owner(t: u64, who: Option<Address>) -> (Read, Result<ReadValue, ChainError>) {
        (
            Read::OwnerOf {
                contract: NFT,
                token_id: U256::from(t),
            },
            Ok(ReadValue::Owner(who)),
        )
    }

    fn incoming(to: Address, ds: Vec<Delegation>) -> (Read, Result<ReadValue, ChainError>) {
        (
            Read::IncomingDelegations {
                registry: DELEGATE_REGISTRY_V2,
                to,
            },
            Ok(ReadValue::Delegations(ds)),
        )
    }

    fn both() -> MemberFacts {
        MemberFacts {
            wallets: vec![ALICE, BOB],
            score: 0,
        }
    }

    #[test]
    fn a_failed_wallet_read_is_unknown_only_if_it_could_change_the_answer() {
        let set = RuleSet::new([token(1, 10)]);
        // Bob's balance is unreadable (absent from the fixed reads).
        let reads = Fixed([balance(ALICE, 10)].into());
        assert_eq!(outcome(&set, &both(), &reads, 1), Outcome::Eligible);
        let reads = Fixed([balance(ALICE, 9)].into());
        assert!(outcome(&set, &both(), &reads, 1).is_unknown());

        // Listed ERC-721 ids: 1 is Alice's, 2 Bob's, 3 unreadable.
        let set = RuleSet::new([nft_ids(1, &[1, 2, 3], 3, false)]);
        let reads = Fixed([owner(1, Some(ALICE)), owner(2, Some(BOB))].into());
        assert!(
            outcome(&set, &both(), &reads, 1).is_unknown(),
            "3 could be ours"
        );
        let stranger = Address::repeat_byte(0x55);
        let reads = Fixed([owner(1, Some(ALICE)), owner(2, Some(stranger))].into());
        assert_eq!(
            outcome(&set, &both(), &reads, 1),
            Outcome::NotEligible,
            "1 held, at most 1 more: cannot reach 3"
        );
    }

    #[test]
    fn an_unreadable_erc20_delegator_adds_at_most_its_delegated_amount() {
        const COLD: Address = address!("cccccccccccccccccccccccccccccccccccccccc");
        let mut rules = [token(1, 10), token(2, 8)];
        for r in &mut rules {
            if let RuleSpec::TokenBalance { delegations, .. } = &mut r.spec {
                *delegations = true;
            }
        }
        let set = RuleSet::new(rules);
        let alice = MemberFacts {
            wallets: vec![ALICE],
            score: 0,
        };
        // Cold's balance is unreadable; it delegated at most 3.
        let reads = Fixed(
            [
                balance(ALICE, 5),
                incoming(
                    ALICE,
                    vec![Delegation::erc20(COLD, ALICE, TOKEN, U256::from(3))],
                ),
            ]
            .into(),
        );
        assert_eq!(
            outcome(&set, &alice, &reads, 1),
            Outcome::NotEligible,
            "5 + at most 3 < 10"
        );
        assert!(
            outcome(&set, &alice, &reads, 2).is_unknown(),
            "5 + 3 could reach 8"
        );
    }

    #[test]
    fn an_unreadable_registry_bounds_listed_erc721_ids_by_those_held_by_others() {
        let set = RuleSet::new([nft_ids(1, &[1, 2], 2, true)]);
        let alice = MemberFacts {
            wallets: vec![ALICE],
            score: 0,
        };
        // The registry read is absent: it failed. Token 2 does not exist, so
        // no delegation could make it count.
        let reads = Fixed([owner(1, Some(ALICE)), owner(2, None)].into());
        assert_eq!(outcome(&set, &alice, &reads, 1), Outcome::NotEligible);
        // Bob holds token 2 and might have delegated it to Alice.
        let reads = Fixed([owner(1, Some(ALICE)), owner(2, Some(BOB))].into());
        assert!(outcome(&set, &alice, &reads, 1).is_unknown());
        // With the registry readable and Bob's delegation in it, it counts.
        let reads = Fixed(
            [
                owner(1, Some(ALICE)),
                owner(2, Some(BOB)),
                incoming(
                    ALICE,
                    vec![Delegation::erc721(BOB, ALICE, NFT, U256::from(2))],
                ),
            ]
            .into(),
        );
        assert_eq!(outcome(&set, &alice, &reads, 1), Outcome::Eligible);
    }

    #[test]
    fn balance_threshold_is_inclusive() {
        let set = RuleSet::new([token(1, 10)]);
        let reads = Fixed([balance(ALICE, 10), balance(BOB, 9)].into());
        let member = |w| MemberFacts {
            wallets: vec![w],
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
