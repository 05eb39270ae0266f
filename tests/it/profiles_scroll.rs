//! The newest-first scroll: completeness against SQL ground truth, stability
//! under concurrent inserts, limits and cursor validation.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::helpers::app::error_code;
use crate::helpers::{TestApp, TestDb};

const SCROLL: &str = "/api/v1/matching/profiles/scroll";

/// Walks every page of `query` and returns the ids in the order served.
async fn walk(app: &TestApp, token: &str, query: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let (status, mut page) = app.get(&format!("{SCROLL}?{query}"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for _ in 0..10_000 {
        ids.extend(page_ids(&page));
        let Some(cursor) = page["next_cursor"].as_str() else {
            assert_eq!(page["has_more"], false);
            return ids;
        };
        assert_eq!(page["has_more"], true);
        let (status, next) = app.get(&format!("{SCROLL}?cursor={cursor}"), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        page = next;
    }
    panic!("scroll did not end");
}

fn page_ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect()
}

/// The same filters in plain SQL, with PostgreSQL's own date arithmetic.
async fn ground_truth(db: &TestDb, viewer: i64, where_sql: &str) -> Vec<i64> {
    let client = db.client().await;
    client.execute("SET TIME ZONE 'UTC'", &[]).await.unwrap();
    let sql = format!(
        "SELECT id FROM profiles WHERE verification_status = 'approved' AND id <> {viewer} {where_sql} \
         ORDER BY created_at DESC, id DESC"
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn seeded_app(count: usize) -> TestApp {
    let app = TestApp::spawn().await;
    app.seed(1, count, 7).await;
    // Ties on the sort key's first column: the id must break them.
    let client = app.db.client().await;
    client
        .execute(
            "UPDATE profiles SET created_at = (SELECT created_at FROM profiles WHERE id = 1) WHERE id <= 60",
            &[],
        )
        .await
        .unwrap();
    app
}

#[actix_rt::test]
async fn walks_visit_every_matching_profile_exactly_once() {
    let app = seeded_app(3000).await;
    let viewer = {
        // The viewer is an approved member, so excluding them is observable.
        let client = app.db.client().await;
        let row = client
            .query_one(
                "SELECT id FROM profiles WHERE verification_status = 'approved' ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let token = app.token(viewer);
    let cases = [
        ("limit=100", ""),
        ("limit=7&gender=female", "AND gender = 'female'"),
        (
            "limit=50&gender=male&min_age=25&max_age=35",
            "AND gender = 'male' AND date_of_birth <= current_date - interval '25 years' \
             AND date_of_birth > current_date - interval '36 years'",
        ),
        ("limit=30&religion=Hindu", "AND religion = 'Hindu'"),
        ("limit=10&city=Mumbai", "AND city = 'Mumbai'"),
        (
            "limit=3&gender=female&city=Delhi&religion=Hindu&min_age=21&max_age=30",
            "AND gender = 'female' AND city = 'Delhi' AND religion = 'Hindu' \
             AND date_of_birth <= current_date - interval '21 years' \
             AND date_of_birth > current_date - interval '31 years'",
        ),
        (
            "limit=20&min_age=40",
            "AND date_of_birth <= current_date - interval '40 years'",
        ),
        ("limit=20&religion=&city=&gender=female", "AND gender = 'female'"),
        ("limit=20&city=Nowhere", "AND city = 'Nowhere'"),
    ];
    for (query, where_sql) in cases {
        let expected = ground_truth(&app.db, viewer, where_sql).await;
        let got = walk(&app, &token, query).await;
        assert!(!got.contains(&viewer), "{query}: own profile served");
        assert_eq!(got.len(), expected.len(), "{query}: row count");
        assert_eq!(got, expected, "{query}: rows or order differ");
        if query != "limit=20&city=Nowhere" {
            assert!(!expected.is_empty(), "{query}: the case should match something");
        }
    }
}

#[actix_rt::test]
async fn inserts_during_a_walk_cause_no_duplicate_or_skip() {
    let app = seeded_app(2000).await;
    let viewer = 1_000_000;
    let token = app.token(viewer);
    let expected = ground_truth(&app.db, viewer, "AND gender = 'female'").await;

    // Another task inserts profiles all over the time range while we walk.
    let writer_url = app.db.url.clone();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = actix_rt::spawn(async move {
        use diesel_async::AsyncConnection;
        let mut conn = diesel_async::AsyncPgConnection::establish(&writer_url)
            .await
            .unwrap();
        let mut next_id = 10_000;
        let mut inserted = 0;
        loop {
            aurum::cli::seed::insert_generated(&mut conn, next_id, 25, next_id as u64, chrono::Utc::now())
                .await
                .unwrap();
            next_id += 25;
            inserted += 25;
            if done_rx.try_recv().is_ok() || inserted >= 5_000 {
                return inserted;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });

    let got = walk(&app, &token, "limit=15&gender=female").await;
    let _ = done_tx.send(());
    let inserted = writer.await.unwrap();
    assert!(inserted > 0);

    let mut seen = HashSet::new();
    for id in &got {
        assert!(seen.insert(*id), "profile {id} served twice");
    }
    for id in &expected {
        assert!(seen.contains(id), "profile {id} skipped");
    }
    // The served order is still the sort order.
    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT id FROM profiles WHERE id = ANY($1) ORDER BY created_at DESC, id DESC",
            &[&got],
        )
        .await
        .unwrap();
    let sorted: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, sorted);
}

#[actix_rt::test]
async fn limits_are_bounded() {
    let app = TestApp::spawn().await;
    app.seed(1, 300, 3).await;
    let token = app.token(1_000_000);
    for bad in ["0", "101", "-1", "abc", "1.5", "99999999999999999999"] {
        let (status, body) = app.get(&format!("{SCROLL}?limit={bad}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert!(
            matches!(error_code(&body), "invalid_limit" | "invalid_query"),
            "{body}"
        );
    }
    for (query, expected) in [("", 20), ("limit=1", 1), ("limit=100", 100)] {
        let (status, body) = app.get(&format!("{SCROLL}?{query}"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page_ids(&body).len(), expected, "{query}");
        assert_eq!(body["has_more"], true);
    }
}

#[actix_rt::test]
async fn bad_filters_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.token(5);
    for query in [
        "gender=other",
        "min_age=17",
        "max_age=500",
        "min_age=30&max_age=25",
        "min_age=abc",
        "max_age=-3",
    ] {
        let (status, body) = app.get(&format!("{SCROLL}?{query}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            matches!(error_code(&body), "invalid_filter" | "invalid_query"),
            "{body}"
        );
    }
}

#[actix_rt::test]
async fn bad_cursors_are_refused() {
    let app = TestApp::spawn().await;
    app.seed(1, 200, 5).await;
    let token = app.token(1_000_000);
    let (_, page) = app
        .get(&format!("{SCROLL}?limit=5&gender=female"), Some(&token))
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();

    // Still valid, and the same filters may be repeated alongside it.
    let (status, _) = app
        .get(&format!("{SCROLL}?cursor={cursor}&gender=female"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (body, tag) = cursor.split_once('.').unwrap();
    let mut flipped = body.as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{tag}", String::from_utf8(flipped).unwrap());
    let forged_body = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut json: Value = serde_json::from_slice(&engine.decode(body).unwrap()).unwrap();
        json["filter"]["gender"] = "male".into();
        format!("{}.{tag}", engine.encode(serde_json::to_vec(&json).unwrap()))
    };
    let truncated = cursor[..cursor.len() - 4].to_owned();
    let foreign_key = {
        let other = TestApp::spawn_on(TestDb::migrated(), &["--jwt-secret=another-secret-0123456789"]).await;
        other.seed(1, 50, 5).await;
        let (_, page) = other
            .get(&format!("{SCROLL}?limit=5"), Some(&other.token(1_000_000)))
            .await;
        page["next_cursor"].as_str().unwrap().to_owned()
    };
    let other_user = {
        let (_, page) = app
            .get(&format!("{SCROLL}?limit=5"), Some(&app.token(999_999)))
            .await;
        page["next_cursor"].as_str().unwrap().to_owned()
    };
    for (what, bad) in [
        ("tampered", tampered.as_str()),
        ("forged filters", forged_body.as_str()),
        ("truncated", truncated.as_str()),
        ("signed by another deployment", foreign_key.as_str()),
        ("issued to another member", other_user.as_str()),
        ("not base64", "%25%25%25"),
        ("no signature", body),
        ("garbage", "abc.def"),
    ] {
        let (status, body) = app.get(&format!("{SCROLL}?cursor={bad}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(error_code(&body), "invalid_cursor", "{what}: {body}");
    }

    for contradiction in ["gender=male", "city=Mumbai", "min_age=30", "religion=Sikh"] {
        let (status, body) = app
            .get(&format!("{SCROLL}?cursor={cursor}&{contradiction}"), Some(&token))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{contradiction}");
        assert_eq!(error_code(&body), "cursor_mismatch", "{contradiction}: {body}");
    }
}
