//! Failover, circuit breakers, timeouts and outages. The rule throughout: a
//! provider failure makes an outcome Unknown, never NotEligible.

use std::time::Duration;

use eligibility::fake_chain::Fault;
use eligibility::{BreakerState, ChainError, EndpointError, Freshness, Outcome, UnknownReason};
use serde_json::json;

use super::*;

fn token_rule() -> (RuleSet, Address) {
    let token = contract(1);
    let set = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": "10"}),
    )]);
    (set, token)
}

fn outcome(eval: &eligibility::MemberEvaluation) -> Outcome {
    eval.get(id(1)).expect("rule 1").outcome.clone()
}

async fn two_chains_with_balance(token: Address, holder: Address) -> (FakeChain, FakeChain) {
    let primary = chain().await;
    let backup = chain().await;
    for c in [&primary, &backup] {
        c.set_erc20_balance(token, holder, units(10));
    }
    (primary, backup)
}

#[tokio::test]
async fn fails_over_to_the_next_url_for_each_kind_of_fault() {
    let (set, token) = token_rule();
    let alice = member(wallet(1));
    for fault in [
        Fault::Unavailable,
        Fault::RefuseConnections,
        Fault::Malformed,
    ] {
        let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
        primary.set_fault(fault);
        let eval = evaluator(vec![primary.url(), backup.url()], |_| {});
        let result = eval
            .evaluate(COMMUNITY, &set, &alice, Freshness::Cached)
            .await;
        assert_eq!(outcome(&result), Outcome::Eligible, "{fault:?}");
        assert_eq!(
            primary.requests() + primary.refused(),
            1,
            "{fault:?}: the primary was tried first"
        );
        assert_eq!(backup.requests(), 1, "{fault:?}: the backup answered");
    }
}

#[tokio::test]
async fn a_slow_url_times_out_and_the_next_answers() {
    let (set, token) = token_rule();
    let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
    primary.set_fault(Fault::Slow(Duration::from_secs(30)));
    let eval = evaluator(vec![primary.url(), backup.url()], |c| c.timeout_ms = 1_000);
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    assert_eq!(outcome(&result), Outcome::Eligible);
    assert_eq!(backup.requests(), 1);
}

