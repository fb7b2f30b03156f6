//! Dashboard pages over the domain: a rule goes through form → preview →
//! save and is audited as the Discord user; members show why they stand
//! where they do; keys, badges and webhooks pages write through the domain.

mod common;
mod web_common;

use domain::CommunityRef;
use web_common::Dash;

const ROLE: &str = "1200000000000000555";

async fn scores(dash: &Dash, community: CommunityRef, scores: &[(u64, i64)]) {
    for (user, score) in scores {
        dash.api.member(community, *user, None, &[]).await;
        dash.api
            .db
            .admin()
            .await
            .execute(
                &format!("UPDATE profiles SET score = {score} WHERE discord_user_id = {user}"),
                &[],
            )
            .await
            .expect("a score");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_is_previewed_then_saved_and_audited_as_the_discord_user() {
    let dash = Dash::start("web_rules").await;
    scores(&dash, dash.community, &[(701, 50), (702, 150), (703, 300)]).await;
    let admin = dash.admin(4_343_001);
    let mut browser = dash.login(admin).await;
    let base = format!("/dashboard/{}", dash.guild);

    let form_page = browser.get(&format!("{base}/rules/new")).await;
    assert_eq!(form_page.status, 200);
    assert!(
        form_page.body.contains(r#"id="preview""#),
        "the form's button is Preview"
    );
    assert!(
        !form_page.body.contains(r#"id="save""#),
        "no Save before a preview"
    );
    let csrf = form_page.csrf();

    // A bad rule comes back with every problem, and nothing is stored.
    let bad = browser
        .post(
            &format!("{base}/rules/preview"),
            &[
                ("csrf", &csrf),
                ("role_id", "not-a-role"),
                ("rule_type", "score_threshold"),
                ("parameters", r#"{"min_scroe": 100}"#),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("role_id"), "{}", bad.body);
    assert!(bad.body.contains("parameters.min_scroe"), "{}", bad.body);
    assert!(bad.body.contains("not-a-role"), "what was typed is kept");

    let rule = [
        ("csrf", csrf.as_str()),
        ("role_id", ROLE),
        ("rule_type", "score_threshold"),
        ("chain", ""),
        ("contract_address", ""),
        ("parameters", r#"{"min_score": 100}"#),
        ("priority", "3"),
    ];
    let preview = browser.post(&format!("{base}/rules/preview"), &rule).await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains(r#"id="preview-result""#));
    assert!(preview.body.contains(&format!(r#"data-role="{ROLE}""#)));
    assert!(
        preview.body.contains(r#"data-gain="2""#),
        "two members would gain: {}",
        preview.body
    );
    assert!(preview.body.contains("+702") && preview.body.contains("+703"));
    assert!(!preview.body.contains("+701"));
    assert!(preview.body.contains(r#"id="save""#));
    assert_eq!(
        dash.api
            .db
            .count("SELECT count(*) FROM eligibility_rules")
            .await,
        0,
        "a preview writes nothing"
    );

    let saved = browser.post(&format!("{base}/rules"), &rule).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(
        saved.location(),
        Some(format!("{base}/rules?done=created").as_str())
    );
    assert_eq!(
        dash.api
            .db
            .count(&format!(
                "SELECT count(*) FROM eligibility_rules WHERE role_discord_id = {ROLE}
                   AND rule_type = 'score_threshold' AND priority = 3
                   AND parameters = '{{\"min_score\": 100}}'::jsonb"
            ))
            .await,
        1
    );
    assert_eq!(
        dash.api
            .db
            .count(&format!(
                "SELECT count(*) FROM audit_logs WHERE action = 'rule.created'
                   AND actor_type = 'admin' AND actor_id = 'discord:{admin}'"
            ))
            .await,
        1,
        "the audit row names the Discord user"
    );
    let list = browser.get(&format!("{base}/rules?done=created")).await;
    assert!(list.body.contains("Rule saved"));
    assert!(list.body.contains(ROLE));

    // Saving the same role again is refused on the form, not stored twice.
    let again = browser.post(&format!("{base}/rules"), &rule).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("already grants this role"));
    assert_eq!(
        dash.api
            .db
            .count("SELECT count(*) FROM eligibility_rules")
            .await,
        1
    );

    // The audit page shows who did it.
    let audit = browser.get(&format!("{base}/audit")).await;
    assert!(audit.body.contains(&format!("discord:{admin}")));
    assert!(audit.body.contains("rule.created"));

    // Disable through the list's button.
    let id: Vec<uuid::Uuid> = dash.api.db.column("SELECT id FROM eligibility_rules").await;
    let page = browser
        .post(
            &format!("{base}/rules/{}/disable", id[0]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(
        dash.api
            .db
            .count("SELECT count(*) FROM eligibility_rules WHERE NOT enabled")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_search_and_detail_show_each_rules_outcome() {
    let dash = Dash::start("web_members").await;
    scores(&dash, dash.community, &[(801, 5), (802, 20)]).await;
    let admin = dash.admin(4_343_002);
    let mut browser = dash.login(admin).await;
    let base = format!("/dashboard/{}", dash.guild);
    let list = browser.get(&format!("{base}/members")).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(r#"href="/dashboard/"#));
    assert!(list.body.contains(">801<") && list.body.contains(">802<"));
    let jump = browser.get(&format!("{base}/members?q=802")).await;
    assert_eq!(
        jump.location(),
        Some(format!("{base}/members/802").as_str())
    );
    assert_eq!(
        browser.get(&format!("{base}/members?q=zzz")).await.status,
        400
    );

    // A rule decided for one member: the detail shows the failing requirement.
    let csrf = list.csrf();
    let saved = browser
        .post(
            &format!("{base}/rules"),
            &[
                ("csrf", &csrf),
                ("role_id", ROLE),
                ("rule_type", "score_threshold"),
                ("parameters", r#"{"min_score": 10}"#),
            ],
        )
        .await;
    assert_eq!(saved.status, 303);
    let rule: Vec<uuid::Uuid> = dash.api.db.column("SELECT id FROM eligibility_rules").await;
    // What a worker's check records (as superuser: the test plays the worker).
    dash.api
        .db
        .admin()
        .await
        .execute(
            &format!(
                "INSERT INTO role_grants (community_id, profile_id, rule_id, role_discord_id, eligible, detail)
                 SELECT community_id, id, '{}', {ROLE}, false, 'score 5 (needs 10)'
                   FROM profiles WHERE discord_user_id = 801",
                rule[0]
            ),
            &[],
        )
        .await
        .expect("a decision");
    let detail = browser.get(&format!("{base}/members/801")).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.body.contains("not eligible"));
    assert!(detail.body.contains("score 5 (needs 10)"));
    assert_eq!(
        browser.get(&format!("{base}/members/999")).await.status,
        404
    );
}
