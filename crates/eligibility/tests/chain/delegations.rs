//! delegate.xyz v2 delegations: a cold wallet's tokens count for the member
//! whose linked wallet it delegated to.

use eligibility::DELEGATE_REGISTRY_V2;
use eligibility::{Delegation, Freshness, MemberEvaluation, MemberFacts, Outcome, B256};
use serde_json::json;

use super::*;

fn owner_of(wallets: &[Address]) -> MemberFacts {
    MemberFacts {
        wallets: wallets.to_vec(),
        score: 0,
    }
}

fn of(eval: &MemberEvaluation, rule: u128) -> (Outcome, String) {
    let o = eval
        .get(id(rule))
        .unwrap_or_else(|| panic!("rule {rule} has no outcome"));
    (o.outcome.clone(), o.detail.clone())
}

fn balance_rule(n: u128, token: Address, min: u64, delegations: bool) -> eligibility::RuleDef {
    rule(
        n,
        "token_balance",
        Some(token),
        json!({"min_balance": min.to_string(), "delegations": delegations}),
    )
}

#[tokio::test]
async fn an_all_delegation_counts_each_delegator_once() {
    let chain = chain().await;
    let token = contract(1);
    let (hot, hot2, cold) = (wallet(1), wallet(2), wallet(10));
    chain.set_erc20_balance(token, hot, units(2));
    chain.set_erc20_balance(token, hot2, units(1));
    chain.set_erc20_balance(token, cold, units(8));
    // The cold wallet delegated to both of the member's wallets, and one of
    // the member's wallets to the other: still 2 + 1 + 8.
    chain.delegate(Delegation::all(cold, hot));
    chain.delegate(Delegation::all(cold, hot2));
    chain.delegate(Delegation::all(hot2, hot));
    let set = rules([
        balance_rule(1, token, 11, true),
        balance_rule(2, token, 12, true),
        balance_rule(3, token, 11, false),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot, hot2]), Freshness::Cached)
        .await;
    assert_eq!(
        of(&result, 1),
        (
            Outcome::Eligible,
            "balance 11 across 2 wallets and 1 delegator (needs 11)".to_string()
        )
    );
    assert_eq!(of(&result, 2).0, Outcome::NotEligible);
    assert_eq!(
        of(&result, 3),
        (
            Outcome::NotEligible,
            "balance 3 across 2 wallets (needs 11)".to_string()
        )
    );
}

#[tokio::test]
async fn a_contract_delegation_counts_only_for_its_contract() {
    let chain = chain().await;
    let (token, other) = (contract(1), contract(9));
    let (hot_a, cold_a, hot_b, cold_b) = (wallet(1), wallet(10), wallet(2), wallet(20));
    chain.set_erc20_balance(token, cold_a, units(50));
    chain.set_erc20_balance(token, cold_b, units(50));
    chain.delegate(Delegation::contract(cold_a, hot_a, other));
    chain.delegate(Delegation::contract(cold_b, hot_b, token));
    let set = rules([balance_rule(1, token, 10, true)]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[owner_of(&[hot_a]), owner_of(&[hot_b])],
            Freshness::Cached,
        )
        .await;
    assert_eq!(
        of(&results[0], 1),
        (Outcome::NotEligible, "balance 0 (needs 10)".to_string())
    );
    assert_eq!(of(&results[1], 1).0, Outcome::Eligible);
}

