//! The simulated OAuth2 login over real HTTP: authorize with PKCE, token
//! exchange and refresh, and the user routes a Bearer token opens.

mod common;

use std::collections::HashMap;

use base64::Engine as _;
use common::*;
use discord_sim::{permissions, GuildsSpec, OAuth2Config, OAuthUser, SimConfig, Simulator};
use testkit::http::{request, Response};
use url::{form_urlencoded, Url};
use wire::{GuildId, UserId};

/// RFC 7636, appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://127.0.0.1:9/auth/callback";
const STATE: &str = "state-9f2c";
const SECRET: &str = "sim-client-secret";

fn user_id(n: u64) -> UserId {
    UserId::new(n).expect("non-zero")
}

fn client_id(sim: &Simulator) -> String {
    sim.config().application_id.to_string()
}

/// The dashboard's authorize request, with `changes` replacing or adding
/// parameters (an empty value drops one).
fn authorize_path(sim: &Simulator, changes: &[(&str, &str)]) -> String {
    let client_id = client_id(sim);
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "identify guilds"),
        ("state", STATE),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("prompt", "consent"),
    ];
    for (name, value) in changes {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/oauth2/authorize?{query}")
}

async fn get(sim: &Simulator, path: &str, headers: &[(&str, &str)]) -> Response {
    request(sim.api_addr(), "GET", path, headers, "").await
}

/// The query of a 302 to the dashboard's redirect URI.
fn redirected(response: &Response) -> HashMap<String, String> {
    assert_eq!(response.status, 302, "{response:?}");
    let location = response.header("location").expect("a Location header");
    let url = Url::parse(location).expect("an absolute URL");
    assert!(
        location.starts_with(&format!("{REDIRECT}?")),
        "redirects to the registered URI: {location}"
    );
    url.query_pairs().into_owned().collect()
}

async fn authorize_code(sim: &Simulator, user: UserId) -> String {
    let user = user.to_string();
    let response = get(sim, &authorize_path(sim, &[("login_as", &user)]), &[]).await;
    let query = redirected(&response);
    assert_eq!(query.get("state").map(String::as_str), Some(STATE));
    query.get("code").expect("a code").clone()
}

async fn token(sim: &Simulator, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    request(sim.api_addr(), "POST", "/api/oauth2/token", &all, &body).await
}

/// The code exchange with client credentials in the form and `changes`.
async fn exchange(sim: &Simulator, code: &str, changes: &[(&str, &str)]) -> Response {
    let client_id = client_id(sim);
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", &client_id),
        ("client_secret", SECRET),
    ];
    for (name, value) in changes {
        form.retain(|(n, _)| n != name);
        if !value.is_empty() {
            form.push((name, value));
        }
    }
    token(sim, &form, &[]).await
}

async fn access_token(sim: &Simulator, user: UserId) -> String {
    let code = authorize_code(sim, user).await;
    let response = exchange(sim, &code, &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    response.json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

async fn as_bearer(sim: &Simulator, path: &str, token: &str) -> Response {
    get(sim, path, &[("Authorization", &format!("Bearer {token}"))]).await
}

fn assert_oauth_error(response: &Response, status: u16, error: &str) {
    assert_eq!(response.status, status, "{response:?}");
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

fn assert_unauthorized(response: &Response) {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.json(),
        serde_json::json!({"message": "401: Unauthorized", "code": 0})
    );
}

fn guild_ids(response: &Response) -> Vec<String> {
    assert_eq!(response.status, 200, "{response:?}");
    response
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|g| g["id"].as_str().expect("an id string").to_owned())
        .collect()
}

/// Three guilds; Alice (not generated) administers the first, manages the
/// second (which the bot has left) and is not in the third.
struct World {
    sim: Simulator,
    alice: UserId,
    guilds: Vec<GuildId>,
}

async fn world() -> World {
    let sim = start(fast_config()).await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 3,
        members_per_guild: 2,
        roles_per_guild: 1,
    });
    let alice = user_id(4_242_424_242);
    control.add_oauth_user(OAuthUser {
        global_name: Some("Alice A.".into()),
        ..OAuthUser::new(alice, "alice")
    });
    control
        .set_member_permissions(guilds[0], alice, permissions::ADMINISTRATOR)
        .expect("guild 0");
    control
        .set_member_permissions(guilds[1], alice, permissions::MANAGE_GUILD)
        .expect("guild 1");
    control
        .remove_guild(guilds[1])
        .expect("the bot leaves guild 1");
    World { sim, alice, guilds }
}

