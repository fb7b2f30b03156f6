//! The wallet-link page over HTTP: a member proves wallets with Sign-In
//! with Ethereum (EOA and EIP-1271 contract wallets), several per member, a
//! fresh proof reclaims a wallet from another member, and every refusal
//! (expired, used or unknown link, a message for another site or nonce, a
//! wrong signer, someone not in the server) stores nothing.

mod common;

use alloy_primitives::{eip191_hash_message, Address};
use chrono::Utc;
use common::{json, Api};
use domain::wallets::{self, Site};
use domain::CommunityRef;
use eligibility::fake_chain::{FakeChain, FakeContract};
use k256::ecdsa::SigningKey;
use serde_json::json;
use wire::UserId;

const PUBLIC: &str = "https://gatehouse.example";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid secp256k1 scalar")
}

fn address_of(key: &SigningKey) -> Address {
    Address::from_public_key(key.verifying_key())
}

/// What a wallet's `personal_sign` returns, as hex.
fn personal_sign(key: &SigningKey, message: &str) -> String {
    let (signature, recovery) = key
        .sign_prehash_recoverable(eip191_hash_message(message).as_slice())
        .expect("signing works");
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + recovery.to_byte());
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

struct World {
    api: Api,
    chain: FakeChain,
    community: CommunityRef,
}

async fn world(label: &str) -> World {
    let chain = FakeChain::start().await.expect("a fake chain");
    let mut config = eligibility::ChainConfig::new(vec![chain.url()]);
    config.timeout_ms = 1000;
    config.chain_id = Some(chain.chain_id());
    let chains = eligibility::EligibilityConfig {
        chains: [("testchain".to_owned(), config)].into_iter().collect(),
    };
    let settings = api::ApiSettings {
        public_site: Some(Site::parse(PUBLIC).expect("a public address")),
        ..api::ApiSettings::default()
    };
    let api = Api::start_with(label, settings, chains).await;
    let community = api.community(7001).await;
    World {
        api,
        chain,
        community,
    }
}

impl World {
    /// A one-time link for `user`, as `/link-wallet` makes it; returns the
    /// token.
    async fn link_for(&self, user: UserId) -> String {
        let tx = self
            .api
            .store
            .begin(self.community.tenant)
            .await
            .expect("tx");
        let site = Site::parse(PUBLIC).expect("a public address");
        let page = wallets::issue_link_page(&tx, &site, user, Utc::now())
            .await
            .expect("a link page");
        tx.commit().await.expect("commit");
        let token = page
            .url
            .strip_prefix(&format!("{PUBLIC}/link/"))
            .expect("a link under the public address");
        token.to_owned()
    }

    async fn message(&self, token: &str, address: Address) -> (u16, serde_json::Value) {
        json(
            self.api
                .http
                .post(format!("{}/link/{token}/message", self.api.url))
                .json(&json!({ "address": address.to_string(), "chain_id": self.chain.chain_id() }))
                .send()
                .await
                .expect("a response"),
        )
        .await
    }

    async fn proof(&self, token: &str, message: &str, signature: &str) -> (u16, serde_json::Value) {
        json(
            self.api
                .http
                .post(format!("{}/link/{token}/proof", self.api.url))
                .json(&json!({ "message": message, "signature": signature }))
                .send()
                .await
                .expect("a response"),
        )
        .await
    }

    /// Asks for a message for `signer`'s address and proves it.
    async fn link(&self, token: &str, signer: &SigningKey) -> (u16, serde_json::Value) {
        let (status, issued) = self.message(token, address_of(signer)).await;
        assert_eq!(status, 200, "{issued}");
        let message = issued["message"].as_str().expect("a message");
        self.proof(token, message, &personal_sign(signer, message))
            .await
    }

    async fn wallets_of(&self, user: u64) -> Vec<String> {
        self.api
            .db
            .column::<String>(&format!(
                "SELECT w.address FROM member_wallets w JOIN profiles p ON p.id = w.profile_id
                 WHERE p.discord_user_id = {user} ORDER BY w.linked_at, w.address"
            ))
            .await
    }

    async fn stored(&self) -> (i64, i64) {
        (
            self.api
                .db
                .count("SELECT count(*) FROM member_wallets")
                .await,
            self.api
                .db
                .count("SELECT count(*) FROM audit_logs WHERE action = 'wallet.linked'")
                .await,
        )
    }
}

