//! The migration runner against a real PostgreSQL.

use std::time::Duration;

use store::migrate::{self, MigrateError, Migration, MIGRATIONS};
use testkit::TestDb;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn applies_everything_from_empty_then_nothing_on_rerun() {
    let db = TestDb::create_empty("migrate_from_empty").await;
    let first = migrate::run(&db.owner_url(), TIMEOUT).await.unwrap();
    assert_eq!(first.applied.len(), MIGRATIONS.len());
    assert_eq!(first.already_applied, 0);

    let second = migrate::run(&db.owner_url(), TIMEOUT).await.unwrap();
    assert!(
        second.applied.is_empty(),
        "re-run applied {:?}",
        second.applied
    );
    assert_eq!(second.already_applied, MIGRATIONS.len());

    let admin = db.admin().await;
    let recorded: i64 = admin
        .query_one("SELECT count(*) FROM gatehouse_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded as usize, MIGRATIONS.len());
    // Tables belong to the owner role, not to whoever ran the test.
    let owners: Vec<String> = db
        .column("SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'")
        .await;
    assert_eq!(owners, vec!["gatehouse_owner".to_owned()]);
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    let db = TestDb::create("migrate_edited").await;
    let mut edited: Vec<Migration> = MIGRATIONS.to_vec();
    edited[0].sql = "SELECT 'this is not what was applied'";
    let mut client = testkit::connect(&db.owner_url()).await;
    let err = migrate::apply(&mut client, &edited).await.unwrap_err();
    match &err {
        MigrateError::Modified { version, .. } => assert_eq!(*version, 1),
        other => panic!("expected Modified, got {other:?}"),
    }
    assert!(
        err.to_string().contains("changed after it was applied"),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    let db = TestDb::create("migrate_newer_db").await;
    let (newest, older) = MIGRATIONS.split_last().unwrap();
    let mut client = testkit::connect(&db.owner_url()).await;
    let err = migrate::apply(&mut client, older).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Unknown { version, .. } if version == newest.version),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::create_empty("migrate_concurrent").await;
    let url = db.owner_url();
    let runs = futures::future::join_all((0..4).map(|_| migrate::run(&url, TIMEOUT))).await;
    let mut applied_total = 0;
    for run in runs {
        applied_total += run.expect("every concurrent runner succeeds").applied.len();
    }
    assert_eq!(applied_total, MIGRATIONS.len());
}

#[tokio::test]
async fn a_superuser_cannot_run_migrations() {
    let db = TestDb::create_empty("migrate_superuser").await;
    let mut admin = db.admin().await;
    let err = migrate::apply(&mut admin, MIGRATIONS).await.unwrap_err();
    assert!(matches!(err, MigrateError::Superuser { .. }), "{err:?}");
}

#[tokio::test]
async fn composite_keys_apply_to_a_database_with_data() {
    let db = TestDb::create_empty("migrate_0014_with_data").await;
    let before = MIGRATIONS
        .iter()
        .position(|m| m.version == 14)
        .expect("migration 14 is listed");
    let mut owner = testkit::connect(&db.owner_url()).await;
    migrate::apply(&mut owner, &MIGRATIONS[..before])
        .await
        .unwrap();
    // As the superuser (no policies): two communities, one rule and member
    // each, a grant of A's on A's rule, and one of A's naming B's rule, which
    // only the old single-column key allowed.
    let admin = db.admin().await;
    admin
        .batch_execute(
            "INSERT INTO communities (id, discord_guild_id, name) VALUES
                ('00000000-0000-0000-0000-00000000000a', 1, 'a'),
                ('00000000-0000-0000-0000-00000000000b', 2, 'b');
             INSERT INTO profiles (id, community_id, discord_user_id) VALUES
                ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000a', 10),
                ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-00000000000b', 20);
             INSERT INTO eligibility_rules (id, community_id, rule_type, role_discord_id) VALUES
                ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-00000000000a', 'custom', 11),
                ('00000000-0000-0000-0000-0000000000b2', '00000000-0000-0000-0000-00000000000b', 'custom', 21);
             INSERT INTO role_grants (community_id, profile_id, rule_id, role_discord_id, eligible) VALUES
                ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a1',
                 '00000000-0000-0000-0000-0000000000a2', 11, true),
                ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a1',
                 '00000000-0000-0000-0000-0000000000b2', 21, true);",
        )
        .await
        .unwrap();

    let run = migrate::apply(&mut owner, MIGRATIONS).await.unwrap();
    assert_eq!(run.applied.len(), MIGRATIONS.len() - before);
    let kept: Vec<String> = db
        .column("SELECT rule_id::text FROM role_grants ORDER BY rule_id")
        .await;
    assert_eq!(
        kept,
        vec!["00000000-0000-0000-0000-0000000000a2".to_owned()],
        "the grant naming another community's rule is gone, A's own is kept"
    );
    // The owner's policies are forced again afterwards.
    let unforced: Vec<String> = db
        .column(
            "SELECT relname::text FROM pg_class
              WHERE relname IN ('role_grants', 'eligibility_rules') AND NOT relforcerowsecurity",
        )
        .await;
    assert!(unforced.is_empty(), "{unforced:?}");
}

#[tokio::test]
async fn no_table_keeps_two_indexes_on_the_same_key() {
    // A btree serves its key in either direction, so a second index on the
    // same columns (and predicate) only costs every insert another write.
    let db = TestDb::create("migrate_no_twin_indexes").await;
    let admin = db.admin().await;
    let twins: Vec<(String, String)> = admin
        .query(
            "SELECT a.indexrelid::regclass::text, b.indexrelid::regclass::text
               FROM pg_index a
               JOIN pg_index b ON b.indrelid = a.indrelid AND a.indexrelid < b.indexrelid
               JOIN pg_class t ON t.oid = a.indrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE n.nspname = 'public'
                AND a.indkey::text = b.indkey::text
                AND (SELECT amname FROM pg_am m JOIN pg_class i ON i.relam = m.oid
                      WHERE i.oid = a.indexrelid)
                  = (SELECT amname FROM pg_am m JOIN pg_class i ON i.relam = m.oid
                      WHERE i.oid = b.indexrelid)
                AND pg_get_expr(a.indexprs, a.indrelid) IS NOT DISTINCT FROM
                    pg_get_expr(b.indexprs, b.indrelid)
                AND pg_get_expr(a.indpred, a.indrelid) IS NOT DISTINCT FROM
                    pg_get_expr(b.indpred, b.indrelid)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(twins, Vec::new(), "indexes on the same key");
}
