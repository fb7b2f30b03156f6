//! Reading EVM chains: many reads in few requests, cached, with failover.

pub mod abi;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod clock;
pub mod multicall;
pub mod rpc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, Bytes, B256};
use alloy_sol_types::SolCall;
use futures::stream::{self, StreamExt};
use uuid::Uuid;

use crate::config::ChainConfig;
use abi::{
    decode_answers, plan_calls, CallResult, IsValidSignatureCall, PlannedCall, Read, ReadValue,
    ERC1271_MAGIC_VALUE,
};
use budget::Budgets;
use cache::TtlCache;
use clock::{Clock, SystemClock};
use rpc::{ChainError, EndpointHealth, RpcClient};

/// Whether a read may be answered from the cache.
///
/// Whatever the freshness, a read the community's budget cannot pay for
/// is answered from the cache if it holds the read at all (within the
/// TTL), and is Unknown otherwise: see [`ChainReader::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freshness {
    /// Periodic re-checks: a result younger than the chain's TTL is reused.
    /// These are bulk reads: they leave a tenth of the community's read
    /// budget for the others, which someone is waiting on.
    #[default]
    Cached,
    /// Read the chain, then refresh the cache with what was read.
    Fresh,
    /// A member is waiting on the answer (`/check`, a wallet just linked):
    /// a result read less than this long ago is reused, an older one is
    /// read again. A member asking twice, or a check right after the
    /// periodic scan read the same balance, costs no RPC call; zero is
    /// [`Freshness::Fresh`].
    NotOlderThan(Duration),
}

/// Counters for one chain since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// HTTP requests sent (each a JSON-RPC batch), including failed ones.
    pub requests: u64,
    /// Reads a community's budget could not pay for, answered from the
    /// cache instead…
    pub over_budget_cached: u64,
    /// …or left Unknown, for the next check to retry.
    pub over_budget_unknown: u64,
}

#[derive(Default)]
struct Counters {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    requests: AtomicU64,
    over_budget_cached: AtomicU64,
    over_budget_unknown: AtomicU64,
}

/// A contract's answer to an EIP-1271 `isValidSignature` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractSignature {
    /// It returned the magic value: the contract accepts the signature.
    Valid,
    /// It reverted or returned anything else: the contract refuses it.
    Rejected,
    /// The call returned no data at all, which is what a call to an address
    /// without code returns: there is no contract wallet there.
    NoContract,
}

/// One chain's reader.
pub struct ChainReader {
    rpc: RpcClient,
    chain_id: Option<u64>,
    cache: Mutex<TtlCache<Read, ReadValue>>,
    multicall: Option<Address>,
    delegate_registry: Address,
    max_calls_per_multicall: usize,
    max_batch_size: usize,
    max_concurrent_requests: usize,
    counters: Counters,
    name: String,
    /// `None`: no per-community limit.
    budgets: Option<Mutex<Budgets>>,
    /// Calls of each community's burst that bulk ([`Freshness::Cached`])
    /// reads leave for reads a member waits on.
    interactive_reserve: u32,
    clock: Arc<dyn Clock>,
}

/// One `eth_call` on the wire, and which planned calls it carries.
struct WireCall {
    to: Address,
    data: Bytes,
    carries: Carries,
}

enum Carries {
    Direct(usize),
    Multicall(Vec<usize>),
}

pub type ReadResults = HashMap<Read, Result<ReadValue, ChainError>>;

impl ChainReader {
    pub fn new(name: &str, config: &ChainConfig) -> Result<Self, reqwest::Error> {
        Self::with_clock(name, config, Arc::new(SystemClock))
    }