fn error(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_links_several_wallets_and_a_fresh_proof_reclaims_one() {
    let w = world("api_link").await;
    let alice = w.api.member(w.community, 101, None, &[]).await;
    let bob = w.api.member(w.community, 102, None, &[]).await;
    let (hot, cold) = (key(1), key(2));

    // The page: who it is for, strict headers, and no token in any
    // reference it makes.
    let token = w.link_for(alice).await;
    let page = w
        .api
        .http
        .get(format!("{}/link/{token}", w.api.url))
        .send()
        .await
        .expect("the page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("guild 7001") && html.contains("101"),
        "{html}"
    );
    assert!(
        html.contains("gatehouse.example"),
        "the page names the site to check"
    );
    assert!(!html.contains("<script>"), "no inline script");

    // The message is SIWE for the public address, the wallet and the chain.
    let (status, issued) = w.message(&token, address_of(&hot)).await;
    assert_eq!(status, 200, "{issued}");
    let message = issued["message"].as_str().expect("a message").to_owned();
    let parsed = eligibility::SiweMessage::parse(&message).expect("a SIWE message");
    assert_eq!(parsed.domain, "gatehouse.example");
    assert_eq!(parsed.uri, format!("{PUBLIC}/link"));
    assert_eq!(parsed.address, address_of(&hot));
    assert_eq!(parsed.chain_id, w.chain.chain_id());
    assert!(parsed.expiration_time.is_some());

    let (status, linked) = w
        .proof(&token, &message, &personal_sign(&hot, &message))
        .await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["proof"], "eoa");
    assert_eq!(linked["reclaimed"], false);
    let hot_address = address_of(&hot).to_string().to_lowercase();
    assert_eq!(w.wallets_of(101).await, std::slice::from_ref(&hot_address));

    // The link is used up: it shows what happened but links nothing more.
    let (status, body) = w.message(&token, address_of(&cold)).await;
    assert_eq!(status, 410, "{body}");
    assert!(error(&body).contains("already used"), "{body}");

    // A second wallet through a second link: both count.
    let token = w.link_for(alice).await;
    let (status, body) = w.link(&token, &cold).await;
    assert_eq!(status, 200, "{body}");
    let cold_address = address_of(&cold).to_string().to_lowercase();
    assert_eq!(
        w.wallets_of(101).await,
        [hot_address.clone(), cold_address.clone()]
    );
    assert_eq!(body["wallets"].as_array().map(Vec::len), Some(2));

    // Bob proves the hot wallet: it moves to him, audited on both sides.
    let token = w.link_for(bob).await;
    let (status, body) = w.link(&token, &hot).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reclaimed"], true);
    assert_eq!(w.wallets_of(101).await, [cold_address]);
    assert_eq!(w.wallets_of(102).await, [hot_address]);
    let reclaims = w
        .api
        .db
        .count(
            "SELECT count(*) FROM audit_logs WHERE action = 'wallet.unlinked'
             AND target_id = '101' AND metadata->>'reason' = 'reclaimed' AND actor_id = '102'",
        )
        .await;
    assert_eq!(reclaims, 1);
    let links = w
        .api
        .db
        .count(
            "SELECT count(*) FROM audit_logs WHERE action = 'wallet.linked'
             AND metadata->>'reclaimed_from' = '101' AND metadata->>'method' = 'siwe:page'",
        )
        .await;
    assert_eq!(links, 1);
    // Alice unlinks her cold wallet from her (still open) page; another's
    // wallet is not hers to unlink.
    let alice_page = w.link_for(alice).await;
    let unlink = |address: String| {
        let url = format!("{}/link/{alice_page}/unlink", w.api.url);
        let http = w.api.http.clone();
        async move {
            json(
                http.post(url)
                    .json(&json!({ "address": address }))
                    .send()
                    .await
                    .expect("a response"),
            )
            .await
        }
    };
    let (status, body) = unlink(address_of(&hot).to_string()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = unlink(address_of(&cold).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wallets"], json!([]));
    assert!(w.wallets_of(101).await.is_empty());
    let unlinked = w
        .api
        .db
        .count("SELECT count(*) FROM audit_logs WHERE action = 'wallet.unlinked' AND metadata->>'reason' = 'unlinked'")
        .await;
    assert_eq!(unlinked, 1);

    // Only the token's hash is stored.
    let tokens = w
        .api
        .db
        .count(&format!(
            "SELECT count(*) FROM wallet_link_tokens WHERE encode(token_hash, 'hex') = '{token}'"
        ))
        .await;
    assert_eq!(tokens, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_wallet_proves_itself_through_eip_1271() {
    let w = world("api_link_1271").await;
    let alice = w.api.member(w.community, 101, None, &[]).await;
    let owner = key(7);
    let safe: Address = "0x5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe"
        .parse()
        .expect("an address");
    w.chain.deploy(
        safe,
        FakeContract::Erc1271 {
            owner: address_of(&owner),
        },
    );
    let token = w.link_for(alice).await;
    let (status, issued) = w.message(&token, safe).await;
    assert_eq!(status, 200, "{issued}");
    let message = issued["message"].as_str().expect("a message");
    // Signed by a stranger: the contract says no.
    let (status, body) = w
        .proof(&token, message, &personal_sign(&key(8), message))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(w.stored().await, (0, 0));
    // Signed by its owner: the contract says yes.
    let (status, body) = w
        .proof(&token, message, &personal_sign(&owner, message))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["proof"], "erc1271");
    assert_eq!(w.wallets_of(101).await, [safe.to_string().to_lowercase()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_proofs_and_links_store_nothing_and_say_why() {
    let w = world("api_link_refused").await;
    let alice = w.api.member(w.community, 101, None, &[]).await;
    let signer = key(3);

    // An unknown link.
    let (status, body) = w
        .message("00".repeat(32).as_str(), address_of(&signer))
        .await;
    assert_eq!(status, 404, "{body}");
    let page = w
        .api
        .http
        .get(format!("{}/link/{}", w.api.url, "00".repeat(32)))
        .send()
        .await
        .expect("a page");
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap_or_default().contains("not valid"));

    // A message for another site, with the right nonce: the phishing case.
    let token = w.link_for(alice).await;
    let (_, issued) = w.message(&token, address_of(&signer)).await;
    let message = issued["message"].as_str().expect("a message").to_owned();
    let phished = message.replacen("gatehouse.example", "gatehouse.example.evil", 1);
    let (status, body) = w
        .proof(&token, &phished, &personal_sign(&signer, &phished))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("another site"), "{body}");

    // A signature over an earlier message (another nonce).
    let (_, newer) = w.message(&token, address_of(&signer)).await;
    assert_ne!(newer["message"], issued["message"]);
    let (status, body) = w
        .proof(&token, &message, &personal_sign(&signer, &message))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("nonce"), "{body}");

    // The right message signed by another key.
    let newer = newer["message"].as_str().expect("a message");
    let (status, body) = w.proof(&token, newer, &personal_sign(&key(4), newer)).await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("not"), "{body}");
    assert_eq!(w.stored().await, (0, 0));

    // An expired link.
    w.api
        .db
        .admin()
        .await
        .batch_execute("UPDATE wallet_link_tokens SET expires_at = now() - interval '1 second'")
        .await
        .expect("expiring the link");
    let (status, body) = w.proof(&token, newer, &personal_sign(&signer, newer)).await;
    assert_eq!(status, 410, "{body}");
    assert!(error(&body).contains("expired"), "{body}");

    // Someone the link was made for who is not (or no longer) in the server.
    let stranger = UserId::new(999).expect("an id");
    let token = w.link_for(stranger).await;
    let (status, body) = w.message(&token, address_of(&signer)).await;
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).contains("not a member"), "{body}");

    assert_eq!(w.stored().await, (0, 0));
    let used = w
        .api
        .db
        .count("SELECT count(*) FROM wallet_link_tokens WHERE used_at IS NOT NULL")
        .await;
    assert_eq!(used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_address_there_is_no_link_page() {
    let api = Api::start("api_link_off").await;
    let response = api
        .http
        .get(format!("{}/link/{}", api.url, "ab".repeat(32)))
        .send()
        .await
        .expect("a response");
    assert_eq!(response.status(), 404);
}
