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

async fn audited(dash: &Dash, action: &str, admin: wire::UserId) -> i64 {
    dash.api
        .db
        .count(&format!(
            "SELECT count(*) FROM audit_logs WHERE action = '{action}'
               AND actor_type = 'admin' AND actor_id = 'discord:{admin}'"
        ))
        .await
}

fn between<'b>(body: &'b str, start: &str, end: &str) -> &'b str {
    let from = body.find(start).map_or(0, |i| i + start.len());
    let to = body[from..].find(end).map_or(body.len(), |i| from + i);
    &body[from..to]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_badges_and_webhooks_are_written_through_the_domain_as_the_discord_user() {
    let dash = Dash::start("web_pages").await;
    dash.api.member(dash.community, 901, None, &[]).await;
    let admin = dash.admin(4_343_003);
    let mut browser = dash.login(admin).await;
    let base = format!("/dashboard/{}", dash.guild);
    let csrf = browser.get(&format!("{base}/keys")).await.csrf();

    // An API key: its secret is shown once and works on /v1.
    let refused = browser
        .post(
            &format!("{base}/keys"),
            &[("csrf", &csrf), ("name", "no scopes")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("at least one scope"));
    let created = browser
        .post(
            &format!("{base}/keys"),
            &[
                ("csrf", &csrf),
                ("name", "export"),
                ("scope", "read"),
                ("scope", "rules:write"),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = between(&created.body, r#"id="key-secret">"#, "<").to_owned();
    assert!(secret.starts_with("ghk_"), "{secret}");
    assert!(
        !browser
            .get(&format!("{base}/keys"))
            .await
            .body
            .contains(&secret),
        "shown once"
    );
    let v1 = dash
        .api
        .get("/v1/rules", &secret)
        .send()
        .await
        .expect("/v1");
    assert_eq!(v1.status().as_u16(), 200);
    assert_eq!(audited(&dash, "api_key.created", admin).await, 1);
    let key: Vec<uuid::Uuid> = dash.api.db.column("SELECT id FROM api_keys").await;
    let revoked = browser
        .post(
            &format!("{base}/keys/{}/revoke", key[0]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, 303);
    let v1 = dash
        .api
        .get("/v1/rules", &secret)
        .send()
        .await
        .expect("/v1");
    assert_eq!(v1.status().as_u16(), 401);
    assert_eq!(audited(&dash, "api_key.revoked", admin).await, 1);

    // A badge, defined and granted by hand.
    let defined = browser
        .post(
            &format!("{base}/badges"),
            &[
                ("csrf", &csrf),
                ("slug", "helper"),
                ("name", "Helper <b>"),
                ("evaluator", "manual_grant"),
                ("criteria", "{}"),
            ],
        )
        .await;
    assert_eq!(defined.status, 303, "{}", defined.body);
    assert_eq!(audited(&dash, "badge.defined", admin).await, 1);
    let granted = browser
        .post(
            &format!("{base}/badges/helper/grant"),
            &[
                ("csrf", &csrf),
                ("user_id", "901"),
                ("reason", "answers questions"),
            ],
        )
        .await;
    assert_eq!(
        granted.location(),
        Some(format!("{base}/badges?done=granted").as_str())
    );
    let badges = browser.get(&format!("{base}/badges")).await;
    assert!(
        badges.body.contains("Helper &lt;b&gt;"),
        "names are escaped"
    );
    assert!(!badges.body.contains("Helper <b>"));
    assert_eq!(
        dash.api.db.count("SELECT count(*) FROM badge_awards").await,
        1
    );

    // A webhook: secret shown once, listed, deleted.
    let registered = browser
        .post(
            &format!("{base}/webhooks"),
            &[
                ("csrf", &csrf),
                ("url", "https://hooks.example.com/gatehouse"),
                ("event", "role.granted"),
                ("event", "rule.changed"),
            ],
        )
        .await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert!(registered.body.contains(r#"id="new-webhook""#));
    assert_eq!(audited(&dash, "webhook.registered", admin).await, 1);
    let refused = browser
        .post(
            &format!("{base}/webhooks"),
            &[
                ("csrf", &csrf),
                ("url", "http://10.0.0.1/x"),
                ("event", "role.granted"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let hook: Vec<uuid::Uuid> = dash.api.db.column("SELECT id FROM webhooks").await;
    assert_eq!(hook.len(), 1);
    let deliveries = browser
        .get(&format!("{base}/webhooks/{}/deliveries", hook[0]))
        .await;
    assert_eq!(deliveries.status, 200);
    let deleted = browser
        .post(
            &format!("{base}/webhooks/{}/delete", hook[0]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(deleted.status, 303);
    assert_eq!(audited(&dash, "webhook.deleted", admin).await, 1);

    // The overview's poll.
    let sync = browser.get(&format!("{base}/sync.json")).await;
    assert_eq!(sync.status, 200);
    let status: serde_json::Value = serde_json::from_str(&sync.body).expect("JSON");
    assert_eq!(status["members"], 1);
    assert!(status["percent_done"].is_i64());
}
