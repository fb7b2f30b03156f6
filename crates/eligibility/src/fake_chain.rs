//! A local EVM JSON-RPC chain for tests and the demo (feature `fake-chain`).
//!
//! It answers `eth_call` for the ERC-20 / ERC-721 / ERC-1155 balance
//! functions, EIP-1271 `isValidSignature` of contract wallets,
//! delegate.xyz v2 `getIncomingDelegations` and Multicall3 `aggregate3`,
//! plus `eth_chainId` and
//! `eth_blockNumber`, singly or in JSON-RPC batches. Tests set holdings
//! through [`FakeChain`], count the requests it received, and inject faults.
//!
//! Every response carries `Connection: close`, so each request arrives on a
//! fresh connection: that is what lets [`Fault::RefuseConnections`] take
//! effect immediately instead of being bypassed by a pooled keep-alive
//! connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, Bytes, FixedBytes, Signature, U256};
use alloy_sol_types::SolCall;
use axum::body::Bytes as Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::chain::abi::{
    aggregate3Call, registry_delegation, BalanceOfBatchCall, BalanceOfCall, Erc1155BalanceOfCall,
    GetIncomingDelegationsCall, IsValidSignatureCall, OwnerOfCall, RegistryDelegation, Result3,
    ERC1271_MAGIC_VALUE,
};
use crate::config::MULTICALL3_ADDRESS;
use crate::delegation::{Delegation, DELEGATE_REGISTRY_V2};

/// A fault the chain injects into every request until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Answer HTTP 503, as a provider in an outage does.
    Unavailable,
    /// Accept and immediately close connections, as a dead host's port does.
    RefuseConnections,
    /// Wait this long before answering (to trip client timeouts).
    Slow(Duration),
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Answer HTTP 429, as a provider throttling this client does, with
    /// `Retry-After: <secs>` when given.
    RateLimited { retry_after_secs: Option<u64> },
    /// Answer 200 with a JSON body of this many bytes (an empty batch reply
    /// padded with whitespace), streamed without a Content-Length, as a
    /// misbehaving node might send a huge reply.
    Oversized(usize),
}

/// The standard a fake contract implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeContract {
    Erc20,
    Erc721,
    Erc1155,
    /// A one-owner smart-contract wallet: `isValidSignature(hash, sig)`
    /// returns the EIP-1271 magic value when `sig` is `owner`'s signature
    /// of `hash`, zero otherwise, and reverts when `sig` is not 65 bytes
    /// (as OpenZeppelin's ECDSA recovery does).
    Erc1271 {
        owner: Address,
    },
    /// delegate.xyz's DelegateRegistry v2: `getIncomingDelegations(to)`
    /// returns the delegations set with [`FakeChain::delegate`] whose `to`
    /// is `to`, in the order they were set.
    DelegateRegistry,
}

/// How to start a fake chain.
#[derive(Debug, Clone)]
pub struct FakeChainOptions {
    pub chain_id: u64,
    /// Where Multicall3 lives; `None` for a chain without it.
    pub multicall: Option<Address>,
    /// Where the delegate registry is deployed; `None` for a chain without
    /// it (calls there return no data, as calls to an empty address do).
    pub delegate_registry: Option<Address>,
}

impl Default for FakeChainOptions {
    fn default() -> Self {
        FakeChainOptions {
            chain_id: 31337,
            multicall: Some(MULTICALL3_ADDRESS),
            delegate_registry: Some(DELEGATE_REGISTRY_V2),
        }
    }
}

#[derive(Default)]
struct Ledger {
    contracts: HashMap<Address, FakeContract>,
    erc20: HashMap<(Address, Address), U256>,
    erc721_owner: HashMap<(Address, U256), Address>,
    erc721_count: HashMap<(Address, Address), U256>,
    erc1155: HashMap<(Address, Address, U256), U256>,
    /// Calls to these addresses, or passing them as an argument, revert.
    failing: std::collections::HashSet<Address>,
    /// Delegations by registry address, in the order they were set.
    delegations: HashMap<Address, Vec<Delegation>>,
    /// Calls executed per target address, multicall inner calls included.
    calls_to: HashMap<Address, u64>,
    block_number: u64,
    fault: Fault,
}

