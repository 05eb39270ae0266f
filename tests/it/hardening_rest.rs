//! Bad input on the REST API (issue 14): every parameter of every endpoint
//! out of range, repeated, empty, non-numeric, SQL-like and unicode;
//! cursors tampered bit by bit; bodies too big and of the wrong type;
//! other members' conversations. Each answer is a JSON error with a code
//! (never a 500), and nothing changes.

use actix_web::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;
use crate::helpers::app::error_code;
use crate::helpers::db::query_i64;
use crate::helpers::report::record;
use crate::helpers::ws::RawClient;

const AREA: &str = "rest input";

/// Values no numeric, id or enum parameter takes.
const HOSTILE: [&str; 16] = [
    "abc",
    "-1",
    "0",
    "1.5",
    "1e3",
    "0x10",
    "99999999999999999999999",
    "-9223372036854775809",
    "1' OR '1'='1",
    "1; DROP TABLE profiles; --",
    "%00",
    "%E2%80%AE1",
    "%D9%A3",
    "%EF%BC%91",
    "NaN",
    "%F0%9F%98%80",
];

/// `value` made safe for a query string or path: what is already
/// percent-encoded stays, the rest that a URI cannot hold is encoded.
fn q(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~%,:@!$()*/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn app() -> TestApp {
    let app = TestApp::spawn().await;
    app.seed(1, 30, 7).await;
    app
}

/// Every answer of the API to a client's mistake: 4xx with a JSON error.
fn assert_client_error(what: &str, status: StatusCode, body: &Value) -> String {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    error_code(body).to_owned()
}

async fn profile_count(app: &TestApp) -> i64 {
    query_i64(&app.db.client().await, "SELECT count(*) FROM profiles").await
}

#[actix_rt::test]
async fn every_query_parameter_out_of_range_or_malformed() {
    let app = app().await;
    let token = app.token(1);
    let profiles_before = profile_count(&app).await;
    // (endpoint, parameter, the code a bad value gets)
    let numeric = [
        (
            "/api/v1/matching/profiles/scroll",
            "limit",
            ["invalid_query", "invalid_limit"],
        ),
        (
            "/api/v1/matching/profiles/scroll",
            "min_age",
            ["invalid_query", "invalid_filter"],
        ),
        (
            "/api/v1/matching/profiles/scroll",
            "max_age",
            ["invalid_query", "invalid_filter"],
        ),
        (
            "/api/v1/matching/profiles/scroll",
            "gender",
            ["invalid_filter", "invalid_filter"],
        ),
        (
            "/api/v1/matching/profiles/scroll",
            "cursor",
            ["invalid_cursor", "invalid_cursor"],
        ),
        (
            "/api/v1/matching/profiles/batch",
            "profile_ids",
            ["invalid_profile_ids", "invalid_profile_ids"],
        ),
        (
            "/api/v1/conversations",
            "limit",
            ["invalid_query", "invalid_limit"],
        ),
        (
            "/api/v1/conversations",
            "cursor",
            ["invalid_cursor", "invalid_cursor"],
        ),
        (
            "/api/v1/conversations/1/messages",
            "limit",
            ["invalid_query", "invalid_limit"],
        ),
        (
            "/api/v1/conversations/1/messages",
            "before",
            ["invalid_query", "invalid_query"],
        ),
        (
            "/api/v1/conversations/1/messages",
            "after",
            ["invalid_query", "invalid_query"],
        ),
    ];
    let mut tried = 0;
    for (path, name, codes) in numeric {
        let mut values: Vec<String> = HOSTILE.iter().map(|v| (*v).to_owned()).collect();
        if name == "limit" {
            values.extend(["101", "1000000"].map(str::to_owned));
        }
        if name.ends_with("_age") {
            values.extend(["17", "121", "65536"].map(str::to_owned));
        }
        for value in &values {
            // `0` is a valid `before`/`after` (before the first id, after nothing).
            if ["before", "after"].contains(&name) && value == "0" {
                continue;
            }
            let url = format!("{path}?{name}={}", q(value));
            let (status, body) = app.get(&url, Some(&token)).await;
            let code = assert_client_error(&url, status, &body);
            // The conversation does not exist for this member: its own
            // parameters may be judged first, or the 404 may come first.
            assert!(
                codes.contains(&code.as_str()) || (path.contains("/conversations/1/") && code == "not_found"),
                "{url}: {code}"
            );
            tried += 1;
        }
        // Repeated: refused, not one of them picked silently.
        let url = format!("{path}?{name}=5&{name}=6");
        let (status, body) = app.get(&url, Some(&token)).await;
        assert_eq!(status, 400, "{url}: {body}");
        tried += 1;
        record(
            AREA,
            &format!("{path} `{name}`: {} hostile values and repeated", values.len()),
            "400 with a code every time; never 500",
            &[],
        );
    }
    // Empty values mean "not given"; `profile_ids` is required.
    for url in [
        "/api/v1/matching/profiles/scroll?limit=&gender=&min_age=&max_age=&religion=&city=&cursor=",
        "/api/v1/conversations?limit=&cursor=",
    ] {
        let (status, body) = app.get(url, Some(&token)).await;
        assert_eq!(status, 200, "{url}: {body}");
    }
    let (status, body) = app
        .get("/api/v1/matching/profiles/batch?profile_ids=", Some(&token))
        .await;
    assert_eq!((status.as_u16(), error_code(&body)), (400, "invalid_profile_ids"));
    record(
        AREA,
        "every parameter empty",
        "treated as absent (profile_ids: 400 required)",
        &[],
    );

    // Free-text filters take anything and match it as text, never as SQL.
    for value in [
        "' OR '1'='1",
        "x%' OR 1=1 --",
        "%25",
        "_",
        "東京",
        "%E2%80%AE",
        "\\",
        "Robert'); DROP TABLE profiles;--",
    ] {
        for name in ["religion", "city"] {
            let url = format!("/api/v1/matching/profiles/scroll?{name}={}", q(value));
            let (status, body) = app.get(&url, Some(&token)).await;
            assert_eq!(status, 200, "{url}: {body}");
            assert_eq!(body["items"], json!([]), "{url}");
            tried += 1;
        }
    }
    // NUL cannot be text in PostgreSQL: refused up front, not a 500.
    for name in ["religion", "city"] {
        let url = format!("/api/v1/matching/profiles/scroll?{name}=a%00b");
        let (status, body) = app.get(&url, Some(&token)).await;
        assert_eq!(
            (status.as_u16(), error_code(&body)),
            (400, "invalid_filter"),
            "{url}: {body}"
        );
    }
    record(
        AREA,
        "religion/city SQL-like, LIKE wildcards, unicode, NUL",
        "200 and no match (text compared as text); NUL 400 invalid_filter",
        &[],
    );
    // Path ids.
    for id in HOSTILE.iter().chain(&["9223372036854775807", "4242"]) {
        for path in [
            format!("/api/v1/profiles/{}", q(id)),
            format!("/api/v1/conversations/{}/messages", q(id)),
        ] {
            let (status, body) = app.get(&path, Some(&token)).await;
            assert_eq!(
                (status.as_u16(), error_code(&body)),
                (404, "not_found"),
                "{path}: {body}"
            );
            tried += 1;
        }
    }
    record(AREA, "path ids: hostile, unknown, i64::MAX", "404 not_found", &[]);
    // Too many ids, and ids at the edge.
    let many: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
    let (status, _) = app
        .get(
            &format!("/api/v1/matching/profiles/batch?profile_ids={}", many.join(",")),
            Some(&token),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = app
        .get(
            "/api/v1/matching/profiles/batch?profile_ids=2,2,9223372036854775807",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["missing"], json!([9_223_372_036_854_775_807_i64]));
    record(
        AREA,
        "profile_ids: 51 ids; repeated ids and i64::MAX",
        "400; 200 with the missing listed",
        &[],
    );

    assert_eq!(profile_count(&app).await, profiles_before, "nothing changed");
    record(
        AREA,
        "query and path values tried",
        "no 500",
        &[("requests", tried.to_string())],
    );
}

#[actix_rt::test]
async fn every_bit_of_a_cursor_flipped_is_invalid_cursor() {
    let app = app().await;
    let token = app.token(1);
    for (path, first) in [
        (
            "/api/v1/matching/profiles/scroll",
            "/api/v1/matching/profiles/scroll?limit=2&gender=female",
        ),
        ("/api/v1/conversations", "/api/v1/conversations?limit=1"),
    ] {
        if path == "/api/v1/conversations" {
            // Two conversations, so the first page has a next cursor.
            let mut me = RawClient::connect(&app.ws_base, json!({ "token": token }))
                .await
                .0;
            for (n, to) in [2, 3].into_iter().enumerate() {
                let ack = me
                    .emit_ack(
                        n as u64,
                        "chat_message",
                        json!({ "recipient_id": to, "message": "hi" }),
                    )
                    .await;
                assert_eq!(ack["ok"], true, "{ack}");
            }
        }
        let (status, page) = app.get(first, Some(&token)).await;
        assert_eq!(status, 200, "{page}");
        let cursor = page["next_cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no cursor: {page}"))
            .to_owned();
        let (status, second) = app.get(&format!("{path}?cursor={cursor}"), Some(&token)).await;
        assert_eq!(status, 200, "{second}");
        assert_ne!(second, page);
        // Every bit of the signed body and of the tag, each part re-encoded,
        // then every bit of the cursor's text as sent.
        let (body, tag) = cursor.split_once('.').unwrap();
        let mut tampered = Vec::new();
        for (part, other, body_first) in [(body, tag, true), (tag, body, false)] {
            let bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
            for index in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[index] ^= 1 << bit;
                    let part = URL_SAFE_NO_PAD.encode(&flipped);
                    tampered.push(if body_first {
                        format!("{part}.{other}")
                    } else {
                        format!("{other}.{part}")
                    });
                }
            }
        }
        for index in 0..cursor.len() {
            for bit in 0..8 {
                let mut bytes = cursor.as_bytes().to_vec();
                bytes[index] ^= 1 << bit;
                tampered.push(q(&String::from_utf8_lossy(&bytes)));
            }
        }
        let flipped = tampered.len();
        for (n, tampered) in tampered.iter().enumerate() {
            let (status, body) = app.get(&format!("{path}?cursor={tampered}"), Some(&token)).await;
            assert_eq!(status, 400, "tamper {n} of {cursor}: {tampered}: {body}");
            assert_eq!(
                (status.as_u16(), error_code(&body)),
                (400, "invalid_cursor"),
                "tamper {n} {tampered}: {body}"
            );
        }
        // Cut short, lengthened, another member's, as text gone wrong.
        let other = app.token(2);
        let mut variants = vec![
            cursor[..cursor.len() - 1].to_owned(),
            format!("{cursor}A"),
            format!("{cursor}="),
            String::from("A"),
            "%00".to_owned(),
        ];
        variants.push(cursor.chars().rev().collect());
        // The same bytes in standard (not URL-safe) base64.
        let standard = cursor.replace('-', "+").replace('_', "/");
        if standard != cursor {
            variants.push(q(&standard));
        }
        for variant in &variants {
            let (status, body) = app.get(&format!("{path}?cursor={variant}"), Some(&token)).await;
            assert_eq!(
                (status.as_u16(), error_code(&body)),
                (400, "invalid_cursor"),
                "{variant}: {body}"
            );
        }
        let (status, body) = app.get(&format!("{path}?cursor={cursor}"), Some(&other)).await;
        assert_eq!(
            (status.as_u16(), error_code(&body)),
            (400, "invalid_cursor"),
            "{body}"
        );
        record(
            AREA,
            &format!("{path}: every bit of a real cursor flipped; cut, lengthened, another member's"),
            "400 invalid_cursor every time; never 500 or another page",
            &[("cursors tried", (flipped + variants.len() + 1).to_string())],
        );
    }
}

