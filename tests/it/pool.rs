//! An exhausted or unreachable database answers 503 within the pool timeout.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;

use crate::helpers::app::error_code;
use crate::helpers::{TestApp, TestDb};

#[actix_rt::test]
async fn exhausted_pool_answers_503_within_the_timeout() {
    let app = TestApp::spawn_on(TestDb::migrated(), &["--max-connections=1", "--pool-timeout=1"]).await;
    let token = app.token(5);
    // Hold the only connection, as a stuck request would.
    let held = app.state.db.get().await.unwrap();
    let started = Instant::now();
    let (status, body) = app.get("/api/v1/matching/profiles/scroll", Some(&token)).await;
    let waited = started.elapsed();
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "db_unavailable")
    );
    assert!(waited >= Duration::from_millis(900), "gave up early: {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "hung past the timeout: {waited:?}"
    );
    drop(held);
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
