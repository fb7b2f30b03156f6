//! Dashboard login and sessions, against the simulator's OAuth2 over HTTP:
//! state and PKCE, who sees which community, permission re-reads, CSRF,
//! security headers, cookies and logout.

mod common;
mod web_common;

use std::time::Duration;

use discord_sim::permissions;
use sha2::{Digest, Sha256};
use testkit::eventually::eventually;
use web_common::{query_param, Browser, Dash, Options};

const WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_discord_with_state_and_pkce_lists_the_community() {
    let dash = Dash::start("web_login").await;
    let admin = dash.admin(4_242_001);
    let mut browser = dash.browser();
    let authorize = browser.start_login().await;
    assert!(authorize.starts_with(&format!("{}/oauth2/authorize?", dash.sim.api_url())));
    let state = query_param(&authorize, "state").expect("a state");
    assert!(state.len() >= 43, "state carries 256 bits");
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&authorize, "code_challenge").map(|c| c.len()),
        Some(43)
    );
    assert_eq!(
        query_param(&authorize, "redirect_uri"),
        Some(format!("{}/login/callback", dash.api.url))
    );
    assert_eq!(
        query_param(&authorize, "scope").as_deref(),
        Some("identify guilds")
    );
    assert!(
        browser.cookies.contains_key("gatehouse_login"),
        "the pending login is in a cookie"
    );

    let callback = dash.approve(&authorize, admin).await;
    assert_eq!(query_param(&callback, "state"), Some(state));
    let signed_in = browser.get_url(&callback).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location(), Some("/dashboard"));
    assert!(
        !browser.cookies.contains_key("gatehouse_login"),
        "the login cookie is spent"
    );

    // The cookie: HttpOnly, SameSite=Lax, whole site, not Secure on http.
    let cookie = signed_in
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("gatehouse_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} has {flag}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain http: no Secure flag ({cookie})"
    );

    let list = browser.get("/dashboard").await;
    assert_eq!(list.status, 200);
    assert!(list
        .body
        .contains(&format!("id=\"community-{}\"", dash.guild)));
    assert!(
        !list.body.contains(&format!("community-{}", dash.botless)),
        "a server without the bot is not listed"
    );
    let overview = browser.get(&format!("/dashboard/{}", dash.guild)).await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Role sync"));

    // Only a hash of the session id is stored; the Discord tokens are sealed.
    let id = browser.session().expect("a session").clone();
    let stored: Vec<Vec<u8>> = dash.api.db.column("SELECT id_hash FROM web_sessions").await;
    assert_eq!(stored, vec![Sha256::digest(id.as_bytes()).to_vec()]);
    let plain = dash
        .api
        .db
        .count(&format!(
            "SELECT count(*) FROM web_sessions WHERE position(convert_to('{id}', 'UTF8') in id_hash) > 0
                OR position('access_token'::bytea in sealed_tokens) > 0
                OR position('Bearer'::bytea in sealed_tokens) > 0"
        ))
        .await;
    assert_eq!(
        plain, 0,
        "neither the id nor the tokens are stored in the clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_has_a_strict_csp_and_no_sniffing_or_referrer() {
    let dash = Dash::start("web_headers").await;
    let admin = dash.admin(4_242_002);
    let mut browser = dash.login(admin).await;
    for path in [
        "/login".to_owned(),
        "/dashboard".to_owned(),
        format!("/dashboard/{}/rules", dash.guild),
        format!("/dashboard/{}/nope-not-a-page/x/y", dash.guild),
        "/dashboard/1/rules".to_owned(),
        "/assets/dashboard.js".to_owned(),
    ] {
        let page = browser.get(&path).await;
        let csp = page.header("content-security-policy").unwrap_or_default();
        if path.contains("nope-not-a-page") {
            assert_eq!(page.status, 404);
            assert!(
                page.body.contains("Not found"),
                "the dashboard's own 404 page"
            );
        }
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP {csp:?} has {directive}"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            page.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            page.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
    let page = browser
        .get(&format!("/dashboard/{}/rules/new", dash.guild))
        .await;
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(page.body.contains(r#"<script src="/assets/dashboard.js""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_public_address_makes_the_cookie_secure_and_host_prefixed() {
    let public = "https://dashboard.example";
    let dash = Dash::start_with(
        "web_https",
        Options {
            public_url: Some(public.to_owned()),
            ..Options::default()
        },
    )
    .await;
    let admin = dash.admin(4_242_003);
    let mut browser = dash.browser();
    let authorize = browser.start_login().await;
    assert!(browser.cookies.contains_key("__Host-gatehouse_login"));
    assert_eq!(
        query_param(&authorize, "redirect_uri").as_deref(),
        Some("https://dashboard.example/login/callback")
    );
    let callback = dash.approve(&authorize, admin).await;
    assert!(callback.starts_with(public));
    let signed_in = browser.get_url(&callback).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let cookie = signed_in
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-gatehouse_session="))
        .expect("a __Host- session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
        assert!(cookie.contains(flag), "{cookie} has {flag}");
    }
    assert!(
        !cookie.contains("Domain="),
        "__Host- cookies name no domain"
    );
    assert_eq!(browser.get("/dashboard").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_state_is_refused_and_signs_nobody_in() {
    let dash = Dash::start("web_state").await;
    let admin = dash.admin(4_242_004);

    // A state that is not the one this browser was given.
    let mut browser = dash.browser();
    let authorize = browser.start_login().await;
    let callback = dash.approve(&authorize, admin).await;
    let state = query_param(&callback, "state").expect("a state");
    let forged = callback.replace(&state, "forged-state-forged-state-forged-state-forge");
    let page = browser.get_url(&forged).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("did not match"), "{}", page.body);
    assert!(browser.session().is_none());

    // No state at all.
    let mut browser = dash.browser();
    let authorize = browser.start_login().await;
    let callback = dash.approve(&authorize, admin).await;
    let code = query_param(&callback, "code").expect("a code");
    let page = browser.get(&format!("/login/callback?code={code}")).await;
    assert_eq!(page.status, 400);
    assert!(browser.session().is_none());

    // A callback in a browser that never started a login (login CSRF):
    // the right state and code, but not this browser's login cookie.
    let mut starter = dash.browser();
    let authorize = starter.start_login().await;
    let callback = dash.approve(&authorize, admin).await;
    let mut victim = dash.browser();
    let page = victim.get_url(&callback).await;
    assert_eq!(page.status, 400);
    assert!(victim.session().is_none());

    // Discord's refusal comes back as a page, not a session.
    let mut browser = dash.browser();
    let authorize = browser.start_login().await;
    let state = query_param(&authorize, "state").expect("a state");
    let page = browser
        .get(&format!(
            "/login/callback?error=access_denied&state={state}"
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("cancelled"));

    assert_eq!(dash.session_rows().await, 0, "no session was created");
    assert_eq!(
        dash.browser().get("/dashboard").await.location(),
        Some("/login")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_manage_server_a_person_sees_no_community_and_gets_404() {
    let dash = Dash::start("web_forbidden").await;
    // Manage Roles and Kick Members, but neither Administrator nor Manage Server.
    let member = dash.person(4_242_005, "member", 0x1000_0000 | 0x2);
    let mut browser = dash.login(member).await;
    let list = browser.get("/dashboard").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("no-communities"), "{}", list.body);
    assert!(!list.body.contains(&dash.guild.to_string()));
    let csrf = list.csrf();
    let base = format!("/dashboard/{}", dash.guild);
    for path in [
        "",
        "/rules",
        "/members",
        "/audit",
        "/keys",
        "/webhooks",
        "/badges",
        "/sync.json",
        "/rules/new",
    ] {
        let page = browser.get(&format!("{base}{path}")).await;
        assert_eq!(page.status, 404, "{base}{path}");
    }
    let page = browser
        .post(
            &format!("{base}/rules/preview"),
            &[
                ("csrf", &csrf),
                ("role_id", "1234"),
                ("rule_type", "score_threshold"),
                ("parameters", r#"{"min_score": 1}"#),
            ],
        )
        .await;
    assert_eq!(page.status, 404);
    // A community that does not exist answers the same.
    assert_eq!(browser.get("/dashboard/999999999/rules").await.status, 404);
    assert_eq!(browser.get("/dashboard/not-a-guild").await.status, 404);

    // An administrator of a server the bot is not in sees nothing of it.
    let admin = dash.admin(4_242_006);
    let mut browser = dash.login(admin).await;
    assert_eq!(
        browser
            .get(&format!("/dashboard/{}", dash.botless))
            .await
            .status,
        404
    );
    assert_eq!(
        browser
            .get(&format!("/dashboard/{}", dash.guild))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_removed_at_discord_ends_access_after_the_reread_period() {
    let dash = Dash::start_with(
        "web_reread",
        Options {
            permission_refresh: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let admin = dash.admin(4_242_007);
    let mut browser = dash.login(admin).await;
    let page = format!("/dashboard/{}/rules", dash.guild);
    assert_eq!(browser.get(&page).await.status, 200);

    dash.sim
        .control()
        .set_member_permissions(dash.guild, admin, 0)
        .expect("permissions");
    let browser = tokio::sync::Mutex::new(browser);
    eventually("the lost permission to take effect", WITHIN, || async {
        browser.lock().await.get(&page).await.status == 404
    })
    .await;
    let mut browser = browser.into_inner();
    assert!(!browser
        .get("/dashboard")
        .await
        .body
        .contains(&format!("community-{}", dash.guild)));

    // Given back, it returns on the next re-read.
    dash.sim
        .control()
        .set_member_permissions(dash.guild, admin, permissions::ADMINISTRATOR)
        .expect("permissions");
    let browser = tokio::sync::Mutex::new(browser);
    eventually("the permission to come back", WITHIN, || async {
        browser.lock().await.get(&page).await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_discord_is_unreachable_at_the_reread_writes_fail_closed() {
    let mut dash = Dash::start_with(
        "web_unreachable",
        Options {
            permission_refresh: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let admin = dash.admin(4_242_008);
    let mut browser = dash.login(admin).await;
    let base = format!("/dashboard/{}", dash.guild);
    let csrf = browser.get(&format!("{base}/rules/new")).await.csrf();
    // Discord goes away.
    let sim = std::mem::replace(
        &mut dash.sim,
        discord_sim::Simulator::start(discord_sim::SimConfig::default())
            .await
            .expect("a placeholder simulator"),
    );
    sim.shutdown().await;
    let browser = tokio::sync::Mutex::new(browser);
    eventually(
        "the re-read to find Discord unreachable",
        WITHIN,
        || async {
            browser
                .lock()
                .await
                .get(&format!("{base}/rules"))
                .await
                .body
                .contains("changes are paused")
        },
    )
    .await;
    let mut browser = browser.into_inner();
    let page = browser
        .post(
            &format!("{base}/rules"),
            &[
                ("csrf", &csrf),
                ("role_id", "1200000000000000077"),
                ("rule_type", "score_threshold"),
                ("parameters", r#"{"min_score": 1}"#),
            ],
        )
        .await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("Discord could not be reached"));
    assert_eq!(
        dash.api
            .db
            .count("SELECT count(*) FROM eligibility_rules")
            .await,
        0,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_the_right_csrf_token_is_403_and_stores_nothing() {
    let dash = Dash::start("web_csrf").await;
    let admin = dash.admin(4_242_009);
    let mut browser = dash.login(admin).await;
    let other = dash.login(dash.admin(4_242_010)).await;
    let base = format!("/dashboard/{}", dash.guild);
    let csrf = browser.get(&format!("{base}/rules/new")).await.csrf();
    let other_csrf = {
        let mut other = other;
        other.get(&format!("{base}/rules/new")).await.csrf()
    };
    assert_ne!(csrf, other_csrf, "each session has its own token");
    let rule = [
        ("role_id", "1200000000000000042"),
        ("rule_type", "score_threshold"),
        ("parameters", r#"{"min_score": 1}"#),
    ];
    let audit_before = dash.api.audit_rows().await;
    for token in [
        None,
        Some(""),
        Some("not-the-token"),
        Some(other_csrf.as_str()),
    ] {
        let mut form = rule.to_vec();
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        for path in [
            format!("{base}/rules"),
            format!("{base}/keys"),
            "/logout".to_owned(),
        ] {
            let page = browser.post(&path, &form).await;
            assert_eq!(page.status, 403, "{path} with {token:?}");
            assert!(page.body.contains("Forbidden"));
        }
    }
    // A request from outside the browser's session has no token either.
    let page = Browser::new(&dash.api.url)
        .post(&format!("{base}/rules"), &rule)
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(
        dash.api
            .db
            .count("SELECT count(*) FROM eligibility_rules")
            .await,
        0
    );
    assert_eq!(dash.api.db.count("SELECT count(*) FROM api_keys").await, 0);
    assert_eq!(dash.api.audit_rows().await, audit_before);
    assert_eq!(
        dash.session_rows().await,
        2,
        "logout without a token did nothing"
    );

    // With the session's own token the same write goes through.
    let page = browser
        .post(
            &format!("{base}/rules"),
            &[("csrf", csrf.as_str()), rule[0], rule[1], rule[2]],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        dash.api
            .db
            .count("SELECT count(*) FROM eligibility_rules")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_deletes_the_session() {
    let dash = Dash::start("web_logout").await;
    let admin = dash.admin(4_242_011);
    let mut browser = dash.login(admin).await;
    let stolen = browser.session().expect("a session").clone();
    let csrf = browser.get("/dashboard").await.csrf();
    assert_eq!(dash.session_rows().await, 1);
    let page = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/login"));
    assert!(browser.session().is_none(), "the cookie is cleared");
    assert_eq!(dash.session_rows().await, 0, "the row is gone");
    // The old id is worthless, even presented again.
    let mut replay = dash.browser();
    replay.cookies.insert("gatehouse_session".into(), stolen);
    let page = replay.get("/dashboard").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/login"));
    assert_eq!(
        replay
            .get(&format!("/dashboard/{}", dash.guild))
            .await
            .location(),
        Some("/login")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_reachable_only_through_their_functions_and_expire() {
    let dash = Dash::start("web_expiry").await;
    let admin = dash.admin(4_242_012);
    let mut browser = dash.login(admin).await;
    assert_eq!(browser.get("/dashboard").await.status, 200);

    // The runtime role cannot list or read sessions, only call the functions.
    let app = dash.api.db.app_direct().await;
    for sql in [
        "SELECT count(*) FROM web_sessions",
        "UPDATE web_sessions SET expires_at = now() + interval '1 year'",
        "DELETE FROM web_sessions",
    ] {
        let refused = app.query(sql, &[]).await.expect_err(sql);
        let message = refused
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains("permission denied"), "{sql}: {refused:?}");
    }
    assert_eq!(dash.session_rows().await, 1);

    // Past its absolute expiry, a session is refused and deleted.
    dash.api
        .db
        .admin()
        .await
        .execute(
            "UPDATE web_sessions SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("expire");
    let page = browser.get("/dashboard").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/login"));
    assert_eq!(dash.session_rows().await, 0);

    // Idle too long: the same.
    let mut browser = dash.login(admin).await;
    dash.api
        .db
        .admin()
        .await
        .execute(
            "UPDATE web_sessions SET last_seen_at = now() - interval '1 day'",
            &[],
        )
        .await
        .expect("idle");
    assert_eq!(browser.get("/dashboard").await.location(), Some("/login"));
    assert_eq!(dash.session_rows().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_at_the_reread() {
    let dash = Dash::start_with(
        "web_refresh",
        Options {
            permission_refresh: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let admin = dash.admin(4_242_013);
    let browser = dash.login(admin).await;
    let page = format!("/dashboard/{}/rules", dash.guild);
    assert!(dash.sim.control().expire_oauth_tokens() >= 1);
    let expired_at = chrono::Utc::now();
    let browser = tokio::sync::Mutex::new(browser);
    eventually(
        "a re-read after the access token expired",
        WITHIN,
        || async {
            let answer = browser.lock().await.get(&page).await;
            assert_eq!(answer.status, 200, "still signed in: {}", answer.body);
            assert!(!answer.body.contains("changes are paused"));
            let rows: Vec<chrono::DateTime<chrono::Utc>> = dash
                .api
                .db
                .column("SELECT permissions_checked_at FROM web_sessions")
                .await;
            rows.first().is_some_and(|at| *at > expired_at)
        },
    )
    .await;
    // The refreshed token reads Discord: a lost permission still ends access.
    dash.sim
        .control()
        .set_member_permissions(dash.guild, admin, 0)
        .expect("permissions");
    eventually("the lost permission to take effect", WITHIN, || async {
        browser.lock().await.get(&page).await.status == 404
    })
    .await;
}