    /// As [`ChainReader::new`], with cache ages and budgets going by
    /// `clock` (tests move it on by hand).
    pub fn with_clock(
        name: &str,
        config: &ChainConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        Ok(ChainReader {
            rpc: RpcClient::new(name, config)?,
            chain_id: config.chain_id,
            cache: Mutex::new(TtlCache::new(config.cache_ttl(), config.cache_max_entries)),
            multicall: config.multicall(),
            delegate_registry: config.delegate_registry(),
            max_calls_per_multicall: config.max_calls_per_multicall.max(1),
            max_batch_size: config.max_batch_size.max(1),
            max_concurrent_requests: config.max_concurrent_requests.max(1),
            counters: Counters::default(),
            name: name.to_string(),
            budgets: config.community_budget.map(|b| Mutex::new(Budgets::new(b))),
            // A tenth of the burst, but never so much that bulk reads
            // could not send a full batch.
            interactive_reserve: config.community_budget.map_or(0, |b| {
                let batch = u32::try_from(config.max_batch_size).unwrap_or(u32::MAX);
                (b.burst / 10).min(b.burst.saturating_sub(batch))
            }),
            clock,
        })
    }

    pub fn stats(&self) -> ChainStats {
        let c = &self.counters;
        ChainStats {
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            cache_misses: c.cache_misses.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            over_budget_cached: c.over_budget_cached.load(Ordering::Relaxed),
            over_budget_unknown: c.over_budget_unknown.load(Ordering::Relaxed),
        }
    }

    pub fn health(&self) -> Vec<EndpointHealth> {
        self.rpc.health()
    }

    /// Where this chain's delegate.xyz v2 registry is.
    pub fn delegate_registry(&self) -> Address {
        self.delegate_registry
    }

    /// The configured EIP-155 chain id, which every request also verifies.
    pub fn chain_id(&self) -> Option<u64> {
        self.chain_id
    }

    /// Asks `contract` whether `signature` is valid for `hash` (EIP-1271
    /// `isValidSignature`) at the latest block.
    ///
    /// Never cached: the answer depends on the wallet's current state (its
    /// owners can change), and each proof is checked once. A node or
    /// transport failure is an error, never an answer.
    pub async fn is_valid_signature(
        &self,
        contract: Address,
        hash: B256,
        signature: &[u8],
    ) -> Result<ContractSignature, ChainError> {
        let data: Bytes = IsValidSignatureCall {
            hash,
            signature: Bytes::copy_from_slice(signature),
        }
        .abi_encode()
        .into();
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let results = self.rpc.eth_calls(&[(contract, data)]).await?;
        let call_error = |detail: String| ChainError::Call {
            chain: self.name.clone(),
            contract,
            detail,
        };
        match results.into_iter().next() {
            Some(CallResult::Returned(data)) if data.is_empty() => {
                Ok(ContractSignature::NoContract)
            }
            Some(CallResult::Returned(data)) => {
                // EIP-1271: anything but the magic value, including data that
                // is not a well-formed bytes4, means the signature is invalid.
                match IsValidSignatureCall::abi_decode_returns_validate(&data) {
                    Ok(magic) if magic.0 == ERC1271_MAGIC_VALUE => Ok(ContractSignature::Valid),
                    _ => Ok(ContractSignature::Rejected),
                }
            }
            Some(CallResult::Reverted) => Ok(ContractSignature::Rejected),
            Some(CallResult::Failed(detail)) => Err(call_error(detail)),
            None => Err(call_error(
                "the node sent no result for the call".to_string(),
            )),
        }
    }

