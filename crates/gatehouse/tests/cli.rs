//! The binary's edge: bad configuration gives one clear line naming the
//! setting and a non-zero exit, and never prints a secret.

use std::process::{Command, Output};

use testkit::TestDb;

fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_OWNER_URL")
        .env("LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running gatehouse")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error line (the last line: logs may precede it).
fn error_line(out: &Output) -> String {
    let text = stderr(out);
    let line = text
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default();
    line.to_owned()
}

#[test]
fn missing_urls_name_the_variable_and_the_flag() {
    let out = gatehouse(&["migrate"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("DATABASE_OWNER_URL") && line.contains("--database-url"),
        "{line}"
    );

    let out = gatehouse(&["bench", "db", "--quick"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("DATABASE_URL is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_malformed_url_is_refused_without_echoing_the_password() {
    let url = "postgres://gatehouse_app:hunter2@127.0.0.1:notaport/gatehouse";
    let out = gatehouse(&["bench", "db", "--quick"], &[("DATABASE_URL", url)]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("DATABASE_URL"), "{line}");
    assert!(line.contains("invalid database URL"), "{line}");
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_database_says_where_and_how_to_fix_it() {
    let url = "postgres://gatehouse_app:hunter2@127.0.0.1:1/gatehouse";
    let out = gatehouse(&["bench", "db", "--quick"], &[("DATABASE_URL", url)]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("DATABASE_URL") && line.contains("127.0.0.1:1"),
        "{line}"
    );
    assert!(line.contains("scripts/stack up"), "{line}");
    assert!(!stderr(&out).contains("hunter2"));

    let out = gatehouse(&["migrate", "--database-url", url], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("could not connect"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"));
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_such() {
    let db = TestDb::create("cli_wrong_password").await;
    let url = db
        .app_pgbouncer_url()
        .replace(&db.env.app_password, "definitely-wrong");
    let out = gatehouse(&["bench", "db", "--quick"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("password"), "{line}");
    assert!(
        !stderr(&out).contains("definitely-wrong"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = gatehouse(&["migrate", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--no-such-flag"));
}

#[tokio::test]
async fn migrate_applies_then_reports_up_to_date() {
    let db = TestDb::create_empty("cli_migrate").await;
    let owner = db.owner_url();
    let out = gatehouse(&["migrate"], &[("DATABASE_OWNER_URL", &owner)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "{} applied, 0 already present",
        store::migrate::MIGRATIONS.len()
    );
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(!stderr(&out).contains(&db.env.owner_password));

    let out = gatehouse(&["migrate", "--database-url", &owner], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

#[tokio::test]
async fn rules_add_validates_then_stores_and_requests_a_community_recheck() {
    let db = TestDb::create("cli_rules_add").await;
    let store = db.store(2).await;
    let guild = store::Snowflake::new(4242).unwrap();
    let tenant = store.directory().provision_guild(guild, "g").await.unwrap();
    let ns = wire::Namespace::prefixed(&format!("cli{}", std::process::id())).unwrap();
    let client = async_nats::connect(&db.env.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    worker::ensure_streams(
        &js,
        &ns,
        &worker::StreamLimits {
            storage: worker::StorageKind::Memory,
            ..worker::StreamLimits::default()
        },
    )
    .await
    .unwrap();
    let url = db.app_pgbouncer_url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("NATS_URL", db.env.nats_url.as_str()),
        ("NATS_NAMESPACE", ns.prefix().unwrap()),
    ];
    let contract = "0x00000000000000000000000000000000000000aa";
    let base = [
        "rules",
        "add",
        "--guild",
        "4242",
        "--role",
        "77",
        "--type",
        "token_balance",
        "--chain",
        "ethereum",
        "--contract",
        contract,
    ];

    // A bad parameter: one line naming the field, nothing stored.
    let mut bad = base.to_vec();
    bad.extend(["--parameters", r#"{"min_balance": "lots"}"#]);
    let out = gatehouse(&bad, &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("parameters.min_balance"),
        "{}",
        stderr(&out)
    );

    let mut good = base.to_vec();
    good.extend(["--parameters", r#"{"min_balance": "1000"}"#]);
    let out = gatehouse(&good, &env);
    assert!(out.status.success(), "{}", stderr(&out));

    let tx = store.begin(tenant).await.unwrap();
    let rules = tx.rules().list_enabled().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rules.len(), 1, "exactly the valid rule was stored");
    assert_eq!(rules[0].role_discord_id.get(), 77);

    let stream = ns.stream_name(&wire::subjects::ELIGIBILITY);
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 1, "one community re-check requested");
    for spec in wire::subjects::ALL_STREAMS {
        let _ = js.delete_stream(ns.stream_name(&spec)).await;
    }
}
