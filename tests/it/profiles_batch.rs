//! The viewport batch load.

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;
use crate::helpers::app::error_code;

const BATCH: &str = "/api/v1/matching/profiles/batch";

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().or_else(|| v["id"].as_i64()).unwrap())
        .collect()
}

async fn approved_and_not(app: &TestApp) -> (Vec<i64>, Vec<i64>) {
    let client = app.db.client().await;
    let split = |status: &'static str| {
        let client = &client;
        async move {
            let rows = client
                .query(
                    "SELECT id FROM profiles WHERE (verification_status = 'approved') = ($1 = 'yes') ORDER BY id LIMIT 10",
                    &[&status],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>()
        }
    };
    (split("yes").await, split("no").await)
}

#[actix_rt::test]
async fn returns_profiles_in_the_order_asked_with_missing_listed() {
    let app = TestApp::spawn().await;
    app.seed(1, 100, 9).await;
    let token = app.token(500);
    let (approved, unapproved) = approved_and_not(&app).await;
    let asked = [
        approved[3],
        99_999,
        approved[0],
        unapproved[0],
        approved[7],
        approved[1],
    ];
    let query = asked.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let (status, body) = app
        .get(&format!("{BATCH}?profile_ids={query}"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ids(&body["profiles"]),
        vec![approved[3], approved[0], approved[7], approved[1]]
    );
    assert_eq!(ids(&body["missing"]), vec![99_999, unapproved[0]]);
    assert_eq!(body["profiles"][0]["verification_status"], "approved");
}

#[actix_rt::test]
async fn duplicates_are_served_once_at_their_first_position() {
    let app = TestApp::spawn().await;
    app.seed(1, 100, 9).await;
    let token = app.token(500);
    let (approved, _) = approved_and_not(&app).await;
    let (a, b) = (approved[0], approved[1]);
    let (status, body) = app
        .get(
            &format!("{BATCH}?profile_ids={b},{a},{b},{a},77777,77777"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body["profiles"]), vec![b, a]);
    assert_eq!(ids(&body["missing"]), vec![77_777]);
}

#[actix_rt::test]
async fn bad_id_lists_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.token(500);
    let fifty_one = (1..=51).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let fifty = (1..=50).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    for query in [
        fifty_one.as_str(),
        "",
        "abc",
        "1,2,x",
        "1,,2",
        "0",
        "-4",
        "1.5",
        "99999999999999999999999",
    ] {
        let (status, body) = app
            .get(&format!("{BATCH}?profile_ids={query}"), Some(&token))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(error_code(&body), "invalid_profile_ids");
    }
    let (status, body) = app.get(BATCH, Some(&token)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_profile_ids")
    );
    let (status, body) = app
        .get(&format!("{BATCH}?profile_ids={fifty}"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body["missing"]).len(), 50);
}
