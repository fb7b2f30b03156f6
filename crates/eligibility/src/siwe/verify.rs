//! Checking a signed EIP-4361 message: its fields against what this server
//! asked for, then its signature.

use std::time::Duration;

use alloy_primitives::{eip191_hash_message, Address, Bytes, Signature, B256};
use chrono::{DateTime, TimeDelta, Utc};

use super::{ParseError, SiweMessage};
use crate::chain::rpc::ChainError;
pub use crate::chain::ContractSignature;
use crate::evaluate::Evaluator;

/// How far a message's `Issued At` and `Not Before` may lie in this
/// server's future: enough for clocks a little apart, too little to
/// pre-sign proofs for later.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How the message's URI must relate to the one this server asked for.
///
/// Compared as text, without normalisation: the server wrote the URI into
/// the message it asked to be signed, so the exact text is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMatch<'a> {
    /// The URI must be exactly this. The right choice when the server
    /// writes the message, as Gatehouse's link page does.
    Exact(&'a str),
    /// The URI must be this one or a URI below it: equal, or continuing
    /// with `/`, `?` or `#` (or anything, if this ends with `/`). So
    /// `https://a.example/link` admits `https://a.example/link?s=1` but not
    /// `https://a.example/linkage` nor `https://a.example.evil/`.
    Within(&'a str),
}

impl UriMatch<'_> {
    /// Whether `uri` (a message's URI) is acceptable.
    pub fn matches(&self, uri: &str) -> bool {
        match *self {
            UriMatch::Exact(expected) => uri == expected,
            UriMatch::Within(base) => match uri.strip_prefix(base) {
                Some("") => true,
                Some(rest) => base.ends_with('/') || rest.starts_with(['/', '?', '#']),
                None => false,
            },
        }
    }

    fn as_str(&self) -> &str {
        match self {
            UriMatch::Exact(s) | UriMatch::Within(s) => s,
        }
    }
}

/// What this server asked for when it issued the message.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The scheme the link page is served over; a message naming no
    /// scheme means `https` (EIP-4361). Compared ignoring ASCII case.
    pub scheme: &'a str,
    /// The page's authority (host and port, as in the message). Compared
    /// ignoring ASCII case, as hosts are (RFC 3986 §6.2.2.1).
    pub domain: &'a str,
    pub uri: UriMatch<'a>,
    /// The nonce the server issued for this proof.
    pub nonce: &'a str,
    /// When set, the message must be for this chain.
    pub chain_id: Option<u64>,
    pub now: DateTime<Utc>,
    /// See [`DEFAULT_CLOCK_SKEW`].
    pub clock_skew: Duration,
}

/// How a message differs from what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error(
        "the message is for {found:?}, not {expected:?}: it was made for another site (phishing?)"
    )]
    Domain { expected: String, found: String },
    #[error("the message is for scheme {found:?}, not {expected:?}")]
    Scheme { expected: String, found: String },
    #[error("the message is for URI {found:?}, not {expected:?}")]
    Uri { expected: String, found: String },
    #[error("the message is for chain {found}, not {expected}")]
    ChainId { expected: u64, found: u64 },
    #[error("the message's nonce {found:?} is not the one issued (a replayed or stale message?)")]
    Nonce { found: String },
    #[error("the message expired at {at}")]
    Expired { at: DateTime<Utc> },
    #[error("the message is not valid before {from}")]
    NotYetValid { from: DateTime<Utc> },
    #[error("the message claims to be issued at {at}, in the future")]
    IssuedInFuture { at: DateTime<Utc> },
}

impl SiweMessage {
    /// Compares the message with what this server asked for.
    ///
    /// Origin first (domain, scheme, URI), because a message for another
    /// site is the phishing case and should be reported as that whatever
    /// else is wrong with it. The clock skew applies to `Issued At` and
    /// `Not Before`, which another machine's clock may have set; never to
    /// `Expiration Time`, which would lengthen a proof's life.
    pub fn expect(&self, expected: &Expected<'_>) -> Result<(), Mismatch> {
        if !self.domain.eq_ignore_ascii_case(expected.domain) {
            return Err(Mismatch::Domain {
                expected: expected.domain.to_string(),
                found: self.domain.clone(),
            });
        }
        let scheme = self.scheme.as_deref().unwrap_or("https");
        if !scheme.eq_ignore_ascii_case(expected.scheme) {
            return Err(Mismatch::Scheme {
                expected: expected.scheme.to_string(),
                found: scheme.to_string(),
            });
        }
        if !expected.uri.matches(&self.uri) {
            return Err(Mismatch::Uri {
                expected: expected.uri.as_str().to_string(),
                found: self.uri.clone(),
            });
        }
        if let Some(chain_id) = expected.chain_id {
            if chain_id != self.chain_id {
                return Err(Mismatch::ChainId {
                    expected: chain_id,
                    found: self.chain_id,
                });
            }
        }
        if self.nonce != expected.nonce {
            return Err(Mismatch::Nonce {
                found: self.nonce.clone(),
            });
        }
        let now = expected.now;
        if let Some(expiry) = &self.expiration_time {
            if now >= expiry.at() {
                return Err(Mismatch::Expired { at: expiry.at() });
            }
        }
        let skew = TimeDelta::from_std(expected.clock_skew).unwrap_or(TimeDelta::MAX);
        let latest = now
            .checked_add_signed(skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if let Some(not_before) = &self.not_before {
            if not_before.at() > latest {
                return Err(Mismatch::NotYetValid {
                    from: not_before.at(),
                });
            }
        }
        if self.issued_at.at() > latest {
            return Err(Mismatch::IssuedInFuture {
                at: self.issued_at.at(),
            });
        }
        Ok(())
    }

    /// The EIP-191 `personal_sign` hash of the message: what an EOA signs
    /// and what EIP-1271 `isValidSignature` is asked about.
    pub fn eip191_hash(&self) -> B256 {
        eip191_hash_message(self.to_string())
    }

    /// Checks `signature` was made by the message's address. See
    /// [`verify_text_signature`] for the order of checks.
    pub async fn verify_signature(
        &self,
        signature: &[u8],
        chains: &Evaluator,
    ) -> Result<Proof, SignatureError> {
        verify_text_signature(
            &self.to_string(),
            self.address,
            self.chain_id,
            signature,
            chains,
        )
        .await
    }
}

/// How the message's address proved the signature its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The signature recovers to the address (EIP-191).
    Eoa,
    /// The contract at the address accepted the signature (EIP-1271).
    Erc1271,
}

