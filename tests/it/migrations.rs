//! Every migration runs up, down and up again; foreign keys are indexed.

use aurum_schema::migrations::{Direction, run};

use crate::helpers::TestDb;
use crate::helpers::db::query_i64;

async fn tables(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
             AND tablename <> '__diesel_schema_migrations' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[actix_rt::test]
async fn migrations_run_up_down_and_up_again() {
    let db = TestDb::empty();
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    let applied = run(&db.url, Direction::Up).unwrap();
    assert_eq!(applied.len(), on_disk);
    let all = [
        "audit_logs",
        "conversation_reads",
        "conversations",
        "messages",
        "profiles",
        "sessions",
    ];
    assert_eq!(tables(&db).await, all);
    let reverted = run(&db.url, Direction::DownAll).unwrap();
    assert_eq!(reverted.len(), on_disk);
    assert!(tables(&db).await.is_empty());
    run(&db.url, Direction::Up).unwrap();
    assert_eq!(tables(&db).await, all);
    assert!(
        run(&db.url, Direction::Up).unwrap().is_empty(),
        "a second run applies nothing"
    );
}

#[actix_rt::test]
async fn every_foreign_key_is_indexed() {
    let db = TestDb::migrated();
    let client = db.client().await;
    // A foreign key is served when some index's leading columns are exactly
    // its columns (in any order), so deletes and joins on it do not scan.
    let rows = client
        .query(
            "SELECT c.conrelid::regclass::text, c.conname::text
             FROM pg_constraint c
             WHERE c.contype = 'f'
               AND NOT EXISTS (
                 SELECT 1 FROM pg_index i
                 WHERE i.indrelid = c.conrelid
                   AND (SELECT array_agg(x ORDER BY x) FROM unnest(c.conkey) x)
                     = (SELECT array_agg(x ORDER BY x)
                        FROM unnest((i.indkey::int2[])[0:cardinality(c.conkey) - 1]) x))",
            &[],
        )
        .await
        .unwrap();
    let unindexed: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        unindexed.is_empty(),
        "foreign keys without an index: {unindexed:?}"
    );
    let total = query_i64(&client, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'").await;
    // conversations (2), messages (1), conversation_reads (2).
    assert!(total >= 5, "the check looked at the foreign keys ({total})");
}

/// Two `aurum migrate` at once (two Jobs, or pods with `MIGRATE_ON_START`)
/// on one fresh database: the advisory lock makes the second wait, then
/// find nothing pending. Without it both create diesel's bookkeeping table
/// and apply the first migration, and one fails.
#[actix_rt::test]
async fn two_migrate_processes_at_once_both_succeed_and_migrate_once() {
    let db = TestDb::empty();
    let migrate = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_aurum"))
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .kill_on_drop(true)
            .output()
    };
    let (first, second) = tokio::join!(migrate(), migrate());
    let mut applied = Vec::new();
    for output in [first.unwrap(), second.unwrap()] {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "aurum migrate failed:\n{stdout}{stderr}");
        applied.extend(
            stdout
                .lines()
                .filter_map(|line| line.strip_prefix("applied "))
                .map(str::to_owned),
        );
    }
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    applied.sort();
    let distinct = {
        let mut distinct = applied.clone();
        distinct.dedup();
        distinct
    };
    assert_eq!(applied, distinct, "a migration applied twice");
    assert_eq!(
        applied.len(),
        on_disk,
        "every migration applied by one of the two"
    );
    let client = db.client().await;
    let recorded = query_i64(&client, "SELECT count(*) FROM __diesel_schema_migrations").await;
    assert_eq!(recorded, on_disk as i64);
    assert_eq!(tables(&db).await.len(), 6);
    // The append-heavy table's own autovacuum settings came with them.
    let options: Vec<String> = client
        .query_one("SELECT reloptions FROM pg_class WHERE relname = 'messages'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        options.contains(&"autovacuum_vacuum_insert_scale_factor=0.01".to_owned()),
        "{options:?}"
    );
}
