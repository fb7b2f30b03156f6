//! Sign-In with Ethereum proofs checked against the fake chain: EOAs by
//! recovery alone, contract wallets by EIP-1271 over real JSON-RPC, and an
//! unreachable chain as "unknown", never "valid".

use alloy_primitives::{eip191_hash_message, hex};
use chrono::{DateTime, Utc};
use eligibility::fake_chain::{FakeContract, Fault};
use eligibility::siwe::{
    verify, ContractSignature, Expected, Mismatch, Proof, SignatureError, UriMatch, VerifyError,
    DEFAULT_CLOCK_SKEW,
};
use eligibility::{ChainError, SiweMessage, Timestamp};
use k256::ecdsa::SigningKey;

use super::*;

/// The fake chain's default chain id.
const CHAIN_ID: u64 = 31337;
const NONCE: &str = "k7Qz9wPa3";
const PAGE: &str = "https://gatehouse.example/link";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid secp256k1 scalar")
}

fn address_of(key: &SigningKey) -> Address {
    Address::from_public_key(key.verifying_key())
}

/// What a wallet's `personal_sign` returns: r ‖ s ‖ v, v = 27 or 28.
fn personal_sign(key: &SigningKey, message: &str) -> Vec<u8> {
    let (signature, recovery) = key
        .sign_prehash_recoverable(eip191_hash_message(message).as_slice())
        .expect("signing works");
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + recovery.to_byte());
    bytes
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_714_564_800, 0).expect("a valid instant")
}

/// The message Gatehouse's link page would ask `address` to sign.
fn link_message(address: Address, chain_id: u64) -> SiweMessage {
    let message = SiweMessage {
        scheme: None,
        domain: "gatehouse.example".into(),
        address,
        statement: Some("Link this wallet to your Discord account.".into()),
        uri: PAGE.into(),
        chain_id,
        nonce: NONCE.into(),
        issued_at: Timestamp::from(now()),
        expiration_time: Some(Timestamp::from(now() + chrono::TimeDelta::minutes(10))),
        not_before: None,
        request_id: None,
        resources: vec![],
    };
    message.validate().expect("a valid message");
    message
}

fn expected() -> Expected<'static> {
    Expected {
        scheme: "https",
        domain: "gatehouse.example",
        uri: UriMatch::Exact(PAGE),
        nonce: NONCE,
        chain_id: Some(CHAIN_ID),
        now: now(),
        clock_skew: DEFAULT_CLOCK_SKEW,
    }
}

/// An evaluator for `chain` that knows its chain id, as contract wallets
/// need.
fn evaluator_for(chain: &FakeChain) -> Evaluator {
    let id = chain.chain_id();
    evaluator(vec![chain.url()], |c| c.chain_id = Some(id))
}

#[tokio::test]
async fn an_eoa_signature_verifies_without_asking_the_chain() {
    let chain = chain().await;
    let evaluator = evaluator_for(&chain);
    let alice = key(1);
    let text = link_message(address_of(&alice), CHAIN_ID).to_string();
    let signature = format!("0x{}", hex::encode(personal_sign(&alice, &text)));

    let verified = verify(&text, &signature, &expected(), &evaluator)
        .await
        .expect("alice's own signature");
    assert_eq!(verified.proof, Proof::Eoa);
    assert_eq!(verified.message.address, address_of(&alice));
    assert_eq!(chain.requests(), 0, "recovery needs no RPC");

    // Because of that, an outage does not stop ordinary wallets linking.
    chain.set_fault(Fault::Unavailable);
    let again = verify(&text, &signature, &expected(), &evaluator).await;
    assert_eq!(again.map(|v| v.proof), Ok(Proof::Eoa));
}

#[tokio::test]
async fn a_tampered_message_or_another_key_is_invalid() {
    let chain = chain().await;
    let evaluator = evaluator_for(&chain);
    let alice = key(1);
    let message = link_message(address_of(&alice), CHAIN_ID);
    let text = message.to_string();

    let tampered = text.replace("Link this wallet", "Link this purse");
    let signature = personal_sign(&alice, &text);
    let err = verify_text(&tampered, &signature, &evaluator)
        .await
        .expect_err("signature over other text");
    assert!(
        matches!(
            &err,
            VerifyError::Signature(SignatureError::Invalid {
                contract: ContractSignature::NoContract,
                recovered: Some(r),
                ..
            }) if *r != address_of(&alice)
        ),
        "{err}"
    );

    let mallory = key(2);
    let forged = personal_sign(&mallory, &text);
    let err = message
        .verify_signature(&forged, &evaluator)
        .await
        .expect_err("mallory's signature");
    assert_eq!(
        err,
        SignatureError::Invalid {
            address: address_of(&alice),
            recovered: Some(address_of(&mallory)),
            contract: ContractSignature::NoContract,
        }
    );
    assert!(err.is_invalid());
    assert!(err.to_string().contains("no contract wallet"), "{err}");
    // Each failed recovery asked the chain once whether a wallet contract
    // lives at the address.
    assert_eq!(chain.eth_calls(), 2);
}

async fn verify_text(
    text: &str,
    signature: &[u8],
    evaluator: &Evaluator,
) -> Result<Proof, VerifyError> {
    verify(text, &hex::encode(signature), &expected(), evaluator)
        .await
        .map(|v| v.proof)
}

