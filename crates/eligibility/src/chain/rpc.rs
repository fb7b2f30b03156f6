//! JSON-RPC over HTTP: batches of `eth_call`, sent to the first healthy URL
//! of a chain, failing over to the next.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::abi::CallResult;
use super::breaker::{Breaker, BreakerState};
use crate::config::{redact_url, ChainConfig};

/// How many of a chain's RPC URLs have a breaker that is not closed (open,
/// or half-open waiting on its probe), by `chain`: 0 while every URL takes
/// requests; for a chain with one URL, 1 open and 0 closed. Set at start
/// and whenever a breaker opens or closes. Labelled by the chain's name
/// only, never by URL: URLs carry provider keys.
pub const BREAKER_OPEN: &str = "eligibility_chain_breaker_open";
/// Chain reads, each one JSON-RPC batch of `eth_call`s failing over
/// across the chain's URLs, by `chain` and `outcome`: `ok`, `failed` (every
/// URL tried failed or pushed back) or `circuit_open` (every URL's breaker
/// was open: nothing was sent).
pub const READS: &str = "eligibility_chain_reads_total";

/// Why one HTTP request to one URL failed. Every one moves on to the next
/// URL; all but back-pressure ([`EndpointError::is_back_pressure`]) count
/// against that URL's breaker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The URL accepted the request but did not answer in time. (A connect
    /// that times out is [`EndpointError::Transport`]: nothing is listening.)
    #[error("{url}: timed out after {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    /// HTTP 429: the provider is throttling this client.
    #[error("{url}: rate limited (HTTP 429){}", retry_after_note(*.retry_after_secs))]
    RateLimited {
        url: String,
        retry_after_secs: Option<u64>,
    },
    /// The reply body was longer than `max_response_bytes`; reading
    /// stopped there.
    #[error("{url}: reply larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: malformed reply: {detail}")]
    Malformed { url: String, detail: String },
    /// The URL serves a different chain than configured: its balances would
    /// be wrong, so it is treated as down rather than believed.
    #[error("{url}: serves chain id {got}, not the configured {expected}")]
    WrongChain {
        url: String,
        expected: u64,
        got: u64,
    },
}

impl EndpointError {
    /// A throttled (429) or slow-to-answer URL is up and busy. Opening its
    /// breaker would not spare it load any better than failing over does,
    /// and since one breaker serves every community, one community's burst
    /// would cut all of them off the URL. The read is still Unknown (or
    /// answered by the next URL); only real failures count.
    pub fn is_back_pressure(&self) -> bool {
        matches!(
            self,
            EndpointError::RateLimited { .. } | EndpointError::Timeout { .. }
        )
    }
}

fn retry_after_note(secs: Option<u64>) -> String {
    secs.map_or_else(String::new, |s| format!(", retry after {s} s"))
}

/// Why a chain could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("chain {chain:?} is not configured")]
    Unconfigured { chain: String },
    #[error("chain {chain}: every RPC URL's circuit breaker is open")]
    CircuitOpen { chain: String },
    /// The community has spent its share of this chain's RPC calls for
    /// now (`community_budget`); the next check reads again.
    #[error("chain {chain}: this community's chain-read budget is spent for now; the next check reads again")]
    OverBudget { chain: String },
    #[error("chain {chain}: every RPC URL failed; last error: {last}")]
    AllFailed { chain: String, last: EndpointError },
    /// The node answered, but not with a usable value for this read.
    #[error("chain {chain}: call to {contract} failed: {detail}")]
    Call {
        chain: String,
        contract: Address,
        detail: String,
    },
}

/// Health of one RPC URL, for readiness checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub chain: String,
    /// Redacted (`settings::redact`): provider URLs carry keys.
    pub url: String,
    pub state: BreakerState,
}

