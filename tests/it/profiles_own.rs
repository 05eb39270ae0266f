//! Reading and writing one's own profile, and reading others'.

use actix_web::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;
use crate::helpers::app::error_code;

fn valid_profile() -> serde_json::Value {
    json!({
        "display_name": "Asha Rao",
        "gender": "female",
        "date_of_birth": "1995-04-12",
        "religion": "Hindu",
        "city": "Pune",
        "occupation": "architect",
        "bio": "Loves trekking."
    })
}

/// Creates member `user`'s profile from `valid_profile()` and returns their token.
async fn create_own_profile(app: &TestApp, user: i64) -> String {
    let token = app.token(user);
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/profiles/me",
            Some(&token),
            Some(&valid_profile()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    token
}

#[actix_rt::test]
async fn put_creates_then_updates_and_resets_review() {
    let app = TestApp::spawn().await;
    let token = app.token(42);
    let (status, body) = app.get("/api/v1/profiles/me", Some(&token)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    let (status, created) = app
        .request(
            Method::PUT,
            "/api/v1/profiles/me",
            Some(&token),
            Some(&valid_profile()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["id"], 42);
    assert_eq!(created["verification_status"], "pending");

    // Approve it, then edit it: back to pending.
    let admin = app.admin_token(1);
    let verify = json!({"status": "approved"});
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/admin/profiles/42/verification",
            Some(&admin),
            Some(&verify),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut edited = valid_profile();
    edited["city"] = "Mumbai".into();
    let (status, updated) = app
        .request(Method::PUT, "/api/v1/profiles/me", Some(&token), Some(&edited))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["city"], "Mumbai");
    assert_eq!(updated["verification_status"], "pending");
    assert_eq!(updated["created_at"], created["created_at"]);

    let (status, me) = app.get("/api/v1/profiles/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["city"], "Mumbai");
}

#[actix_rt::test]
async fn invalid_profiles_change_nothing() {
    let app = TestApp::spawn().await;
    let token = app.token(42);
    let mut cases = Vec::new();
    for (field, value) in [
        ("gender", json!("robot")),
        ("date_of_birth", json!("2020-01-01")),
        ("date_of_birth", json!("not a date")),
        ("display_name", json!("")),
        ("display_name", json!("x".repeat(101))),
        ("bio", json!("x".repeat(2001))),
        ("city", json!(12)),
        ("unexpected", json!(true)),
    ] {
        let mut body = valid_profile();
        body[field] = value;
        cases.push(body);
    }
    let mut missing = valid_profile();
    missing.as_object_mut().unwrap().remove("religion");
    cases.push(missing);
    for body in cases {
        let (status, answer) = app
            .request(Method::PUT, "/api/v1/profiles/me", Some(&token), Some(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            matches!(error_code(&answer), "invalid_profile" | "invalid_json"),
            "{answer}"
        );
    }
    for (content_type, raw) in [
        ("application/json", "{bad"),
        ("application/json", ""),
        ("text/plain", "{}"),
    ] {
        let (status, answer) = app
            .send_raw(Method::PUT, "/api/v1/profiles/me", &token, content_type, raw)
            .await;
        assert!(status.is_client_error(), "{raw}: {status}");
        assert!(answer["error"]["code"].is_string());
    }
    let (status, _) = app.get("/api/v1/profiles/me", Some(&token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

#[actix_rt::test]
async fn others_see_only_approved_profiles() {
    let app = TestApp::spawn().await;
    let owner = create_own_profile(&app, 42).await;
    let stranger = app.token(43);
    let (status, body) = app.get("/api/v1/profiles/42", Some(&stranger)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _) = app.get("/api/v1/profiles/42", Some(&owner)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/api/v1/profiles/42", Some(&app.admin_token(1))).await;
    assert_eq!(status, StatusCode::OK);

    for bad in ["abc", "0", "-1", "99999999999999999999", "424242"] {
        let (status, body) = app.get(&format!("/api/v1/profiles/{bad}"), Some(&stranger)).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{bad}"
        );
    }
    let (status, body) = app.get("/no/such/route", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

/// The timestamps are decoded from PostgreSQL's binary value by our own
/// code (`aurum_schema::pg_time`), so compare what the API serves with
/// PostgreSQL's own rendering, on both sides of both epochs.
#[actix_rt::test]
async fn timestamps_are_served_as_postgres_stores_them() {
    let app = TestApp::spawn().await;
    let token = create_own_profile(&app, 42).await;
    let client = app.db.client().await;
    for (created, updated, active) in [
        (
            "1969-12-31 23:59:59.999999",
            "1970-01-01 00:00:00",
            "1970-01-01 00:00:00.000001",
        ),
        (
            "1999-12-31 23:59:59.999999",
            "2000-01-01 00:00:00",
            "2000-01-01 00:00:00.000001",
        ),
        (
            "1900-02-28 12:00:00.5",
            "2024-02-29 23:59:59.123456",
            "2099-12-31 23:59:59.999999",
        ),
    ] {
        let rendered = client
            .query_one(
                "UPDATE profiles SET created_at = $1::text::timestamptz, \
                 updated_at = $2::text::timestamptz, last_active_at = $3::text::timestamptz \
                 WHERE id = 42 RETURNING \
                 to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 to_char(last_active_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                &[
                    &format!("{created}+00"),
                    &format!("{updated}+00"),
                    &format!("{active}+00"),
                ],
            )
            .await
            .unwrap();
        let (status, body) = app.get("/api/v1/profiles/me", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        for (index, field) in ["created_at", "updated_at", "last_active_at"]
            .into_iter()
            .enumerate()
        {
            assert_eq!(body[field], rendered.get::<_, String>(index), "{field}");
        }
    }
}

#[actix_rt::test]
async fn trailing_and_doubled_slashes_reach_the_same_route() {
    let app = TestApp::spawn().await;
    let token = create_own_profile(&app, 42).await;
    let (status, clean) = app.get("/api/v1/profiles/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/profiles/me/",
        "//api//v1/profiles///me",
        "/api/v1/profiles/42/",
    ] {
        let (status, body) = app.get(path, Some(&token)).await;
        assert_eq!((status, &body), (StatusCode::OK, &clean), "{path}");
    }
}