#[tokio::test]
async fn authorization_code_with_pkce_logs_alice_in() {
    let World { sim, alice, guilds } = world().await;
    let code = authorize_code(&sim, alice).await;

    let response = exchange(&sim, &code, &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let tokens = response.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 604_800);
    assert_eq!(tokens["scope"], "identify guilds");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let access = tokens["access_token"].as_str().expect("an access token");

    for path in ["/api/v10/users/@me", "/api/users/@me"] {
        let me = as_bearer(&sim, path, access).await;
        assert_eq!(me.status, 200, "{me:?}");
        assert!(me.header("x-ratelimit-limit").is_some(), "{me:?}");
        let me = me.json();
        assert_eq!(me["id"], alice.to_string());
        assert_eq!(me["username"], "alice");
        assert_eq!(me["global_name"], "Alice A.");
        assert_eq!(me["discriminator"], "0");
        assert!(me["avatar"].is_null());
        assert!(me.get("email").is_none(), "no email scope: {me}");
    }

    let listed = as_bearer(&sim, "/api/v10/users/@me/guilds", access).await;
    assert_eq!(
        guild_ids(&listed),
        vec![guilds[0].to_string(), guilds[1].to_string()],
        "exactly the guilds Alice is in, with or without the bot"
    );
    let listed = listed.json();
    assert_eq!(listed[0]["permissions"], "8");
    assert_eq!(listed[1]["permissions"], "32");
    assert_eq!(listed[0]["owner"], false);
    assert_eq!(listed[0]["features"], serde_json::json!([]));
    assert!(listed[0]["name"].is_string());
    assert!(listed[0]["icon"].is_null());

    let unversioned = as_bearer(&sim, "/api/users/@me/guilds", access).await;
    assert_eq!(unversioned.json(), listed);
    sim.shutdown().await;
}

