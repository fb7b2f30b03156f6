//! Per-community read budgets, and interactive reads that reuse recent
//! results. Time is a [`ManualClock`]: what is asserted is which reads
//! reached the chain, never how long anything took.

use std::time::Duration;

use eligibility::{
    ChainConfig, ChainError, CommunityBudget, Freshness, ManualClock, MemberEvaluation, Outcome,
    UnknownReason,
};
use serde_json::json;
use uuid::Uuid;

use super::*;

const A: Uuid = Uuid::from_u128(0xa);
const B: Uuid = Uuid::from_u128(0xb);

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

fn outcome(eval: &MemberEvaluation) -> Outcome {
    eval.get(id(1)).expect("rule 1").outcome.clone()
}

fn over_budget(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::OverBudget { .. })
        }
    )
}

/// One `eth_call` per read (no multicall), batches of `batch`, and a
/// budget of `burst` calls refilling at one a second.
fn budgeted(batch: usize, burst: u32) -> impl FnOnce(&mut ChainConfig) {
    move |c| {
        c.multicall_address = None;
        c.max_batch_size = batch;
        c.community_budget = Some(CommunityBudget {
            calls_per_second: 1.0,
            burst,
        });
    }
}

#[tokio::test]
async fn a_community_over_its_budget_does_not_hold_up_another() {
    let chain = chain().await;
    let (set, token) = token_rule();
    for n in 0..20 {
        chain.set_erc20_balance(token, wallet(n), units(10));
    }
    let clock = ManualClock::new();
    let eval = evaluator_with_clock(vec![chain.url()], &clock, budgeted(5, 5));
    let members =
        |range: std::ops::Range<u64>| -> Vec<_> { range.map(|n| member(wallet(n))).collect() };

    // A spends its whole burst on five members…
    let first = eval
        .evaluate_many(A, &set, &members(0..5), Freshness::Cached)
        .await;
    assert!(first.iter().all(|e| outcome(e) == Outcome::Eligible));
    assert_eq!(chain.eth_calls(), 5);

    // …so its next five are not read: Unknown, which takes no role.
    let refused = eval
        .evaluate_many(A, &set, &members(5..10), Freshness::Cached)
        .await;
    assert!(
        refused.iter().all(|e| over_budget(&outcome(e))),
        "A's reads beyond its budget went to the chain: {refused:?}"
    );
    assert_eq!(chain.eth_calls(), 5, "no call was made for them");

    // B, reading at the same instant, is untouched by A's spending.
    let other = eval
        .evaluate_many(B, &set, &members(10..14), Freshness::Cached)
        .await;
    assert!(
        other.iter().all(|e| outcome(e) == Outcome::Eligible),
        "B's reads were held back by A's budget: {other:?}"
    );
    assert_eq!(chain.eth_calls(), 9);

    // A /check-like read of A's is refused too; B's still goes through.
    let a_fresh = eval
        .evaluate(A, &set, &member(wallet(15)), Freshness::Fresh)
        .await;
    assert!(over_budget(&outcome(&a_fresh)), "{a_fresh:?}");
    let b_fresh = eval
        .evaluate(B, &set, &member(wallet(15)), Freshness::Fresh)
        .await;
    assert_eq!(outcome(&b_fresh), Outcome::Eligible);
    assert_eq!(chain.eth_calls(), 10);

    let stats = eval.stats()[CHAIN];
    assert_eq!(stats.over_budget_unknown, 6);
    assert_eq!(stats.over_budget_cached, 0);
}