#[tokio::test]
async fn an_erc20_delegation_counts_up_to_its_amount_and_the_balance() {
    let chain = chain().await;
    let token = contract(1);
    let (hot1, cold1, hot2, cold2) = (wallet(1), wallet(10), wallet(2), wallet(20));
    chain.set_erc20_balance(token, hot1, units(3));
    chain.set_erc20_balance(token, cold1, units(100));
    chain.set_erc20_balance(token, hot2, units(3));
    chain.set_erc20_balance(token, cold2, units(2));
    chain.delegate(Delegation::erc20(cold1, hot1, token, units(6)));
    chain.delegate(Delegation::erc20(cold2, hot2, token, units(6)));
    // An ERC-20 delegation for another token grants nothing here.
    chain.delegate(Delegation::erc20(cold2, hot2, contract(9), units(100)));
    let set = rules([
        balance_rule(1, token, 9, true),
        balance_rule(2, token, 10, true),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[owner_of(&[hot1]), owner_of(&[hot2])],
            Freshness::Cached,
        )
        .await;
    assert_eq!(of(&results[0], 1).0, Outcome::Eligible, "3 + 6 of 100");
    assert_eq!(
        of(&results[0], 2),
        (
            Outcome::NotEligible,
            "balance 9 across 1 wallet and 1 delegator (needs 10)".to_string()
        )
    );
    assert_eq!(
        of(&results[1], 1),
        (
            Outcome::NotEligible,
            "balance 5 across 1 wallet and 1 delegator (needs 9)".to_string()
        ),
        "3 + the 2 the delegator holds"
    );
}

#[tokio::test]
async fn an_erc721_token_delegation_counts_the_token_if_the_delegator_owns_it() {
    let chain = chain().await;
    let nft = contract(2);
    let (hot, cold, stranger) = (wallet(1), wallet(10), wallet(30));
    chain.set_erc721_owner(nft, units(1), Some(cold));
    chain.set_erc721_owner(nft, units(2), Some(cold));
    chain.set_erc721_owner(nft, units(3), Some(stranger));
    chain.delegate(Delegation::erc721(cold, hot, nft, units(1)));
    // The delegator does not own token 3: the delegation grants nothing.
    chain.delegate(Delegation::erc721(cold, hot, nft, units(3)));
    let nft_rule = |n: u128, params: serde_json::Value| rule(n, "nft_ownership", Some(nft), params);
    let set = rules([
        nft_rule(
            1,
            json!({"standard": "erc721", "min_count": 1, "delegations": true}),
        ),
        nft_rule(
            2,
            json!({"standard": "erc721", "min_count": 2, "delegations": true}),
        ),
        nft_rule(
            3,
            json!({"standard": "erc721", "min_count": 1, "token_ids": ["1", "2", "3"], "delegations": true}),
        ),
        nft_rule(
            4,
            json!({"standard": "erc721", "min_count": 1, "token_ids": ["2", "3"], "delegations": true}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert_eq!(of(&result, 1).0, Outcome::Eligible);
    assert_eq!(
        of(&result, 2),
        (
            Outcome::NotEligible,
            "tokens held 1 across 1 wallet and 1 delegator (needs 2)".to_string()
        )
    );
    assert_eq!(of(&result, 3).0, Outcome::Eligible);
    assert_eq!(of(&result, 4).0, Outcome::NotEligible);
}

#[tokio::test]
async fn an_erc1155_delegation_counts_up_to_its_amount_of_its_id() {
    let chain = chain().await;
    let multi = contract(3);
    let (hot, cold) = (wallet(1), wallet(10));
    chain.set_erc1155_balance(multi, cold, units(1), units(5));
    chain.set_erc1155_balance(multi, cold, units(2), units(5));
    chain.delegate(Delegation::erc1155(cold, hot, multi, units(1), units(3)));
    let nft_rule = |n: u128, min: u64| {
        rule(
            n,
            "nft_ownership",
            Some(multi),
            json!({"standard": "erc1155", "min_count": min, "token_ids": ["1", "2"], "delegations": true}),
        )
    };
    let set = rules([nft_rule(1, 3), nft_rule(2, 4)]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert_eq!(of(&result, 1).0, Outcome::Eligible);
    assert_eq!(of(&result, 2).0, Outcome::NotEligible, "id 2 not delegated");
}

#[tokio::test]
async fn delegations_of_specific_rights_are_ignored() {
    let chain = chain().await;
    let token = contract(1);
    let (hot, cold) = (wallet(1), wallet(10));
    chain.set_erc20_balance(token, cold, units(50));
    chain.delegate(Delegation::all(cold, hot).with_rights(B256::repeat_byte(0x11)));
    let set = rules([balance_rule(1, token, 10, true)]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert_eq!(
        of(&result, 1),
        (Outcome::NotEligible, "balance 0 (needs 10)".to_string())
    );
}

#[tokio::test]
async fn an_unreadable_registry_is_unknown_unless_own_wallets_pass() {
    let chain = chain().await;
    let token = contract(1);
    let (rich, poor, cold) = (wallet(1), wallet(2), wallet(10));
    chain.set_erc20_balance(token, rich, units(10));
    chain.set_erc20_balance(token, poor, units(3));
    chain.set_erc20_balance(token, cold, units(10));
    chain.delegate(Delegation::all(cold, poor));
    chain.fail_calls_involving(DELEGATE_REGISTRY_V2);
    let set = rules([balance_rule(1, token, 10, true)]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let members = [owner_of(&[rich]), owner_of(&[poor])];
    let down = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;
    assert_eq!(of(&down[0], 1).0, Outcome::Eligible);
    let (outcome, detail) = of(&down[1], 1);
    assert!(outcome.is_unknown(), "never NotEligible: {outcome:?}");
    assert!(
        detail.contains(&format!("{DELEGATE_REGISTRY_V2}")),
        "names the registry: {detail}"
    );

    // Failed reads are not cached: once the registry answers, the cold
    // wallet counts.
    chain.heal_calls_involving(DELEGATE_REGISTRY_V2);
    let up = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;
    assert_eq!(of(&up[1], 1).0, Outcome::Eligible);
}

#[tokio::test]
async fn a_registry_outage_after_own_balances_were_cached_is_unknown_not_not_eligible() {
    let chain = chain().await;
    let token = contract(1);
    let hot = wallet(1);
    chain.set_erc20_balance(token, hot, units(3));
    let eval = evaluator(vec![chain.url()], |_| {});
    // Caches the member's own balance.
    let plain = rules([balance_rule(1, token, 10, false)]);
    let before = eval
        .evaluate(COMMUNITY, &plain, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert_eq!(of(&before, 1).0, Outcome::NotEligible);

    chain.set_fault(eligibility::fake_chain::Fault::Unavailable);
    let delegating = rules([balance_rule(1, token, 10, true)]);
    let during = eval
        .evaluate(COMMUNITY, &delegating, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert!(of(&during, 1).0.is_unknown(), "{during:?}");
}

#[tokio::test]
async fn rules_without_delegations_never_read_the_registry() {
    let chain = chain().await;
    let token = contract(1);
    let (hot, cold) = (wallet(1), wallet(10));
    chain.set_erc20_balance(token, cold, units(50));
    chain.delegate(Delegation::all(cold, hot));
    let eval = evaluator(vec![chain.url()], |_| {});

    let plain = rules([balance_rule(1, token, 10, false)]);
    let result = eval
        .evaluate(COMMUNITY, &plain, &owner_of(&[hot]), Freshness::Fresh)
        .await;
    assert_eq!(of(&result, 1).0, Outcome::NotEligible);
    assert_eq!(chain.calls_to(DELEGATE_REGISTRY_V2), 0);
    assert_eq!(chain.requests(), 1, "one round");

    chain.reset_counters();
    let delegating = rules([balance_rule(1, token, 10, true)]);
    let result = eval
        .evaluate(COMMUNITY, &delegating, &owner_of(&[hot]), Freshness::Fresh)
        .await;
    assert_eq!(of(&result, 1).0, Outcome::Eligible);
    assert_eq!(chain.calls_to(DELEGATE_REGISTRY_V2), 1);
    assert_eq!(chain.requests(), 2, "the registry, then the delegator");

    // Both rounds are cached like any other read.
    chain.reset_counters();
    let again = eval
        .evaluate(COMMUNITY, &delegating, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert_eq!(of(&again, 1).0, Outcome::Eligible);
    assert_eq!(chain.requests(), 0);
}

#[tokio::test]
async fn without_delegators_there_is_no_second_round() {
    let chain = chain().await;
    let token = contract(1);
    let hot = wallet(1);
    chain.set_erc20_balance(token, hot, units(50));
    let set = rules([balance_rule(1, token, 10, true)]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let members: Vec<_> = (1..=20).map(|n| owner_of(&[wallet(n)])).collect();
    let results = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;
    assert_eq!(of(&results[0], 1).0, Outcome::Eligible);
    assert_eq!(of(&results[1], 1).0, Outcome::NotEligible);
    assert_eq!(chain.requests(), 1, "balances and registry reads together");
    assert_eq!(chain.calls_to(DELEGATE_REGISTRY_V2), 20);
}

#[tokio::test]
async fn a_chain_may_keep_its_registry_elsewhere() {
    let chain = chain().await;
    let token = contract(1);
    let registry = contract(0xd1);
    let (hot, cold) = (wallet(1), wallet(10));
    chain.set_erc20_balance(token, cold, units(50));
    chain.delegate_at(registry, Delegation::all(cold, hot));
    let set = rules([balance_rule(1, token, 10, true)]);
    let moved = evaluator(vec![chain.url()], |c| {
        c.delegate_registry = Some(format!("{registry:#x}"));
    });
    let result = moved
        .evaluate(COMMUNITY, &set, &owner_of(&[hot]), Freshness::Cached)
        .await;
    assert_eq!(of(&result, 1).0, Outcome::Eligible);
    assert_eq!(chain.calls_to(DELEGATE_REGISTRY_V2), 0);
}
