//! The contract calls eligibility makes, and their ABI encoding.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{sol, SolCall};

use crate::delegation::{Delegation, DelegationKind};

sol! {
    /// ERC-20 and ERC-721 share this signature (and selector).
    function balanceOf(address owner) external view returns (uint256);
    /// ERC-721; reverts for a token that does not exist.
    function ownerOf(uint256 tokenId) external view returns (address);
    /// ERC-1155's per-id balance.
    function balanceOf(address account, uint256 id) external view returns (uint256);
    /// ERC-1155's batched balance: one call for many (account, id) pairs.
    function balanceOfBatch(address[] accounts, uint256[] ids) external view returns (uint256[]);

    /// Multicall3 (https://github.com/mds1/multicall).
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }
    struct Result3 {
        bool success;
        bytes returnData;
    }
    function aggregate3(Call3[] calls) external payable returns (Result3[] returnData);

    /// EIP-1271: whether `signature` is valid for `hash` on behalf of the
    /// contract (a smart-contract wallet).
    function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);

    /// delegate.xyz v2's `IDelegateRegistry.Delegation` (renamed here so it
    /// does not clash with [`Delegation`]; names do not enter the ABI).
    /// `type_` is the `DelegationType` enum, which the ABI encodes as uint8.
    struct RegistryDelegation {
        uint8 type_;
        address to;
        address from;
        bytes32 rights;
        address contract_;
        uint256 tokenId;
        uint256 amount;
    }
    /// delegate.xyz v2: every live delegation whose delegate is `to`.
    function getIncomingDelegations(address to) external view returns (RegistryDelegation[] delegations);
}

/// What `isValidSignature` returns for a valid signature (EIP-1271); any
/// other answer, or a revert, means invalid.
pub const ERC1271_MAGIC_VALUE: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

// Overloaded functions get numbered type names from `sol!`; give them names
// that say which standard they belong to.
pub use balanceOfBatchCall as BalanceOfBatchCall;
pub use balanceOf_0Call as BalanceOfCall;
pub use balanceOf_1Call as Erc1155BalanceOfCall;
pub use getIncomingDelegationsCall as GetIncomingDelegationsCall;
pub use isValidSignatureCall as IsValidSignatureCall;
pub use ownerOfCall as OwnerOfCall;

/// One value read from a chain. Also the cache key: identical reads from
/// different rules or communities share one call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Read {
    /// ERC-20 or ERC-721 `balanceOf(holder)`.
    BalanceOf { contract: Address, holder: Address },
    /// ERC-721 `ownerOf(token_id)`.
    OwnerOf { contract: Address, token_id: U256 },
    /// ERC-1155 `balanceOf(holder, token_id)`.
    Erc1155Balance {
        contract: Address,
        holder: Address,
        token_id: U256,
    },
    /// delegate.xyz v2 `getIncomingDelegations(to)` on the registry at
    /// `registry`.
    IncomingDelegations { registry: Address, to: Address },
}

impl Read {
    pub fn contract(&self) -> Address {
        match self {
            Read::BalanceOf { contract, .. }
            | Read::OwnerOf { contract, .. }
            | Read::Erc1155Balance { contract, .. } => *contract,
            Read::IncomingDelegations { registry, .. } => *registry,
        }
    }
}

/// A successful read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadValue {
    Amount(U256),
    /// `None` when `ownerOf` reverted: per ERC-721 the token does not exist,
    /// which for eligibility means "not owned by this member".
    Owner(Option<Address>),
    /// The delegations a registry holds for one delegate, without those of a
    /// kind this version does not know.
    Delegations(Vec<Delegation>),
}

/// One `eth_call`: the contract, its calldata, and which reads its result
/// answers.
#[derive(Debug, Clone)]
pub struct PlannedCall {
    pub to: Address,
    pub data: Bytes,
    pub answers: Answers,
}

#[derive(Debug, Clone)]
pub enum Answers {
    One(Read),
    /// ERC-1155 reads of one contract folded into `balanceOfBatch`, in the
    /// order of the call's arrays.
    Batch1155(Vec<Read>),
}

/// The most (holder, id) pairs folded into one `balanceOfBatch`; keeps a
/// single call's gas well under node limits.
const MAX_1155_BATCH: usize = 200;

