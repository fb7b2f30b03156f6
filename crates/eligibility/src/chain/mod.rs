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

use alloy_primitives::{Address, Bytes};
use futures::stream::{self, StreamExt};

use crate::config::ChainConfig;
use abi::{decode_answers, plan_calls, CallResult, PlannedCall, Read, ReadValue};
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

/// One chain's reader.
pub struct ChainReader {
    rpc: RpcClient,
    cache: Mutex<TtlCache<Read, ReadValue>>,
    multicall: Option<Address>,
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
            cache: Mutex::new(TtlCache::new(config.cache_ttl(), config.cache_max_entries)),
            multicall: config.multicall(),
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
