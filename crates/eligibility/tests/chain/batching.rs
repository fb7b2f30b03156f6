//! Many members cost few requests; cached reads cost none.

use std::time::Duration;

use eligibility::fake_chain::{FakeChain, FakeContract};
use eligibility::{Freshness, Outcome};
use serde_json::json;

use super::*;

/// A community with a token rule and an NFT rule, both contracts deployed.
fn community(chain: &FakeChain) -> (RuleSet, Address, Address) {
    let token = contract(1);
    let nft = contract(2);
    chain.deploy(token, FakeContract::Erc20);
    chain.deploy(nft, FakeContract::Erc721);
    let set = rules([
        rule(
            1,
            "token_balance",
            Some(token),
            json!({"min_balance": "100"}),
        ),
        rule(
            2,
            "nft_ownership",
            Some(nft),
            json!({"standard": "erc721", "min_count": 1}),
        ),
    ]);
    (set, token, nft)
}

#[tokio::test]
async fn many_members_cost_one_request_with_multicall() {
    let chain = chain().await;
    let (set, token, nft) = community(&chain);
    let members: Vec<_> = (0..500).map(|n| member(wallet(n))).collect();
    for n in (0..500).step_by(2) {
        chain.set_erc20_balance(token, wallet(n), units(100));
    }
    chain.set_erc721_owner(nft, units(1), Some(wallet(7)));
    let eval = evaluator(vec![chain.url()], |c| c.max_calls_per_multicall = 1_000);

    let results = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;

    assert_eq!(chain.requests(), 1, "1,000 reads in one HTTP request");
    assert_eq!(chain.eth_calls(), 1, "packed into one aggregate3");
    let eligible = results
        .iter()
        .filter(|r| r.get(id(1)).map(|o| &o.outcome) == Some(&Outcome::Eligible))
        .count();
    assert_eq!(eligible, 250);
    assert_eq!(
        results[7].get(id(2)).map(|o| &o.outcome),
        Some(&Outcome::Eligible)
    );
    assert_eq!(
        results[8].get(id(2)).map(|o| &o.outcome),
        Some(&Outcome::NotEligible)
    );
}

#[tokio::test]
async fn many_members_cost_one_request_as_a_json_rpc_batch() {
    let chain = chain().await;
    let (set, token, _) = community(&chain);
    chain.set_erc20_balance(token, wallet(3), units(100));
    let members: Vec<_> = (0..100).map(|n| member(wallet(n))).collect();
    let eval = evaluator(vec![chain.url()], |c| {
        c.multicall_address = None;
        c.max_batch_size = 1_000;
    });

    let results = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;

    assert_eq!(chain.requests(), 1);
    assert_eq!(
        chain.eth_calls(),
        200,
        "one eth_call per read, all in one batch"
    );
    assert_eq!(
        results[3].get(id(1)).map(|o| &o.outcome),
        Some(&Outcome::Eligible)
    );
    assert_eq!(
        results[4].get(id(1)).map(|o| &o.outcome),
        Some(&Outcome::NotEligible)
    );
}

#[tokio::test]
async fn provider_limits_split_work_into_a_few_requests() {
    let chain = chain().await;
    let (set, _, _) = community(&chain);
    let members: Vec<_> = (0..100).map(|n| member(wallet(n))).collect();
    let eval = evaluator(vec![chain.url()], |c| {
        c.max_calls_per_multicall = 10;
        c.max_batch_size = 5;
    });
    eval.evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;
    // 200 reads -> 20 multicalls of 10 -> 4 batches of 5.
    assert_eq!(chain.eth_calls(), 20);
    assert_eq!(chain.requests(), 4);
}

#[tokio::test]
async fn a_cache_hit_avoids_a_request() {
    let chain = chain().await;
    let (set, token, _) = community(&chain);
    chain.set_erc20_balance(token, wallet(1), units(100));
    let eval = evaluator(vec![chain.url()], |_| {});
    let alice = member(wallet(1));

    let first = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert_eq!(chain.requests(), 1);
    // The balance drops, but within the TTL the cached value stands.
    chain.set_erc20_balance(token, wallet(1), units(0));
    let second = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert_eq!(chain.requests(), 1, "served from cache");
    assert_eq!(first, second);
    let stats = eval.stats()[CHAIN];
    assert_eq!(stats.cache_hits, 2);
    assert_eq!(stats.cache_misses, 2);
    assert_eq!(stats.requests, 1);
}