#[tokio::test]
async fn an_outage_is_unknown_not_not_eligible() {
    let (set, token) = token_rule();
    let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
    primary.set_fault(Fault::Unavailable);
    backup.set_fault(Fault::Unavailable);
    let eval = evaluator(vec![primary.url(), backup.url()], |_| {});
    // Both a member who holds the token and one who does not: neither may
    // be judged while the chain cannot be read.
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[member(wallet(1)), member(wallet(2))],
            Freshness::Cached,
        )
        .await;
    for r in &results {
        match outcome(r) {
            Outcome::Unknown {
                reason: UnknownReason::Chain(ChainError::AllFailed { last, .. }),
            } => assert!(
                matches!(last, EndpointError::Status { status: 503, .. }),
                "{last:?}"
            ),
            other => panic!("expected unknown after an outage, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_timeout_is_unknown() {
    let (set, token) = token_rule();
    let slow = chain().await;
    slow.set_erc20_balance(token, wallet(1), units(10));
    slow.set_fault(Fault::Slow(Duration::from_secs(30)));
    let eval = evaluator(vec![slow.url()], |c| c.timeout_ms = 1_000);
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    match outcome(&result) {
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::AllFailed { last, .. }),
        } => assert!(
            matches!(
                last,
                EndpointError::Timeout {
                    timeout_ms: 1_000,
                    ..
                }
            ),
            "{last:?}"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_do_not_leak_the_url_path() {
    let (set, _) = token_rule();
    let dead = chain().await;
    dead.set_fault(Fault::RefuseConnections);
    let mut url = dead.url();
    url.set_path("/v3/secret-api-key");
    let eval = evaluator(vec![url], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    let detail = &result.get(id(1)).expect("rule 1").detail;
    assert!(detail.contains("every RPC URL failed"), "{detail}");
    assert!(!detail.contains("secret-api-key"), "{detail}");
}

#[tokio::test]
async fn the_breaker_opens_after_n_failures_and_half_opens_after_the_cooldown() {
    let (set, token) = token_rule();
    let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
    primary.set_fault(Fault::Unavailable);
    let cooldown = Duration::from_millis(300);
    let eval = evaluator(vec![primary.url(), backup.url()], |c| {
        c.breaker.failure_threshold = 2;
        c.breaker.cooldown_ms = 300;
    });
    let alice = member(wallet(1));

    for _ in 0..2 {
        let r = eval
            .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
            .await;
        assert_eq!(outcome(&r), Outcome::Eligible);
    }
    assert_eq!(primary.requests(), 2);
    assert_eq!(eval.health()[0].state, BreakerState::Open);
    assert_eq!(eval.health()[1].state, BreakerState::Closed);

    // Open: the primary is skipped without being contacted.
    let r = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(outcome(&r), Outcome::Eligible);
    assert_eq!(primary.requests(), 2, "an open breaker sends nothing");
    assert_eq!(backup.requests(), 3);

    // After the cooldown one probe goes to the primary; it has recovered,
    // so the breaker closes and traffic returns to it.
    primary.set_fault(Fault::None);
    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    assert_eq!(eval.health()[0].state, BreakerState::HalfOpen);
    let r = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(outcome(&r), Outcome::Eligible);
    assert_eq!(primary.requests(), 3, "the half-open probe");
    assert_eq!(backup.requests(), 3);
    assert_eq!(eval.health()[0].state, BreakerState::Closed);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let (set, token) = token_rule();
    let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
    primary.set_fault(Fault::Unavailable);
    let eval = evaluator(vec![primary.url(), backup.url()], |c| {
        c.breaker.failure_threshold = 1;
        c.breaker.cooldown_ms = 200;
    });
    let alice = member(wallet(1));
    eval.evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(eval.health()[0].state, BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    eval.evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(primary.requests(), 2, "one probe");
    assert_eq!(eval.health()[0].state, BreakerState::Open, "probe failed");
}

#[tokio::test]
async fn all_breakers_open_is_unknown_without_any_request() {
    let (set, token) = token_rule();
    let only = chain().await;
    only.set_erc20_balance(token, wallet(1), units(10));
    only.set_fault(Fault::Unavailable);
    let eval = evaluator(vec![only.url()], |c| {
        c.breaker.failure_threshold = 1;
        c.breaker.cooldown_ms = 60_000;
    });
    let alice = member(wallet(1));
    eval.evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    let r = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(only.requests(), 1);
    assert!(matches!(
        outcome(&r),
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::CircuitOpen { .. })
        }
    ));
}

#[tokio::test]
async fn a_url_serving_another_chain_is_not_believed() {
    use eligibility::fake_chain::{FakeChain, FakeChainOptions};
    let (set, token) = token_rule();
    let wrong = FakeChain::start_with(FakeChainOptions {
        chain_id: 1,
        ..FakeChainOptions::default()
    })
    .await
    .expect("starts");
    // The wrong chain says the member holds nothing; believing it would
    // remove their role.
    wrong.deploy(token, eligibility::fake_chain::FakeContract::Erc20);
    let right = chain().await;
    right.set_erc20_balance(token, wallet(1), units(10));
    let eval = evaluator(vec![wrong.url(), right.url()], |c| {
        c.chain_id = Some(right.chain_id());
    });
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    assert_eq!(outcome(&result), Outcome::Eligible);
    assert_eq!(wrong.requests(), 1);
    assert_eq!(right.requests(), 1);

    let only_wrong = evaluator(vec![wrong.url()], |c| c.chain_id = Some(right.chain_id()));
    let result = only_wrong
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    match outcome(&result) {
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::AllFailed { last, .. }),
        } => assert!(
            matches!(last, EndpointError::WrongChain { got: 1, .. }),
            "{last:?}"
        ),
        other => panic!("expected unknown, got {other:?}"),
    }
}

/// Multicall3 reports an inner call that failed with `success = false`,
/// whether the contract reverted on purpose or the call ran out of the gas
/// the batch had left. Only a revert that carries a reason is the
/// contract's answer; an inner failure without one says nothing.
#[tokio::test]
async fn a_failed_inner_multicall_call_is_unknown_not_a_missing_token() {
    use eligibility::fake_chain::FakeContract;
    let chain = chain().await;
    let nft = contract(2);
    let token = contract(1);
    chain.deploy(nft, FakeContract::Erc721);
    chain.deploy(token, FakeContract::Erc20);
    chain.set_erc721_owner(nft, units(1), Some(wallet(1)));
    chain.set_erc20_balance(token, wallet(1), units(10));
    let set = rules([
        rule(
            1,
            "nft_ownership",
            Some(nft),
            // Token 2 was never minted: ownerOf reverts with a reason, which
            // is the contract saying "no owner".
            json!({"standard": "erc721", "min_count": 1, "token_ids": ["1", "2"]}),
        ),
        rule(
            2,
            "token_balance",
            Some(token),
            json!({"min_balance": "10"}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let holder = member(wallet(1));

    let healthy = eval
        .evaluate(COMMUNITY, &set, &holder, Freshness::Fresh)
        .await;
    assert_eq!(outcome(&healthy), Outcome::Eligible);
    let stranger = eval
        .evaluate(COMMUNITY, &set, &member(wallet(2)), Freshness::Fresh)
        .await;
    assert_eq!(
        outcome(&stranger),
        Outcome::NotEligible,
        "a missing token is a deliberate answer"
    );
    assert_eq!(chain.eth_calls(), 2, "each check was one aggregate3");

    chain.fail_calls_involving(nft);
    chain.fail_calls_involving(token);
    let failed = eval
        .evaluate(COMMUNITY, &set, &holder, Freshness::Fresh)
        .await;
    for rule_id in [id(1), id(2)] {
        let o = &failed.get(rule_id).expect("rule").outcome;
        assert!(
            o.is_unknown(),
            "rule {rule_id}: a failed inner call must not be read as an answer: {o:?}"
        );
    }
}

/// A provider's 429 is back-pressure: the URL works and is busy. Counting it
/// as a failure would let one noisy community open the breaker every
/// community shares.
#[tokio::test]
async fn rate_limits_do_not_open_the_breaker_but_server_errors_do() {
    let (set, token) = token_rule();
    let only = chain().await;
    only.set_erc20_balance(token, wallet(1), units(10));
    let eval = evaluator(vec![only.url()], |c| {
        c.breaker.failure_threshold = 3;
        c.breaker.cooldown_ms = 60_000;
    });
    let alice = member(wallet(1));

    only.set_fault(Fault::RateLimited {
        retry_after_secs: None,
    });
    for attempt in 0..10 {
        let r = eval
            .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
            .await;
        match outcome(&r) {
            Outcome::Unknown {
                reason: UnknownReason::Chain(ChainError::AllFailed { last, .. }),
            } => assert!(
                matches!(last, EndpointError::RateLimited { .. }),
                "attempt {attempt}: {last:?}"
            ),
            other => panic!("attempt {attempt}: expected unknown, got {other:?}"),
        }
    }
    assert_eq!(only.requests(), 10, "every read was sent");
    assert_eq!(eval.health()[0].state, BreakerState::Closed);

    // The throttling ends: the URL answers at once.
    only.set_fault(Fault::None);
    let r = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(outcome(&r), Outcome::Eligible);

    only.set_fault(Fault::Unavailable);
    for _ in 0..3 {
        eval.evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
            .await;
    }
    assert_eq!(only.requests(), 14);
    assert_eq!(
        eval.health()[0].state,
        BreakerState::Open,
        "5xx still count"
    );
}

#[tokio::test]
async fn a_response_timeout_does_not_open_the_breaker() {
    let (set, token) = token_rule();
    let slow = chain().await;
    slow.set_erc20_balance(token, wallet(1), units(10));
    slow.set_fault(Fault::Slow(Duration::from_secs(30)));
    let eval = evaluator(vec![slow.url()], |c| {
        c.timeout_ms = 200;
        c.breaker.failure_threshold = 1;
    });
    let alice = member(wallet(1));
    for _ in 0..3 {
        let r = eval
            .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
            .await;
        assert!(outcome(&r).is_unknown());
    }
    assert_eq!(slow.requests(), 3);
    assert_eq!(eval.health()[0].state, BreakerState::Closed);
}

#[tokio::test]
async fn retry_after_keeps_reads_off_a_throttled_url_for_that_long() {
    let (set, token) = token_rule();
    let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
    primary.set_fault(Fault::RateLimited {
        retry_after_secs: Some(60),
    });
    let eval = evaluator(vec![primary.url(), backup.url()], |_| {});
    let alice = member(wallet(1));
    for _ in 0..3 {
        let r = eval
            .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
            .await;
        assert_eq!(outcome(&r), Outcome::Eligible);
    }
    assert_eq!(
        primary.requests(),
        1,
        "asked to wait, the primary was left alone"
    );
    assert_eq!(backup.requests(), 3);
    assert_eq!(eval.health()[0].state, BreakerState::Closed);
}

/// A reply body beyond `max_response_bytes` is refused while it is read, so
/// a broken or hostile endpoint cannot make the worker buffer gigabytes.
#[tokio::test]
async fn an_oversized_reply_is_an_endpoint_error() {
    let (set, token) = token_rule();
    let (primary, backup) = two_chains_with_balance(token, wallet(1)).await;
    primary.set_fault(Fault::Oversized(4 * 1024 * 1024));
    let eval = evaluator(vec![primary.url(), backup.url()], |c| {
        c.max_response_bytes = 64 * 1024;
        c.breaker.failure_threshold = 1;
    });
    let alice = member(wallet(1));
    let r = eval
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    assert_eq!(outcome(&r), Outcome::Eligible, "the backup answered");
    assert_eq!(primary.requests(), 1);
    assert_eq!(eval.health()[0].state, BreakerState::Open);

    let only = evaluator(vec![primary.url()], |c| c.max_response_bytes = 64 * 1024);
    let r = only
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    match outcome(&r) {
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::AllFailed { last, .. }),
        } => assert!(
            matches!(last, EndpointError::TooLarge { limit: 65_536, .. }),
            "{last:?}"
        ),
        other => panic!("expected unknown, got {other:?}"),
    }

    // A reply under the cap is read as usual.
    primary.set_fault(Fault::Oversized(60 * 1024));
    let r = only
        .evaluate(COMMUNITY, &set, &alice, Freshness::Fresh)
        .await;
    match outcome(&r) {
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::AllFailed { last, .. }),
        } => assert!(
            matches!(last, EndpointError::Malformed { .. }),
            "an empty batch under the cap is parsed, not refused: {last:?}"
        ),
        other => panic!("expected unknown, got {other:?}"),
    }
}
