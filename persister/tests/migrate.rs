//! The migration runner against real Postgres (`DATABASE_URL`).

use persister::migrate::{self, MigrateError, Migration, MIGRATIONS};
use persister::testdb::TestDb;

async fn applied_versions(db: &TestDb) -> Vec<i32> {
    db.client()
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn all_versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

#[tokio::test]
async fn applies_cleanly_then_second_run_is_a_noop() {
    let mut db = TestDb::create().await;

    let first = migrate::run(db.client_mut()).await.expect("first run");
    let applied: Vec<i32> = first.applied.iter().map(|m| m.version).collect();
    assert_eq!(applied, all_versions());
    assert!(first.already_applied.is_empty());
    assert_eq!(applied_versions(&db).await, all_versions());

    let rows = db
        .client()
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    for (row, m) in rows.iter().zip(MIGRATIONS) {
        assert_eq!(row.get::<_, &str>(1), m.name);
        assert_eq!(row.get::<_, &str>(2), m.checksum());
    }

    let second = migrate::run(db.client_mut()).await.expect("second run");
    assert!(second.is_noop(), "second run applied {:?}", second.applied);
    assert_eq!(second.already_applied, all_versions());
    assert_eq!(applied_versions(&db).await, all_versions());

    // The session advisory lock was released: another session can take it.
    let other = db.connect().await;
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock(7888175046813966708)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(got, "migration lock still held after run");
    drop(other);
    db.drop_db().await;
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_exactly_once() {
    let db = TestDb::create().await;
    let mut a = db.connect().await;
    let mut b = db.connect().await;

    let (ra, rb) = tokio::join!(migrate::run(&mut a), migrate::run(&mut b));
    let (ra, rb) = (ra.expect("runner a"), rb.expect("runner b"));

    let mut applied: Vec<i32> = ra
        .applied
        .iter()
        .chain(&rb.applied)
        .map(|m| m.version)
        .collect();
    applied.sort();
    assert_eq!(
        applied,
        all_versions(),
        "each migration applied exactly once"
    );
    assert!(
        ra.is_noop() || rb.is_noop(),
        "the waiting runner found nothing to do"
    );
    assert_eq!(applied_versions(&db).await, all_versions());

    // Base data was inserted once, not twice.
    let roles: i64 = db
        .client()
        .query_one("SELECT count(*) FROM roles", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 5);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn run_url_migrates_and_reports() {
    let db = TestDb::create().await;
    let report = migrate::run_url(db.url()).await.expect("run_url");
    assert_eq!(report.applied.len(), MIGRATIONS.len());
    let again = migrate::run_url(db.url()).await.expect("run_url again");
    assert!(again.is_noop());
    db.drop_db().await;
}

#[tokio::test]
async fn run_url_unreachable_is_a_connect_error() {
    let err = migrate::run_url("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, MigrateError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn edited_applied_migration_is_an_error_naming_it() {
    let mut db = TestDb::create_migrated().await;
    db.client()
        .execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE version = $2",
            &[&"0000", &3i32],
        )
        .await
        .unwrap();

    let err = migrate::run(db.client_mut())
        .await
        .expect_err("checksum mismatch");
    match &err {
        MigrateError::ChecksumMismatch { version, name, .. } => {
            assert_eq!(*version, 3);
            assert_eq!(name, "0003_assets");
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("0003_assets"), "{err}");
    db.drop_db().await;
}

#[tokio::test]
async fn unknown_applied_version_is_an_error() {
    let mut db = TestDb::create_migrated().await;
    db.client()
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, now())",
            &[&9999i32, &"9999_from_the_future", &"x"],
        )
        .await
        .unwrap();
    let err = migrate::run(db.client_mut())
        .await
        .expect_err("unknown version");
    assert!(
        matches!(&err, MigrateError::UnknownApplied { version: 9999, name } if name == "9999_from_the_future"),
        "{err:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn failing_migration_rolls_back_and_names_itself() {
    let mut db = TestDb::create().await;
    let list = [
        Migration {
            version: 1,
            name: "0001_ok",
            sql: "CREATE TABLE first_table (id INT PRIMARY KEY);",
        },
        Migration {
            version: 2,
            name: "0002_broken",
            sql: "CREATE TABLE second_table (id INT); SELECT no_such_column FROM first_table;",
        },
    ];
    let err = migrate::run_with(db.client_mut(), &list)
        .await
        .expect_err("second migration fails");
    match &err {
        MigrateError::Failed {
            version,
            name,
            reason,
        } => {
            assert_eq!((*version, *name), (2, "0002_broken"));
            assert!(reason.contains("no_such_column"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(applied_versions(&db).await, vec![1]);
    let second_exists: bool = db
        .client()
        .query_one("SELECT to_regclass('second_table') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!second_exists, "the failed migration's DDL was rolled back");
    db.drop_db().await;
}

#[tokio::test]
#[should_panic(expected = "cannot reach Postgres at postgres://postgres@127.0.0.1:1/postgres")]
async fn unreachable_postgres_panics_with_instructions() {
    TestDb::create_on("postgres://postgres@127.0.0.1:1/postgres").await;
}

#[tokio::test]
async fn test_databases_are_dropped() {
    let db = TestDb::create().await;
    let name = db.name().to_owned();
    let watcher = TestDb::create().await;
    db.drop_db().await;
    let exists: bool = watcher
        .client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "drop_db left {name} behind");

    // Dropped without drop_db (e.g. a failing test): removed by Drop.
    let leaked = TestDb::create().await;
    let leaked_name = leaked.name().to_owned();
    drop(leaked);
    let exists: bool = watcher
        .client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&leaked_name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "Drop left {leaked_name} behind");
    watcher.drop_db().await;
}
