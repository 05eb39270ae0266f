//! Token checks: the algorithm is pinned and `exp` is required.

use actix_web::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::TestApp;
use crate::helpers::app::{TEST_SECRET, error_code};

const ME: &str = "/api/v1/matching/profiles/scroll";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[actix_rt::test]
async fn bad_tokens_get_401() {
    let app = TestApp::spawn().await;
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({"sub": "5", "exp": now() + 600}).to_string()),
    );
    let cases = [
        (
            "expired",
            sign(
                Algorithm::HS256,
                TEST_SECRET,
                json!({"sub": "5", "exp": now() - 120}),
            ),
        ),
        (
            "wrong key",
            sign(
                Algorithm::HS256,
                "some-other-secret-entirely",
                json!({"sub": "5", "exp": now() + 600}),
            ),
        ),
        ("alg none", unsigned),
        (
            "other algorithm",
            sign(
                Algorithm::HS512,
                TEST_SECRET,
                json!({"sub": "5", "exp": now() + 600}),
            ),
        ),
        ("no exp", sign(Algorithm::HS256, TEST_SECRET, json!({"sub": "5"}))),
        (
            "no sub",
            sign(Algorithm::HS256, TEST_SECRET, json!({"exp": now() + 600})),
        ),
        (
            "sub not an id",
            sign(
                Algorithm::HS256,
                TEST_SECRET,
                json!({"sub": "alice", "exp": now() + 600}),
            ),
        ),
        (
            "sub zero",
            sign(
                Algorithm::HS256,
                TEST_SECRET,
                json!({"sub": "0", "exp": now() + 600}),
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in &cases {
        let (status, body) = app.get(ME, Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(&body), "unauthorized", "{what}");
    }
    let (status, body) = app.get(ME, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // And a good one passes.
    let good = sign(
        Algorithm::HS256,
        TEST_SECRET,
        json!({"sub": "5", "exp": now() + 600}),
    );
    let (status, _) = app.get(ME, Some(&good)).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_rt::test]
async fn health_answers_without_a_token() {
    let app = TestApp::spawn().await;
    for (path, healthy) in [
        ("/health", "healthy"),
        ("/health/live", "ok"),
        ("/health/ready", "ok"),
    ] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["status"], healthy, "{path}");
    }
    let (_, health) = app.get("/health", None).await;
    assert_eq!(health["sockets"], 0, "{health}");
    assert_eq!(health["draining"], false, "{health}");
    let writer = &health["database"]["pools"]["writer"];
    assert_eq!(writer["max_size"], 2, "{health}");
    assert_eq!(writer["waiting"], 0, "{health}");
    let worker = &health["database"]["pools"]["http_worker"];
    assert!(
        worker["size"].as_u64().unwrap() >= 1,
        "the probe's connection: {health}"
    );
    assert!(worker["idle"].as_u64().is_some(), "{health}");
}
