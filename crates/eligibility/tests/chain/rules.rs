//! Each rule type against real chain reads.

use eligibility::fake_chain::FakeContract;
use eligibility::{ChainError, Freshness, MemberFacts, Outcome, UnknownReason};
use serde_json::json;

use super::*;

fn outcome_of(eval: &eligibility::MemberEvaluation, rule: u128) -> Outcome {
    eval.get(id(rule))
        .unwrap_or_else(|| panic!("rule {rule} has no outcome"))
        .outcome
        .clone()
}

#[tokio::test]
async fn token_balance_meets_and_misses_the_threshold() {
    let chain = chain().await;
    let token = contract(1);
    let (rich, poor, empty) = (wallet(1), wallet(2), wallet(3));
    chain.set_erc20_balance(token, rich, units(1_000));
    chain.set_erc20_balance(token, poor, units(999));
    let set = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": "1000"}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});

    let members = [
        member(rich),
        member(poor),
        member(empty),
        MemberFacts::default(),
    ];
    let results = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;
    let outcomes: Vec<Outcome> = results.iter().map(|r| outcome_of(r, 1)).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Eligible,
            Outcome::NotEligible,
            Outcome::NotEligible,
            Outcome::NotEligible
        ]
    );
    assert_eq!(results[1].outcomes[0].detail, "balance 999 (needs 1000)");
    assert_eq!(results[3].outcomes[0].detail, "no wallet linked");
}

