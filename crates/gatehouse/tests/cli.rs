//! The binary's edge: bad configuration gives one clear line naming the
//! setting and a non-zero exit, and never prints a secret.

use std::process::Output;

use testkit::{
    cli::{error_line, stderr},
    TestDb,
};

fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_gatehouse"), args, env)
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
        error_line(&out).contains("DATABASE_URL (--database-url): not set"),
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

/// A provisioned community (guild 4242), an ELIGIBILITY stream of the
/// test's own, and the environment the admin verbs (`rules`, `badges`) need.
struct AdminWorld {
    db: TestDb,
    store: store::Store,
    tenant: store::TenantId,
    js: async_nats::jetstream::Context,
    ns: bus::Namespace,
    url: String,
}

impl AdminWorld {
    async fn new(label: &str) -> AdminWorld {
        let db = TestDb::create(label).await;
        let store = db.store(2).await;
        let guild = wire::GuildId::new(4242).expect("not 0");
        let tenant = store.directory().provision_guild(guild, "g").await.unwrap();
        let ns = bus::Namespace::prefixed(&format!(
            "cli{}{}",
            std::process::id(),
            label.replace('_', "")
        ))
        .unwrap();
        let js = db.env.nats.jetstream(bus::Process::Admin).await;
        let topology = bus::Topology::new(ns.clone()).with_storage(bus::Storage::Memory);
        bus::ensure_streams(&js, &topology).await.unwrap();
        let url = db.app_pgbouncer_url();
        AdminWorld {
            db,
            store,
            tenant,
            js,
            ns,
            url,
        }
    }

    /// Runs an admin verb as an operator would: it publishes re-check
    /// requests as the api user.
    fn run(&self, args: &[&str]) -> Output {
        let nats = self.db.env.nats.env(bus::Process::Api);
        let mut env = vec![
            ("DATABASE_URL", self.url.as_str()),
            ("NATS_NAMESPACE", self.ns.prefix().unwrap()),
        ];
        env.extend(nats.iter().map(|(k, v)| (*k, v.as_str())));
        gatehouse(args, &env)
    }

    async fn rules(&self) -> Vec<store::repo::EligibilityRule> {
        let tx = self.store.begin(self.tenant).await.unwrap();
        let rules = tx.rules().list_all().await.unwrap();
        tx.commit().await.unwrap();
        rules
    }

