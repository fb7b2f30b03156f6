//! One configuration approach across the verbs: every bad setting reported
//! at once, each named `VARIABLE (--flag)`; DISCORD_BOT_TOKEN accepted
//! wherever DISCORD_TOKEN is; no secret ever echoed.

use std::process::Output;

use discord_sim::{SimConfig, Simulator};
use testkit::cli::{error_line, stderr};

/// The binary with a clean environment: only what the test passes.
fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_gatehouse"), args, env)
}

/// Nothing listens here: a verb that gets this far has accepted its settings.
const NOWHERE_DB: &str = "postgres://gatehouse_app:db-pass-3f9@127.0.0.1:1/gatehouse";

#[test]
fn the_worker_reports_every_bad_setting_at_once_naming_each() {
    let out = gatehouse(
        &["worker"],
        &[
            ("WORKER_CONCURRENCY", "lots"),
            ("WORKER_ACK_WAIT", "soon"),
            ("STREAM_STORAGE", "disk"),
            ("ROLE_GRACE_PERIOD", "1 fortnight"),
            ("WEBHOOK_MAX_ATTEMPTS", "0"),
            ("WEBHOOK_BACKOFF", "later"),
            ("PUBLIC_URL", "gatehouse.example"),
            ("PROVISIONING", "allowlist:12,twelve"),
            ("AUDIT_RETENTION", "1h"),
            ("DISCORD_TOKEN", "token-one-5ecret"),
            ("DISCORD_BOT_TOKEN", "token-two-5ecret"),
            (
                "CHAINS",
                "ethereum=https://rpc.example/v3/key-5ecret;broken",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.starts_with("error: 12 configuration problems: "),
        "{line}"
    );
    for name in [
        "WORKER_CONCURRENCY (--concurrency)",
        "PUBLIC_URL (--public-url): \"gatehouse.example\" is not a URL",
        "PROVISIONING (--provisioning): \"twelve\" in the allowlist is not a Discord server id",
        "AUDIT_RETENTION (--audit-retention): must be at least 1d",
        "WORKER_ACK_WAIT (--ack-wait)",
        "STREAM_STORAGE (--stream-storage)",
        "ROLE_GRACE_PERIOD (--role-grace-period)",
        "WEBHOOK_MAX_ATTEMPTS (--webhook-max-attempts): must be at least 1",
        "WEBHOOK_BACKOFF (--webhook-backoff)",
        "DATABASE_URL (--database-url): not set",
        "DISCORD_TOKEN (--discord-token): DISCORD_TOKEN and DISCORD_BOT_TOKEN",
        "CHAINS (--chains)",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }
    assert!(!stderr(&out).contains("5ecret"), "{}", stderr(&out));
}

#[test]
fn one_community_cannot_be_given_more_slots_than_the_worker_has() {
    let out = gatehouse(
        &["worker"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("WORKER_CONCURRENCY", "8"),
            ("WORKER_COMMUNITY_CONCURRENCY", "12"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains(
            "WORKER_COMMUNITY_CONCURRENCY (--community-concurrency): must be at most the concurrency (8)"
        ),
        "{line}"
    );
}

#[test]
fn the_worker_names_bad_chain_read_settings() {
    let out = gatehouse(
        &["worker"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("CHAIN_READS_PER_COMMUNITY", "fast"),
            ("CHECK_MIN_READ_AGE", "soon"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    for name in [
        "CHAIN_READS_PER_COMMUNITY (--chain-reads-per-community): \"fast\" is not a number of calls per second",
        "CHECK_MIN_READ_AGE (--check-min-read-age)",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }

    // A burst too small for a chain's batches is named, with the fix.
    let out = gatehouse(
        &["worker"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("CHAINS", "ethereum=https://rpc.example/v3/key-5ecret"),
            ("CHAIN_READS_PER_COMMUNITY", "5,3"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("CHAIN_READS_PER_COMMUNITY (--chain-reads-per-community)")
            && line.contains("raise the burst"),
        "{line}"
    );
    assert!(!stderr(&out).contains("5ecret"), "{}", stderr(&out));

    // The API's rule preview reads chains too, from the same budget setting.
    let out = gatehouse(
        &["api"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("CHAIN_READS_PER_COMMUNITY", "-1"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("CHAIN_READS_PER_COMMUNITY (--chain-reads-per-community)")
            && line.contains("above 0"),
        "{line}"
    );
}

#[test]
fn the_gateway_reports_every_bad_setting_at_once_naming_each() {
    let out = gatehouse(
        &["gateway"],
        &[
            ("SHARDS", "0-x"),
            ("INTENTS", "GUILDZ"),
            ("PUBLISH_ACK_TIMEOUT", "soon"),
            ("NATS_URL", "http://user:nats-5ecret@host"),
            ("GUILD_MEMBER_UPDATES_PER_S", "0"),
            ("GUILD_INTERACTIONS_BURST", "0"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.starts_with("error: 7 configuration problems: "),
        "{line}"
    );
    for name in [
        "DISCORD_TOKEN (--discord-token): not set",
        "SHARDS (--shards)",
        "INTENTS (--intents)",
        "PUBLISH_ACK_TIMEOUT (--publish-ack-timeout)",
        "NATS_URL (--nats-url)",
        "GUILD_MEMBER_UPDATES_PER_S (--guild-member-updates-per-s): must be at least 1",
        "GUILD_INTERACTIONS_BURST (--guild-interactions-burst): must be at least 1",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }
    assert!(!stderr(&out).contains("5ecret"), "{}", stderr(&out));
}

#[test]
fn migrate_and_commands_register_name_every_missing_setting() {
    let out = gatehouse(&["migrate", "--connect-timeout", "soon"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("DATABASE_CONNECT_TIMEOUT (--connect-timeout)")
            && line.contains("DATABASE_OWNER_URL (--database-url): not set"),
        "{line}"
    );

    let out = gatehouse(&["commands", "register"], &[("DISCORD_API_URL", "ftp://x")]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    for name in [
        "DISCORD_TOKEN (--discord-token): not set",
        "DISCORD_APPLICATION_ID (--application-id): not set",
        "DISCORD_API_URL (--discord-api-url)",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }
}

#[test]
fn the_worker_refuses_discord_limits_that_would_not_protect_the_bot() {
    let out = gatehouse(
        &["worker"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("DISCORD_GLOBAL_RATE", "1"),
            ("DISCORD_GLOBAL_MARGIN", "5s"),
            ("DISCORD_INVALID_REQUEST_LIMIT", "10000"),
            ("DISCORD_INVALID_REQUEST_WINDOW", "forever"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.starts_with("error: 4 configuration problems: "),
        "{line}"
    );
    for name in [
        "DISCORD_GLOBAL_RATE (--discord-global-rate): must be between 2 and 100000",
        "DISCORD_GLOBAL_MARGIN (--discord-global-margin): must be at most 1s",
        "DISCORD_INVALID_REQUEST_LIMIT (--discord-invalid-request-limit): must be between 1 and 9999",
        "DISCORD_INVALID_REQUEST_WINDOW (--discord-invalid-request-window)",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }
}

#[test]
fn the_worker_accepts_discord_bot_token() {
    // Without a token the worker says so before connecting: the control.
    let out = gatehouse(&["worker"], &[("DATABASE_URL", NOWHERE_DB)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("DISCORD_TOKEN is not set"),
        "{}",
        stderr(&out)
    );

    let out = gatehouse(
        &["worker"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("DISCORD_BOT_TOKEN", "bot-token-5ecret"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(!text.contains("DISCORD_TOKEN is not set"), "{text}");
    assert!(error_line(&out).contains("could not connect"), "{text}");
    assert!(
        !text.contains("5ecret") && !text.contains("db-pass"),
        "{text}"
    );
}

#[test]
fn the_worker_takes_its_public_url_for_wallet_links() {
    // Unset: linking is off, and the worker says so before connecting.
    let unset = gatehouse(&["worker"], &[("DATABASE_URL", NOWHERE_DB)]);
    assert_eq!(unset.status.code(), Some(1));
    assert!(
        stderr(&unset).contains("PUBLIC_URL is not set"),
        "{}",
        stderr(&unset)
    );

    // Accepted: the worker gets as far as the database, without a word
    // about it.
    let set = gatehouse(
        &["worker"],
        &[
            ("DATABASE_URL", NOWHERE_DB),
            ("PUBLIC_URL", "https://gatehouse.example/base/"),
        ],
    );
    assert_eq!(set.status.code(), Some(1));
    assert!(!stderr(&set).contains("PUBLIC_URL"), "{}", stderr(&set));
    assert!(
        error_line(&set).contains("could not connect"),
        "{}",
        stderr(&set)
    );

    // A query cannot be the base links are made from; the flag names it
    // as the variable does.
    let bad = gatehouse(
        &["worker", "--public-url", "https://gatehouse.example/?ref=1"],
        &[("DATABASE_URL", NOWHERE_DB)],
    );
    assert_eq!(bad.status.code(), Some(1));
    let line = error_line(&bad);
    assert!(
        line.contains("PUBLIC_URL (--public-url)") && line.contains("must not have a query"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_accepts_discord_bot_token() {
    // The simulator checks the token on GET /gateway/bot; NATS is nowhere,
    // so a gateway that got past Discord stops naming NATS_URL.
    let sim = Simulator::start(SimConfig {
        token: "bot-token-5ecret".into(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let api = sim.api_url();
    let gateway_url = sim.gateway_url();
    let run = move |token: Option<&'static str>| {
        let mut env = vec![
            ("NATS_URL", "nats://127.0.0.1:1"),
            ("DISCORD_API_URL", api.as_str()),
            ("DISCORD_GATEWAY_URL", gateway_url.as_str()),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ];
        if let Some(token) = token {
            env.push(("DISCORD_BOT_TOKEN", token));
        }
        gatehouse(&["gateway"], &env)
    };
    let (unset, wrong, right) = tokio::task::spawn_blocking(move || {
        (
            run(None),
            run(Some("not-the-5ecret")),
            run(Some("bot-token-5ecret")),
        )
    })
    .await
    .expect("gateway runs");

    assert_eq!(unset.status.code(), Some(1));
    assert!(
        error_line(&unset).contains("DISCORD_TOKEN (--discord-token): not set"),
        "{}",
        stderr(&unset)
    );
    // The alias reaches Discord: a wrong one is rejected there…
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        error_line(&wrong).contains("rejected"),
        "{}",
        stderr(&wrong)
    );
    // …and the right one gets past Discord to NATS.
    assert_eq!(right.status.code(), Some(1));
    let line = error_line(&right);
    assert!(line.contains("NATS_URL"), "{line}");
    for out in [&wrong, &right] {
        assert!(!stderr(out).contains("5ecret"), "{}", stderr(out));
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_register_accepts_discord_bot_token() {
    let sim = Simulator::start(SimConfig {
        token: "bot-token-5ecret".into(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let app = sim.config().application_id.to_string();
    let api = sim.api_url();
    let out = tokio::task::spawn_blocking(move || {
        gatehouse(
            &["commands", "register"],
            &[
                ("DISCORD_APPLICATION_ID", app.as_str()),
                ("DISCORD_API_URL", api.as_str()),
                ("DISCORD_BOT_TOKEN", "bot-token-5ecret"),
            ],
        )
    })
    .await
    .expect("register ran");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("registered 5 global commands"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr(&out).contains("5ecret"));
    assert_eq!(sim.control().application_commands().len(), 5);
    sim.shutdown().await;
}

#[test]
fn the_api_reports_every_bad_setting_at_once_naming_each() {
    let out = gatehouse(
        &["api"],
        &[
            ("API_ADDR", "localhost"),
            ("API_REQUEST_TIMEOUT", "a while"),
            ("API_RATE_LIMIT", "0"),
            ("API_RATE_BURST", "many"),
            ("RECHECK_PERIOD", "daily"),
            (
                "CHAINS",
                "ethereum=https://rpc.example/v3/key-5ecret;broken",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.starts_with("error: 7 configuration problems: "),
        "{line}"
    );
    for name in [
        "API_ADDR (--addr)",
        "API_REQUEST_TIMEOUT (--request-timeout)",
        "API_RATE_LIMIT (--rate-limit)",
        "API_RATE_BURST (--rate-burst)",
        "RECHECK_PERIOD (--recheck-period)",
        "CHAINS (--chains)",
        "DATABASE_URL (--database-url): not set",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }
    assert!(!stderr(&out).contains("5ecret"), "{}", stderr(&out));
}

#[test]
fn the_dashboard_settings_come_all_together_and_are_reported_with_the_rest() {
    let out = gatehouse(
        &["api"],
        &[
            ("PUBLIC_URL", "not a url"),
            ("DISCORD_CLIENT_SECRET", "client-5ecret"),
            ("WEB_SESSION_SECRET", "short-5ecret"),
            ("WEB_PERMISSION_REFRESH", "often"),
            ("API_RATE_LIMIT", "0"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    for name in [
        "DISCORD_CLIENT_ID (--discord-client-id): missing",
        "PUBLIC_URL (--public-url)",
        "WEB_PERMISSION_REFRESH (--web-permission-refresh)",
        "API_RATE_LIMIT (--rate-limit)",
        "DATABASE_URL (--database-url): not set",
    ] {
        assert!(line.contains(name), "{name} missing from {line}");
    }
    assert!(!stderr(&out).contains("5ecret"), "{}", stderr(&out));
}

#[test]
fn keys_create_names_bad_scopes_before_connecting() {
    let out = gatehouse(
        &[
            "keys",
            "create",
            "--guild",
            "123",
            "--name",
            "ci",
            "--scopes",
            "read,rules:admin,root",
        ],
        &[("DATABASE_URL", NOWHERE_DB)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("\"rules:admin\", \"root\"") && line.contains("webhooks:write"),
        "{line}"
    );
    let out = gatehouse(
        &[
            "keys",
            "create",
            "--guild",
            "123",
            "--name",
            "ci",
            "--expires",
            "someday",
        ],
        &[("DATABASE_URL", NOWHERE_DB)],
    );
    assert!(
        error_line(&out).contains("--expires \"someday\""),
        "{}",
        stderr(&out)
    );
}
