//! Row-level security as the runtime role sees it: for every tenant table,
//! tenant A can neither see nor change tenant B's rows, no tenant means no
//! rows, and nothing gatehouse_app can run switches that off.
//!
//! These use plain sessions as gatehouse_app, straight to PostgreSQL, so they
//! test the database's guarantees, not the store's good behaviour.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;
use store::{
    repo::{
        AuditAction, AuditEntry, BadgeEvaluator, MemberUpsert, NewBadge, NewRule, NewWebhook,
        RuleType,
    },
    Store, TenantId,
};
use testkit::TestDb;
use tokio_postgres::{error::SqlState, Client};
use uuid::Uuid;

struct Tenant {
    id: TenantId,
    /// The Discord user of `profile`.
    user: u64,
    profile: store::ProfileId,
    rule: store::RuleId,
    unawarded_badge: store::BadgeId,
    webhook: store::WebhookId,
    audit_id: i64,
}

/// A test id of whatever kind the call site needs.
fn sf<M>(v: u64) -> wire::Id<M> {
    wire::Id::new(v).expect("test ids are not 0")
}

/// A community with one of everything, written through the store.
async fn seed(store: &Store, guild: u64) -> Tenant {
    let user = guild * 10;
    let id = store
        .directory()
        .provision_guild(sf(guild), &format!("guild {guild}"))
        .await
        .unwrap();
    let tx = store.begin(id).await.unwrap();
    let profile = tx
        .profiles()
        .upsert_member(&MemberUpsert {
            discord_user_id: sf(user),
            role_ids: vec![sf(7)],
            joined_at: Utc::now(),
        })
        .await
        .unwrap();
    let rule = tx
        .rules()
        .create(&NewRule {
            chain: None,
            contract_address: None,
            rule_type: RuleType::ScoreThreshold,
            parameters: json!({"min_score": 10}),
            role_discord_id: sf(guild + 1),
            tier_mapping: None,
            priority: 1,
            enabled: true,
        })
        .await
        .unwrap();
    let mut badges = Vec::new();
    for slug in ["early", "later"] {
        badges.push(
            tx.badges()
                .define(&NewBadge {
                    slug: slug.into(),
                    name: slug.into(),
                    description: String::new(),
                    evaluator: BadgeEvaluator::ManualGrant,
                    criteria: json!({}),
                })
                .await
                .unwrap(),
        );
    }
    assert!(tx
        .badges()
        .award(badges[0].id, profile.id, "seed")
        .await
        .unwrap());
    let joined = tx
        .audit()
        .append(&AuditEntry::system(AuditAction::MemberJoined))
        .await
        .unwrap();
    let webhook = tx
        .webhooks()
        .create(&NewWebhook {
            url: format!("https://hooks.example/{guild}"),
            events: vec!["member.joined".into()],
            secret: settings::Secret::new("s".repeat(40)),
            description: String::new(),
        })
        .await
        .unwrap();
    // Directly: the dispatcher only takes rows once their transaction has
    // committed, and this one has not.
    tx.raw_query(&format!(
        "INSERT INTO webhook_deliveries (community_id, webhook_id, audit_id, event_type) \
         VALUES ('{id}', '{}', {}, 'member.joined')",
        webhook.id, joined.id
    ))
    .await
    .unwrap();
    assert!(tx
        .processed_events()
        .claim("seed-event", "seed")
        .await
        .unwrap());
    tx.interaction_replies()
        .record(
            "seed-event",
            &store::repo::PendingReply::only(store::repo::ReplyBody::Message("seed".into())),
        )
        .await
        .unwrap();
    let wallet = store::WalletAddress::parse(&format!("0x{guild:040x}")).unwrap();
    tx.profiles().link_wallet(sf(user), &wallet).await.unwrap();
    tx.link_tokens()
        .issue(
            sf(user),
            &[guild as u8; 32],
            Utc::now() + chrono::Duration::hours(1),
            Utc::now(),
        )
        .await
        .unwrap();
    tx.wallet_nonces()
        .issue(
            sf(user),
            &wallet,
            &"ab".repeat(16),
            "sign me",
            Utc::now() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    tx.sync_counters()
        .add(store::repo::SyncCounter::Discord429, "", 1)
        .await
        .unwrap();
    tx.api_keys()
        .create(&store::repo::NewApiKey {
            name: "fixture".into(),
            prefix: format!("{guild:012x}"),
            secret_hash: [7; 32],
            scopes: vec!["read".into()],
            created_by: None,
            expires_at: None,
        })
        .await
        .unwrap();
    tx.role_grants()
        .record(&store::repo::RoleGrant {
            profile_id: profile.id,
            rule_id: rule.id,
            role_discord_id: sf(guild + 1),
            eligible: Some(true),
            failing_since: None,
            detail: "seed".into(),
            checked_at: Utc::now(),
            wallets: vec![wallet],
        })
        .await
        .unwrap();
    // Directly: a sync's row comes with its first chunk's members.
    tx.raw_query(&format!(
        "INSERT INTO member_syncs (community_id, nonce, chunk_count, first_seq) VALUES ('{id}', 'seed', 2, 1)"
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Tenant {
        id,
        user,
        profile: profile.id,
        rule: rule.id,
        unawarded_badge: badges[1].id,
        webhook: webhook.id,
        audit_id: joined.id,
    }
}

struct Fixture {
    _db: TestDb,
    app: Client,
    a: Tenant,
    b: Tenant,
}

async fn fixture(label: &str) -> Fixture {
    let db = TestDb::create(label).await;
    let store = db.store(4).await;
    let a = seed(&store, 1001).await;
    let b = seed(&store, 2002).await;
    let app = db.app_direct().await;
    Fixture { _db: db, app, a, b }
}

/// Runs `sql` in a transaction with the tenant set (or none), then rolls
/// back. Returns rows affected, or the SQLSTATE of the failure.
async fn in_tenant(app: &Client, tenant: Option<TenantId>, sql: &str) -> Result<u64, SqlState> {
    app.batch_execute("BEGIN").await.unwrap();
    if let Some(t) = tenant {
        app.batch_execute(&format!(
            "SELECT set_config('app.current_tenant', '{t}', true)"
        ))
        .await
        .unwrap();
    }
    let result = app.execute(sql, &[]).await;
    app.batch_execute("ROLLBACK").await.unwrap();
    result.map_err(|e| e.code().cloned().unwrap_or(SqlState::CONNECTION_FAILURE))
}

async fn count(app: &Client, tenant: Option<TenantId>, from: &str) -> i64 {
    app.batch_execute("BEGIN").await.unwrap();
    if let Some(t) = tenant {
        app.batch_execute(&format!(
            "SELECT set_config('app.current_tenant', '{t}', true)"
        ))
        .await
        .unwrap();
    }
    let n = app
        .query_one(&format!("SELECT count(*) FROM {from}"), &[])
        .await
        .unwrap()
        .get(0);
    app.batch_execute("ROLLBACK").await.unwrap();
    n
}

/// Per table: how to address tenant B's rows, a harmless update, and an
/// insert of a new row for tenant B.
fn table_cases(f: &Fixture) -> Vec<(&'static str, String, String, String)> {
    let b = f.b.id;
    vec![
        (
            "communities",
            format!("id = '{b}'"),
            "name = name".into(),
            format!("INSERT INTO communities (id, discord_guild_id, name) VALUES ('{b}', 9999, 'x')"),
        ),
        (
            "profiles",
            format!("community_id = '{b}'"),
            "tier = tier".into(),
            format!("INSERT INTO profiles (community_id, discord_user_id) VALUES ('{b}', 4242)"),
        ),
        (
            "eligibility_rules",
            format!("community_id = '{b}'"),
            "priority = priority".into(),
            format!(
                "INSERT INTO eligibility_rules (community_id, rule_type, role_discord_id) \
                 VALUES ('{b}', 'score_threshold', 4242)"
            ),
        ),
        (
            "badges",
            format!("community_id = '{b}'"),
            "name = name".into(),
            format!(
                "INSERT INTO badges (community_id, slug, name, evaluator) \
                 VALUES ('{b}', 'sneaky', 'x', 'manual_grant')"
            ),
        ),
        (
            "badge_awards",
            format!("community_id = '{b}'"),
            "reason = reason".into(),
            format!(
                "INSERT INTO badge_awards (community_id, badge_id, profile_id) VALUES ('{b}', '{}', '{}')",
                f.b.unawarded_badge, f.b.profile
            ),
        ),
        (
            "processed_events",
            format!("community_id = '{b}'"),
            "event_type = event_type".into(),
            format!("INSERT INTO processed_events (community_id, event_id, event_type) VALUES ('{b}', 'forged', 'x')"),
        ),
        (
            "interaction_replies",
            format!("community_id = '{b}'"),
            "content = content".into(),
            format!(
                "INSERT INTO interaction_replies (community_id, event_id, kind, content) \
                 VALUES ('{b}', 'seed-event', 'message', 'forged')"
            ),
        ),
        (
            "wallet_link_nonces",
            format!("community_id = '{b}'"),
            "message = message".into(),
            format!(
                "INSERT INTO wallet_link_nonces (community_id, discord_user_id, nonce, message, expires_at, address) \
                 VALUES ('{b}', 4242, '{}', 'x', now(), '0x{}')",
                "cd".repeat(16),
                "cd".repeat(20)
            ),
        ),
        (
            "member_wallets",
            format!("community_id = '{b}'"),
            "linked_at = linked_at".into(),
            format!(
                "INSERT INTO member_wallets (community_id, profile_id, address, proof) \
                 VALUES ('{b}', '{}', '0x{}', 'eoa')",
                f.b.profile,
                "ef".repeat(20)
            ),
        ),
        (
            "wallet_link_tokens",
            format!("community_id = '{b}'"),
            "used_at = used_at".into(),
            format!(
                "INSERT INTO wallet_link_tokens (token_hash, community_id, discord_user_id, expires_at) \
                 VALUES ('\\x{}', '{b}', 4242, now())",
                "ab".repeat(32)
            ),
        ),
        (
            "webhooks",
            format!("community_id = '{b}'"),
            "description = description".into(),
            format!(
                "INSERT INTO webhooks (community_id, url, events, secret) \
                 VALUES ('{b}', 'https://evil.example', '{{member.joined}}', '{}')",
                "x".repeat(40)
            ),
        ),
        (
            "webhook_deliveries",
            format!("community_id = '{b}'"),
            "attempts = attempts".into(),
            format!(
                "INSERT INTO webhook_deliveries (community_id, webhook_id, audit_id, event_type) \
                 VALUES ('{b}', '{}', {}, 'role.granted')",
                f.b.webhook, f.b.audit_id
            ),
        ),
        (
            "sync_counters",
            format!("community_id = '{b}'"),
            "count = count".into(),
            format!(
                "INSERT INTO sync_counters (community_id, minute, counter, count) VALUES ('{b}', now(), 'discord_429', 1)"
            ),
        ),
        (
            "api_keys",
            format!("community_id = '{b}'"),
            "revoked_at = revoked_at".into(),
            format!(
                "INSERT INTO api_keys (community_id, name, prefix, secret_hash, scopes) \
                 VALUES ('{b}', 'forged', 'aaaaaaaaaaaa', decode(repeat('00', 32), 'hex'), '{{read}}')"
            ),
        ),
        (
            "audit_logs",
            format!("community_id = '{b}'"),
            "action = action".into(),
            format!("INSERT INTO audit_logs (community_id, actor_type, action) VALUES ('{b}', 'system', 'x')"),
        ),
        (
            "role_grants",
            format!("community_id = '{b}'"),
            "detail = detail".into(),
            format!(
                "INSERT INTO role_grants (community_id, profile_id, rule_id, role_discord_id) \
                 VALUES ('{b}', '{}', '{}', 4242)",
                f.b.profile, f.b.rule
            ),
        ),
        (
            "member_syncs",
            format!("community_id = '{b}'"),
            "chunks_received = chunks_received".into(),
            format!(
                "INSERT INTO member_syncs (community_id, nonce, chunk_count, first_seq) \
                 VALUES ('{b}', 'forged', 1, 1)"
            ),
        ),
    ]
}

const DENIED: SqlState = SqlState::INSUFFICIENT_PRIVILEGE;

#[tokio::test]
async fn tenant_a_cannot_read_or_change_tenant_b_rows_in_any_table() {
    let f = fixture("rls_cross_tenant").await;
    let a = Some(f.a.id);
    // Every table behind row-level security is a case below (dashboard
    // sessions are a person's, not a community's: the runtime role has no
    // grant on them at all).
    let protected: Vec<String> = f
        .app
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relrowsecurity
               AND c.relname <> 'web_sessions'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut covered: Vec<String> = table_cases(&f)
        .iter()
        .map(|(table, ..)| (*table).to_owned())
        .collect();
    covered.sort();
    assert_eq!(covered, protected, "a tenant table without a case here");
    for (table, b_rows, update, insert) in table_cases(&f) {
        // The rows exist and A can see its own: the checks below can fail.
        assert!(
            count(&f.app, a, table).await > 0,
            "{table}: A sees none of its own rows"
        );
        assert!(
            count(&f.app, Some(f.b.id), table).await > 0,
            "{table}: B has no rows"
        );

        let seen = count(&f.app, a, &format!("{table} WHERE {b_rows}")).await;
        assert_eq!(seen, 0, "{table}: A read B's rows");

        match in_tenant(
            &f.app,
            a,
            &format!("UPDATE {table} SET {update} WHERE {b_rows}"),
        )
        .await
        {
            Ok(n) => assert_eq!(n, 0, "{table}: A updated B's rows"),
            Err(code) => assert_eq!(code, DENIED, "{table}: update"),
        }
        match in_tenant(&f.app, a, &format!("DELETE FROM {table} WHERE {b_rows}")).await {
            Ok(n) => assert_eq!(n, 0, "{table}: A deleted B's rows"),
            Err(code) => assert_eq!(code, DENIED, "{table}: delete"),
        }
        assert_eq!(
            in_tenant(&f.app, a, &insert).await,
            Err(DENIED),
            "{table}: A inserted a row for B"
        );
        // And B's rows are all still there.
        assert!(count(&f.app, Some(f.b.id), table).await > 0);
    }
}

#[tokio::test]
async fn without_a_tenant_nothing_is_visible_or_writable() {
    let f = fixture("rls_no_tenant").await;
    for (table, b_rows, update, insert) in table_cases(&f) {
        assert_eq!(
            count(&f.app, None, table).await,
            0,
            "{table}: rows visible without a tenant"
        );
        match in_tenant(
            &f.app,
            None,
            &format!("UPDATE {table} SET {update} WHERE {b_rows}"),
        )
        .await
        {
            Ok(n) => assert_eq!(n, 0, "{table}"),
            Err(code) => assert_eq!(code, DENIED, "{table}"),
        }
        assert!(
            in_tenant(&f.app, None, &insert).await.is_err(),
            "{table}: insert without tenant"
        );
    }
    // After a transaction-local setting ends the value reads '' (not NULL);
    // that must still mean "no tenant".
    f.app.batch_execute("BEGIN").await.unwrap();
    f.app
        .batch_execute(&format!("SELECT set_tenant_context('{}')", f.a.id))
        .await
        .unwrap();
    f.app.batch_execute("COMMIT").await.unwrap();
    let leftover: String = f
        .app
        .query_one("SELECT current_setting('app.current_tenant', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftover, "");
    let n: i64 = f
        .app
        .query_one("SELECT count(*) FROM profiles", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn bypass_attempts_by_the_runtime_role_all_fail() {
    let f = fixture("rls_bypass").await;
    let app = &f.app;
    // Admin-looking settings change nothing: no policy reads them.
    for setting in [
        "app.is_admin",
        "app.admin",
        "app.bypass_rls",
        "app.role",
        "app.superuser",
    ] {
        for value in ["true", "on", "1", "admin"] {
            app.batch_execute(&format!("SET {setting} = '{value}'"))
                .await
                .unwrap();
            let n: i64 = app
                .query_one("SELECT count(*) FROM profiles", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{setting}={value} exposed rows");
        }
    }
    app.batch_execute("RESET ALL").await.unwrap();
    let n: i64 = app
        .query_one("SELECT count(*) FROM audit_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "RESET ALL exposed rows");

    let expect_denied = [
        "SET ROLE gatehouse_owner",
        "SET ROLE gatehouse_definer",
        "SET SESSION AUTHORIZATION gatehouse_owner",
        "ALTER TABLE profiles DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE profiles NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON profiles",
        "CREATE POLICY open ON profiles USING (true)",
        "ALTER ROLE gatehouse_app BYPASSRLS",
        "CREATE FUNCTION public.sneak() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "UPDATE audit_logs SET action = 'rewritten'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
        "TRUNCATE profiles",
    ];
    for sql in expect_denied {
        let err = app.batch_execute(sql).await.expect_err(sql);
        assert_eq!(err.code(), Some(&DENIED), "{sql}: {err}");
    }

    // Turning row security off makes a query fail rather than bypass.
    app.batch_execute("SET row_security = off").await.unwrap();
    let err = app
        .query("SELECT * FROM profiles", &[])
        .await
        .expect_err("row_security=off must not bypass");
    assert_eq!(err.code(), Some(&DENIED));
    app.batch_execute("RESET row_security").await.unwrap();

    // Audit rows: append-only and only for the current tenant.
    let a = Some(f.a.id);
    let own = format!(
        "INSERT INTO audit_logs (community_id, actor_type, action) VALUES ('{}', 'user', 'ok')",
        f.a.id
    );
    assert_eq!(in_tenant(app, a, &own).await, Ok(1));
    let other = format!(
        "INSERT INTO audit_logs (community_id, actor_type, action) VALUES ('{}', 'user', 'forged')",
        f.b.id
    );
    assert_eq!(in_tenant(app, a, &other).await, Err(DENIED));
    assert_eq!(
        in_tenant(app, a, "UPDATE audit_logs SET action = 'rewritten'").await,
        Err(DENIED)
    );
    assert_eq!(
        in_tenant(app, a, "DELETE FROM audit_logs").await,
        Err(DENIED)
    );
    // The helper writes for the current tenant only and refuses without one.
    assert_eq!(
        in_tenant(app, a, "SELECT audit_action('system', NULL, 'via helper')").await,
        Ok(1)
    );
    assert!(
        in_tenant(app, None, "SELECT audit_action('system', NULL, 'x')")
            .await
            .is_err()
    );

    // A garbage tenant fails closed (an error), it does not widen anything.
    assert!(in_tenant(app, None, "SELECT set_config('app.current_tenant', 'x'' OR true', true), (SELECT count(*) FROM profiles)")
        .await
        .is_err());
}

#[tokio::test]
async fn a_delivery_cannot_point_at_another_communitys_webhook_or_audit_row() {
    let f = fixture("rls_webhook_fk").await;
    let (a, b) = (&f.a, &f.b);
    let insert = |webhook: store::WebhookId, audit_id: i64| {
        format!(
            "INSERT INTO webhook_deliveries (community_id, webhook_id, audit_id, event_type) \
             VALUES ('{}', '{webhook}', {audit_id}, 'member.joined')",
            a.id
        )
    };
    // A's own webhook and audit row: accepted (the refusals below are about
    // whose rows they name, not about the statement). The seed already
    // delivered this audit row once, so take a fresh one.
    let own = format!(
        "WITH e AS (INSERT INTO audit_logs (community_id, actor_type, action) \
         VALUES ('{}', 'system', 'member.joined') RETURNING id) \
         INSERT INTO webhook_deliveries (community_id, webhook_id, audit_id, event_type) \
         SELECT '{}', '{}', id, 'member.joined' FROM e",
        a.id, a.id, a.webhook
    );
    assert_eq!(in_tenant(&f.app, Some(a.id), &own).await, Ok(1));
    assert_eq!(
        in_tenant(&f.app, Some(a.id), &insert(b.webhook, a.audit_id)).await,
        Err(SqlState::FOREIGN_KEY_VIOLATION),
        "a delivery of A named B's webhook"
    );
    assert_eq!(
        in_tenant(&f.app, Some(a.id), &insert(a.webhook, b.audit_id)).await,
        Err(SqlState::FOREIGN_KEY_VIOLATION),
        "a delivery of A named B's audit row"
    );
    // The app cannot rewrite a delivery's history away either.
    assert_eq!(
        in_tenant(&f.app, Some(a.id), "DELETE FROM webhook_deliveries").await,
        Err(DENIED)
    );
}

/// Runs `sql` in A's own tenant transaction (rolled back) and returns the
/// SQLSTATE and message of its failure, or the rows it affected.
async fn in_own_tenant(
    app: &Client,
    tenant: TenantId,
    sql: &str,
) -> Result<u64, (SqlState, String)> {
    app.batch_execute("BEGIN").await.unwrap();
    app.batch_execute(&format!(
        "SELECT set_config('app.current_tenant', '{tenant}', true)"
    ))
    .await
    .unwrap();
    let result = app.execute(sql, &[]).await;
    app.batch_execute("ROLLBACK").await.unwrap();
    result.map_err(|e| {
        let code = e.code().cloned().unwrap_or(SqlState::CONNECTION_FAILURE);
        let message = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        (code, message)
    })
}

#[tokio::test]
async fn the_runtime_role_cannot_rewrite_identity_columns_of_its_own_rows() {
    let f = fixture("rls_column_grants").await;
    let a = &f.a;
    // Each statement names only A's own rows, so row-level security lets it
    // through (several even keep the value as it is): only the column grants
    // can refuse it, and the message says it was the grant, not a policy.
    let refused = [
        (
            "communities",
            format!("discord_guild_id = 424242 WHERE id = '{}'", a.id),
        ),
        (
            "communities",
            format!("subscription_tier = 'enterprise' WHERE id = '{}'", a.id),
        ),
        ("communities", format!("id = id WHERE id = '{}'", a.id)),
        (
            "communities",
            format!("created_at = now() WHERE id = '{}'", a.id),
        ),
        (
            "communities",
            format!("name = 'renamed' WHERE id = '{}'", a.id),
        ),
        ("profiles", "community_id = community_id".into()),
        ("profiles", "discord_user_id = discord_user_id + 1".into()),
        ("profiles", "id = id".into()),
        ("profiles", "created_at = now()".into()),
        ("eligibility_rules", "community_id = community_id".into()),
        ("eligibility_rules", "id = id".into()),
        ("badges", "community_id = community_id".into()),
        ("badges", "id = id".into()),
        ("badges", "slug = 'renamed'".into()),
        ("badge_awards", "community_id = community_id".into()),
        ("badge_awards", "reason = 'rewritten'".into()),
        ("role_grants", "community_id = community_id".into()),
        ("role_grants", "profile_id = profile_id".into()),
        ("role_grants", "rule_id = rule_id".into()),
        ("wallet_link_nonces", "community_id = community_id".into()),
        (
            "wallet_link_nonces",
            "discord_user_id = discord_user_id + 1".into(),
        ),
        ("member_wallets", "community_id = community_id".into()),
        ("member_wallets", "address = address".into()),
        ("webhooks", "community_id = community_id".into()),
        ("webhooks", "secret = repeat('z', 40)".into()),
        ("webhooks", "url = 'https://elsewhere.example'".into()),
        ("webhook_deliveries", "community_id = community_id".into()),
        ("webhook_deliveries", "webhook_id = webhook_id".into()),
        ("webhook_deliveries", "audit_id = audit_id".into()),
        ("sync_counters", "community_id = community_id".into()),
        ("sync_counters", "counter = counter".into()),
        ("api_keys", "community_id = community_id".into()),
        ("api_keys", "scopes = '{read}'".into()),
        ("wallet_link_tokens", "community_id = community_id".into()),
        // Stored and deleted, never rewritten: no UPDATE at all.
        ("interaction_replies", "content = 'rewritten'".into()),
        ("interaction_replies", "event_id = event_id".into()),
        // Which sync a row is, and whose, never changes.
        ("member_syncs", "nonce = nonce".into()),
        ("member_syncs", "community_id = community_id".into()),
    ];
    for (table, set) in refused {
        let sql = format!("UPDATE {table} SET {set}");
        match in_own_tenant(&f.app, a.id, &sql).await {
            Err((code, message)) => {
                assert_eq!(code, DENIED, "{sql}: {message}");
                assert!(
                    message.starts_with("permission denied"),
                    "{sql} was refused by something other than a grant: {message}"
                );
            }
            Ok(n) => panic!("{sql}: the runtime role updated {n} row(s)"),
        }
    }

    // What the store does update is still allowed, column by column (every
    // column the runtime role may update, and nothing more).
    let grantable = f
        .app
        .query(
            "SELECT table_name::text, string_agg(column_name::text, ',' ORDER BY column_name COLLATE \"C\")
               FROM information_schema.column_privileges
              WHERE grantee = 'gatehouse_app' AND privilege_type = 'UPDATE'
              GROUP BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect::<BTreeMap<_, _>>();
    let expected: BTreeMap<String, String> = [
        ("api_keys", "revoked_at"),
        (
            "communities",
            "active,announced_at,members_synced_at,recheck_pass_at,settings,theme_id",
        ),
        (
            "eligibility_rules",
            "chain,contract_address,enabled,parameters,priority,role_discord_id,rule_type,tier_mapping",
        ),
        ("badges", "criteria,description,evaluator,name"),
        ("member_wallets", "linked_at,profile_id,proof"),
        (
            "member_syncs",
            "chunk_count,chunks_received,completed_at,first_seq,members_left,members_received",
        ),
        (
            "profiles",
            "check_lease_until,current_rank,joined_at,last_event_seq,left_at,next_check_at,role_ids,score,tier",
        ),
        (
            "role_grants",
            "checked_at,detail,eligible,failing_since,role_discord_id,wallets",
        ),
        ("sync_counters", "count"),
        ("wallet_link_nonces", "address,created_at,expires_at,message,nonce"),
        ("wallet_link_tokens", "used_at"),
        (
            "webhook_deliveries",
            "attempts,finished_at,last_attempt_at,last_error,last_status,published_at,state",
        ),
        ("webhooks", "scanned_audit_id,scanned_tx_id"),
    ]
    .into_iter()
    .map(|(t, c)| (t.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(grantable, expected);
    // And no table-wide UPDATE is left anywhere.
    let table_wide: Vec<String> = f
        .app
        .query(
            "SELECT table_name::text FROM information_schema.role_table_grants
              WHERE grantee = 'gatehouse_app' AND privilege_type = 'UPDATE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(table_wide.is_empty(), "table-wide UPDATE on {table_wide:?}");

    // The columns the store updates really are writable by the runtime role.
    for set in [
        "announced_at = now()",
        "active = true",
        "settings = '{}'",
        "theme_id = 'dark'",
        "recheck_pass_at = now()",
    ] {
        let sql = format!("UPDATE communities SET {set} WHERE id = '{}'", a.id);
        assert_eq!(in_own_tenant(&f.app, a.id, &sql).await, Ok(1), "{sql}");
    }
}

#[tokio::test]
async fn every_reference_between_tenant_tables_includes_the_community() {
    let f = fixture("rls_composite_fks").await;
    // Foreign keys are checked without row-level security, so a key on the
    // parent's id alone lets a row point into another community. Every key
    // to a table that has a community_id must pair community_id with
    // community_id.
    let offenders: Vec<String> = f
        .app
        .query(
            "SELECT format('%s.%s -> %s', c.conrelid::regclass, c.conname, c.confrelid::regclass)
               FROM pg_constraint c
              WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
                AND EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.confrelid AND a.attname = 'community_id'
                               AND NOT a.attisdropped)
                AND NOT EXISTS (
                    SELECT 1 FROM unnest(c.conkey, c.confkey) AS k(child, parent)
                      JOIN pg_attribute ca ON ca.attrelid = c.conrelid AND ca.attnum = k.child
                      JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = k.parent
                     WHERE ca.attname = 'community_id' AND pa.attname = 'community_id')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        offenders.is_empty(),
        "single-column keys into tenant tables: {offenders:?}"
    );
    // The query above looks at something: the keys it accepts are there.
    let composite: i64 = f
        .app
        .query_one(
            "SELECT count(*) FROM pg_constraint c
              WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
                AND c.confrelid <> 'communities'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        composite >= 7,
        "only {composite} keys between tenant tables"
    );
    // And a key to communities itself is always the row's own community_id.
    let odd: Vec<String> = f
        .app
        .query(
            "SELECT format('%s.%s', c.conrelid::regclass, c.conname)
               FROM pg_constraint c
              WHERE c.contype = 'f' AND c.confrelid = 'communities'::regclass
                AND (c.conkey <> ARRAY[(SELECT attnum FROM pg_attribute
                                         WHERE attrelid = c.conrelid AND attname = 'community_id')])",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        odd.is_empty(),
        "keys to communities not on community_id: {odd:?}"
    );
}

#[tokio::test]
async fn a_row_cannot_reference_another_communitys_row_by_its_id() {
    let f = fixture("rls_cross_fk").await;
    let (a, b) = (&f.a, &f.b);
    let grant = |profile: store::ProfileId, rule: store::RuleId| {
        format!(
            "INSERT INTO role_grants (community_id, profile_id, rule_id, role_discord_id) \
             VALUES ('{}', '{profile}', '{rule}', 1) \
             ON CONFLICT (community_id, profile_id, rule_id) DO UPDATE SET role_discord_id = 1",
            a.id
        )
    };
    // A's own profile and rule: accepted, so the refusals below are about
    // whose rows are named.
    assert_eq!(
        in_tenant(&f.app, Some(a.id), &grant(a.profile, a.rule)).await,
        Ok(1)
    );
    // The ids exist, in B: the keys refuse them even so.
    for (what, sql) in [
        ("a role grant of A named B's rule", grant(a.profile, b.rule)),
        ("a role grant of A named B's member", grant(b.profile, a.rule)),
        (
            "a badge award of A named B's badge",
            format!(
                "INSERT INTO badge_awards (community_id, badge_id, profile_id) VALUES ('{}', '{}', '{}')",
                a.id, b.unawarded_badge, a.profile
            ),
        ),
        (
            "a wallet of A named B's member",
            format!(
                "INSERT INTO member_wallets (community_id, profile_id, address, proof) \
                 VALUES ('{}', '{}', '0x{}', 'eoa')",
                a.id,
                b.profile,
                "12".repeat(20)
            ),
        ),
    ] {
        assert_eq!(
            in_tenant(&f.app, Some(a.id), &sql).await,
            Err(SqlState::FOREIGN_KEY_VIOLATION),
            "{what}"
        );
    }
}

#[tokio::test]
async fn the_cross_tenant_functions_reveal_only_a_community_id() {
    let f = fixture("rls_definer").await;
    let row = f
        .app
        .query_one("SELECT resolve_community(2002)", &[])
        .await
        .unwrap();
    let id: Option<Uuid> = row.get(0);
    assert_eq!(id.map(TenantId::from), Some(f.b.id));
    let unknown: Option<Uuid> = f
        .app
        .query_one("SELECT resolve_community(123456)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unknown, None);
}

/// What a call of a tenant function may do to another community's rows.
enum Reach {
    /// Returns that community's rows when it is current.
    Reads,
    /// Adds rows to that community when it is current.
    Inserts,
    /// Changes that community's member (their roles, next check or lease)
    /// when it is current.
    Updates,
}

/// Runs `call` as `tenant` and then, if it succeeded and there is a probe,
/// `probe` as `then` in the same transaction; rolls back. Returns the rows
/// the call returned (or its SQLSTATE) and what the probe read.
async fn call_then_probe(
    app: &Client,
    tenant: TenantId,
    call: &str,
    then: TenantId,
    probe: Option<&str>,
) -> (Result<usize, SqlState>, Option<String>) {
    let as_tenant = |t: TenantId| format!("SELECT set_config('app.current_tenant', '{t}', true)");
    app.batch_execute("BEGIN").await.unwrap();
    app.batch_execute(&as_tenant(tenant)).await.unwrap();
    let result = app
        .query(call, &[])
        .await
        .map(|rows| rows.len())
        .map_err(|e| e.code().cloned().unwrap_or(SqlState::CONNECTION_FAILURE));
    let mut probed = None;
    if let (Ok(_), Some(probe)) = (&result, probe) {
        app.batch_execute(&as_tenant(then)).await.unwrap();
        probed = Some(app.query_one(probe, &[]).await.unwrap().get(0));
    }
    app.batch_execute("ROLLBACK").await.unwrap();
    (result, probed)
}

#[tokio::test]
async fn the_tenant_functions_reach_only_the_current_community() {
    // The functions of migrations 0019 to 0021 take the community as an
    // argument, like the statements they replace took it as a parameter;
    // they run as the caller, so the policies decide what that argument
    // can reach. Called by tenant A with everything of B's, each reads
    // nothing, adds nothing and changes nothing; called by B, each does
    // (so every refusal here could have been otherwise).
    let f = fixture("rls_functions").await;
    let (a, b) = (f.a.id, f.b.id);
    let (profile, rule, user) = (f.b.profile, f.b.rule, f.b.user);
    let member = format!(
        "SELECT concat_ws(' ', role_ids, next_check_at, check_lease_until) FROM profiles WHERE id = '{profile}'"
    );
    let cases: Vec<(String, Reach)> = vec![
        (format!("SELECT * FROM profile_of_member('{b}', {user})"), Reach::Reads),
        (format!("SELECT * FROM enabled_rules('{b}')"), Reach::Reads),
        (format!("SELECT * FROM community_rules('{b}')"), Reach::Reads),
        (format!("SELECT * FROM lock_member_profiles('{b}', ARRAY[{user}]::bigint[])"), Reach::Reads),
        (format!("SELECT * FROM profiles_of_members('{b}', ARRAY[{user}]::bigint[])"), Reach::Reads),
        (format!("SELECT * FROM community_badges('{b}')"), Reach::Reads),
        (format!("SELECT * FROM lease_profiles('{b}', ARRAY['{profile}']::uuid[], 60)"), Reach::Reads),
        (format!("SELECT * FROM lease_member_profiles('{b}', ARRAY[{user}]::bigint[], 60)"), Reach::Reads),
        (format!("SELECT * FROM save_member_profile('{b}', 4242, '{{}}'::bigint[], now())"), Reach::Inserts),
        (
            format!("SELECT * FROM append_audit_entry('{b}', 'system', NULL, 'x', NULL, NULL, '{{}}'::jsonb, NULL)"),
            Reach::Inserts,
        ),
        (
            format!(
                "SELECT * FROM append_audit_entries('{b}', ARRAY['system'], ARRAY[NULL]::text[], ARRAY['x'], \
                 ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY['{{}}'::jsonb])"
            ),
            Reach::Inserts,
        ),
        (format!("SELECT * FROM claim_events('{b}', ARRAY['forged'], ARRAY['x'])"), Reach::Inserts),
        (
            format!(
                "SELECT * FROM apply_member_events('{b}', ARRAY[4242]::bigint[], ARRAY['{{}}'], ARRAY[now()], \
                 ARRAY[NULL]::timestamptz[], ARRAY[1]::bigint[], now())"
            ),
            Reach::Inserts,
        ),
        (
            format!(
                "SELECT * FROM apply_member_events_audited('{b}', ARRAY[4243]::bigint[], ARRAY['{{}}'], \
                 ARRAY[now()], ARRAY[NULL]::timestamptz[], ARRAY[1]::bigint[], now(), \
                 ARRAY[4243]::bigint[], ARRAY['system'], ARRAY[NULL]::text[], ARRAY['x'], \
                 ARRAY['profile'], ARRAY['{{}}'::jsonb])"
            ),
            Reach::Inserts,
        ),
        (
            format!(
                "SELECT record_role_grants('{b}', ARRAY['{profile}']::uuid[], ARRAY['{rule}']::uuid[], \
                 ARRAY[1]::bigint[], ARRAY[false], ARRAY[NULL]::timestamptz[], ARRAY['forged'], \
                 ARRAY[now()], ARRAY['[]'::jsonb])"
            ),
            Reach::Inserts,
        ),
        (
            format!("SELECT set_member_roles('{b}', ARRAY[{user}]::bigint[], ARRAY['{{1,2}}'])"),
            Reach::Updates,
        ),
        (
            format!(
                "SELECT finish_member_checks('{b}', ARRAY['{profile}']::uuid[], ARRAY['{profile}']::uuid[], \
                 ARRAY[(SELECT next_check_at FROM profiles WHERE id = '{profile}')], \
                 ARRAY['2001-01-01T00:00:00Z'::timestamptz])"
            ),
            Reach::Updates,
        ),
        (
            format!("SELECT * FROM lease_profiles('{b}', ARRAY['{profile}']::uuid[], 60)"),
            Reach::Updates,
        ),
    ];
    let (_, untouched) = call_then_probe(&f.app, b, "SELECT 1", b, Some(&member)).await;
    assert!(untouched.is_some());
    for (call, reach) in &cases {
        let probe = matches!(reach, Reach::Updates).then_some(member.as_str());
        let (by_a, after_a) = call_then_probe(&f.app, a, call, b, probe).await;
        let (by_b, after_b) = call_then_probe(&f.app, b, call, b, probe).await;
        match reach {
            Reach::Reads => {
                assert_eq!(by_a, Ok(0), "A read B's rows: {call}");
                assert!(
                    matches!(by_b, Ok(n) if n > 0),
                    "B reads its rows: {call}: {by_b:?}"
                );
            }
            Reach::Inserts => {
                assert_eq!(by_a, Err(DENIED), "A wrote a row for B: {call}");
                assert!(
                    matches!(by_b, Ok(n) if n > 0),
                    "B writes its rows: {call}: {by_b:?}"
                );
            }
            Reach::Updates => {
                assert!(by_a.is_ok() && by_b.is_ok(), "{call}: {by_a:?} {by_b:?}");
                assert_eq!(after_a, untouched, "A changed B's row: {call}");
                assert_ne!(after_b, untouched, "B changes its row: {call}");
            }
        }
    }
}

#[tokio::test]
async fn roles_policies_and_functions_are_as_designed() {
    let f = fixture("rls_catalog").await;
    let app = &f.app;
    let row = app
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'gatehouse_app'",
            &[],
        )
        .await
        .unwrap();
    for i in 0..4 {
        assert!(!row.get::<_, bool>(i), "gatehouse_app has attribute #{i}");
    }
    let owned: i64 = app
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = 'gatehouse_app'::regrole)
                  + (SELECT count(*) FROM pg_proc WHERE proowner = 'gatehouse_app'::regrole)
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = 'gatehouse_app'::regrole)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0, "gatehouse_app owns objects");

    // Every table with a community_id (and communities itself) has RLS
    // enabled and forced.
    let tables = app
        .query(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'
               AND (c.relname = 'communities' OR EXISTS (
                    SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'community_id' AND NOT a.attisdropped))",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = tables.iter().map(|t| t.get(0)).collect();
    for expected in [
        "communities",
        "profiles",
        "eligibility_rules",
        "badges",
        "badge_awards",
        "audit_logs",
        "processed_events",
        "interaction_replies",
        "role_grants",
        "wallet_link_nonces",
        "webhooks",
        "webhook_deliveries",
        "api_keys",
        "sync_counters",
        "member_wallets",
        "wallet_link_tokens",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for t in &tables {
        let name: String = t.get(0);
        assert!(t.get::<_, bool>(1), "{name}: RLS not enabled");
        assert!(t.get::<_, bool>(2), "{name}: RLS not forced");
    }

    // Policies: keyed on app.current_tenant only, never casting the column,
    // and together covering reads (USING) and writes (WITH CHECK).
    let policies = app
        .query(
            "SELECT tablename::text, policyname::text, cmd, coalesce(qual, ''), coalesce(with_check, '')
             FROM pg_policies WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap();
    assert!(policies.len() >= 6);
    for p in &policies {
        let (table, name, cmd, using, check): (String, String, String, String, String) =
            (p.get(0), p.get(1), p.get(2), p.get(3), p.get(4));
        let text = format!("{using} {check}");
        assert!(
            text.contains("current_setting('app.current_tenant'"),
            "{table}.{name}: {text}"
        );
        assert!(
            !text.contains("::text ="),
            "{table}.{name} casts a column: {text}"
        );
        assert!(
            !text.contains("(community_id)::text"),
            "{table}.{name} casts a column: {text}"
        );
        // Compared directly: a sub-select would add a plan node to every
        // statement for nothing (migration 0018).
        assert!(
            !text.contains("SELECT"),
            "{table}.{name} reads the tenant through a sub-select: {text}"
        );
        assert_eq!(
            text.matches("current_setting(").count(),
            text.matches("current_setting('app.current_tenant'").count(),
            "{table}.{name} reads another setting: {text}"
        );
        match cmd.as_str() {
            "ALL" => assert!(!using.is_empty() && !check.is_empty(), "{table}.{name}"),
            "SELECT" => assert!(!using.is_empty(), "{table}.{name}"),
            "INSERT" => assert!(!check.is_empty(), "{table}.{name}"),
            other => panic!("{table}.{name}: unexpected {other} policy"),
        }
    }

    // The only SECURITY DEFINER functions are these narrow ones, owned by
    // the NOLOGIN definer role, with a pinned search_path.
    let definers = app
        .query(
            "SELECT p.proname::text, pg_get_userbyid(p.proowner)::text, coalesce(array_to_string(p.proconfig, ','), '')
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.prosecdef ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = definers.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        vec![
            "active_communities",
            "authenticate_api_key",
            "provision_community",
            "prune_audit_logs",
            "resolve_community",
            "resolve_wallet_link_token",
            // Dashboard sessions (0013): a person's, not a tenant's; the
            // runtime role has no grant on the table.
            "web_active_communities",
            "web_session_create",
            "web_session_delete",
            "web_session_get",
            "web_session_set_permissions",
            "web_sessions_prune",
            "webhook_communities"
        ]
    );
    for d in &definers {
        assert_eq!(d.get::<_, String>(1), "gatehouse_definer");
        assert!(d.get::<_, String>(2).starts_with("search_path="));
    }
    let definer_login: bool = app
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'gatehouse_definer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!definer_login);
}

#[tokio::test]
async fn policies_keep_tenant_lookups_on_the_index() {
    let f = fixture("rls_index").await;
    let db_admin = f._db.admin().await;
    // Enough rows that a sequential scan would be the planner's choice if
    // the policy predicate were not indexable.
    db_admin
        .batch_execute(&format!(
            "INSERT INTO profiles (community_id, discord_user_id)
             SELECT '{}', g FROM generate_series(100000, 120000) g;
             ANALYZE profiles;",
            f.b.id
        ))
        .await
        .unwrap();
    f.app.batch_execute("BEGIN").await.unwrap();
    f.app
        .batch_execute(&format!("SELECT set_tenant_context('{}')", f.b.id))
        .await
        .unwrap();
    let plan: String = f
        .app
        .query(
            "EXPLAIN SELECT * FROM profiles WHERE discord_user_id = 100500",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    f.app.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        plan.contains("Index"),
        "policy predicate defeats the index:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan on profiles"), "{plan}");
}
