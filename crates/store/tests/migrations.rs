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