#[tokio::test]
async fn two_communities_on_one_contract_share_reads_but_not_results() {
    let chain = chain().await;
    let token = contract(1);
    chain.set_erc20_balance(token, wallet(1), units(50));
    let low = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": "10"}),
    )]);
    let high = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": "100"}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let alice = member(wallet(1));
    let a = eval
        .evaluate(COMMUNITY, &low, &alice, Freshness::Cached)
        .await;
    let b = eval
        .evaluate(COMMUNITY, &high, &alice, Freshness::Cached)
        .await;
    assert_eq!(a.outcomes[0].outcome, Outcome::Eligible);
    assert_eq!(b.outcomes[0].outcome, Outcome::NotEligible);
    assert_eq!(chain.requests(), 1);
}

#[tokio::test]
async fn expired_entries_are_fetched_again() {
    let chain = chain().await;
    let (set, token, _) = community(&chain);
    chain.set_erc20_balance(token, wallet(1), units(100));
    let eval = evaluator(vec![chain.url()], |c| c.cache_ttl_secs = 1);
    let alice = member(wallet(1));

    let before = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert_eq!(
        before.get(id(1)).map(|o| &o.outcome),
        Some(&Outcome::Eligible)
    );
    chain.set_erc20_balance(token, wallet(1), units(99));
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let after = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert_eq!(chain.requests(), 2, "the expired entry was read again");
    assert_eq!(
        after.get(id(1)).map(|o| &o.outcome),
        Some(&Outcome::NotEligible),
        "a balance drop is noticed at the next re-check"
    );
}

#[tokio::test]
async fn fresh_reads_bypass_the_cache_and_refresh_it() {
    let chain = chain().await;
    let (set, token, _) = community(&chain);
    let eval = evaluator(vec![chain.url()], |_| {});
    let alice = member(wallet(1));

    eval.evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    chain.set_erc20_balance(token, wallet(1), units(100));
    let fresh = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(
        fresh.get(id(1)).map(|o| &o.outcome),
        Some(&Outcome::Eligible)
    );
    assert_eq!(chain.requests(), 2);

    let cached = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert_eq!(cached, fresh, "the fresh read refreshed the cache");
    assert_eq!(chain.requests(), 2);
}

#[tokio::test]
async fn failed_reads_are_not_cached() {
    let chain = chain().await;
    let (set, token, _) = community(&chain);
    chain.set_erc20_balance(token, wallet(1), units(100));
    let eval = evaluator(vec![chain.url()], |c| c.breaker.failure_threshold = 10);
    let alice = member(wallet(1));

    chain.set_fault(eligibility::fake_chain::Fault::Unavailable);
    let down = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert!(down.outcomes.iter().all(|o| o.outcome.is_unknown()));
    chain.set_fault(eligibility::fake_chain::Fault::None);
    let up = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
        .await;
    assert_eq!(up.get(id(1)).map(|o| &o.outcome), Some(&Outcome::Eligible));
    assert_eq!(chain.requests(), 2);
}

#[tokio::test]
async fn a_large_community_with_default_limits_takes_two_requests() {
    let chain = chain().await;
    let (set, token, nft) = community(&chain);
    let members: Vec<_> = (0..3_000).map(|n| member(wallet(n))).collect();
    chain.set_erc20_balance(token, wallet(2_999), units(100));
    chain.set_erc721_owner(nft, units(1), Some(wallet(0)));
    let eval = evaluator(vec![chain.url()], |_| {});

    let results = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;

    // 6,000 reads -> 12 multicalls of 500 -> batches of 10 and 2.
    assert_eq!(chain.eth_calls(), 12);
    assert_eq!(chain.requests(), 2);
    let undecided = results
        .iter()
        .flat_map(|r| &r.outcomes)
        .filter(|o| o.outcome.is_unknown())
        .count();
    assert_eq!(undecided, 0);
    assert_eq!(
        results[2_999].get(id(1)).map(|o| &o.outcome),
        Some(&Outcome::Eligible)
    );
    assert_eq!(
        results[0].get(id(2)).map(|o| &o.outcome),
        Some(&Outcome::Eligible)
    );
}