struct Shared {
    ledger: Mutex<Ledger>,
    requests: AtomicU64,
    eth_calls: AtomicU64,
    refused: AtomicU64,
    chain_id: u64,
    multicall: Option<Address>,
    delegate_registry: Option<Address>,
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Ledger updates are single map operations; a poisoned lock (a
        // panicking test thread) still guards consistent data.
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running fake chain. Clones share the chain; the server stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct FakeChain {
    shared: Arc<Shared>,
    url: Url,
    addr: SocketAddr,
    _task: Arc<ServerTask>,
}

impl FakeChain {
    /// Starts a chain with Multicall3 at its canonical address, on
    /// 127.0.0.1 and a free port. Must be called inside a Tokio runtime.
    pub async fn start() -> std::io::Result<FakeChain> {
        Self::start_with(FakeChainOptions::default()).await
    }

    pub async fn start_with(options: FakeChainOptions) -> std::io::Result<FakeChain> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let url = Url::parse(&format!("http://{addr}/"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut ledger = Ledger {
            block_number: 1,
            ..Ledger::default()
        };
        if let Some(registry) = options.delegate_registry {
            ledger
                .contracts
                .insert(registry, FakeContract::DelegateRegistry);
        }
        let shared = Arc::new(Shared {
            ledger: Mutex::new(ledger),
            requests: AtomicU64::new(0),
            eth_calls: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            chain_id: options.chain_id,
            multicall: options.multicall,
            delegate_registry: options.delegate_registry,
        });
        // A community-wide re-check is a few large requests; axum's default
        // 2 MB body limit would refuse them where a real node would not.
        let app = Router::new()
            .route("/", post(handle))
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(shared.clone());
        let listener = FaultyListener {
            inner: listener,
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake chain server stopped");
            }
        });
        Ok(FakeChain {
            shared,
            url,
            addr,
            _task: Arc::new(ServerTask(task)),
        })
    }

    /// The JSON-RPC endpoint, e.g. `http://127.0.0.1:40123/`.
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn chain_id(&self) -> u64 {
        self.shared.chain_id
    }

    /// Puts code at `contract`: until then calls to it return empty data,
    /// like calls to an address without code on a real chain.
    pub fn deploy(&self, contract: Address, kind: FakeContract) {
        self.shared.ledger().contracts.insert(contract, kind);
    }

    /// Sets an ERC-20 balance (deploying the token if needed).
    pub fn set_erc20_balance(&self, contract: Address, holder: Address, amount: U256) {
        let mut ledger = self.shared.ledger();
        ledger.contracts.insert(contract, FakeContract::Erc20);
        ledger.erc20.insert((contract, holder), amount);
    }

    /// Sets (or with `None`, burns) an ERC-721 token's owner.
    pub fn set_erc721_owner(&self, contract: Address, token_id: U256, owner: Option<Address>) {
        let mut ledger = self.shared.ledger();
        ledger.contracts.insert(contract, FakeContract::Erc721);
        let previous = match owner {
            Some(o) => ledger.erc721_owner.insert((contract, token_id), o),
            None => ledger.erc721_owner.remove(&(contract, token_id)),
        };
        if let Some(prev) = previous {
            let count = ledger.erc721_count.entry((contract, prev)).or_default();
            *count = count.saturating_sub(U256::from(1));
        }
        if let Some(o) = owner {
            let count = ledger.erc721_count.entry((contract, o)).or_default();
            *count = count.saturating_add(U256::from(1));
        }
    }

    /// Sets an ERC-1155 balance of one token id.
    pub fn set_erc1155_balance(
        &self,
        contract: Address,
        holder: Address,
        token_id: U256,
        amount: U256,
    ) {
        let mut ledger = self.shared.ledger();
        ledger.contracts.insert(contract, FakeContract::Erc1155);
        ledger.erc1155.insert((contract, holder, token_id), amount);
    }

    /// Records `delegation` in the chain's delegate registry (deploying one
    /// at the canonical address if the chain was started without).
    pub fn delegate(&self, delegation: Delegation) {
        let registry = self
            .shared
            .delegate_registry
            .unwrap_or(DELEGATE_REGISTRY_V2);
        self.delegate_at(registry, delegation);
    }

    /// Records `delegation` in a registry at `registry` (deploying it).
    pub fn delegate_at(&self, registry: Address, delegation: Delegation) {
        let mut ledger = self.shared.ledger();
        ledger
            .contracts
            .insert(registry, FakeContract::DelegateRegistry);
        ledger
            .delegations
            .entry(registry)
            .or_default()
            .push(delegation);
    }

    /// Calls executed against `contract` since start or the last
    /// [`FakeChain::reset_counters`], counting each call inside a multicall.
    pub fn calls_to(&self, contract: Address) -> u64 {
        self.shared
            .ledger()
            .calls_to
            .get(&contract)
            .copied()
            .unwrap_or(0)
    }

    /// Makes every call to `address`, or passing it as an argument (a
    /// holder, an account in a batch), revert until
    /// [`FakeChain::heal_calls_involving`]: a node failing the reads of one
    /// wallet or one contract while the rest of a batch succeeds.
    pub fn fail_calls_involving(&self, address: Address) {
        self.shared.ledger().failing.insert(address);
    }

    pub fn heal_calls_involving(&self, address: Address) {
        self.shared.ledger().failing.remove(&address);
    }

    pub fn set_block_number(&self, block: u64) {
        self.shared.ledger().block_number = block;
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shared.ledger().fault = fault;
    }

    pub fn fault(&self) -> Fault {
        self.shared.ledger().fault
    }

    /// HTTP requests that reached the JSON-RPC handler (faulted ones too,
    /// except refused connections).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// `eth_call`s received (a multicall counts once).
    pub fn eth_calls(&self) -> u64 {
        self.shared.eth_calls.load(Ordering::SeqCst)
    }

    /// Connections closed unanswered under [`Fault::RefuseConnections`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.shared.ledger().calls_to.clear();
        self.shared.requests.store(0, Ordering::SeqCst);
        self.shared.eth_calls.store(0, Ordering::SeqCst);
        self.shared.refused.store(0, Ordering::SeqCst);
    }
}