/// Turns reads into calls: ERC-1155 reads on one contract share a
/// `balanceOfBatch`; everything else is one call per read.
pub fn plan_calls(reads: &[Read]) -> Vec<PlannedCall> {
    let mut calls = Vec::new();
    let mut by_contract: std::collections::BTreeMap<Address, Vec<Read>> = Default::default();
    for read in reads {
        match read {
            Read::BalanceOf { contract, holder } => calls.push(PlannedCall {
                to: *contract,
                data: BalanceOfCall { owner: *holder }.abi_encode().into(),
                answers: Answers::One(read.clone()),
            }),
            Read::OwnerOf { contract, token_id } => calls.push(PlannedCall {
                to: *contract,
                data: OwnerOfCall { tokenId: *token_id }.abi_encode().into(),
                answers: Answers::One(read.clone()),
            }),
            Read::Erc1155Balance { contract, .. } => {
                by_contract.entry(*contract).or_default().push(read.clone());
            }
            Read::IncomingDelegations { registry, to } => calls.push(PlannedCall {
                to: *registry,
                data: GetIncomingDelegationsCall { to: *to }.abi_encode().into(),
                answers: Answers::One(read.clone()),
            }),
        }
    }
    for (contract, reads) in by_contract {
        for chunk in reads.chunks(MAX_1155_BATCH) {
            let (accounts, ids) = chunk
                .iter()
                .filter_map(|r| match r {
                    Read::Erc1155Balance {
                        holder, token_id, ..
                    } => Some((*holder, *token_id)),
                    _ => None,
                })
                .unzip();
            calls.push(PlannedCall {
                to: contract,
                data: BalanceOfBatchCall { accounts, ids }.abi_encode().into(),
                answers: Answers::Batch1155(chunk.to_vec()),
            });
        }
    }
    calls
}

/// How one call ended, before decoding.
#[derive(Debug, Clone)]
pub enum CallResult {
    Returned(Bytes),
    /// The contract reverted: the node said so for a plain call, or
    /// Multicall3 reported the inner call failed with revert data.
    Reverted,
    /// The node answered this call with an error other than a revert.
    Failed(String),
}

/// Decodes a call's result into values for the reads it answers.
pub fn decode_answers(
    answers: &Answers,
    result: &CallResult,
) -> Vec<(Read, Result<ReadValue, String>)> {
    match answers {
        Answers::One(read) => vec![(read.clone(), decode_one(read, result))],
        Answers::Batch1155(reads) => {
            let decoded = match result {
                CallResult::Returned(data) => BalanceOfBatchCall::abi_decode_returns(data)
                    .map_err(|e| undecodable(data, &e.to_string()))
                    .and_then(|v| {
                        if v.len() == reads.len() {
                            Ok(v)
                        } else {
                            Err(format!(
                                "balanceOfBatch returned {} balances for {} ids",
                                v.len(),
                                reads.len()
                            ))
                        }
                    }),
                CallResult::Reverted => Err("balanceOfBatch reverted".to_string()),
                CallResult::Failed(e) => Err(e.clone()),
            };
            match decoded {
                Ok(values) => reads
                    .iter()
                    .cloned()
                    .zip(values.into_iter().map(|v| Ok(ReadValue::Amount(v))))
                    .collect(),
                Err(e) => reads.iter().map(|r| (r.clone(), Err(e.clone()))).collect(),
            }
        }
    }
}

fn decode_one(read: &Read, result: &CallResult) -> Result<ReadValue, String> {
    match (read, result) {
        // ERC-721 requires ownerOf to revert for a token that does not exist
        // (never minted, or burned), so a revert is the contract's answer
        // "no owner". `Reverted` only ever means the contract reverted: a
        // node error, or a multicall inner call that failed without revert
        // data (out of gas), is `Failed` and stays an error.
        (Read::OwnerOf { .. }, CallResult::Reverted) => Ok(ReadValue::Owner(None)),
        // Any other read has a value for every input; its revert answers
        // nothing.
        (_, CallResult::Reverted) => Err("the call reverted".to_string()),
        (_, CallResult::Failed(e)) => Err(e.clone()),
        (Read::BalanceOf { .. }, CallResult::Returned(data)) => {
            BalanceOfCall::abi_decode_returns(data)
                .map(ReadValue::Amount)
                .map_err(|e| undecodable(data, &e.to_string()))
        }
        (Read::OwnerOf { .. }, CallResult::Returned(data)) => OwnerOfCall::abi_decode_returns(data)
            .map(|a| ReadValue::Owner(Some(a)))
            .map_err(|e| undecodable(data, &e.to_string())),
        (Read::Erc1155Balance { .. }, CallResult::Returned(data)) => {
            Erc1155BalanceOfCall::abi_decode_returns(data)
                .map(ReadValue::Amount)
                .map_err(|e| undecodable(data, &e.to_string()))
        }
        (Read::IncomingDelegations { .. }, CallResult::Returned(data)) => {
            GetIncomingDelegationsCall::abi_decode_returns(data)
                .map(|entries| {
                    ReadValue::Delegations(entries.iter().filter_map(delegation).collect())
                })
                .map_err(|e| undecodable(data, &e.to_string()))
        }
    }
}

fn delegation(entry: &RegistryDelegation) -> Option<Delegation> {
    Some(Delegation {
        kind: DelegationKind::from_registry(entry.type_)?,
        to: entry.to,
        from: entry.from,
        rights: entry.rights,
        contract: entry.contract_,
        token_id: entry.tokenId,
        amount: entry.amount,
    })
}

/// The registry's encoding of a delegation (for the fake chain).
pub fn registry_delegation(d: &Delegation) -> RegistryDelegation {
    RegistryDelegation {
        type_: d.kind.to_registry(),
        to: d.to,
        from: d.from,
        rights: d.rights,
        contract_: d.contract,
        tokenId: d.token_id,
        amount: d.amount,
    }
}

