//! The fake chain's JSON-RPC surface, spoken to directly.

use serde_json::{json, Value};

use super::*;

async fn post(chain: &FakeChain, body: Value) -> Value {
    reqwest::Client::new()
        .post(chain.url())
        .json(&body)
        .send()
        .await
        .expect("fake chain answers")
        .json()
        .await
        .expect("JSON reply")
}

#[tokio::test]
async fn answers_single_requests_and_batches() {
    let chain = chain().await;
    chain.set_block_number(0x1234);
    let single = post(
        &chain,
        json!({"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []}),
    )
    .await;
    assert_eq!(
        single,
        json!({"jsonrpc": "2.0", "id": 7, "result": "0x7a69"})
    );

    let batch = post(
        &chain,
        json!([
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_sendTransaction", "params": []},
        ]),
    )
    .await;
    assert_eq!(batch[0]["result"], "0x1234");
    assert_eq!(batch[1]["error"]["code"], -32601);
    assert_eq!(chain.requests(), 2);
}

#[tokio::test]
async fn erc20_balance_of_by_hand() {
    let chain = chain().await;
    let token = contract(1);
    let holder = wallet(1);
    chain.set_erc20_balance(token, holder, units(0x2a));
    // balanceOf(address) selector, then the holder left-padded to 32 bytes.
    let data = format!("0x70a08231{:0>64}", format!("{holder:x}"));
    let reply = post(
        &chain,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
               "params": [{"to": format!("{token:#x}"), "data": data}, "latest"]}),
    )
    .await;
    let result = reply["result"].as_str().expect("a result");
    assert_eq!(result.len(), 2 + 64);
    assert!(result.ends_with("2a"), "{result}");
    assert_eq!(chain.eth_calls(), 1);
}

#[tokio::test]
async fn owner_of_a_missing_token_reverts() {
    let chain = chain().await;
    let nft = contract(2);
    chain.set_erc721_owner(nft, units(1), Some(wallet(1)));
    chain.set_erc721_owner(nft, units(1), None);
    let data = format!("0x6352211e{:0>64}", "1");
    let reply = post(
        &chain,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
               "params": [{"to": format!("{nft:#x}"), "data": data}, "latest"]}),
    )
    .await;
    assert_eq!(reply["error"]["code"], 3, "{reply}");
}

#[tokio::test]
async fn faults_are_injected_and_cleared() {
    let chain = chain().await;
    let ask = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    let client = reqwest::Client::new();

    chain.set_fault(eligibility::fake_chain::Fault::Unavailable);
    let status = client
        .post(chain.url())
        .json(&ask)
        .send()
        .await
        .expect("answers")
        .status();
    assert_eq!(status.as_u16(), 503);

    chain.set_fault(eligibility::fake_chain::Fault::RefuseConnections);
    assert!(client.post(chain.url()).json(&ask).send().await.is_err());
    assert_eq!(chain.refused(), 1);

    chain.set_fault(eligibility::fake_chain::Fault::None);
    assert_eq!(post(&chain, ask).await["result"], "0x7a69");
}