#[tokio::test]
async fn guild_list_pages_and_follows_membership() {
    let World { sim, alice, guilds } = world().await;
    let access = access_token(&sim, alice).await;
    let page = |query: String| {
        let (sim, access) = (&sim, &access);
        async move { as_bearer(sim, &format!("/api/v10/users/@me/guilds{query}"), access).await }
    };
    assert_eq!(
        guild_ids(&page("?limit=1".into()).await),
        vec![guilds[0].to_string()]
    );
    assert_eq!(
        guild_ids(&page(format!("?after={}", guilds[0])).await),
        vec![guilds[1].to_string()]
    );
    assert_eq!(
        guild_ids(&page(format!("?before={}&limit=1", guilds[2])).await),
        vec![guilds[1].to_string()]
    );
    let counted = page("?with_counts=true".into()).await.json();
    assert_eq!(counted[0]["approximate_member_count"], 3);
    assert_eq!(page("?limit=0".into()).await.status, 400);

    sim.control()
        .remove_member(guilds[0], alice)
        .expect("Alice leaves guild 0");
    assert_eq!(
        guild_ids(&page(String::new()).await),
        vec![guilds[1].to_string()]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn generated_members_log_in_with_permissions_from_their_roles() {
    let World { sim, guilds, .. } = world().await;
    let members = testkit::sim::member_ids(&sim, guilds[2]);
    let owner = sim.control().guild(guilds[2]).expect("guild 2").owner_id;
    let other = *members.iter().find(|m| **m != owner).expect("a non-owner");

    let listed = as_bearer(
        &sim,
        "/api/v10/users/@me/guilds",
        &access_token(&sim, owner).await,
    )
    .await
    .json();
    assert_eq!(listed[0]["id"], guilds[2].to_string());
    assert_eq!(listed[0]["owner"], true);
    assert_eq!(listed[0]["permissions"], permissions::ALL.to_string());

    let listed = as_bearer(
        &sim,
        "/api/v10/users/@me/guilds",
        &access_token(&sim, other).await,
    )
    .await
    .json();
    assert_eq!(listed[0]["owner"], false);
    // @everyone's permissions in a generated guild; neither admin bit.
    assert_eq!(listed[0]["permissions"], 0x64c40_u64.to_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn basic_client_auth_and_refresh_rotate_the_tokens() {
    let World { sim, alice, .. } = world().await;
    let code = authorize_code(&sim, alice).await;
    let basic = format!(
        "Basic {}",
        base64_encode(&format!("{}:{SECRET}", client_id(&sim)))
    );
    let response = token(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        &[("Authorization", &basic)],
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let first = response.json();
    let old_access = first["access_token"].as_str().expect("access");
    let old_refresh = first["refresh_token"].as_str().expect("refresh");

    let refreshed = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", old_refresh),
        ],
        &[("Authorization", &basic)],
    )
    .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let second = refreshed.json();
    let new_access = second["access_token"].as_str().expect("access");
    assert_ne!(new_access, old_access);
    assert_eq!(second["scope"], "identify guilds");

    assert_eq!(
        as_bearer(&sim, "/api/v10/users/@me", new_access)
            .await
            .json()["id"],
        alice.to_string()
    );
    assert_unauthorized(&as_bearer(&sim, "/api/v10/users/@me", old_access).await);
    let replayed = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", old_refresh),
        ],
        &[("Authorization", &basic)],
    )
    .await;
    assert_oauth_error(&replayed, 400, "invalid_grant");
    sim.shutdown().await;
}

fn base64_encode(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn a_wrong_verifier_is_refused_and_uses_the_code_up() {
    let World { sim, alice, .. } = world().await;
    let code = authorize_code(&sim, alice).await;
    let wrong = "x".repeat(43);
    assert_oauth_error(
        &exchange(&sim, &code, &[("code_verifier", &wrong)]).await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(&exchange(&sim, &code, &[]).await, 400, "invalid_grant");

    let code = authorize_code(&sim, alice).await;
    assert_oauth_error(
        &exchange(&sim, &code, &[("code_verifier", "")]).await,
        400,
        "invalid_request",
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reused_code_is_refused_and_revokes_its_token() {
    let World { sim, alice, .. } = world().await;
    let code = authorize_code(&sim, alice).await;
    let first = exchange(&sim, &code, &[]).await;
    assert_eq!(first.status, 200, "{first:?}");
    let access = first.json()["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_eq!(
        as_bearer(&sim, "/api/v10/users/@me", &access).await.status,
        200
    );

    assert_oauth_error(&exchange(&sim, &code, &[]).await, 400, "invalid_grant");
    assert_unauthorized(&as_bearer(&sim, "/api/v10/users/@me", &access).await);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let World { sim, alice, .. } = world().await;
    let code = authorize_code(&sim, alice).await;
    assert_eq!(sim.control().expire_oauth_codes(), 1);
    assert_oauth_error(&exchange(&sim, &code, &[]).await, 400, "invalid_grant");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_short_code_lifetime_comes_from_the_config() {
    let sim = start(SimConfig {
        oauth2: OAuth2Config {
            code_ttl_ms: 0,
            ..OAuth2Config::default()
        },
        ..fast_config()
    })
    .await;
    let alice = user_id(77);
    sim.control().add_oauth_user(OAuthUser::new(alice, "alice"));
    let code = authorize_code(&sim, alice).await;
    assert_oauth_error(&exchange(&sim, &code, &[]).await, 400, "invalid_grant");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_token_request_must_repeat_the_redirect_uri() {
    let World { sim, alice, .. } = world().await;
    let code = authorize_code(&sim, alice).await;
    let response = exchange(
        &sim,
        &code,
        &[("redirect_uri", "http://127.0.0.1:9/elsewhere")],
    )
    .await;
    assert_oauth_error(&response, 400, "invalid_grant");
    assert!(
        response.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("redirect_uri")),
        "{response:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_client_is_refused_with_401() {
    let World { sim, alice, .. } = world().await;
    let code = authorize_code(&sim, alice).await;
    for changes in [
        vec![("client_secret", "not-the-secret")],
        vec![("client_secret", "")],
        vec![("client_id", "1234")],
    ] {
        assert_oauth_error(
            &exchange(&sim, &code, &changes).await,
            401,
            "invalid_client",
        );
    }
    let bad_basic = format!(
        "Basic {}",
        base64_encode(&format!("{}:nope", client_id(&sim)))
    );
    let response = token(
        &sim,
        &[("grant_type", "authorization_code"), ("code", &code)],
        &[("Authorization", &bad_basic)],
    )
    .await;
    assert_oauth_error(&response, 401, "invalid_client");
    // A refused client does not burn the code.
    assert_eq!(exchange(&sim, &code, &[]).await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_or_missing_scopes_redirect_with_invalid_scope() {
    let World { sim, alice, .. } = world().await;
    let alice = alice.to_string();
    for scope in ["identify bot", ""] {
        let path = authorize_path(&sim, &[("scope", scope), ("login_as", &alice)]);
        let query = redirected(&get(&sim, &path, &[]).await);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some("invalid_scope")
        );
        assert_eq!(query.get("state").map(String::as_str), Some(STATE));
        assert!(!query.contains_key("code"), "{query:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_denied_login_redirects_with_access_denied() {
    let World { sim, .. } = world().await;
    let by_parameter = get(&sim, &authorize_path(&sim, &[("deny", "true")]), &[]).await;
    sim.control().deny_next_login();
    let by_control = get(&sim, &authorize_path(&sim, &[]), &[]).await;
    for response in [by_parameter, by_control] {
        let query = redirected(&response);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some("access_denied")
        );
        assert_eq!(query.get("state").map(String::as_str), Some(STATE));
        assert!(!query.contains_key("code"), "{query:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_client_or_redirect_gets_an_error_page_not_a_redirect() {
    let World { sim, alice, .. } = world().await;
    let alice = alice.to_string();
    for changes in [
        vec![("client_id", "1234")],
        vec![("client_id", "")],
        vec![("redirect_uri", "https://evil.example/callback")],
        vec![("redirect_uri", "")],
    ] {
        let mut changes = changes;
        changes.push(("login_as", &alice));
        let response = get(&sim, &authorize_path(&sim, &changes), &[]).await;
        assert_eq!(response.status, 400, "{changes:?}: {response:?}");
        assert!(response.header("location").is_none(), "{response:?}");
        assert!(
            response.body.contains("Invalid OAuth2"),
            "{}",
            response.body
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn only_registered_redirect_uris_are_accepted_when_configured() {
    let registered = "https://dash.example/auth/callback";
    let sim = start(SimConfig {
        oauth2: OAuth2Config {
            redirect_uris: vec![registered.into()],
            ..OAuth2Config::default()
        },
        ..fast_config()
    })
    .await;
    let alice = user_id(77);
    sim.control().add_oauth_user(OAuthUser::new(alice, "alice"));
    let alice = alice.to_string();
    let refused = get(&sim, &authorize_path(&sim, &[("login_as", &alice)]), &[]).await;
    assert_eq!(refused.status, 400, "loopback is no longer implied");
    let accepted = get(
        &sim,
        &authorize_path(&sim, &[("login_as", &alice), ("redirect_uri", registered)]),
        &[],
    )
    .await;
    assert_eq!(accepted.status, 302, "{accepted:?}");
    assert!(accepted
        .header("location")
        .is_some_and(|l| l.starts_with(&format!("{registered}?code="))));
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_chosen_user_a_page_lists_links_to_log_in() {
    let World { sim, alice, .. } = world().await;
    let bob = user_id(5_151);
    sim.control().add_oauth_user(OAuthUser::new(bob, "bob"));

    let path = authorize_path(&sim, &[]);
    let page = get(&sim, &path, &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    let marker = format!("id=\"login-{bob}\" href=\"");
    let start = page.body.find(&marker).expect("a link for bob") + marker.len();
    let href = &page.body[start..];
    let href = href[..href.find('"').expect("closing quote")].replace("&amp;", "&");
    assert!(page.body.contains(&format!("id=\"login-{alice}\"")));
    assert!(page.body.contains("id=\"deny\""));

    // What a browser does with the relative link.
    let base = Url::parse(&format!("{}{path}", sim.api_url())).expect("base");
    let link = base.join(&href).expect("a relative link");
    let followed = get(
        &sim,
        &format!("{}?{}", link.path(), link.query().unwrap_or("")),
        &[],
    )
    .await;
    let code = redirected(&followed).get("code").expect("a code").clone();
    let tokens = exchange(&sim, &code, &[]).await.json();
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(
        as_bearer(&sim, "/api/v10/users/@me", access).await.json()["username"],
        "bob"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn queued_logins_are_taken_in_order() {
    let World { sim, alice, .. } = world().await;
    let bob = user_id(5_151);
    let control = sim.control();
    control.add_oauth_user(OAuthUser::new(bob, "bob"));
    assert!(control.next_login(user_id(999)).is_err(), "unknown user");
    control.next_login(bob).expect("bob");
    control.next_login(alice).expect("alice");

    let mut names = Vec::new();
    for _ in 0..2 {
        let response = get(&sim, &authorize_path(&sim, &[]), &[]).await;
        let code = redirected(&response).get("code").expect("a code").clone();
        let access = exchange(&sim, &code, &[]).await.json()["access_token"]
            .as_str()
            .expect("access")
            .to_owned();
        let me = as_bearer(&sim, "/api/v10/users/@me", &access).await.json();
        names.push(me["username"].as_str().expect("a name").to_owned());
    }
    assert_eq!(names, ["bob", "alice"]);
    assert_eq!(
        get(&sim, &authorize_path(&sim, &[]), &[]).await.status,
        200,
        "the queue is empty again: the chooser page"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_expired_and_underscoped_tokens_get_401() {
    let World { sim, alice, .. } = world().await;
    assert_unauthorized(&as_bearer(&sim, "/api/v10/users/@me", "not-a-token").await);
    assert_unauthorized(&get(&sim, "/api/v10/users/@me/guilds", &[]).await);

    let access = access_token(&sim, alice).await;
    assert_eq!(sim.control().expire_oauth_tokens(), 1);
    assert_unauthorized(&as_bearer(&sim, "/api/v10/users/@me", &access).await);

    let alice = alice.to_string();
    let path = authorize_path(&sim, &[("scope", "identify"), ("login_as", &alice)]);
    let code = redirected(&get(&sim, &path, &[]).await)
        .get("code")
        .expect("a code")
        .clone();
    let identify_only = exchange(&sim, &code, &[]).await.json();
    let access = identify_only["access_token"].as_str().expect("access");
    assert_eq!(identify_only["scope"], "identify");
    assert_eq!(
        as_bearer(&sim, "/api/v10/users/@me", access).await.status,
        200
    );
    assert_unauthorized(&as_bearer(&sim, "/api/v10/users/@me/guilds", access).await);
    sim.shutdown().await;
}

#[tokio::test]
async fn bearer_and_bot_tokens_do_not_open_each_others_routes() {
    let World { sim, alice, .. } = world().await;
    let bot = format!("Bot {TOKEN}");
    let me = get(&sim, "/api/v10/users/@me", &[("Authorization", &bot)]).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["id"], sim.config().bot_user_id.to_string());
    assert_eq!(me.json()["bot"], true);
    assert_unauthorized(
        &get(
            &sim,
            "/api/v10/users/@me/guilds",
            &[("Authorization", &bot)],
        )
        .await,
    );

    let access = access_token(&sim, alice).await;
    assert_unauthorized(&as_bearer(&sim, "/api/v10/gateway/bot", &access).await);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_over_http_sets_up_a_login() {
    let World { sim, guilds, .. } = world().await;
    let addr = sim.api_addr();
    let json = [("Content-Type", "application/json")];
    let created = request(
        addr,
        "POST",
        "/_sim/oauth2/users",
        &json,
        r#"{"user_id": "6262", "username": "carol"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let set = request(
        addr,
        "PUT",
        &format!("/_sim/guilds/{}/members/6262/permissions", guilds[2]),
        &json,
        r#"{"permissions": "40"}"#,
    )
    .await;
    assert_eq!(set.status, 204, "{set:?}");
    let queued = request(
        addr,
        "POST",
        "/_sim/oauth2/next-login",
        &json,
        r#"{"user_id": "6262"}"#,
    )
    .await;
    assert_eq!(queued.status, 204, "{queued:?}");

    let response = get(&sim, &authorize_path(&sim, &[]), &[]).await;
    let code = redirected(&response).get("code").expect("a code").clone();
    let access = exchange(&sim, &code, &[]).await.json()["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let listed = as_bearer(&sim, "/api/v10/users/@me/guilds", &access)
        .await
        .json();
    assert_eq!(listed[0]["id"], guilds[2].to_string());
    assert_eq!(listed[0]["permissions"], "40");

    let expired = request(addr, "POST", "/_sim/oauth2/expire", &json, "{}").await;
    assert_eq!(expired.json()["tokens"], 1, "{expired:?}");
    assert_unauthorized(&as_bearer(&sim, "/api/v10/users/@me", &access).await);
    sim.shutdown().await;
}