fn undecodable(data: &[u8], err: &str) -> String {
    if data.is_empty() {
        // What a call to an address without code returns.
        "the contract returned no data (is there a contract at this address on this chain?)"
            .to_string()
    } else {
        format!("undecodable return data ({} bytes): {err}", data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    const TOKEN: Address = address!("1111111111111111111111111111111111111111");
    const HOLDER: Address = address!("2222222222222222222222222222222222222222");

    #[test]
    fn selectors_match_the_standards() {
        assert_eq!(BalanceOfCall::SELECTOR, [0x70, 0xa0, 0x82, 0x31]);
        assert_eq!(OwnerOfCall::SELECTOR, [0x63, 0x52, 0x21, 0x1e]);
        assert_eq!(Erc1155BalanceOfCall::SELECTOR, [0x00, 0xfd, 0xd5, 0x8e]);
        assert_eq!(BalanceOfBatchCall::SELECTOR, [0x4e, 0x12, 0x73, 0xf4]);
        assert_eq!(aggregate3Call::SELECTOR, [0x82, 0xad, 0x56, 0xcb]);
        // EIP-1271 chose the function's own selector as the magic value.
        assert_eq!(IsValidSignatureCall::SELECTOR, ERC1271_MAGIC_VALUE);
    }

    #[test]
    fn erc1155_reads_fold_into_one_batch_call_per_contract() {
        let reads: Vec<Read> = (0..3u64)
            .map(|i| Read::Erc1155Balance {
                contract: TOKEN,
                holder: HOLDER,
                token_id: U256::from(i),
            })
            .chain([Read::BalanceOf {
                contract: TOKEN,
                holder: HOLDER,
            }])
            .collect();
        let calls = plan_calls(&reads);
        assert_eq!(calls.len(), 2);
        let batch = calls
            .iter()
            .find(|c| matches!(c.answers, Answers::Batch1155(_)))
            .expect("a batch call");
        let returned =
            BalanceOfBatchCall::abi_encode_returns(&vec![U256::from(5), U256::ZERO, U256::from(7)]);
        let values = decode_answers(&batch.answers, &CallResult::Returned(returned.into()));
        let amounts: Vec<_> = values.into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            amounts,
            vec![
                Ok(ReadValue::Amount(U256::from(5))),
                Ok(ReadValue::Amount(U256::ZERO)),
                Ok(ReadValue::Amount(U256::from(7)))
            ]
        );
    }

    #[test]
    fn owner_of_revert_means_not_owned_but_balance_revert_is_an_error() {
        let owner = Read::OwnerOf {
            contract: TOKEN,
            token_id: U256::from(1),
        };
        let balance = Read::BalanceOf {
            contract: TOKEN,
            holder: HOLDER,
        };
        assert_eq!(
            decode_one(&owner, &CallResult::Reverted),
            Ok(ReadValue::Owner(None))
        );
        assert!(decode_one(&balance, &CallResult::Reverted).is_err());
    }

    #[test]
    fn incoming_delegations_decode_from_the_registry_layout() {
        // Laid out by hand as the registry returns it: offset of the array,
        // its length, then each struct's seven words inline (it is static).
        let word = |v: U256| v.to_be_bytes::<32>().to_vec();
        let addr = |a: Address| word(U256::from_be_slice(a.as_slice()));
        let cold = Address::repeat_byte(0xc0);
        let mut data = Vec::new();
        data.extend(word(U256::from(0x20)));
        data.extend(word(U256::from(2)));
        for (kind, amount) in [(4u8, 7u64), (0, 0)] {
            data.extend(word(U256::from(kind)));
            data.extend(addr(HOLDER));
            data.extend(addr(cold));
            data.extend(word(U256::ZERO));
            data.extend(addr(TOKEN));
            data.extend(word(U256::ZERO));
            data.extend(word(U256::from(amount)));
        }
        let read = Read::IncomingDelegations {
            registry: crate::delegation::DELEGATE_REGISTRY_V2,
            to: HOLDER,
        };
        let value = decode_one(&read, &CallResult::Returned(data.into()));
        assert_eq!(
            value,
            Ok(ReadValue::Delegations(vec![Delegation::erc20(
                cold,
                HOLDER,
                TOKEN,
                U256::from(7)
            )])),
            "the NONE entry is dropped"
        );
        // The selector of getIncomingDelegations(address).
        assert_eq!(
            GetIncomingDelegationsCall::SELECTOR,
            alloy_primitives::keccak256("getIncomingDelegations(address)")[..4]
        );
    }

    #[test]
    fn empty_return_data_explains_missing_contract() {
        let balance = Read::BalanceOf {
            contract: TOKEN,
            holder: HOLDER,
        };
        let err = decode_one(&balance, &CallResult::Returned(Bytes::new())).expect_err("empty");
        assert!(err.contains("no data"), "{err}");
    }
}