/// Sends a request head claiming `length` bytes of body, and only
/// `sent` of them; the status the server answers with, without waiting for
/// the rest.
async fn claim_body(app: &TestApp, method: &str, path: &str, token: &str, length: usize, sent: usize) -> u16 {
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "closed without an answer");
            answer.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .expect("an answer before the body was sent");
    String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
}

#[actix_rt::test]
async fn big_bodies_and_wrong_content_types() {
    let app = app().await;
    let token = app.token(1);
    let admin = app.admin_token(99);
    let before = profile_count(&app).await;
    let ten_mb = 10 * 1024 * 1024;
    for (method, path, token) in [
        ("PUT", "/api/v1/profiles/me", token.as_str()),
        ("POST", "/api/v1/admin/profiles/2/verification", admin.as_str()),
    ] {
        // The head alone decides: 413 while 9.9 MB of the body are unsent.
        let status = claim_body(&app, method, path, token, ten_mb, 1024).await;
        assert_eq!(status, 413, "{method} {path}");
        record(
            AREA,
            &format!("{method} {path} claiming a 10 MB body"),
            "413 payload_too_large before the body is read",
            &[],
        );
    }
    // A whole 10 MB body, sent: 413 with the JSON error.
    let big = json!({ "display_name": "x".repeat(ten_mb) });
    let (status, body) = app
        .request(Method::PUT, "/api/v1/profiles/me", Some(&token), Some(&big))
        .await;
    assert_eq!(
        (status.as_u16(), error_code(&body)),
        (413, "payload_too_large"),
        "{body}"
    );

    let profile =
        r#"{"display_name":"A","gender":"female","date_of_birth":"1990-01-01","religion":"r","city":"c"}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/xml",
    ] {
        let (status, body) = app
            .send_raw(Method::PUT, "/api/v1/profiles/me", &token, content_type, profile)
            .await;
        assert_eq!(
            (status.as_u16(), error_code(&body)),
            (415, "unsupported_media_type"),
            "{content_type}"
        );
        let (status, body) = app
            .send_raw(
                Method::POST,
                "/api/v1/admin/profiles/2/verification",
                &admin,
                content_type,
                r#"{"status":"approved"}"#,
            )
            .await;
        assert_eq!(
            (status.as_u16(), error_code(&body)),
            (415, "unsupported_media_type"),
            "{content_type}"
        );
    }
    record(
        AREA,
        "PUT/POST with text/plain, form, multipart, xml",
        "415 unsupported_media_type",
        &[],
    );

    // Malformed JSON bodies and fields.
    let bodies = [
        ("not JSON", "{".to_owned(), "invalid_json"),
        ("JSON array", "[]".to_owned(), "invalid_json"),
        (
            "unknown field",
            profile.replace("\"city\":\"c\"", "\"city\":\"c\",\"role\":\"admin\""),
            "invalid_json",
        ),
        (
            "date out of range",
            profile.replace("1990-01-01", "+275760-09-13"),
            "invalid_json",
        ),
        (
            "gender unicode",
            profile.replace("female", "ｆemale"),
            "invalid_profile",
        ),
        (
            "name NUL",
            profile.replace("\"A\"", "\"A\\u0000B\""),
            "invalid_profile",
        ),
        (
            "city NUL",
            profile.replace("\"c\"", "\"\\u0000\""),
            "invalid_profile",
        ),
        (
            "bio NUL",
            profile.replace("\"c\"}", "\"c\",\"bio\":\"a\\u0000\"}"),
            "invalid_profile",
        ),
        (
            "name 101 chars",
            profile.replace("\"A\"", &format!("\"{}\"", "n".repeat(101))),
            "invalid_profile",
        ),
        (
            "name blank",
            profile.replace("\"A\"", "\"   \""),
            "invalid_profile",
        ),
        (
            "born yesterday",
            profile.replace("1990-01-01", &chrono::Utc::now().date_naive().to_string()),
            "invalid_profile",
        ),
        (
            "lone surrogate",
            profile.replace("\"A\"", "\"\\ud800\""),
            "invalid_json",
        ),
        (
            "deeply nested",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "invalid_json",
        ),
    ];
    for (case, body, code) in &bodies {
        let leaked: &'static str = Box::leak(body.clone().into_boxed_str());
        let (status, answer) = app
            .send_raw(
                Method::PUT,
                "/api/v1/profiles/me",
                &token,
                "application/json",
                leaked,
            )
            .await;
        assert_eq!(
            (status.as_u16(), error_code(&answer)),
            (400, *code),
            "{case}: {answer}"
        );
        record(
            AREA,
            &format!("PUT /profiles/me: {case}"),
            &format!("400 {code}"),
            &[],
        );
    }
    let reasons = [
        (
            "reason NUL",
            r#"{"status":"approved","reason":"a\u0000"}"#,
            "invalid_reason",
        ),
        ("status unknown", r#"{"status":"root"}"#, "invalid_json"),
        ("reason 1001 chars", "", "invalid_reason"),
    ];
    for (case, body, code) in reasons {
        let body = if body.is_empty() {
            &*Box::leak(
                json!({ "status": "approved", "reason": "r".repeat(1001) })
                    .to_string()
                    .into_boxed_str(),
            )
        } else {
            body
        };
        let (status, answer) = app
            .send_raw(
                Method::POST,
                "/api/v1/admin/profiles/2/verification",
                &admin,
                "application/json",
                body,
            )
            .await;
        assert_eq!(
            (status.as_u16(), error_code(&answer)),
            (400, code),
            "{case}: {answer}"
        );
        record(
            AREA,
            &format!("POST verification: {case}"),
            &format!("400 {code}"),
            &[],
        );
    }
    assert_eq!(profile_count(&app).await, before, "no profile created");
    let audits = query_i64(&app.db.client().await, "SELECT count(*) FROM audit_logs").await;
    assert_eq!(audits, 0, "no audit row written");
}