/// Accepts connections, dropping them while connections are refused.
struct FaultyListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if self.shared.ledger().fault == Fault::RefuseConnections {
                        self.shared.refused.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                        continue;
                    }
                    return (stream, addr);
                }
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let fault = shared.ledger().fault;
    match fault {
        Fault::Unavailable => {
            return close((StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable"))
        }
        Fault::Malformed => return close((StatusCode::OK, "{\"jsonrpc\": \"2.0\", \"res")),
        Fault::RateLimited { retry_after_secs } => {
            let mut response = close((StatusCode::TOO_MANY_REQUESTS, "rate limited"));
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            }
            return response;
        }
        Fault::Oversized(size) => {
            // Streamed without a Content-Length, so a client can only find
            // out how large it is by reading it.
            const CHUNK: usize = 64 * 1024;
            let middle = size.saturating_sub(2);
            let chunks = std::iter::once(Body::from_static(b"["))
                .chain(
                    (0..middle)
                        .step_by(CHUNK)
                        .map(move |start| Body::from(vec![b' '; CHUNK.min(middle - start)])),
                )
                .chain(std::iter::once(Body::from_static(b"]")))
                .map(Ok::<_, std::convert::Infallible>);
            return close((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(futures::stream::iter(chunks)),
            ));
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        Fault::None | Fault::RefuseConnections => {}
    }
    let reply = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(requests)) if !requests.is_empty() => {
            Value::Array(requests.iter().map(|r| handle_one(&shared, r)).collect())
        }
        Ok(request @ Value::Object(_)) => handle_one(&shared, &request),
        Ok(_) => rpc_error(Value::Null, -32600, "invalid request"),
        Err(_) => rpc_error(Value::Null, -32700, "parse error"),
    };
    close((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    ))
}