    /// Answers every read `community` needs, from the cache where
    /// `freshness` allows and otherwise in as few HTTP requests as the
    /// configured limits permit, as far as the community's budget pays for
    /// them.
    ///
    /// Calls beyond the budget are not sent, and nothing waits for the
    /// budget to refill: their reads are answered from the cache if it
    /// holds them at all (a result up to the TTL old beats none), and are
    /// otherwise [`ChainError::OverBudget`], which makes outcomes Unknown —
    /// never NotEligible, so no role is taken for it — for the next check
    /// to retry. Waiting instead would hold whatever the caller holds (a
    /// worker's message slot, the periodic scan's turn) from every other
    /// community until this one's budget refills.
    pub async fn read(&self, community: Uuid, reads: &[Read], freshness: Freshness) -> ReadResults {
        let mut results = ReadResults::with_capacity(reads.len());
        let mut missing = Vec::new();
        let mut queued = std::collections::HashSet::new();
        {
            let cache = lock(&self.cache);
            let now = self.clock.now();
            for read in reads {
                if results.contains_key(read) {
                    continue;
                }
                let hit = match freshness {
                    Freshness::Cached => cache.get(read, now),
                    Freshness::Fresh => None,
                    Freshness::NotOlderThan(age) => cache.get_younger_than(read, now, age),
                };
                match hit {
                    Some(value) => {
                        results.insert(read.clone(), Ok(value));
                    }
                    None => {
                        if queued.insert(read) {
                            missing.push(read.clone());
                        }
                    }
                }
            }
        }
        self.counters
            .cache_hits
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        self.counters
            .cache_misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if missing.is_empty() {
            return results;
        }

        let planned = plan_calls(&missing);
        let wire = self.pack(&planned);
        // Batches are passed by owned call lists and start index rather than
        // as borrowed slices: a closure taking a reference makes the future
        // higher-ranked, and rustc then cannot prove it Send for spawning.
        let mut batches: Vec<(usize, Vec<(Address, Bytes)>)> = wire
            .chunks(self.max_batch_size)
            .enumerate()
            .map(|(i, chunk)| {
                let calls = chunk.iter().map(|w| (w.to, w.data.clone())).collect();
                (i * self.max_batch_size, calls)
            })
            .collect();
        let paid = self.pay_for(community, &batches, freshness);
        let unpaid = batches.split_off(paid);
        self.answer_unpaid(community, &wire, &planned, &unpaid, &mut results);
        let replies: Vec<_> = stream::iter(batches)
            .map(|(start, calls)| async move {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                let reply = self.rpc.eth_calls(&calls).await;
                (start, calls.len(), reply)
            })
            .buffer_unordered(self.max_concurrent_requests)
            .collect()
            .await;

        let mut fetched = Vec::new();
        for (start, len, reply) in replies {
            let batch = &wire[start..start + len];
            match reply {
                Ok(outer_results) => {
                    for (wire_call, outer) in batch.iter().zip(outer_results) {
                        for (index, result) in self.unpack(wire_call, &outer) {
                            let call = &planned[index];
                            for (read, value) in decode_answers(&call.answers, &result) {
                                let value = value.map_err(|detail| ChainError::Call {
                                    chain: self.name.clone(),
                                    contract: call.to,
                                    detail,
                                });
                                if let Ok(v) = &value {
                                    fetched.push((read.clone(), v.clone()));
                                }
                                results.insert(read, value);
                            }
                        }
                    }
                }
                Err(e) => {
                    for wire_call in batch {
                        for index in carried(wire_call) {
                            for read in answered_reads(&planned[index]) {
                                results.insert(read, Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
        let mut cache = lock(&self.cache);
        let now = self.clock.now();
        for (read, value) in fetched {
            cache.insert(read, value, now);
        }
        results
    }

    /// How many of `batches`, from the first, `community`'s budget pays
    /// for now (each costs its calls). The first refused ends the count:
    /// the rest would only be admitted out of order. Bulk reads leave the
    /// interactive reserve: a community's own mass re-check must not leave
    /// its members' `/check`s nothing.
    fn pay_for(
        &self,
        community: Uuid,
        batches: &[(usize, Vec<(Address, Bytes)>)],
        freshness: Freshness,
    ) -> usize {
        let Some(budgets) = &self.budgets else {
            return batches.len();
        };
        let keep = match freshness {
            Freshness::Cached => self.interactive_reserve,
            Freshness::Fresh | Freshness::NotOlderThan(_) => 0,
        };
        let mut budgets = lock(budgets);
        let now = self.clock.now();
        batches
            .iter()
            .take_while(|(_, calls)| {
                let cost = u32::try_from(calls.len()).unwrap_or(u32::MAX);
                budgets.try_spend(community, cost, keep, now)
            })
            .count()
    }

    /// Answers the reads of batches the budget did not pay for: from the
    /// cache if it holds them (whatever the freshness asked), else
    /// [`ChainError::OverBudget`].
    fn answer_unpaid(
        &self,
        community: Uuid,
        wire: &[WireCall],
        planned: &[PlannedCall],
        unpaid: &[(usize, Vec<(Address, Bytes)>)],
        results: &mut ReadResults,
    ) {
        if unpaid.is_empty() {
            return;
        }
        let (mut cached, mut unknown) = (0u64, 0u64);
        let cache = lock(&self.cache);
        let now = self.clock.now();
        for (start, calls) in unpaid {
            for wire_call in &wire[*start..*start + calls.len()] {
                for index in carried(wire_call) {
                    for read in answered_reads(&planned[index]) {
                        let answer = match cache.get(&read, now) {
                            Some(value) => {
                                cached += 1;
                                Ok(value)
                            }
                            None => {
                                unknown += 1;
                                Err(ChainError::OverBudget {
                                    chain: self.name.clone(),
                                })
                            }
                        };
                        results.insert(read, answer);
                    }
                }
            }
        }
        drop(cache);
        tracing::debug!(chain = %self.name, %community, cached, unknown, "reads beyond the community's chain-read budget: from the cache or unknown");
        let c = &self.counters;
        c.over_budget_cached.fetch_add(cached, Ordering::Relaxed);
        c.over_budget_unknown.fetch_add(unknown, Ordering::Relaxed);
        let chain = self.name.clone();
        metrics::counter!("eligibility_chain_reads_over_budget_total", "chain" => chain.clone(), "outcome" => "cached")
            .increment(cached);
        metrics::counter!("eligibility_chain_reads_over_budget_total", "chain" => chain, "outcome" => "unknown")
            .increment(unknown);
    }

    /// Packs planned calls into wire calls: `aggregate3` chunks when a
    /// multicall contract is configured, otherwise one `eth_call` each.
    fn pack(&self, planned: &[PlannedCall]) -> Vec<WireCall> {
        match self.multicall {
            // A lone call gains nothing from the multicall wrapper.
            Some(mc) if planned.len() > 1 => (0..planned.len())
                .collect::<Vec<_>>()
                .chunks(self.max_calls_per_multicall)
                .map(|chunk| {
                    let inner: Vec<PlannedCall> =
                        chunk.iter().map(|&i| planned[i].clone()).collect();
                    WireCall {
                        to: mc,
                        data: multicall::encode(&inner),
                        carries: Carries::Multicall(chunk.to_vec()),
                    }
                })
                .collect(),
            _ => planned
                .iter()
                .enumerate()
                .map(|(i, c)| WireCall {
                    to: c.to,
                    data: c.data.clone(),
                    carries: Carries::Direct(i),
                })
                .collect(),
        }
    }

    fn unpack(&self, wire: &WireCall, outer: &CallResult) -> Vec<(usize, CallResult)> {
        match &wire.carries {
            Carries::Direct(i) => vec![(*i, outer.clone())],
            Carries::Multicall(indices) => {
                let inner = multicall::decode(outer, indices.len(), wire.to);
                indices.iter().copied().zip(inner).collect()
            }
        }
    }
}

fn carried(wire: &WireCall) -> Vec<usize> {
    match &wire.carries {
        Carries::Direct(i) => vec![*i],
        Carries::Multicall(indices) => indices.clone(),
    }
}

fn answered_reads(call: &PlannedCall) -> Vec<Read> {
    match &call.answers {
        abi::Answers::One(read) => vec![read.clone()],
        abi::Answers::Batch1155(reads) => reads.clone(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache holds plain data whose every update is a single insert, so a
    // lock poisoned by an unrelated panic still guards consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