#[tokio::test]
async fn huge_balances_compare_in_256_bits() {
    let chain = chain().await;
    let token = contract(1);
    let whale = wallet(1);
    // 10^30 base units: far past u64 and f64's exact range.
    let min = "1000000000000000000000000000000";
    chain.set_erc20_balance(token, whale, min.parse().expect("u256"));
    chain.set_erc20_balance(
        token,
        wallet(2),
        "999999999999999999999999999999".parse().expect("u256"),
    );
    let set = rules([rule(
        1,
        "token_balance",
        Some(token),
        json!({"min_balance": min}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[member(whale), member(wallet(2))],
            Freshness::Cached,
        )
        .await;
    assert_eq!(outcome_of(&results[0], 1), Outcome::Eligible);
    assert_eq!(outcome_of(&results[1], 1), Outcome::NotEligible);
}

#[tokio::test]
async fn erc721_counts_any_token_or_named_tokens() {
    let chain = chain().await;
    let nft = contract(2);
    let (alice, bob) = (wallet(1), wallet(2));
    chain.set_erc721_owner(nft, units(1), Some(alice));
    chain.set_erc721_owner(nft, units(2), Some(alice));
    chain.set_erc721_owner(nft, units(3), Some(bob));
    let set = rules([
        rule(
            1,
            "nft_ownership",
            Some(nft),
            json!({"standard": "erc721", "min_count": 2}),
        ),
        rule(
            2,
            "nft_ownership",
            Some(nft),
            // Token 9 was never minted: ownerOf reverts, which counts as
            // "not owned" rather than as a failure.
            json!({"standard": "erc721", "min_count": 1, "token_ids": ["3", "9"]}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[member(alice), member(bob)],
            Freshness::Cached,
        )
        .await;
    assert_eq!(outcome_of(&results[0], 1), Outcome::Eligible);
    assert_eq!(outcome_of(&results[0], 2), Outcome::NotEligible);
    assert_eq!(outcome_of(&results[1], 1), Outcome::NotEligible);
    assert_eq!(outcome_of(&results[1], 2), Outcome::Eligible);
}

#[tokio::test]
async fn erc1155_sums_balances_of_the_named_ids() {
    let chain = chain().await;
    let multi = contract(3);
    let (alice, bob) = (wallet(1), wallet(2));
    chain.set_erc1155_balance(multi, alice, units(1), units(2));
    chain.set_erc1155_balance(multi, alice, units(2), units(1));
    chain.set_erc1155_balance(multi, bob, units(1), units(2));
    // Bob's id 5 does not count: it is not named by the rule.
    chain.set_erc1155_balance(multi, bob, units(5), units(100));
    let set = rules([rule(
        1,
        "nft_ownership",
        Some(multi),
        json!({"standard": "erc1155", "min_count": 3, "token_ids": ["1", "2"]}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let results = eval
        .evaluate_many(
            COMMUNITY,
            &set,
            &[member(alice), member(bob)],
            Freshness::Cached,
        )
        .await;
    assert_eq!(outcome_of(&results[0], 1), Outcome::Eligible);
    assert_eq!(outcome_of(&results[1], 1), Outcome::NotEligible);
}

#[tokio::test]
async fn erc1155_without_multicall_uses_balance_of_batch() {
    let chain = chain().await;
    let multi = contract(3);
    chain.set_erc1155_balance(multi, wallet(1), units(7), units(1));
    let set = rules([rule(
        1,
        "nft_ownership",
        Some(multi),
        json!({"standard": "erc1155", "min_count": 1, "token_ids": ["7", "8"]}),
    )]);
    let eval = evaluator(vec![chain.url()], |c| c.multicall_address = None);
    let members: Vec<_> = (1..=20).map(|n| member(wallet(n))).collect();
    let results = eval
        .evaluate_many(COMMUNITY, &set, &members, Freshness::Cached)
        .await;
    assert_eq!(outcome_of(&results[0], 1), Outcome::Eligible);
    assert!(results[1..]
        .iter()
        .all(|r| outcome_of(r, 1) == Outcome::NotEligible));
    assert_eq!(chain.eth_calls(), 1, "40 balances in one balanceOfBatch");
}

#[tokio::test]
async fn score_threshold_needs_no_chain() {
    let chain = chain().await;
    let set = rules([rule(1, "score_threshold", None, json!({"min_score": 50}))]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let high = MemberFacts {
        wallets: vec![],
        score: 50,
    };
    let low = MemberFacts {
        wallets: vec![wallet(1)],
        score: 49,
    };
    let results = eval
        .evaluate_many(COMMUNITY, &set, &[high, low], Freshness::Cached)
        .await;
    assert_eq!(outcome_of(&results[0], 1), Outcome::Eligible);
    assert_eq!(outcome_of(&results[1], 1), Outcome::NotEligible);
    assert_eq!(chain.requests(), 0);
}

#[tokio::test]
async fn custom_rules_combine_with_unknowns_only_where_they_matter() {
    let chain = chain().await;
    let token = contract(1);
    let alice = wallet(1);
    chain.set_erc20_balance(token, alice, units(5));
    let set = rules([
        rule(
            1,
            "token_balance",
            Some(token),
            json!({"min_balance": "10"}),
        ),
        rule(2, "score_threshold", None, json!({"min_score": 10})),
        rule(3, "score_threshold", None, json!({"min_score": 100})),
        rule(
            10,
            "custom",
            None,
            json!({"op": "all", "rules": [id(1).to_string(), id(2).to_string()]}),
        ),
        rule(
            11,
            "custom",
            None,
            json!({"op": "any", "rules": [id(1).to_string(), id(2).to_string()]}),
        ),
        rule(
            12,
            "custom",
            None,
            json!({"op": "at_least", "n": 2, "rules": [id(1).to_string(), id(2).to_string(), id(3).to_string()]}),
        ),
        rule(
            13,
            "custom",
            None,
            json!({"op": "any", "rules": [id(1).to_string(), id(3).to_string()]}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let someone = MemberFacts {
        wallets: vec![alice],
        score: 20,
    };

    // Chain up: balance 5 < 10, score 20 passes rule 2 only.
    let up = eval
        .evaluate(COMMUNITY, &set, &someone, Freshness::Fresh)
        .await;
    assert_eq!(outcome_of(&up, 10), Outcome::NotEligible);
    assert_eq!(outcome_of(&up, 11), Outcome::Eligible);
    assert_eq!(outcome_of(&up, 12), Outcome::NotEligible);
    assert_eq!(outcome_of(&up, 13), Outcome::NotEligible);

    // Chain down: rule 1 is unknown.
    chain.set_fault(eligibility::fake_chain::Fault::Unavailable);
    let down = eval
        .evaluate(COMMUNITY, &set, &someone, Freshness::Fresh)
        .await;
    assert!(outcome_of(&down, 1).is_unknown());
    assert!(outcome_of(&down, 10).is_unknown(), "all(unknown, true)");
    assert_eq!(
        outcome_of(&down, 11),
        Outcome::Eligible,
        "any(unknown, true)"
    );
    assert!(
        outcome_of(&down, 12).is_unknown(),
        "1 met + 1 unknown of 2 needed"
    );
    match outcome_of(&down, 13) {
        Outcome::Unknown {
            reason: UnknownReason::Undecided { unknown },
        } => assert_eq!(unknown, vec![id(1)]),
        other => panic!("any(unknown, false) should be undecided, got {other:?}"),
    }
}

#[tokio::test]
async fn custom_rule_with_missing_reference_or_cycle_is_unknown_and_reported() {
    let chain = chain().await;
    let set = eligibility::RuleSet::new([
        rule(
            1,
            "custom",
            None,
            json!({"op": "any", "rules": [id(2).to_string()]}),
        ),
        rule(
            2,
            "custom",
            None,
            json!({"op": "any", "rules": [id(1).to_string()]}),
        ),
        rule(
            3,
            "custom",
            None,
            json!({"op": "all", "rules": [id(404).to_string()]}),
        ),
    ]);
    let problems = set.problems();
    assert_eq!(
        problems.iter().map(|p| p.rule).collect::<Vec<_>>(),
        vec![id(1), id(2), id(3)]
    );
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &MemberFacts::default(), Freshness::Cached)
        .await;
    assert!(matches!(
        outcome_of(&result, 1),
        Outcome::Unknown {
            reason: UnknownReason::Cycle { .. }
        }
    ));
    let missing = result.get(id(3)).expect("rule 3");
    assert!(
        missing.detail.contains(&id(404).to_string()),
        "{}",
        missing.detail
    );
}

#[tokio::test]
async fn unconfigured_chain_is_unknown() {
    let chain = chain().await;
    let spec = eligibility::RuleSpec::parse(
        "token_balance",
        Some("elsewhere"),
        Some("0x0101010101010101010101010101010101010101"),
        &json!({"min_balance": "1"}),
    )
    .expect("valid rule");
    let set = eligibility::RuleSet::new([eligibility::RuleDef {
        id: id(1),
        enabled: true,
        spec,
    }]);
    let eval = evaluator(vec![chain.url()], |_| {});
    assert!(!eval.has_chain("elsewhere"));
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    assert_eq!(
        outcome_of(&result, 1),
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::Unconfigured {
                chain: "elsewhere".into()
            })
        }
    );
}

#[tokio::test]
async fn contract_without_code_is_unknown_with_an_explanation() {
    let chain = chain().await;
    let set = rules([rule(
        1,
        "token_balance",
        Some(contract(9)),
        json!({"min_balance": "1"}),
    )]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    let o = result.get(id(1)).expect("rule 1");
    assert!(o.outcome.is_unknown(), "{o:?}");
    assert!(o.detail.contains("no data"), "{}", o.detail);
}

#[tokio::test]
async fn a_reverting_read_in_a_multicall_does_not_spoil_the_others() {
    let chain = chain().await;
    let token = contract(1);
    let nft = contract(2);
    chain.set_erc20_balance(token, wallet(1), units(5));
    // An ERC-721 asked for an ERC-1155 balance reverts inside the multicall.
    chain.deploy(nft, FakeContract::Erc721);
    let set = rules([
        rule(1, "token_balance", Some(token), json!({"min_balance": "5"})),
        rule(
            2,
            "nft_ownership",
            Some(nft),
            json!({"standard": "erc1155", "min_count": 1, "token_ids": ["1"]}),
        ),
    ]);
    let eval = evaluator(vec![chain.url()], |_| {});
    let result = eval
        .evaluate(COMMUNITY, &set, &member(wallet(1)), Freshness::Cached)
        .await;
    assert_eq!(outcome_of(&result, 1), Outcome::Eligible);
    assert!(outcome_of(&result, 2).is_unknown());
    assert_eq!(chain.eth_calls(), 1, "both reads in one multicall");
}