fn close(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn handle_one(shared: &Shared, request: &Value) -> Value {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let ok = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    match request.get("method").and_then(Value::as_str) {
        Some("eth_chainId") => ok(json!(format!("{:#x}", shared.chain_id))),
        Some("eth_blockNumber") => ok(json!(format!("{:#x}", shared.ledger().block_number))),
        Some("eth_call") => {
            shared.eth_calls.fetch_add(1, Ordering::SeqCst);
            let Some((to, data)) = call_params(request) else {
                return rpc_error(id, -32602, "invalid params: expected [{to, data}, block]");
            };
            let mut ledger = shared.ledger();
            match execute(&mut ledger, shared.multicall, to, &data) {
                Ok(out) => ok(json!(out.to_string())),
                // geth's shape: code 3 with the revert data, if any.
                Err(Revert(data)) => json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": 3, "message": "execution reverted", "data": data.to_string(),
                }}),
            }
        }
        Some(other) => rpc_error(id, -32601, &format!("method {other} not found")),
        None => rpc_error(id, -32600, "invalid request"),
    }
}

fn call_params(request: &Value) -> Option<(Address, Bytes)> {
    let call = request.get("params")?.get(0)?;
    let to = call.get("to")?.as_str()?.parse().ok()?;
    let data = call
        .get("data")
        .or_else(|| call.get("input"))
        .and_then(Value::as_str)
        .unwrap_or("0x")
        .parse()
        .ok()?;
    Some((to, data))
}

/// Whether a call goes to, or passes as an ABI word, an address set to fail.
fn involves_failing(ledger: &Ledger, to: Address, data: &[u8]) -> bool {
    if ledger.failing.is_empty() {
        return false;
    }
    ledger.failing.contains(&to)
        || data.get(4..).is_some_and(|args| {
            args.chunks_exact(32).any(|word| {
                word[..12].iter().all(|&b| b == 0)
                    && ledger.failing.contains(&Address::from_slice(&word[12..]))
            })
        })
}

/// A call that did not return, with its revert data (empty for a bare
/// failure, as out-of-gas leaves it).
struct Revert(Bytes);

/// Runs a call against the ledger.
fn execute(
    ledger: &mut Ledger,
    multicall: Option<Address>,
    to: Address,
    data: &[u8],
) -> Result<Bytes, Revert> {
    *ledger.calls_to.entry(to).or_default() += 1;
    if Some(to) == multicall {
        let call = aggregate3Call::abi_decode(data).map_err(|_| Revert(Bytes::new()))?;
        let results: Vec<Result3> = call
            .calls
            .iter()
            .map(|c| match execute(ledger, None, c.target, &c.callData) {
                Ok(data) => Ok(Result3 {
                    success: true,
                    returnData: data,
                }),
                Err(Revert(data)) if c.allowFailure => Ok(Result3 {
                    success: false,
                    returnData: data,
                }),
                Err(revert) => Err(revert),
            })
            .collect::<Result<_, _>>()?;
        return Ok(aggregate3Call::abi_encode_returns(&results).into());
    }
    // Failing calls carry no revert data: they stand for a node or gas
    // failure, not for a contract's answer.
    if involves_failing(ledger, to, data) {
        return Err(Revert(Bytes::new()));
    }
    if let Some(revert) = nonexistent_token(ledger, to, data) {
        return Err(revert);
    }
    execute_contract(ledger, to, data).ok_or(Revert(Bytes::new()))
}