#[actix_rt::test]
async fn another_members_conversation_is_not_found() {
    let app = app().await;
    let (mut a, _) = RawClient::connect(&app.ws_base, json!({ "token": app.token(1) })).await;
    let ack = a
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "private" }),
        )
        .await;
    let conversation = ack["conversation_id"].as_i64().unwrap();
    let message = ack["id"].as_i64().unwrap();
    // A member of it reads it.
    let (status, _) = app
        .get(
            &format!("/api/v1/conversations/{conversation}/messages"),
            Some(&app.token(2)),
        )
        .await;
    assert_eq!(status, 200);
    // Anyone else gets what an id that never existed gets.
    let outsider = app.token(3);
    let (existing, existing_body) = app
        .get(
            &format!("/api/v1/conversations/{conversation}/messages"),
            Some(&outsider),
        )
        .await;
    let (unknown, unknown_body) = app
        .get(
            &format!("/api/v1/conversations/{}/messages", conversation + 1000),
            Some(&outsider),
        )
        .await;
    assert_eq!((existing.as_u16(), unknown.as_u16()), (404, 404));
    assert_eq!(existing_body, unknown_body, "an outsider can tell the two apart");
    for query in ["?before=999999", "?after=0", "?limit=100"] {
        let (status, _) = app
            .get(
                &format!("/api/v1/conversations/{conversation}/messages{query}"),
                Some(&outsider),
            )
            .await;
        assert_eq!(status, 404, "{query}");
    }
    // Writing to it: a read mark on another's conversation, over the socket.
    let (mut c, _) = RawClient::connect(&app.ws_base, json!({ "token": outsider })).await;
    let answer = c
        .emit_ack(
            1,
            "mark_read",
            json!({ "conversation_id": conversation, "message_id": message }),
        )
        .await;
    assert_eq!(answer["error"]["code"], "not_found", "{answer}");
    let reads = query_i64(
        &app.db.client().await,
        "SELECT count(*) FROM conversation_reads WHERE user_id = 3",
    )
    .await;
    assert_eq!(reads, 0);
    // The conversation list shows only one's own.
    let (_, list) = app.get("/api/v1/conversations", Some(&outsider)).await;
    assert_eq!(list["items"], json!([]));
    record(
        AREA,
        "another member's conversation: read (with before/after/limit), mark_read, list",
        "404 not_found, the same body as an id that never existed; mark_read not_found; nothing stored",
        &[],
    );
}
