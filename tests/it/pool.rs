//! An exhausted or unreachable database answers 503 within the pool timeout.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;

use crate::helpers::app::error_code;
use crate::helpers::{TestApp, TestDb};

#[actix_rt::test]
async fn exhausted_pool_answers_503_within_the_timeout() {
    // One HTTP worker whose pool holds one connection (of MAX_CONNECTIONS=3,
    // one goes to the message writer and one to the shared pool).
    let args = ["--max-connections=3", "--http-workers=1", "--pool-timeout=1"];
    let app = TestApp::spawn_on(TestDb::migrated(), &args).await;
    let token = app.token(5);
    // A stuck request: it holds the only connection while it waits on a lock.
    let locker = app.db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE profiles IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stuck = app.get("/api/v1/matching/profiles/scroll", Some(&token));
    let starved = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let answer = app
            .get("/api/v1/matching/profiles/batch?profile_ids=1", Some(&token))
            .await;
        let waited = started.elapsed();
        locker.batch_execute("ROLLBACK").await.unwrap();
        (answer, waited)
    };
    let ((stuck_status, _), ((status, body), waited)) = tokio::join!(stuck, starved);
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "db_unavailable")
    );
    assert!(waited >= Duration::from_millis(900), "gave up early: {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "hung past the timeout: {waited:?}"
    );
    assert_eq!(
        stuck_status,
        StatusCode::OK,
        "the stuck request completes once the lock is gone"
    );
    let (status, _) = app.get("/api/v1/matching/profiles/scroll", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "recovers once a connection is free");
}

#[actix_rt::test]
async fn unreachable_database_answers_503_and_not_ready() {
    let db = TestDb::migrated();
    let dead = "--database-url=postgres://postgres@127.0.0.1:1/nowhere";
    let app = TestApp::spawn_on(db, &[dead, "--pool-timeout=1"]).await;
    let token = app.token(5);
    let started = Instant::now();
    let (status, body) = app
        .get("/api/v1/matching/profiles/batch?profile_ids=1", Some(&token))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "db_unavailable")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, body) = app.get("/health/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = app.get("/health/live", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_rt::test]
async fn pooled_connections_use_generic_plans() {
    use diesel::QueryableByName;
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        plan_cache_mode: String,
    }
    let db = TestDb::migrated();
    let pool = aurum_schema::pool::build(&db.url, &aurum_schema::pool::PoolSettings::default());
    let mut conn = pool.get().await.unwrap();
    let setting: Setting = diesel::sql_query("SHOW plan_cache_mode")
        .get_result(&mut *conn)
        .await
        .unwrap();
    // tests/it/explain.rs checks the plans this mode gives.
    assert_eq!(setting.plan_cache_mode, "force_generic_plan");
}

#[actix_rt::test]
async fn pooled_connections_carry_the_statement_timeout() {
    use diesel::QueryableByName;
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        statement_timeout: String,
    }
    let db = TestDb::migrated();
    let settings = aurum_schema::pool::PoolSettings {
        statement_timeout: Duration::from_millis(1500),
        ..aurum_schema::pool::PoolSettings::default()
    };
    let pool = aurum_schema::pool::build(&db.url, &settings);
    let mut conn = pool.get().await.unwrap();
    let setting: Setting = diesel::sql_query("SHOW statement_timeout")
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert_eq!(setting.statement_timeout, "1500ms");
    // A statement past it fails, and the connection serves the next one.
    let slow = diesel::sql_query("SELECT pg_sleep(3)").execute(&mut *conn).await;
    let error = slow.expect_err("cancelled by the timeout").to_string();
    assert!(error.contains("statement timeout"), "{error}");
    let after: Setting = diesel::sql_query("SHOW statement_timeout")
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert_eq!(after.statement_timeout, "1500ms");
}

/// A rebuild closes the idle connections at once, lets the busy one finish
/// and close when it comes back, and the pool serves on with new ones.
#[actix_rt::test]
async fn a_rebuilt_pool_closes_its_idle_connections_and_serves_on() {
    use diesel_async::RunQueryDsl;

    let db = TestDb::migrated();
    let pool = aurum_schema::pool::build(&db.url, &aurum_schema::pool::PoolSettings::default());
    let observer = db.client().await;
    let open = || async {
        crate::helpers::db::query_i64(
            &observer,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
    };
    let (a, b, busy) = (
        pool.get().await.unwrap(),
        pool.get().await.unwrap(),
        pool.get().await.unwrap(),
    );
    drop((a, b));
    assert_eq!(pool.state().idle_connections, 2);
    assert_eq!(open().await, 3);

    pool.rebuild();
    let mut left = 0;
    for _ in 0..50 {
        left = open().await;
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 1, "only the busy connection is still open");
    drop(busy);
    for _ in 0..50 {
        left = open().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the busy one closed once it came back");
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query("SELECT 1").execute(&mut *conn).await.unwrap();
    assert_eq!(pool.state().connections, 1);
}
