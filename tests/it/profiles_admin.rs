//! Admin verification and its audit trail.

use actix_web::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;
use crate::helpers::app::error_code;
use crate::helpers::db::query_i64;

#[actix_rt::test]
async fn verification_updates_the_profile_and_writes_an_audit_log() {
    let app = TestApp::spawn().await;
    app.seed(1, 5, 1).await;
    let admin = app.admin_token(900);
    let body = json!({"status": "rejected", "reason": "photo does not match"});
    let (status, profile) = app
        .request(
            Method::POST,
            "/api/v1/admin/profiles/3/verification",
            Some(&admin),
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["verification_status"], "rejected");

    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT actor_id, action, target_type, target_id, details FROM audit_logs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, i64>(0), 900);
    assert_eq!(row.get::<_, &str>(1), "profile.verification");
    assert_eq!(row.get::<_, &str>(2), "profile");
    assert_eq!(row.get::<_, i64>(3), 3);
    let status_in_db: String = client
        .query_one("SELECT verification_status FROM profiles WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status_in_db, "rejected");
    let details: String = client
        .query_one("SELECT details::text FROM audit_logs", &[])
        .await
        .unwrap()
        .get(0);
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(
        details,
        json!({"status": "rejected", "reason": "photo does not match"})
    );
}

#[actix_rt::test]
async fn verification_refuses_bad_input_and_non_admins_writing_nothing() {
    let app = TestApp::spawn().await;
    app.seed(1, 5, 1).await;
    let admin = app.admin_token(900);
    let member = app.token(901);
    let approve = json!({"status": "approved"});
    let path = "/api/v1/admin/profiles/2/verification";

    let (status, body) = app
        .request(Method::POST, path, Some(&member), Some(&approve))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = app.request(Method::POST, path, None, Some(&approve)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/admin/profiles/777/verification",
            Some(&admin),
            Some(&approve),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    for bad in [
        json!({"status": "maybe"}),
        json!({}),
        json!({"status": "approved", "extra": 1}),
        json!([1]),
    ] {
        let (status, body) = app.request(Method::POST, path, Some(&admin), Some(&bad)).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_json"),
            "{bad}"
        );
    }
    let client = app.db.client().await;
    let count = query_i64(&client, "SELECT count(*) FROM audit_logs").await;
    assert_eq!(count, 0);
}