/// Why a signature was not accepted, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not hex: {0}")]
    NotHex(String),
    /// Definitive: not the address's key, and not accepted by a contract
    /// wallet there.
    #[error("the signature is not {address}'s: {}", describe_refusal(.recovered, *.contract))]
    Invalid {
        address: Address,
        /// Who did sign, when the signature is a well-formed 65-byte one.
        recovered: Option<Address>,
        contract: ContractSignature,
    },
    /// Not a verdict: whether the contract wallet accepts it is unknown.
    #[error("chain id {chain_id} has no configured chain with that chain_id, so the contract wallet {address} cannot be asked")]
    ChainNotConfigured { chain_id: u64, address: Address },
    /// Not a verdict: the chain could not be asked.
    #[error("could not ask the contract wallet {address}: {source}")]
    Unknown {
        address: Address,
        #[source]
        source: ChainError,
    },
}

impl SignatureError {
    /// Whether the signature was found invalid, as opposed to not checked:
    /// only then is the member's proof wrong rather than our chain access.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            SignatureError::NotHex(_) | SignatureError::Invalid { .. }
        )
    }
}

fn describe_refusal(recovered: &Option<Address>, contract: ContractSignature) -> String {
    let key = match recovered {
        Some(signer) => format!("it was made by {signer}"),
        None => "it is not a 65-byte signature of the message".to_string(),
    };
    let contract = match contract {
        ContractSignature::NoContract => "there is no contract wallet at the address",
        ContractSignature::Rejected => "the contract wallet at the address rejected it",
        // `Invalid` never carries it; the arm only keeps the match total.
        ContractSignature::Valid => "the contract wallet accepted it",
    };
    format!("{key}, and {contract}")
}

/// Who signed `message` with a 65-byte `r ‖ s ‖ v` signature (v as 0/1 or
/// 27/28), if it is one.
pub(crate) fn recover_personal_sign(message: &str, signature: &[u8]) -> Option<Address> {
    let v = *signature.get(64)?;
    if !matches!(v, 0 | 1 | 27 | 28) {
        // EIP-155 v values belong to transactions, not personal_sign.
        return None;
    }
    let signature = Signature::from_raw(signature).ok()?;
    signature.recover_address_from_msg(message).ok()
}

/// Checks `signature` over the exact `message` text was made by `address`.
///
/// EOA recovery comes first: it needs no network, so a member with an
/// ordinary wallet can link while every RPC provider is down, and it is
/// definitive, since nobody holds a key for a contract's address. Only when
/// recovery does not yield `address` is the contract at `address` asked
/// (EIP-1271), on the chain configured with the message's chain id: the
/// EIP requires contract wallets to be resolved on that chain, and a chain
/// configured with its `chain_id` checks every RPC answer comes from it.
/// There is no separate `eth_getCode`: a call to an address without code
/// returns no data, which [`ContractSignature::NoContract`] reports.
pub async fn verify_text_signature(
    message: &str,
    address: Address,
    chain_id: u64,
    signature: &[u8],
    chains: &Evaluator,
) -> Result<Proof, SignatureError> {
    let recovered = recover_personal_sign(message, signature);
    if recovered == Some(address) {
        return Ok(Proof::Eoa);
    }
    let chain = chains
        .chain_with_id(chain_id)
        .ok_or(SignatureError::ChainNotConfigured { chain_id, address })?;
    let answer = chains
        .is_valid_signature(chain, address, eip191_hash_message(message), signature)
        .await
        .map_err(|source| SignatureError::Unknown { address, source })?;
    match answer {
        ContractSignature::Valid => Ok(Proof::Erc1271),
        contract => Err(SignatureError::Invalid {
            address,
            recovered,
            contract,
        }),
    }
}

/// A message whose fields and signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub message: SiweMessage,
    pub proof: Proof,
}

/// Why a proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a Sign-In with Ethereum message: {0}")]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Verifies a signed Sign-In with Ethereum message: parses `text`, checks
/// its fields against `expected`, then checks `signature_hex` (what
/// `personal_sign` returns, with or without `0x`) over `text`.
///
/// Fields come before the signature so a stale or foreign message costs no
/// RPC call.
pub async fn verify(
    text: &str,
    signature_hex: &str,
    expected: &Expected<'_>,
    chains: &Evaluator,
) -> Result<Verified, VerifyError> {
    let message = SiweMessage::parse(text)?;
    message.expect(expected)?;
    let signature: Bytes = signature_hex
        .trim()
        .parse()
        .map_err(|e| SignatureError::NotHex(format!("{e}")))?;
    let proof =
        verify_text_signature(text, message.address, message.chain_id, &signature, chains).await?;
    Ok(Verified { message, proof })
}