/// ERC-721: `ownerOf` reverts for a token that does not exist, with a
/// reason as OpenZeppelin's contracts give one (`Error(string)`).
fn nonexistent_token(ledger: &Ledger, to: Address, data: &[u8]) -> Option<Revert> {
    if ledger.contracts.get(&to) != Some(&FakeContract::Erc721) {
        return None;
    }
    let call = OwnerOfCall::abi_decode(data).ok()?;
    if ledger.erc721_owner.contains_key(&(to, call.tokenId)) {
        return None;
    }
    let reason = alloy_sol_types::Revert::from("ERC721: invalid token ID");
    Some(Revert(
        alloy_sol_types::SolError::abi_encode(&reason).into(),
    ))
}

/// Runs a call to a contract. `None` means it reverted without data.
fn execute_contract(ledger: &Ledger, to: Address, data: &[u8]) -> Option<Bytes> {
    let Some(kind) = ledger.contracts.get(&to) else {
        // No code at this address: the EVM returns success with no data.
        return Some(Bytes::new());
    };
    let selector: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let word = |v: U256| -> Bytes { v.to_be_bytes_vec().into() };
    match (kind, selector) {
        (FakeContract::Erc20, BalanceOfCall::SELECTOR) => {
            let call = BalanceOfCall::abi_decode(data).ok()?;
            Some(word(
                ledger
                    .erc20
                    .get(&(to, call.owner))
                    .copied()
                    .unwrap_or_default(),
            ))
        }
        (FakeContract::Erc721, BalanceOfCall::SELECTOR) => {
            let call = BalanceOfCall::abi_decode(data).ok()?;
            Some(word(
                ledger
                    .erc721_count
                    .get(&(to, call.owner))
                    .copied()
                    .unwrap_or_default(),
            ))
        }
        (FakeContract::Erc721, OwnerOfCall::SELECTOR) => {
            let call = OwnerOfCall::abi_decode(data).ok()?;
            // ERC-721: ownerOf reverts for tokens that do not exist.
            let owner = ledger.erc721_owner.get(&(to, call.tokenId))?;
            Some(OwnerOfCall::abi_encode_returns(owner).into())
        }
        (FakeContract::Erc1155, Erc1155BalanceOfCall::SELECTOR) => {
            let call = Erc1155BalanceOfCall::abi_decode(data).ok()?;
            Some(word(
                ledger
                    .erc1155
                    .get(&(to, call.account, call.id))
                    .copied()
                    .unwrap_or_default(),
            ))
        }
        (FakeContract::Erc1155, BalanceOfBatchCall::SELECTOR) => {
            let call = BalanceOfBatchCall::abi_decode(data).ok()?;
            if call.accounts.len() != call.ids.len() {
                return None;
            }
            let balances: Vec<U256> = call
                .accounts
                .iter()
                .zip(&call.ids)
                .map(|(a, id)| {
                    ledger
                        .erc1155
                        .get(&(to, *a, *id))
                        .copied()
                        .unwrap_or_default()
                })
                .collect();
            Some(BalanceOfBatchCall::abi_encode_returns(&balances).into())
        }
        (FakeContract::DelegateRegistry, GetIncomingDelegationsCall::SELECTOR) => {
            let call = GetIncomingDelegationsCall::abi_decode(data).ok()?;
            let incoming: Vec<RegistryDelegation> = ledger
                .delegations
                .get(&to)
                .into_iter()
                .flatten()
                .filter(|d| d.to == call.to)
                .map(registry_delegation)
                .collect();
            Some(GetIncomingDelegationsCall::abi_encode_returns(&incoming).into())
        }
        (FakeContract::Erc1271 { owner }, IsValidSignatureCall::SELECTOR) => {
            let call = IsValidSignatureCall::abi_decode(data).ok()?;
            let signature = Signature::from_raw(&call.signature).ok()?;
            let signer = signature.recover_address_from_prehash(&call.hash).ok();
            let answer = if signer == Some(*owner) {
                ERC1271_MAGIC_VALUE
            } else {
                [0; 4]
            };
            Some(IsValidSignatureCall::abi_encode_returns(&FixedBytes(answer)).into())
        }
        _ => None,
    }
}
