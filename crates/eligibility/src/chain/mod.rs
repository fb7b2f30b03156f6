//! Reading EVM chains: many reads in few requests, cached, with failover.

pub mod abi;
pub mod breaker;
pub mod cache;
pub mod multicall;
pub mod rpc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use alloy_primitives::{Address, Bytes, B256};
use alloy_sol_types::SolCall;
use futures::stream::{self, StreamExt};

use crate::config::ChainConfig;
use abi::{
    decode_answers, plan_calls, CallResult, IsValidSignatureCall, PlannedCall, Read, ReadValue,
    ERC1271_MAGIC_VALUE,
};
use cache::TtlCache;
use rpc::{ChainError, EndpointHealth, RpcClient};

/// Whether a read may be answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freshness {
    /// Periodic re-checks: a result younger than the chain's TTL is reused.
    #[default]
    Cached,
    /// A member asked to be checked now (`/check`, a wallet just linked):
    /// read the chain, then refresh the cache with what was read.
    Fresh,
}

/// Counters for one chain since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// HTTP requests sent (each a JSON-RPC batch), including failed ones.
    pub requests: u64,
}

#[derive(Default)]
struct Counters {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    requests: AtomicU64,
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
        })
    }

    pub fn stats(&self) -> ChainStats {
        ChainStats {
            cache_hits: self.counters.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.counters.cache_misses.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
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

    /// Answers every read, from the cache where allowed and otherwise in as
    /// few HTTP requests as the configured limits permit.
    pub async fn read(&self, reads: &[Read], freshness: Freshness) -> ReadResults {
        let mut results = ReadResults::with_capacity(reads.len());
        let mut missing = Vec::new();
        let mut queued = std::collections::HashSet::new();
        {
            let cache = lock(&self.cache);
            let now = Instant::now();
            for read in reads {
                if results.contains_key(read) {
                    continue;
                }
                let hit = match freshness {
                    Freshness::Cached => cache.get(read, now),
                    Freshness::Fresh => None,
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
        let batches: Vec<(usize, Vec<(Address, Bytes)>)> = wire
            .chunks(self.max_batch_size)
            .enumerate()
            .map(|(i, chunk)| {
                let calls = chunk.iter().map(|w| (w.to, w.data.clone())).collect();
                (i * self.max_batch_size, calls)
            })
            .collect();
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
        let now = Instant::now();
        for (read, value) in fetched {
            cache.insert(read, value, now);
        }
        results
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