#[tokio::test]
async fn a_refused_read_is_retried_once_the_budget_refills() {
    let chain = chain().await;
    let (set, token) = token_rule();
    chain.set_erc20_balance(token, wallet(1), units(10));
    chain.set_erc20_balance(token, wallet(2), units(10));
    let clock = ManualClock::new();
    let eval = evaluator_with_clock(vec![chain.url()], &clock, budgeted(1, 1));

    let alice = eval
        .evaluate(A, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    assert_eq!(outcome(&alice), Outcome::Eligible);
    let bob = eval
        .evaluate(A, &set, &member(wallet(2)), Freshness::Cached)
        .await;
    assert!(over_budget(&outcome(&bob)), "{bob:?}");
    assert_eq!(chain.eth_calls(), 1);

    // One call comes back a second later: bob is read, not left unknown.
    clock.advance(Duration::from_secs(1));
    let bob = eval
        .evaluate(A, &set, &member(wallet(2)), Freshness::Cached)
        .await;
    assert_eq!(outcome(&bob), Outcome::Eligible);
    assert_eq!(chain.eth_calls(), 2);
}

#[tokio::test]
async fn over_budget_a_cached_result_stands_in_for_a_fresh_read() {
    let chain = chain().await;
    let (set, token) = token_rule();
    chain.set_erc20_balance(token, wallet(1), units(10));
    let clock = ManualClock::new();
    let eval = evaluator_with_clock(vec![chain.url()], &clock, budgeted(1, 1));
    let alice = member(wallet(1));

    eval.evaluate(A, &set, &alice, Freshness::Cached).await;
    chain.set_erc20_balance(token, wallet(1), units(0));
    // A member asks for a fresh read, but A's budget is spent: the read
    // the cache holds (within its TTL) answers rather than Unknown.
    let checked = eval.evaluate(A, &set, &alice, Freshness::Fresh).await;
    assert_eq!(outcome(&checked), Outcome::Eligible);
    assert_eq!(chain.eth_calls(), 1);
    let stats = eval.stats()[CHAIN];
    assert_eq!(
        (stats.over_budget_cached, stats.over_budget_unknown),
        (1, 0)
    );

    clock.advance(Duration::from_secs(1));
    let checked = eval.evaluate(A, &set, &alice, Freshness::Fresh).await;
    assert_eq!(outcome(&checked), Outcome::NotEligible, "read afresh");
    assert_eq!(chain.eth_calls(), 2);
}

#[tokio::test]
async fn bulk_reads_leave_a_reserve_for_reads_someone_waits_on() {
    let chain = chain().await;
    let (set, token) = token_rule();
    for n in 0..12 {
        chain.set_erc20_balance(token, wallet(n), units(10));
    }
    let clock = ManualClock::new();
    let eval = evaluator_with_clock(vec![chain.url()], &clock, budgeted(1, 10));

    // A's mass re-check spends all but a tenth of its burst…
    let members: Vec<_> = (0..10).map(|n| member(wallet(n))).collect();
    let bulk = eval
        .evaluate_many(A, &set, &members, Freshness::Cached)
        .await;
    let read = bulk
        .iter()
        .filter(|e| outcome(e) == Outcome::Eligible)
        .count();
    assert_eq!(read, 9, "{bulk:?}");
    assert_eq!(chain.eth_calls(), 9);

    // …so a member of A asking to be checked is still read.
    let asked = eval
        .evaluate(A, &set, &member(wallet(11)), Freshness::Fresh)
        .await;
    assert_eq!(outcome(&asked), Outcome::Eligible);
    assert_eq!(chain.eth_calls(), 10);
}

#[tokio::test]
async fn without_a_budget_nothing_is_refused() {
    let chain = chain().await;
    let (set, token) = token_rule();
    chain.deploy(token, eligibility::fake_chain::FakeContract::Erc20);
    let clock = ManualClock::new();
    let eval = evaluator_with_clock(vec![chain.url()], &clock, |c| {
        c.multicall_address = None;
        c.community_budget = None;
    });
    let members: Vec<_> = (0..50).map(|n| member(wallet(n))).collect();
    let results = eval
        .evaluate_many(A, &set, &members, Freshness::Fresh)
        .await;
    assert!(results.iter().all(|e| outcome(e) == Outcome::NotEligible));
    assert_eq!(chain.eth_calls(), 50);
}

#[tokio::test]
async fn interactive_reads_reuse_results_younger_than_the_minimum_age() {
    let chain = chain().await;
    let (set, token) = token_rule();
    chain.set_erc20_balance(token, wallet(1), units(10));
    let clock = ManualClock::new();
    let eval = evaluator_with_clock(vec![chain.url()], &clock, |_| {});
    let alice = member(wallet(1));
    let within = Freshness::NotOlderThan(Duration::from_secs(30));

    let first = eval.evaluate(A, &set, &alice, within).await;
    assert_eq!(outcome(&first), Outcome::Eligible);
    assert_eq!(chain.eth_calls(), 1);

    chain.set_erc20_balance(token, wallet(1), units(0));
    clock.advance(Duration::from_secs(29));
    let again = eval.evaluate(B, &set, &alice, within).await;
    assert_eq!(outcome(&again), Outcome::Eligible, "the 29 s old read");
    assert_eq!(chain.eth_calls(), 1, "no call within the minimum age");

    clock.advance(Duration::from_secs(1));
    let later = eval.evaluate(A, &set, &alice, within).await;
    assert_eq!(outcome(&later), Outcome::NotEligible, "read afresh at 30 s");
    assert_eq!(chain.eth_calls(), 2);

    // A zero minimum age always reads, as `Fresh` does.
    eval.evaluate(A, &set, &alice, Freshness::NotOlderThan(Duration::ZERO))
        .await;
    assert_eq!(chain.eth_calls(), 3);
}