    async fn rechecks_requested(&self) -> u64 {
        let stream = self.ns.stream_name(&wire::subjects::ELIGIBILITY);
        self.js
            .get_stream(&stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    }

    async fn audited(&self, action: &str) -> i64 {
        self.db
            .admin()
            .await
            .query_one(
                "SELECT count(*) FROM audit_logs WHERE action = $1 AND actor_type = 'admin'",
                &[&action],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn finish(self) {
        for spec in wire::subjects::ALL_STREAMS {
            let _ = self.js.delete_stream(self.ns.stream_name(&spec)).await;
        }
    }
}

const TOKEN_RULE: [&str; 12] = [
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
    "0x00000000000000000000000000000000000000aa",
];

#[tokio::test]
async fn rules_add_validates_then_stores_and_requests_a_community_recheck() {
    let w = AdminWorld::new("cli_rules_add").await;

    // A bad parameter: one line naming the field, nothing stored.
    let mut bad = TOKEN_RULE.to_vec();
    bad.extend(["--parameters", r#"{"min_balance": "lots"}"#]);
    let out = w.run(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("parameters.min_balance"),
        "{}",
        stderr(&out)
    );

    let mut good = TOKEN_RULE.to_vec();
    good.extend(["--parameters", r#"{"min_balance": "1000"}"#]);
    let out = w.run(&good);
    assert!(out.status.success(), "{}", stderr(&out));

    let rules = w.rules().await;
    assert_eq!(rules.len(), 1, "exactly the valid rule was stored");
    assert_eq!(rules[0].role_discord_id.get(), 77);
    assert_eq!(
        w.rechecks_requested().await,
        1,
        "one community re-check requested"
    );
    assert_eq!(w.audited("rule.created").await, 1);
    w.finish().await;
}

#[tokio::test]
async fn custom_rule_references_are_checked_and_rules_can_be_disabled_enabled_and_deleted() {
    let w = AdminWorld::new("cli_rules_change").await;
    let mut base = TOKEN_RULE.to_vec();
    base.extend(["--parameters", r#"{"min_balance": "1000"}"#]);
    assert!(w.run(&base).status.success());
    let token_rule = w.rules().await[0].id.to_string();

    // A custom rule naming a rule this community does not have: refused.
    let stranger = uuid::Uuid::new_v4().to_string();
    let custom = |refs: &str| {
        vec![
            "rules".to_owned(),
            "add".into(),
            "--guild".into(),
            "4242".into(),
            "--role".into(),
            "78".into(),
            "--type".into(),
            "custom".into(),
            "--parameters".into(),
            format!(r#"{{"op": "any", "rules": [{refs}]}}"#),
        ]
    };
    let args = custom(&format!("\"{token_rule}\", \"{stranger}\""));
    let out = w.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains(&stranger) && line.contains("does not exist in this community"),
        "{line}"
    );
    assert_eq!(w.rules().await.len(), 1, "the refused rule was stored");

    let args = custom(&format!("\"{token_rule}\""));
    let out = w.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let custom_rule = w
        .rules()
        .await
        .into_iter()
        .find(|r| r.role_discord_id.get() == 78)
        .unwrap()
        .id
        .to_string();

    // `list` shows both.
    let out = w.run(&["rules", "list", "--guild", "4242"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&token_rule) && listing.contains(&custom_rule),
        "{listing}"
    );

    // Disable and enable: stored, audited, each followed by a re-check.
    let before = w.rechecks_requested().await;
    let out = w.run(&["rules", "disable", "--guild", "4242", "--id", &token_rule]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!w
        .rules()
        .await
        .iter()
        .any(|r| r.id.to_string() == token_rule && r.enabled));
    let out = w.run(&["rules", "enable", "--guild", "4242", "--id", &token_rule]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(w.rules().await.iter().all(|r| r.enabled));
    assert_eq!(w.rechecks_requested().await, before + 2);
    assert_eq!(w.audited("rule.disabled").await, 1);
    assert_eq!(w.audited("rule.enabled").await, 1);

    // The custom rule uses the token rule: deleting it is refused.
    let out = w.run(&["rules", "delete", "--guild", "4242", "--id", &token_rule]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains(&custom_rule), "{line}");
    assert_eq!(w.rules().await.len(), 2);

    // Delete the custom rule, then the token rule.
    for id in [&custom_rule, &token_rule] {
        let out = w.run(&["rules", "delete", "--guild", "4242", "--id", id]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(w.rules().await.is_empty());
    assert_eq!(w.audited("rule.deleted").await, 2);

    // An unknown id or another community's guild: one line, non-zero.
    let out = w.run(&["rules", "disable", "--guild", "4242", "--id", &stranger]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out).contains("has no rule"), "{}", stderr(&out));
    let out = w.run(&["rules", "list", "--guild", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("no community for guild 999"),
        "{}",
        stderr(&out)
    );
    w.finish().await;
}

#[tokio::test]
async fn badges_are_defined_validated_listed_and_granted_by_hand() {
    let w = AdminWorld::new("cli_badges").await;
    let tx = w.store.begin(w.tenant).await.unwrap();
    tx.profiles()
        .upsert_member(&store::repo::MemberUpsert {
            discord_user_id: wire::UserId::new(5150).expect("not 0"),
            role_ids: Vec::new(),
            joined_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let define = |slug: &'static str, evaluator: &'static str, criteria: &'static str| {
        [
            "badges",
            "define",
            "--guild",
            "4242",
            "--slug",
            slug,
            "--name",
            "A badge",
            "--evaluator",
            evaluator,
            "--criteria",
            criteria,
        ]
    };

    // Bad criteria: the field is named and nothing is stored.
    let out = w.run(&define("pioneer", "join_order", r#"{"first": 0}"#));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("criteria.first"),
        "{}",
        stderr(&out)
    );
    let out = w.run(&define("pioneer", "first_come", "{}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out).contains("--evaluator"), "{}", stderr(&out));

    for (slug, evaluator, criteria) in [
        ("pioneer", "join_order", r#"{"first": 10}"#),
        ("helper", "manual_grant", "{}"),
    ] {
        let out = w.run(&define(slug, evaluator, criteria));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(w.audited("badge.defined").await, 2);

    let grant = |slug: &'static str, user: &'static str| {
        [
            "badges",
            "grant",
            "--guild",
            "4242",
            "--slug",
            slug,
            "--user",
            user,
            "--granted-by",
            "mod-alice",
        ]
    };
    let out = w.run(&grant("helper", "5150"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("granted to 5150"));
    let out = w.run(&grant("helper", "5150"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already holds"));
    assert_eq!(
        w.audited("badge.awarded").await,
        1,
        "a repeated grant audited twice"
    );
    let admin: String =
        w.db.admin()
            .await
            .query_one(
                "SELECT actor_id FROM audit_logs WHERE action = 'badge.awarded'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(admin, "mod-alice");

    let out = w.run(&grant("nonexistent", "5150"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("no badge \"nonexistent\""),
        "{}",
        stderr(&out)
    );
    let out = w.run(&grant("helper", "999"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("no member 999"),
        "{}",
        stderr(&out)
    );

    let out = w.run(&["badges", "list", "--guild", "4242"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    let helper = listing
        .lines()
        .find(|l| l.starts_with("helper"))
        .unwrap_or_default();
    assert!(
        helper.contains("manual_grant") && helper.contains(" 1 "),
        "{listing}"
    );
    assert!(listing.contains("pioneer"), "{listing}");
    w.finish().await;
}

#[test]
fn nats_config_prints_the_committed_production_configuration() {
    let out = gatehouse(&["nats-config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let committed =
        std::fs::read_to_string(testkit::workspace_root().join("deploy/nats/authorization.conf"))
            .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);

    let out = gatehouse(
        &["nats-config"],
        &[("NATS_NAMESPACE", "t1"), ("WORKER_CONSUMER", "w")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"t1.events.>\""), "{text}");
    assert!(
        text.contains("\"$JS.API.CONSUMER.MSG.NEXT.t1_EVENTS.t1_w_events\""),
        "{text}"
    );

    let out = gatehouse(&["nats-config", "--namespace", "events"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("NATS_NAMESPACE"),
        "{}",
        stderr(&out)
    );
}
