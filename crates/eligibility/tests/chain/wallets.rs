//! Members with several wallets: holdings summed across them.

use eligibility::{Freshness, MemberEvaluation, MemberFacts, Outcome};
use serde_json::json;

use super::*;

fn owner_of(wallets: &[Address]) -> MemberFacts {
    MemberFacts {
        wallets: wallets.to_vec(),
        score: 0,
    }
}

fn only(eval: &MemberEvaluation) -> (Outcome, String) {
    assert_eq!(eval.outcomes.len(), 1, "{eval:?}");
    let o = &eval.outcomes[0];
    (o.outcome.clone(), o.detail.clone())
}

#[tokio::test]
async fn erc20_balances_are_summed_across_wallets() {
    let chain = chain().await;
    let token = contract(1);
    let (hot, cold) = (wallet(1), wallet(2));
    chain.set_erc20_balance(token, hot, units(4));
    chain.set_erc20_balance(token, cold, units(6));
    let set = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": "10"}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[owner_of(&[hot, cold]), owner_of(&[hot])],
            Freshness::Cached,
        )
        .await;
    assert_eq!(
        only(&results[0]),
        (
            Outcome::Eligible,
            "balance 10 across 2 wallets (needs 10)".to_string()
        )
    );
    assert_eq!(
        only(&results[1]),
        (Outcome::NotEligible, "balance 4 (needs 10)".to_string())
    );
    assert_eq!(chain.requests(), 1, "both members' reads in one request");
}

#[tokio::test]
async fn erc721_any_token_counts_across_wallets() {
    let chain = chain().await;
    let nft = contract(2);
    let (hot, cold) = (wallet(1), wallet(2));
    chain.set_erc721_owner(nft, units(1), Some(hot));
    chain.set_erc721_owner(nft, units(2), Some(cold));
    let set = rules([rule(
        1,
        "nft_ownership",
        Some(nft),
        json!({"standard": "erc721", "min_count": 2}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[owner_of(&[hot, cold]), owner_of(&[cold])],
            Freshness::Cached,
        )
        .await;
    assert_eq!(only(&results[0]).0, Outcome::Eligible);
    assert_eq!(
        only(&results[0]).1,
        "tokens held 2 across 2 wallets (needs 2)"
    );
    assert_eq!(only(&results[1]).0, Outcome::NotEligible);
}

#[tokio::test]
async fn erc721_listed_ids_count_if_any_wallet_owns_them() {
    let chain = chain().await;
    let nft = contract(2);
    let (hot, cold, stranger) = (wallet(1), wallet(2), wallet(3));
    chain.set_erc721_owner(nft, units(1), Some(hot));
    chain.set_erc721_owner(nft, units(2), Some(cold));
    chain.set_erc721_owner(nft, units(3), Some(stranger));
    let ids = json!(["1", "2", "3"]);
    let set = rules([
        rule(
            1,
            "nft_ownership",
            Some(nft),
            json!({"standard": "erc721", "min_count": 2, "token_ids": ids}),
        ),
        rule(
            2,
            "nft_ownership",
            Some(nft),
            json!({"standard": "erc721", "min_count": 3, "token_ids": ids}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot, cold]), Freshness::Cached)
        .await;
    let outcomes: Vec<_> = result.outcomes.iter().map(|o| o.outcome.clone()).collect();
    assert_eq!(outcomes, [Outcome::Eligible, Outcome::NotEligible]);
    assert_eq!(
        result.outcomes[1].detail,
        "tokens held 2 across 2 wallets (needs 3)"
    );
}

#[tokio::test]
async fn erc1155_balances_are_summed_per_id_across_wallets() {
    let chain = chain().await;
    let multi = contract(3);
    let (hot, cold) = (wallet(1), wallet(2));
    chain.set_erc1155_balance(multi, hot, units(1), units(2));
    chain.set_erc1155_balance(multi, cold, units(1), units(1));
    chain.set_erc1155_balance(multi, cold, units(2), units(1));
    // Not a listed id: does not count.
    chain.set_erc1155_balance(multi, cold, units(9), units(50));
    let set = rules([
        rule(
            1,
            "nft_ownership",
            Some(multi),
            json!({"standard": "erc1155", "min_count": 4, "token_ids": ["1", "2"]}),
        ),
        rule(
            2,
            "nft_ownership",
            Some(multi),
            json!({"standard": "erc1155", "min_count": 5, "token_ids": ["1", "2"]}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot, cold]), Freshness::Cached)
        .await;
    let outcomes: Vec<_> = result.outcomes.iter().map(|o| o.outcome.clone()).collect();
    assert_eq!(outcomes, [Outcome::Eligible, Outcome::NotEligible]);
    assert_eq!(chain.eth_calls(), 1, "four balances in one balanceOfBatch");
}

#[tokio::test]
async fn a_wallet_listed_twice_counts_once() {
    let chain = chain().await;
    let token = contract(1);
    let nft = contract(2);
    let hot = wallet(1);
    chain.set_erc20_balance(token, hot, units(6));
    chain.set_erc721_owner(nft, units(1), Some(hot));
    let set = rules([
        rule(
            1,
            "token_balance",
            Some(token),
            json!({"min_balance": "10"}),
        ),
        rule(
            2,
            "nft_ownership",
            Some(nft),
            json!({"standard": "erc721", "min_count": 2}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &owner_of(&[hot, hot]), Freshness::Cached)
        .await;
    assert_eq!(result.outcomes[0].outcome, Outcome::NotEligible);
    assert_eq!(result.outcomes[0].detail, "balance 6 (needs 10)");
    assert_eq!(result.outcomes[1].outcome, Outcome::NotEligible);
    assert_eq!(result.outcomes[1].detail, "tokens held 1 (needs 2)");
}

#[tokio::test]
async fn a_failed_wallet_read_matters_only_if_the_rest_falls_short() {
    let chain = chain().await;
    let token = contract(1);
    let (hot, cold, broken) = (wallet(1), wallet(2), wallet(3));
    chain.set_erc20_balance(token, hot, units(10));
    chain.set_erc20_balance(token, cold, units(5));
    chain.set_erc20_balance(token, broken, units(100));
    chain.fail_calls_involving(broken);
    let set = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": "10"}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[owner_of(&[hot, broken]), owner_of(&[cold, broken])],
            Freshness::Cached,
        )
        .await;
    assert_eq!(
        only(&results[0]).0,
        Outcome::Eligible,
        "the known part already passes"
    );
    let (outcome, detail) = only(&results[1]);
    assert!(
        outcome.is_unknown(),
        "the broken wallet could hold anything: {outcome:?}"
    );
    assert!(detail.contains("without revert data"), "{detail}");

    // Once the read works again, the broken wallet's balance counts.
    chain.heal_calls_involving(broken);
    let healed = eval
        .evaluate(
            COMMUNITY,
            &set,
            &owner_of(&[cold, broken]),
            Freshness::Cached,
        )
        .await;
    assert_eq!(only(&healed).0, Outcome::Eligible);
}
