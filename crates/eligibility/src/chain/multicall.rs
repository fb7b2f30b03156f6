//! Packing many contract calls into Multicall3 `aggregate3` calls.
//!
//! With `allowFailure` set on every inner call, one member's reverting read
//! cannot fail the reads of the other members packed alongside it.

use alloy_primitives::{Address, Bytes};
use alloy_sol_types::SolCall;

use super::abi::{aggregate3Call, Call3, CallResult, PlannedCall};

/// Encodes one `aggregate3` over `calls`.
pub fn encode(calls: &[PlannedCall]) -> Bytes {
    aggregate3Call {
        calls: calls
            .iter()
            .map(|c| Call3 {
                target: c.to,
                allowFailure: true,
                callData: c.data.clone(),
            })
            .collect(),
    }
    .abi_encode()
    .into()
}

/// Splits an `aggregate3` result back into one result per inner call.
///
/// When the outer call itself did not return (reverted, node error, bad
/// data), every inner call gets that same failure.
pub fn decode(outer: &CallResult, inner_count: usize, multicall: Address) -> Vec<CallResult> {
    let data = match outer {
        CallResult::Returned(data) => data,
        CallResult::Reverted => {
            return vec![
                CallResult::Failed(format!("multicall at {multicall} reverted"));
                inner_count
            ]
        }
        CallResult::Failed(e) => return vec![CallResult::Failed(e.clone()); inner_count],
    };
    match aggregate3Call::abi_decode_returns(data) {
        Ok(results) if results.len() == inner_count => results
            .into_iter()
            .map(|r| match (r.success, r.returnData.is_empty()) {
                (true, _) => CallResult::Returned(r.returnData),
                // A revert with a reason (`Error(string)`, a custom error) is
                // the contract itself answering: for `ownerOf` that is how
                // ERC-721 says "no such token".
                (false, false) => CallResult::Reverted,
                // `success = false` with no data is also what an inner call
                // that ran out of the batch's gas, or hit an invalid opcode,
                // looks like. Nothing was answered, so it must stay an error
                // (Unknown), never "no owner".
                (false, true) => CallResult::Failed(
                    "inner call failed without revert data (out of gas or a bare revert)"
                        .to_string(),
                ),
            })
            .collect(),
        Ok(results) => vec![
            CallResult::Failed(format!(
                "multicall returned {} results for {inner_count} calls",
                results.len()
            ));
            inner_count
        ],
        Err(e) => {
            let detail = if data.is_empty() {
                format!("no contract at multicall address {multicall}")
            } else {
                format!("undecodable multicall result: {e}")
            };
            vec![CallResult::Failed(detail); inner_count]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::abi::{plan_calls, Read, Result3};
    use alloy_primitives::{address, U256};

    const MC: Address = address!("cA11bde05977b3631167028862bE2a173976CA11");

    #[test]
    fn round_trip_keeps_order_and_failures() {
        let reads: Vec<Read> = (0..4u8)
            .map(|i| Read::BalanceOf {
                contract: Address::repeat_byte(1),
                holder: Address::repeat_byte(10 + i),
            })
            .collect();
        let calls = plan_calls(&reads);
        let encoded = encode(&calls);
        let decoded = aggregate3Call::abi_decode(&encoded).expect("decodes");
        assert_eq!(decoded.calls.len(), 4);
        assert!(decoded.calls.iter().all(|c| c.allowFailure));

        let reply = aggregate3Call::abi_encode_returns(&vec![
            Result3 {
                success: true,
                returnData: U256::from(9).to_be_bytes_vec().into(),
            },
            Result3 {
                success: false,
                returnData: Bytes::from_static(&[0x08, 0xc3, 0x79, 0xa0]),
            },
            Result3 {
                success: true,
                returnData: U256::from(1).to_be_bytes_vec().into(),
            },
            Result3 {
                success: false,
                returnData: Bytes::new(),
            },
        ]);
        let results = decode(&CallResult::Returned(reply.into()), 4, MC);
        assert!(matches!(&results[0], CallResult::Returned(d) if d.len() == 32 && d[31] == 9));
        assert!(matches!(results[1], CallResult::Reverted));
        assert!(matches!(&results[2], CallResult::Returned(d) if d[31] == 1));
        assert!(
            matches!(&results[3], CallResult::Failed(e) if e.contains("without revert data")),
            "{:?}",
            results[3]
        );
    }

    #[test]
    fn empty_reply_means_no_multicall_contract() {
        let results = decode(&CallResult::Returned(Bytes::new()), 2, MC);
        assert_eq!(results.len(), 2);
        assert!(
            matches!(&results[0], CallResult::Failed(e) if e.contains("no contract at multicall"))
        );
    }
}
