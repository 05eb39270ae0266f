//! Bad input on the socket listener (issue 14): tokens, namespaces,
//! packets out of order, malformed and hostile payloads, frames that
//! trickle, limits at and past their edge. Each case checks the answer the
//! contract implies and that nothing changed: no row stored, no session
//! left registered, the socket still usable where Socket.IO keeps it open,
//! and no panic anywhere in the node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::app::TEST_SECRET;
use crate::helpers::db::query_i64;
use crate::helpers::node::ChildNode;
use crate::helpers::report::record;
use crate::helpers::ws::RawClient;
use crate::helpers::{TestApp, TestDb};

const AREA: &str = "socket input";

/// Panics anywhere in this test's process (nextest runs each test in its
/// own), counted by a hook that keeps the default report.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

fn assert_no_panic() {
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened in the node");
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(alg: Algorithm, secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A token whose header and body are what we say, with any signature.
fn forged(header: Value, claims: Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
    )
}

async fn app_with_people(extra: &[&str]) -> TestApp {
    count_panics();
    let app = TestApp::spawn_on(TestDb::migrated(), extra).await;
    app.seed(1, 10, 3).await;
    app
}

async fn member(app: &TestApp, user: i64) -> RawClient {
    let (client, answer) = RawClient::connect(&app.ws_base, json!({ "token": app.token(user) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    client
}

async fn stored_messages(app: &TestApp) -> i64 {
    query_i64(&app.db.client().await, "SELECT count(*) FROM messages").await
}

async fn sockets_of(app: &TestApp, user: i64) -> usize {
    app.registry().sockets_of(user).await.unwrap()
}

/// Waits (bounded) until the registry holds `count` sockets of `user`.
async fn wait_for_sockets(app: &TestApp, user: i64, count: usize) {
    for _ in 0..500 {
        if sockets_of(app, user).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "user {user} never had {count} sockets (has {})",
        sockets_of(app, user).await
    );
}

/// A message from `from` to `to` is acked and delivered: the node serves.
async fn still_serves(app: &TestApp, from: i64, to: i64, text: &str) {
    let mut sender = member(app, from).await;
    let mut recipient = member(app, to).await;
    let ack = sender
        .emit_ack(1, "chat_message", json!({ "recipient_id": to, "message": text }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(recipient.expect_event("new_message").await["message"], text);
}

/// The refused CONNECT's code, checked to be a CONNECT_ERROR on `/`.
fn connect_error_code(answer: &str) -> String {
    let body = answer
        .strip_prefix("44")
        .unwrap_or_else(|| panic!("not a CONNECT_ERROR: {answer}"));
    let body: Value = serde_json::from_str(body).unwrap();
    assert!(body["message"].is_string(), "{body}");
    body["data"]["code"].as_str().unwrap_or_default().to_owned()
}

#[actix_rt::test]
async fn bad_tokens_get_connect_error_and_the_socket_stays_usable() {
    let app = app_with_people(&[]).await;
    let claims = json!({ "sub": "1", "exp": now() + 600 });
    let cases: Vec<(&str, Value)> = vec![
        ("no auth at all", Value::Null),
        ("auth without token", json!({})),
        ("token not a string", json!({ "token": 12345 })),
        ("empty token", json!({ "token": "" })),
        ("garbage token", json!({ "token": "not.a.token" })),
        ("random bytes token", json!({ "token": "\u{1}\u{2}ÿ..." })),
        (
            "expired token",
            json!({ "token": sign(Algorithm::HS256, TEST_SECRET, json!({ "sub": "1", "exp": now() - 120 })) }),
        ),
        (
            "token signed with another key",
            json!({ "token": sign(Algorithm::HS256, "another-secret-0123456789", claims.clone()) }),
        ),
        (
            "alg none, no signature",
            json!({ "token": forged(json!({ "alg": "none", "typ": "JWT" }), claims.clone(), "") }),
        ),
        (
            "HS384 with the right key",
            json!({ "token": sign(Algorithm::HS384, TEST_SECRET, claims.clone()) }),
        ),
        (
            "HS512 with the right key",
            json!({ "token": sign(Algorithm::HS512, TEST_SECRET, claims.clone()) }),
        ),
        (
            "RS256 header, HMAC-shaped signature",
            json!({ "token": forged(json!({ "alg": "RS256", "typ": "JWT" }), claims.clone(), "c2lnbmF0dXJl") }),
        ),
        (
            "no exp",
            json!({ "token": sign(Algorithm::HS256, TEST_SECRET, json!({ "sub": "1" })) }),
        ),
        (
            "sub not a user id",
            json!({ "token": sign(Algorithm::HS256, TEST_SECRET, json!({ "sub": "-3", "exp": now() + 600 })) }),
        ),
    ];
    // All on one socket: a refused CONNECT leaves the connection open, as
    // Socket.IO's reference server does, and the client may try again.
    let mut socket = RawClient::open(&app.ws_base).await;
    for (case, auth) in &cases {
        let packet = if auth.is_null() {
            "40".to_owned()
        } else {
            format!("40{auth}")
        };
        socket.send(&packet).await;
        let answer = socket.next_text().await.expect("an answer");
        assert_eq!(connect_error_code(&answer), "unauthorized", "{case}: {answer}");
        assert_eq!(sockets_of(&app, 1).await, 0, "{case} registered a socket");
        record(
            AREA,
            &format!("CONNECT with {case}"),
            "CONNECT_ERROR unauthorized, no session",
            &[],
        );
    }
    socket
        .send(&format!("40{}", json!({ "token": app.token(1) })))
        .await;
    let answer = socket.next_text().await.unwrap();
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    wait_for_sockets(&app, 1, 1).await;
    record(
        AREA,
        "a good CONNECT after 14 refused ones on the same socket",
        "connected",
        &[],
    );
    assert_no_panic();
}

#[actix_rt::test]
async fn a_token_for_a_user_without_a_profile_can_store_nothing() {
    let app = app_with_people(&[]).await;
    // Tokens come before profiles (PUT /profiles/me creates one), so the
    // CONNECT is the member's; what needs a profile is refused with a code.
    let mut ghost = member(&app, 4242).await;
    let ack = ghost
        .emit_ack(1, "chat_message", json!({ "recipient_id": 2, "message": "boo" }))
        .await;
    assert_eq!(ack["error"]["code"], "no_profile", "{ack}");
    let ack = ghost
        .emit_ack(2, "mark_read", json!({ "conversation_id": 1, "message_id": 1 }))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(stored_messages(&app).await, 0);
    let conversations = query_i64(&app.db.client().await, "SELECT count(*) FROM conversations").await;
    assert_eq!(conversations, 0);
    record(
        AREA,
        "valid token for a user who does not exist: chat_message, mark_read",
        "connected; acks no_profile / not_found, nothing stored",
        &[],
    );
    still_serves(&app, 1, 2, "after the ghost").await;
    assert_no_panic();
}

#[actix_rt::test]
async fn issuer_and_audience_are_checked_when_set() {
    let app = app_with_people(&["--jwt-issuer=aurum-test", "--jwt-audience=chat"]).await;
    let exp = now() + 600;
    let token = |claims: Value| json!({ "token": sign(Algorithm::HS256, TEST_SECRET, claims) });
    let refused = [
        ("no iss, no aud", token(json!({ "sub": "1", "exp": exp }))),
        (
            "wrong iss",
            token(json!({ "sub": "1", "exp": exp, "iss": "elsewhere", "aud": "chat" })),
        ),
        (
            "no aud",
            token(json!({ "sub": "1", "exp": exp, "iss": "aurum-test" })),
        ),
        (
            "wrong aud",
            token(json!({ "sub": "1", "exp": exp, "iss": "aurum-test", "aud": "billing" })),
        ),
    ];
    let mut socket = RawClient::open(&app.ws_base).await;
    for (case, auth) in &refused {
        socket.send(&format!("40{auth}")).await;
        let answer = socket.next_text().await.unwrap();
        assert_eq!(connect_error_code(&answer), "unauthorized", "{case}: {answer}");
        record(
            AREA,
            &format!("JWT_ISSUER/JWT_AUDIENCE set, token with {case}"),
            "CONNECT_ERROR unauthorized",
            &[],
        );
    }
    assert_eq!(sockets_of(&app, 1).await, 0);
    // REST checks the same.
    let (status, _) = app
        .get("/api/v1/profiles/me", refused[3].1["token"].as_str())
        .await;
    assert_eq!(status, 401);
    // An audience among several is accepted; so is the node's own token.
    let (_both, answer) = RawClient::connect(
        &app.ws_base,
        token(json!({ "sub": "1", "exp": exp, "iss": "aurum-test", "aud": ["billing", "chat"] })),
    )
    .await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    still_serves(&app, 3, 2, "issued by the node").await;
    record(
        AREA,
        "JWT_ISSUER/JWT_AUDIENCE set, right iss and aud",
        "connected",
        &[],
    );

    // Unset, neither is looked at.
    let plain = app_with_people(&[]).await;
    let (_client, answer) = RawClient::connect(
        &plain.ws_base,
        token(json!({ "sub": "1", "exp": exp, "iss": "anyone", "aud": "anything" })),
    )
    .await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    record(
        AREA,
        "JWT_ISSUER/JWT_AUDIENCE unset, token with iss and aud",
        "connected",
        &[],
    );
    assert_no_panic();
}

#[actix_rt::test]
async fn other_namespaces_and_packets_out_of_order() {
    let app = app_with_people(&[]).await;
    let auth = json!({ "token": app.token(1) });

    // Another namespace: CONNECT_ERROR, the connection stays, `/` works.
    let mut socket = RawClient::open(&app.ws_base).await;
    socket.send(&format!("40/admin,{auth}")).await;
    let answer = socket.next_text().await.unwrap();
    assert!(answer.starts_with("44/admin,"), "{answer}");
    assert!(answer.contains("Invalid namespace"), "{answer}");
    socket.send(&format!("40{auth}")).await;
    assert!(socket.next_text().await.unwrap().starts_with("40{\"sid\":"));
    record(
        AREA,
        "CONNECT to /admin",
        "CONNECT_ERROR Invalid namespace; / still connects",
        &[],
    );

    // An event on a namespace never joined, or before any CONNECT: the
    // reference server closes such a socket; nothing is stored.
    let event = json!(["chat_message", { "recipient_id": 2, "message": "early" }]);
    for (case, packet) in [
        ("EVENT before CONNECT", format!("420{event}")),
        ("DISCONNECT before CONNECT", "41".to_owned()),
        ("ACK before CONNECT", "430[]".to_owned()),
    ] {
        let mut early = RawClient::open(&app.ws_base).await;
        early.send(&packet).await;
        assert!(early.closed_within(Duration::from_secs(5)).await, "{case}");
        record(AREA, case, "socket closed (invalid state), nothing stored", &[]);
    }
    let mut wrong = member(&app, 1).await;
    wrong.send(&format!("42/admin,0{event}")).await;
    assert!(wrong.closed_within(Duration::from_secs(5)).await);
    record(
        AREA,
        "EVENT on a namespace not joined",
        "socket closed, nothing stored",
        &[],
    );
    assert_eq!(stored_messages(&app).await, 0);

    // Unknown events: a code in the ack, or an `error` event without one.
    let mut a = member(&app, 2).await;
    let answer = a.emit_ack(1, "drop_table", json!({})).await;
    assert_eq!(answer["error"]["code"], "unknown_event", "{answer}");
    a.send(r#"42["__proto__",{}]"#).await;
    assert_eq!(a.expect_event("error").await["code"], "unknown_event");
    let answer = a.emit_ack(2, "", json!(null)).await;
    assert_eq!(answer["error"]["code"], "unknown_event", "{answer}");
    record(
        AREA,
        "unknown events (with and without ack)",
        "unknown_event; socket usable",
        &[],
    );

    // 1,000 CONNECTs on one socket, all at once: the second, to a namespace
    // being joined, closes the socket; nothing stays registered.
    let mut storm = RawClient::open(&app.ws_base).await;
    for _ in 0..1000 {
        storm.send_raw(Message::text(format!("40{auth}"))).await;
    }
    assert!(storm.closed_within(Duration::from_secs(10)).await);
    wait_for_sockets(&app, 1, 1).await; // `socket` above only
    // 1,000 refused CONNECTs in a row cost the socket nothing.
    let mut retries = RawClient::open(&app.ws_base).await;
    // Each after the answer to the one before: a CONNECT sent while the
    // last is being decided is the storm above.
    for n in 0..1000 {
        retries.send(r#"40{"token":"bad"}"#).await;
        let answer = retries
            .next_text()
            .await
            .unwrap_or_else(|| panic!("closed after {n}"));
        assert!(answer.starts_with("44"), "{answer}");
    }
    retries.send(&format!("40{auth}")).await;
    assert!(retries.next_text().await.unwrap().starts_with("40{\"sid\":"));
    record(
        AREA,
        "1,000 CONNECTs at once on one socket",
        "socket closed at the second (invalid state); no session left",
        &[],
    );
    record(
        AREA,
        "1,000 refused CONNECTs, then a good one, on one socket",
        "1,000 CONNECT_ERRORs, then connected",
        &[],
    );
    still_serves(&app, 3, 4, "after the storm").await;
    assert_no_panic();
}

#[actix_rt::test]
async fn malformed_and_hostile_payloads() {
    let app = app_with_people(&[]).await;
    let mut bystander = member(&app, 2).await;
    let deep = format!(
        "42[\"chat_message\",{}{}]",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_object = format!(
        "42[\"chat_message\",{}1{}]",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    // Each breaks the codec: the socket is closed (both specs say so), the
    // node and every other socket go on.
    let closing = [
        ("non-JSON event", "42hello world".to_owned()),
        (
            "truncated JSON",
            r#"42["chat_message",{"recipient_id":2,"mess"#.to_owned(),
        ),
        ("array nested 10,000 deep", deep),
        ("object nested 10,000 deep", deep_object),
        (
            "number 1e400",
            r#"42["chat_message",{"recipient_id":1e400,"message":"x"}]"#.to_owned(),
        ),
        (
            "lone UTF-16 surrogate",
            r#"42["chat_message",{"recipient_id":2,"message":"\ud800"}]"#.to_owned(),
        ),
        (
            "ack id past u64",
            r#"4218446744073709551616["chat_message",{}]"#.to_owned(),
        ),
        (
            "attachment count past usize",
            r#"45999999999999999999999-["x"]"#.to_owned(),
        ),
        ("unknown Engine.IO type", "7".to_owned()),
        ("Socket.IO type 9", "49".to_owned()),
    ];
    for (case, packet) in &closing {
        let mut socket = member(&app, 1).await;
        let started = Instant::now();
        socket.send(packet).await;
        assert!(socket.closed_within(Duration::from_secs(5)).await, "{case}");
        record(
            AREA,
            case,
            "socket closed (parse error); node and other sockets unaffected",
            &[("closed after", format!("{} ms", started.elapsed().as_millis()))],
        );
    }
    wait_for_sockets(&app, 1, 0).await;

    // Valid JSON, wrong values: a code, the socket stays.
    let mut a = member(&app, 1).await;
    let huge = [
        (
            "recipient_id 2^64",
            json!({ "recipient_id": 18446744073709551616_f64, "message": "x" }),
        ),
        (
            "recipient_id i64::MAX + 1",
            json!({ "recipient_id": 9223372036854775808_u64, "message": "x" }),
        ),
        ("recipient_id 2.5", json!({ "recipient_id": 2.5, "message": "x" })),
        ("recipient_id -2", json!({ "recipient_id": -2, "message": "x" })),
        (
            "recipient_id \"2\"",
            json!({ "recipient_id": "2; DROP TABLE messages", "message": "x" }),
        ),
        (
            "recipient_id i64::MAX",
            json!({ "recipient_id": i64::MAX, "message": "x" }),
        ),
    ];
    for (n, (case, payload)) in huge.iter().enumerate() {
        let answer = a.emit_ack(n as u64, "chat_message", payload.clone()).await;
        assert_eq!(answer["ok"], false, "{case}: {answer}");
        let code = answer["error"]["code"].as_str().unwrap().to_owned();
        assert!(
            ["invalid_payload", "unknown_recipient"].contains(&code.as_str()),
            "{case}: {answer}"
        );
        record(
            AREA,
            &format!("chat_message with {case}"),
            &format!("ack {code}; socket usable"),
            &[],
        );
    }
    let answer = a
        .emit_ack(
            50,
            "mark_read",
            json!({ "conversation_id": 1e300, "message_id": -1 }),
        )
        .await;
    assert_eq!(answer["error"]["code"], "invalid_payload", "{answer}");
    record(AREA, "mark_read with 1e300 / -1", "ack invalid_payload", &[]);

    // The largest ack id there is answers under that id.
    a.send(&format!(
        "42{}{}",
        u64::MAX,
        json!(["chat_message", { "recipient_id": 2, "message": "max id" }])
    ))
    .await;
    let prefix = format!("43{}[", u64::MAX);
    loop {
        let text = a.next_text().await.expect("the ack");
        if let Some(rest) = text.strip_prefix(&prefix) {
            assert!(rest.contains("\"ok\":true"), "{text}");
            break;
        }
    }
    record(AREA, "ack id u64::MAX", "acked under that id", &[]);
    assert_eq!(bystander.expect_event("new_message").await["message"], "max id");
    assert_eq!(stored_messages(&app).await, 1, "only the valid message is stored");
    assert_no_panic();
}

#[actix_rt::test]
async fn binary_attachments_are_refused_before_they_arrive() {
    let app = app_with_people(&[]).await;
    let mut a = member(&app, 1).await;
    // The ack comes back before a single attachment is sent: nothing is
    // being assembled, however many are announced.
    let header =
        json!(["chat_message", { "recipient_id": 2, "message": { "_placeholder": true, "num": 0 } }]);
    a.send(&format!("451-7{header}")).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = a.next_text().await.expect("an ack");
            if let Some(rest) = text.strip_prefix("437") {
                return serde_json::from_str::<Value>(rest).unwrap();
            }
        }
    })
    .await
    .expect("refused before the attachment came");
    assert_eq!(answer[0]["error"]["code"], "binary_not_supported", "{answer}");
    a.send_raw(Message::binary(vec![0_u8; 90_000])).await;
    // A million announced: counted off, never held.
    a.send(&format!("451000000-8{header}")).await;
    let answer = loop {
        let text = a.next_text().await.expect("an ack");
        if let Some(rest) = text.strip_prefix("438") {
            break serde_json::from_str::<Value>(rest).unwrap();
        }
    };
    assert_eq!(answer[0]["error"]["code"], "binary_not_supported");
    for _ in 0..1_000_000 / 50_000 {
        a.send_raw(Message::binary(vec![1_u8; 10])).await;
    }
    record(
        AREA,
        "BINARY_EVENT with 1 and with 1,000,000 attachments announced",
        "ack binary_not_supported before any attachment arrived; attachments dropped unread",
        &[],
    );
    // A text frame while attachments are still owed breaks the protocol.
    a.send(r#"42["typing",{"recipient_id":2}]"#).await;
    assert!(a.closed_within(Duration::from_secs(5)).await);
    // Binary where no binary packet announced it.
    let mut b = member(&app, 1).await;
    b.send_raw(Message::binary(vec![1_u8, 2, 3])).await;
    assert!(b.closed_within(Duration::from_secs(5)).await);
    record(
        AREA,
        "binary frame with no BINARY_EVENT before it",
        "socket closed",
        &[],
    );
    // After all announced attachments arrive, the socket is usable again.
    let mut c = member(&app, 3).await;
    c.send(&format!(
        "452-1{}",
        json!(["typing", { "_placeholder": true, "num": 0 }, { "_placeholder": true, "num": 1 }])
    ))
    .await;
    c.send_raw(Message::binary(vec![1_u8])).await;
    c.send_raw(Message::binary(vec![2_u8])).await;
    let ok = c
        .emit_ack(
            2,
            "chat_message",
            json!({ "recipient_id": 4, "message": "after binary" }),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(stored_messages(&app).await, 1);
    assert_no_panic();
}

#[actix_rt::test]
async fn payload_limit_at_and_one_byte_over() {
    let app = app_with_people(&["--ws-max-payload=1000"]).await;
    let packet = |len: usize| {
        // `42[...]` around a message padded to make the frame `len` bytes.
        let shell = json!(["chat_message", { "recipient_id": 2, "message": "" }]).to_string();
        let pad = len - 2 - shell.len() - 1; // "4" "2" + the ack id "1"
        format!(
            "421{}",
            json!(["chat_message", { "recipient_id": 2, "message": "m".repeat(pad) }])
        )
    };
    let mut at = member(&app, 1).await;
    let exact = packet(1000);
    assert_eq!(exact.len(), 1000);
    at.send(&exact).await;
    let ack = loop {
        let text = at.next_text().await.expect("an ack at the limit");
        if text.starts_with("431[") {
            break text;
        }
    };
    assert!(ack.contains("\"ok\":true"), "{ack}");
    record(
        AREA,
        "packet of exactly WS_MAX_PAYLOAD (1,000 bytes)",
        "acked, stored",
        &[],
    );
    let mut over = member(&app, 1).await;
    over.send(&packet(1001)).await;
    let (_, close) = over.until_closed(Duration::from_secs(5)).await;
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    record(
        AREA,
        "packet one byte over WS_MAX_PAYLOAD (1,001 bytes)",
        "socket closed with 1009 (message too big), not stored",
        &[],
    );
    assert_eq!(stored_messages(&app).await, 1);
    still_serves(&app, 3, 2, "after the oversize").await;
    assert_no_panic();
}

#[actix_rt::test]
async fn message_and_client_id_limits_and_characters() {
    let app = app_with_people(&[]).await;
    let mut a = member(&app, 1).await;
    let mut b = member(&app, 2).await;
    let refused = [
        (
            "message of 0 characters",
            json!({ "recipient_id": 2, "message": "" }),
            "invalid_message",
        ),
        (
            "message of 4,001 characters",
            json!({ "recipient_id": 2, "message": "é".repeat(4001) }),
            "invalid_message",
        ),
        (
            "message with NUL",
            json!({ "recipient_id": 2, "message": "a\u{0}b" }),
            "invalid_message",
        ),
        (
            "client_id of 65 characters",
            json!({ "recipient_id": 2, "message": "x", "client_id": "c".repeat(65) }),
            "invalid_payload",
        ),
        (
            "client_id with NUL",
            json!({ "recipient_id": 2, "message": "x", "client_id": "a\u{0}" }),
            "invalid_payload",
        ),
        (
            "client_id empty",
            json!({ "recipient_id": 2, "message": "x", "client_id": "" }),
            "invalid_payload",
        ),
        (
            "client_id a number",
            json!({ "recipient_id": 2, "message": "x", "client_id": 7 }),
            "invalid_payload",
        ),
    ];
    for (n, (case, payload, code)) in refused.iter().enumerate() {
        let answer = a.emit_ack(n as u64, "chat_message", payload.clone()).await;
        assert_eq!(answer["error"]["code"], *code, "{case}: {answer}");
        record(AREA, case, &format!("ack {code}, nothing stored"), &[]);
    }
    assert_eq!(stored_messages(&app).await, 0);

    // At the limits, and control characters other than NUL: stored and
    // delivered exactly as sent.
    let accepted = [
        (
            "message of 4,000 characters",
            "é".repeat(4000),
            Some("c".repeat(64)),
        ),
        ("message of 1 character", "x".to_owned(), None),
        (
            "control characters (bell, escape, tab, newline, DEL, U+2028)",
            "\u{7}\u{1b}[31m\t\n\u{7f}\u{2028}end".to_owned(),
            None,
        ),
        ("emoji and combining marks", "👩‍👩‍👧 e\u{301}".to_owned(), None),
    ];
    for (n, (case, text, client_id)) in accepted.iter().enumerate() {
        let mut payload = json!({ "recipient_id": 2, "message": text });
        if let Some(id) = client_id {
            payload["client_id"] = json!(id);
        }
        let answer = a.emit_ack(100 + n as u64, "chat_message", payload).await;
        assert_eq!(answer["ok"], true, "{case}: {answer}");
        let delivered = b.expect_event("new_message").await;
        assert_eq!(delivered["message"], *text, "{case}");
        let id = answer["id"].as_i64().unwrap();
        let row = app
            .db
            .client()
            .await
            .query_one("SELECT body FROM messages WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), *text, "{case}");
        record(AREA, case, "acked, stored and delivered byte for byte", &[]);
    }

    // A text frame that is not UTF-8 breaks WebSocket itself: 1007.
    let mut raw = RawWs::open(&app.ws_base).await;
    raw.send_frame(
        0x1,
        b"42[\"chat_message\",{\"recipient_id\":2,\"message\":\"\xff\xfe\"}]",
    )
    .await;
    let close = raw.until_close(Duration::from_secs(5)).await;
    assert!(close.is_some(), "the socket must close");
    record(
        AREA,
        "text frame with invalid UTF-8",
        &format!("socket closed (close code {:?}), nothing stored", close.flatten()),
        &[],
    );
    assert_eq!(stored_messages(&app).await, accepted.len() as i64);
    assert_no_panic();
}

/// A WebSocket client written on raw TCP, for frames no library sends:
/// invalid UTF-8 in a text frame, a header whose payload trickles.
struct RawWs {
    stream: tokio::net::TcpStream,
}

impl RawWs {
    async fn open(ws_base: &str) -> Self {
        let address = ws_base.trim_start_matches("ws://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // The 101 head, byte by byte so no frame is read past it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0_u8];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut ws = Self { stream };
        let (opcode, open) = ws.read_frame().await.expect("OPEN");
        assert_eq!((opcode, open.first()), (0x1, Some(&b'0')));
        ws
    }

    /// A masked frame header for `len` bytes of `opcode`, final.
    fn header(opcode: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=65_535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        // A zero mask leaves the payload as it is.
        out.extend_from_slice(&[0, 0, 0, 0]);
        out
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = Self::header(opcode, payload.len());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next server frame (servers do not mask), `None` at the end.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0_u8; 2];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7F {
            126 => {
                let mut len = [0_u8; 2];
                self.stream.read_exact(&mut len).await.ok()?;
                usize::from(u16::from_be_bytes(len))
            }
            127 => {
                let mut len = [0_u8; 8];
                self.stream.read_exact(&mut len).await.ok()?;
                u64::from_be_bytes(len) as usize
            }
            short => usize::from(short),
        };
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0F, payload))
    }

    /// Waits for the server to end the connection: `Some(code)` after a
    /// close frame (`None` inside if it had no code), `Some(None)` if the
    /// connection just ended, `None` if still open after `wait`.
    async fn until_close(&mut self, wait: Duration) -> Option<Option<u16>> {
        tokio::time::timeout(wait, async {
            loop {
                match self.read_frame().await {
                    None => return None,
                    Some((0x8, body)) => {
                        return body.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]]));
                    }
                    Some((0x1, text)) if text == b"2" => {
                        let mut frame = Self::header(0x1, 1);
                        frame.push(b'3');
                        let _ = self.stream.write_all(&frame).await;
                    }
                    Some(_) => {}
                }
            }
        })
        .await
        .ok()
    }
}

#[actix_rt::test]
async fn frames_that_trickle_are_cut_at_the_deadline_and_cost_no_memory() {
    count_panics();
    // A child node, so its memory is its own; a 3 s ping timeout is the
    // deadline for a message's bytes, pings far apart so that only the
    // deadline can end the sockets.
    let db = TestDb::migrated();
    let node = ChildNode::start(
        &db.url,
        &[
            ("WS_PING_INTERVAL", "60000".to_owned()),
            ("WS_PING_TIMEOUT", "3000".to_owned()),
        ],
    )
    .await;
    const SOCKETS: usize = 400;
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        sockets.push(RawWs::open(&node.ws_base).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = node.rss_kib();
    // Each claims a 100,000-byte text message (the default limit's worth)
    // and sends one byte of it at a time.
    let started = Instant::now();
    let header = RawWs::header(0x1, 100_000);
    for socket in &mut sockets {
        socket.stream.write_all(&header).await.unwrap();
        socket.stream.write_all(b"4").await.unwrap();
    }
    let mut peak = before;
    let trickle_until = started + Duration::from_millis(2_000);
    while Instant::now() < trickle_until {
        for socket in &mut sockets {
            let _ = socket.stream.write_all(b"2").await;
        }
        peak = peak.max(node.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every socket is closed by the deadline, none before it.
    let mut closed_after = Vec::with_capacity(SOCKETS);
    for socket in &mut sockets {
        let close = socket.until_close(Duration::from_secs(15)).await;
        assert!(close.is_some(), "a trickling socket outlived its deadline");
        closed_after.push(started.elapsed());
        peak = peak.max(node.rss_kib());
    }
    let first = closed_after.iter().min().unwrap();
    let last = closed_after.iter().max().unwrap();
    assert!(
        *first >= Duration::from_millis(2_500),
        "closed before its deadline: {first:?}"
    );
    let grown_kib = peak.saturating_sub(before);
    // Claimed: 400 x 100 KB = 40 MB. Held: what arrived (20-odd bytes a
    // socket), so growth stays far below one claimed message per socket.
    assert!(
        grown_kib < (SOCKETS as u64 * 100) / 4,
        "RSS grew by {grown_kib} KiB with {SOCKETS} trickling sockets ({before} -> {peak})"
    );
    // And the node still serves.
    let health = node.get_json("/health/live").await;
    assert!(health.is_object(), "{health}");
    let mut after = RawClient::open(&node.ws_base).await;
    after.send("40").await;
    assert!(after.next_text().await.unwrap().starts_with("44"));
    record(
        AREA,
        "400 sockets: frame header claims 100 KB, then a byte every 100 ms",
        "every socket closed at the message deadline (WS_PING_TIMEOUT); node serves",
        &[
            (
                "closed after",
                format!("{:.1}-{:.1} s", first.as_secs_f64(), last.as_secs_f64()),
            ),
            ("RSS growth", format!("{grown_kib} KiB ({before} -> {peak} KiB)")),
            ("claimed", format!("{} KB", SOCKETS * 100)),
        ],
    );
    assert_no_panic();
}