#[tokio::test]
async fn a_contract_wallet_is_verified_through_eip_1271() {
    let chain = chain().await;
    let evaluator = evaluator_for(&chain);
    let owner = key(3);
    let wallet = contract(0x42);
    chain.deploy(
        wallet,
        FakeContract::Erc1271 {
            owner: address_of(&owner),
        },
    );
    let message = link_message(wallet, CHAIN_ID);
    let text = message.to_string();

    let signature = personal_sign(&owner, &text);
    assert_eq!(
        verify_text(&text, &signature, &evaluator).await,
        Ok(Proof::Erc1271)
    );
    assert_eq!(chain.eth_calls(), 1);

    let stranger = personal_sign(&key(4), &text);
    assert_eq!(
        message.verify_signature(&stranger, &evaluator).await,
        Err(SignatureError::Invalid {
            address: wallet,
            recovered: Some(address_of(&key(4))),
            contract: ContractSignature::Rejected,
        })
    );

    // The wallet reverts on a signature it cannot parse; per EIP-1271 that
    // is a refusal, not a failure to ask.
    let truncated = &signature[..40];
    assert_eq!(
        message.verify_signature(truncated, &evaluator).await,
        Err(SignatureError::Invalid {
            address: wallet,
            recovered: None,
            contract: ContractSignature::Rejected,
        })
    );
}

#[tokio::test]
async fn an_unreachable_chain_leaves_a_contract_wallet_unverified_not_valid() {
    let chain = chain().await;
    let evaluator = evaluator_for(&chain);
    let owner = key(3);
    let wallet = contract(0x42);
    chain.deploy(
        wallet,
        FakeContract::Erc1271 {
            owner: address_of(&owner),
        },
    );
    let message = link_message(wallet, CHAIN_ID);
    let signature = personal_sign(&owner, &message.to_string());

    for fault in [Fault::Unavailable, Fault::Malformed] {
        chain.set_fault(fault);
        let err = message
            .verify_signature(&signature, &evaluator)
            .await
            .expect_err("no answer is no proof");
        assert!(
            matches!(
                &err,
                SignatureError::Unknown {
                    address,
                    source: ChainError::AllFailed { .. } | ChainError::CircuitOpen { .. },
                } if *address == wallet
            ),
            "{fault:?}: {err}"
        );
        assert!(!err.is_invalid(), "{fault:?}: not the member's fault");
    }
}

#[tokio::test]
async fn a_contract_wallet_needs_a_chain_configured_with_the_messages_chain_id() {
    let chain = chain().await;
    let wallet = contract(0x42);
    let owner = key(3);
    chain.deploy(
        wallet,
        FakeContract::Erc1271 {
            owner: address_of(&owner),
        },
    );

    // Configured without chain_id: its RPC URLs are not known to serve
    // chain 31337, so they are not asked on its behalf.
    let unchecked = evaluator(vec![chain.url()], |_| {});
    let message = link_message(wallet, CHAIN_ID);
    let signature = personal_sign(&owner, &message.to_string());
    assert_eq!(
        message.verify_signature(&signature, &unchecked).await,
        Err(SignatureError::ChainNotConfigured {
            chain_id: CHAIN_ID,
            address: wallet,
        })
    );

    // A message for another chain is resolved there, not on the chain at
    // hand.
    let evaluator = evaluator_for(&chain);
    let on_mainnet = link_message(wallet, 1);
    let signature = personal_sign(&owner, &on_mainnet.to_string());
    let err = on_mainnet
        .verify_signature(&signature, &evaluator)
        .await
        .expect_err("chain 1 is not configured");
    assert!(!err.is_invalid(), "{err}");
    assert_eq!(chain.requests(), 0);
}

#[tokio::test]
async fn field_checks_run_before_any_rpc() {
    let chain = chain().await;
    let evaluator = evaluator_for(&chain);
    let wallet = contract(0x42);
    let text = link_message(wallet, CHAIN_ID).to_string();
    let signature = personal_sign(&key(3), &text);

    let later = Expected {
        now: now() + chrono::TimeDelta::minutes(11),
        ..expected()
    };
    let err = verify(&text, &hex::encode(&signature), &later, &evaluator)
        .await
        .expect_err("expired");
    assert!(
        matches!(err, VerifyError::Mismatch(Mismatch::Expired { .. })),
        "{err}"
    );
    let elsewhere = Expected {
        domain: "gatehouse.example.evil",
        ..expected()
    };
    let err = verify(&text, &hex::encode(&signature), &elsewhere, &evaluator)
        .await
        .expect_err("phishing");
    assert!(err.to_string().contains("phishing"), "{err}");
    assert_eq!(chain.requests(), 0);

    let err = verify(&text, "0xnot-hex", &expected(), &evaluator)
        .await
        .expect_err("not hex");
    assert!(
        matches!(err, VerifyError::Signature(SignatureError::NotHex(_))),
        "{err}"
    );
    let err = verify("hello", "0x", &expected(), &evaluator)
        .await
        .expect_err("not a message");
    assert!(matches!(err, VerifyError::Parse(_)), "{err}");
}
