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