struct Endpoint {
    url: Url,
    redacted: String,
    breaker: Mutex<Breaker>,
    /// Set from a 429's `Retry-After`: until then the URL is skipped, as
    /// the provider asked, without counting against its breaker.
    throttled_until: Mutex<Option<Instant>>,
}

pub struct RpcClient {
    chain: String,
    http: reqwest::Client,
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    max_response_bytes: usize,
    /// The longest `Retry-After` honoured: no longer than an open breaker
    /// would keep the URL out, so a provider cannot park it for hours.
    max_retry_after: Duration,
    chain_id: Option<u64>,
    /// Held while [`BREAKER_OPEN`] is counted and set (see
    /// [`RpcClient::report_breakers`]).
    reporting: Mutex<()>,
}

impl RpcClient {
    pub fn new(chain: &str, config: &ChainConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout())
            .build()?;
        let endpoints = config
            .rpc_urls
            .iter()
            .map(|url| Endpoint {
                url: url.clone(),
                redacted: redact_url(url),
                throttled_until: Mutex::new(None),
                breaker: Mutex::new(Breaker::new(
                    config.breaker.failure_threshold,
                    config.breaker.cooldown(),
                )),
            })
            .collect();
        let client = RpcClient {
            chain: chain.to_string(),
            http,
            endpoints,
            timeout: config.timeout(),
            max_response_bytes: config.max_response_bytes,
            max_retry_after: config.breaker.cooldown(),
            chain_id: config.chain_id,
            reporting: Mutex::new(()),
        };
        // A series from the start: an alert cannot tell a gauge never set
        // from a chain that is fine.
        client.report_breakers();
        Ok(client)
    }

    pub fn health(&self) -> Vec<EndpointHealth> {
        let now = Instant::now();
        self.endpoints
            .iter()
            .map(|e| EndpointHealth {
                chain: self.chain.clone(),
                url: e.redacted.clone(),
                state: lock(&e.breaker).state(now),
            })
            .collect()
    }

    /// Sends `calls` as one JSON-RPC batch of `eth_call`s at the latest
    /// block. Returns one result per call, in order.
    ///
    /// URLs are tried in configured order so traffic stays on the primary
    /// while it is healthy; a URL whose breaker is open is skipped without
    /// spending a timeout on it.
    pub async fn eth_calls(
        &self,
        calls: &[(Address, Bytes)],
    ) -> Result<Vec<CallResult>, ChainError> {
        let result = self.try_urls(calls).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ChainError::CircuitOpen { .. }) => "circuit_open",
            Err(_) => "failed",
        };
        metrics::counter!(READS, "chain" => self.chain.clone(), "outcome" => outcome).increment(1);
        result
    }

    async fn try_urls(&self, calls: &[(Address, Bytes)]) -> Result<Vec<CallResult>, ChainError> {
        let mut batch: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, (to, data))| {
                json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "method": "eth_call",
                    "params": [{"to": to.to_string(), "data": data.to_string()}, "latest"],
                })
            })
            .collect();
        // Riding along in every batch costs no extra request and catches a
        // URL that was re-pointed at another chain after start-up.
        if self.chain_id.is_some() {
            batch.push(json!({
                "jsonrpc": "2.0",
                "id": calls.len(),
                "method": "eth_chainId",
                "params": [],
            }));
        }
        let body = Value::Array(batch);
        let mut last = None;
        for endpoint in &self.endpoints {
            let now = Instant::now();
            if let Some(until) = *lock(&endpoint.throttled_until) {
                if now < until {
                    last = Some(EndpointError::RateLimited {
                        url: endpoint.redacted.clone(),
                        retry_after_secs: Some(until.saturating_duration_since(now).as_secs()),
                    });
                    continue;
                }
            }
            if !lock(&endpoint.breaker).try_acquire(now) {
                continue;
            }
            match self.send(endpoint, &body, calls.len()).await {
                Ok(results) => {
                    self.settle(endpoint, true);
                    return Ok(results);
                }
                Err(e) if e.is_back_pressure() => {
                    tracing::info!(chain = %self.chain, error = %e, "RPC URL is pushing back");
                    if let EndpointError::RateLimited {
                        retry_after_secs: Some(secs),
                        ..
                    } = &e
                    {
                        let wait = Duration::from_secs(*secs).min(self.max_retry_after);
                        *lock(&endpoint.throttled_until) = Some(Instant::now() + wait);
                    }
                    last = Some(e);
                }
                Err(e) => {
                    tracing::warn!(chain = %self.chain, error = %e, "RPC request failed");
                    self.settle(endpoint, false);
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(last) => ChainError::AllFailed {
                chain: self.chain.clone(),
                last,
            },
            None => ChainError::CircuitOpen {
                chain: self.chain.clone(),
            },
        })
    }

    /// Counts a request's result against `endpoint`'s breaker, and updates
    /// [`BREAKER_OPEN`] if that opened or closed it.
    fn settle(&self, endpoint: &Endpoint, succeeded: bool) {
        let changed = {
            let mut breaker = lock(&endpoint.breaker);
            let was_closed = breaker.is_closed();
            if succeeded {
                breaker.on_success();
            } else {
                breaker.on_failure(Instant::now());
            }
            breaker.is_closed() != was_closed
        };
        if changed {
            self.report_breakers();
        }
    }

    /// Sets [`BREAKER_OPEN`] to the number of this chain's URLs whose
    /// breaker is not closed.
    fn report_breakers(&self) {
        // Counted and set under one lock: two breakers changing at once
        // could otherwise leave the older count in the gauge.
        let _reporting = lock(&self.reporting);
        let open = self
            .endpoints
            .iter()
            .filter(|e| !lock(&e.breaker).is_closed())
            .count();
        metrics::gauge!(BREAKER_OPEN, "chain" => self.chain.clone()).set(open as f64);
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        body: &Value,
        expected: usize,
    ) -> Result<Vec<CallResult>, EndpointError> {
        let url = &endpoint.redacted;
        let response = self
            .http
            .post(endpoint.url.clone())
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| self.request_error(url, &e))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            // Only the delay-seconds form: the HTTP-date form needs a clock
            // agreeing with the provider's, and failing over works without.
            let retry_after_secs = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            return Err(EndpointError::RateLimited {
                url: url.clone(),
                retry_after_secs,
            });
        }
        if !status.is_success() {
            return Err(EndpointError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let bytes = self.read_body(url, response).await?;
        parse_batch_reply(&bytes, expected, self.chain_id).map_err(|problem| match problem {
            ReplyProblem::Malformed(detail) => EndpointError::Malformed {
                url: url.clone(),
                detail,
            },
            ReplyProblem::WrongChain { expected, got } => EndpointError::WrongChain {
                url: url.clone(),
                expected,
                got,
            },
        })
    }

    /// Reads the body chunk by chunk, giving up as soon as it exceeds the
    /// limit: `Response::bytes` would buffer whatever the endpoint sends.
    async fn read_body(
        &self,
        url: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, EndpointError> {
        let limit = self.max_response_bytes;
        let too_large = || EndpointError::TooLarge {
            url: url.to_string(),
            limit,
        };
        // A declared length is only a hint (it can lie either way), but
        // when it is already too big there is no need to read anything.
        let declared = response
            .content_length()
            .and_then(|n| usize::try_from(n).ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_error(url, &e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn request_error(&self, url: &str, e: &reqwest::Error) -> EndpointError {
        if e.is_timeout() && e.is_connect() {
            // Nothing answered at all: the host is down or unreachable, a
            // real failure rather than a busy server.
            EndpointError::Transport {
                url: url.to_string(),
                detail: "connecting timed out".to_string(),
            }
        } else if e.is_timeout() {
            EndpointError::Timeout {
                url: url.to_string(),
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            }
        } else {
            // reqwest's Display includes the full URL (and so any API key);
            // the source chain says what went wrong without it.
            EndpointError::Transport {
                url: url.to_string(),
                detail: error_chain_without_url(e),
            }
        }
    }
}

fn error_chain_without_url(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        if e.is_connect() {
            "could not connect".to_string()
        } else {
            "request failed".to_string()
        }
    } else {
        parts.join(": ")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a breaker or a throttle
    // half-updated (every update is one assignment), so a poisoned lock is
    // still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Deserialize)]
struct Reply {
    id: Option<Value>,
    result: Option<String>,
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
    message: String,
}

#[derive(Debug)]
enum ReplyProblem {
    Malformed(String),
    WrongChain { expected: u64, got: u64 },
}

impl From<String> for ReplyProblem {
    fn from(detail: String) -> Self {
        ReplyProblem::Malformed(detail)
    }
}

/// Parses a JSON-RPC batch reply into per-call results by id. Replies may
/// arrive in any order (the spec allows it). With `chain_id`, the batch also
/// carries an `eth_chainId` at id `expected`, whose answer must match.
fn parse_batch_reply(
    body: &[u8],
    expected: usize,
    chain_id: Option<u64>,
) -> Result<Vec<CallResult>, ReplyProblem> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let replies: Vec<Reply> = match value {
        Value::Array(_) => serde_json::from_value(value).map_err(|e| format!("bad batch: {e}"))?,
        // Providers answer a batch they refuse (too large, rate-limited) with
        // a single error object.
        Value::Object(obj) => {
            let detail = obj.get("error").map_or_else(
                || "a single object".to_string(),
                std::string::ToString::to_string,
            );
            return Err(format!("expected a batch reply, got {detail}").into());
        }
        other => return Err(format!("expected a batch reply, got {other}").into()),
    };
    let mut results: Vec<Option<CallResult>> = vec![None; expected];
    let mut chain_checked = false;
    for reply in replies {
        let id = reply
            .id
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|id| usize::try_from(id).ok());
        if let (Some(want), Some(id)) = (chain_id, id) {
            if id == expected {
                check_chain_id(&reply, want)?;
                chain_checked = true;
                continue;
            }
        }
        let Some(id) = id.filter(|id| *id < expected) else {
            return Err(format!("reply with unexpected id {:?}", reply.id).into());
        };
        let result = match (reply.result, reply.error) {
            (_, Some(err)) if is_revert(&err) => CallResult::Reverted,
            (_, Some(err)) => {
                CallResult::Failed(format!("node error {}: {}", err.code, err.message))
            }
            (Some(hex), None) => match hex.parse::<Bytes>() {
                Ok(bytes) => CallResult::Returned(bytes),
                Err(e) => return Err(format!("result for id {id} is not hex: {e}").into()),
            },
            (None, None) => return Err(format!("reply {id} has neither result nor error").into()),
        };
        results[id] = Some(result);
    }
    if chain_id.is_some() && !chain_checked {
        return Err("no reply to eth_chainId".to_string().into());
    }
    results
        .into_iter()
        .enumerate()
        .map(|(id, r)| r.ok_or_else(|| format!("no reply for id {id}").into()))
        .collect()
}

fn check_chain_id(reply: &Reply, want: u64) -> Result<(), ReplyProblem> {
    let got = reply
        .result
        .as_deref()
        .and_then(|hex| hex.strip_prefix("0x"))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("eth_chainId reply is not a hex number: {:?}", reply.result))?;
    if got == want {
        Ok(())
    } else {
        Err(ReplyProblem::WrongChain {
            expected: want,
            got,
        })
    }
}

/// Nodes disagree on how to say "reverted": geth uses code 3, others -32000
/// or -32015 with a message mentioning the revert.
fn is_revert(err: &RpcError) -> bool {
    err.code == 3 || err.message.to_ascii_lowercase().contains("revert")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::*;

    /// Keeps the gauges set on this thread, by name and labels.
    #[derive(Default)]
    struct Gauges(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Gauges {
        fn get(&self, name: &str, chain: &str) -> Option<f64> {
            let key = format!("{name}{{chain={chain}}}");
            lock(&self.0)
                .get(&key)
                .map(|v| f64::from_bits(v.load(std::sync::atomic::Ordering::Relaxed)))
        }
    }

    impl metrics::Recorder for Gauges {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            metrics::Gauge::from_arc(lock(&self.0).entry(name).or_default().clone())
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn the_breaker_gauge_counts_the_chains_urls_not_closed() {
        let urls = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
            .map(|u| u.parse().expect("a URL"))
            .to_vec();
        let mut config = ChainConfig::new(urls);
        config.breaker.failure_threshold = 2;
        let gauges = Gauges::default();
        let open = || gauges.get(BREAKER_OPEN, "gauge-test");
        metrics::with_local_recorder(&gauges, || {
            let client = RpcClient::new("gauge-test", &config).expect("a client");
            assert_eq!(open(), Some(0.0), "set at start");
            client.settle(&client.endpoints[0], false);
            assert_eq!(open(), Some(0.0), "below the threshold");
            client.settle(&client.endpoints[0], false);
            assert_eq!(open(), Some(1.0));
            client.settle(&client.endpoints[1], false);
            client.settle(&client.endpoints[1], false);
            assert_eq!(open(), Some(2.0), "every URL open");
            client.settle(&client.endpoints[0], true);
            assert_eq!(open(), Some(1.0), "a successful probe closes one");
        });
    }

    #[test]
    fn batch_reply_out_of_order_with_revert_and_error() {
        let body = br#"[
            {"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"header not found"}},
            {"jsonrpc":"2.0","id":0,"result":"0x01"},
            {"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted"}}
        ]"#;
        let results = parse_batch_reply(body, 3, None).expect("parses");
        assert!(matches!(&results[0], CallResult::Returned(b) if b.as_ref() == [1]));
        assert!(matches!(results[1], CallResult::Reverted));
        assert!(matches!(&results[2], CallResult::Failed(e) if e.contains("header not found")));
    }

    #[test]
    fn missing_reply_is_malformed() {
        let body = br#"[{"jsonrpc":"2.0","id":0,"result":"0x"}]"#;
        let err = parse_batch_reply(body, 2, None).expect_err("id 1 missing");
        assert!(
            matches!(&err, ReplyProblem::Malformed(d) if d.contains("no reply for id 1")),
            "{err:?}"
        );
    }

    #[test]
    fn single_error_object_for_a_batch_is_malformed() {
        let body =
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"batch too large"}}"#;
        let err = parse_batch_reply(body, 2, None).expect_err("refused batch");
        assert!(
            matches!(&err, ReplyProblem::Malformed(d) if d.contains("batch too large")),
            "{err:?}"
        );
    }

    #[test]
    fn non_json_is_malformed() {
        assert!(parse_batch_reply(b"<html>502</html>", 1, None).is_err());
    }

    #[test]
    fn chain_id_must_match_when_configured() {
        let body = br#"[
            {"jsonrpc":"2.0","id":1,"result":"0x1"},
            {"jsonrpc":"2.0","id":0,"result":"0x"}
        ]"#;
        assert!(parse_batch_reply(body, 1, Some(1)).is_ok());
        assert!(matches!(
            parse_batch_reply(body, 1, Some(137)),
            Err(ReplyProblem::WrongChain {
                expected: 137,
                got: 1
            })
        ));
        let without = br#"[{"jsonrpc":"2.0","id":0,"result":"0x"}]"#;
        assert!(matches!(
            parse_batch_reply(without, 1, Some(1)),
            Err(ReplyProblem::Malformed(d)) if d.contains("eth_chainId")
        ));
    }
}
