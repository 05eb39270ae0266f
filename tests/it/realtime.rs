//! Chat over real sockets with a raw client: auth, delivery across devices,
//! limits, malformed input, ping timeout, and registry supervision.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::db::query_i64;
use crate::helpers::ws::RawClient;
use crate::helpers::{TestApp, TestDb};

const FAST_PINGS: [&str; 2] = ["--ws-ping-interval=150", "--ws-ping-timeout=500"];
/// Frequent heartbeats, but a client that reads late is not dropped for it.
const FREQUENT_PINGS: [&str; 2] = ["--ws-ping-interval=150", "--ws-ping-timeout=10000"];

async fn app_with_people() -> TestApp {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 3).await;
    app
}

async fn member(app: &TestApp, user: i64) -> RawClient {
    let (client, answer) = RawClient::connect(&app.ws_base, json!({ "token": app.token(user) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    client
}

/// Waits until the registry holds `count` sockets of `user`.
async fn wait_for_sockets(app: &TestApp, user: i64, count: usize) {
    let registry = app.registry();
    for _ in 0..200 {
        if registry.sockets_of(user).await == Ok(count) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "user {user} never had {count} sockets (has {:?})",
        registry.sockets_of(user).await
    );
}

#[actix_rt::test]
async fn handshake_and_refused_connects() {
    let app = app_with_people().await;
    let client = RawClient::open(&app.ws_base).await;
    assert_eq!(client.open["upgrades"], json!([]));
    assert_eq!(client.open["pingInterval"], 25_000);
    assert_eq!(client.open["pingTimeout"], 20_000);
    assert_eq!(client.open["maxPayload"], 100_000);
    assert!(client.open["sid"].as_str().is_some_and(|sid| !sid.is_empty()));

    let expired = {
        use jsonwebtoken::{EncodingKey, Header};
        let claims = json!({ "sub": "1", "exp": chrono::Utc::now().timestamp() - 300 });
        let key = EncodingKey::from_secret(crate::helpers::app::TEST_SECRET.as_bytes());
        jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
    };
    for auth in [
        json!({}),
        json!({ "token": "garbage" }),
        json!({ "token": expired }),
        json!({ "token": 5 }),
    ] {
        let (_client, answer) = RawClient::connect(&app.ws_base, auth.clone()).await;
        let body: Value = serde_json::from_str(answer.strip_prefix("44").expect("CONNECT_ERROR")).unwrap();
        assert_eq!(body["data"]["code"], "unauthorized", "{auth}");
        assert!(body["message"].is_string());
    }
    assert_eq!(
        app.registry().sockets_of(1).await,
        Ok(0),
        "no session for a refused connect"
    );

    let mut client = RawClient::open(&app.ws_base).await;
    client
        .send(&format!("40/admin,{}", json!({ "token": app.token(1) })))
        .await;
    let answer = client.next_text().await.unwrap();
    assert!(answer.starts_with("44/admin,"), "{answer}");
    assert!(answer.contains("Invalid namespace"));
}

#[actix_rt::test]
async fn messages_reach_every_device_and_acks_follow_commit() {
    let app = app_with_people().await;
    let mut a1 = member(&app, 1).await;
    let mut a2 = member(&app, 1).await;
    let mut b1 = member(&app, 2).await;
    let mut b2 = member(&app, 2).await;
    wait_for_sockets(&app, 1, 2).await;
    wait_for_sockets(&app, 2, 2).await;

    let ack = a1
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "namaste", "client_id": "k1" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    // Committed before the ack.
    let client = app.db.client().await;
    let id = ack["id"].as_i64().unwrap();
    let row = client
        .query_one("SELECT body FROM messages WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "namaste");

    for socket in [&mut b1, &mut b2, &mut a2] {
        let message = socket.expect_event("new_message").await;
        assert_eq!(message["id"], ack["id"]);
        assert_eq!(message["sender_id"], 1);
        assert_eq!(message["recipient_id"], 2);
        assert_eq!(message["message"], "namaste");
        assert_eq!(message["client_id"], "k1");
    }
    // Idempotent retry: the same ack, one row.
    let retry = a1
        .emit_ack(
            2,
            "chat_message",
            json!({ "recipient_id": 2, "message": "namaste", "client_id": "k1" }),
        )
        .await;
    assert_eq!(retry, ack);
    let count = query_i64(&client, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 1);

    // typing and read receipts.
    b1.send(&format!("42{}", json!(["typing", { "recipient_id": 1 }])))
        .await;
    assert_eq!(a1.expect_event("typing").await, json!({ "sender_id": 2 }));
    let read = b1
        .emit_ack(
            3,
            "mark_read",
            json!({ "conversation_id": ack["conversation_id"], "message_id": id }),
        )
        .await;
    assert_eq!(read["ok"], true);
    let receipt = a2.expect_event("message_read").await;
    assert_eq!(
        receipt,
        json!({ "conversation_id": ack["conversation_id"], "reader_id": 2, "message_id": id })
    );
    let stranger = member(&app, 3).await;
    drop(stranger);
    let mut c = member(&app, 3).await;
    let refused = c
        .emit_ack(
            1,
            "mark_read",
            json!({ "conversation_id": ack["conversation_id"], "message_id": id }),
        )
        .await;
    assert_eq!(refused["error"]["code"], "not_found");
}

#[actix_rt::test]
async fn since_replays_what_was_missed() {
    let app = app_with_people().await;
    let mut a = member(&app, 1).await;
    let mut ids = Vec::new();
    for (n, text) in ["one", "two", "three"].iter().enumerate() {
        let ack = a
            .emit_ack(
                n as u64,
                "chat_message",
                json!({ "recipient_id": 2, "message": text }),
            )
            .await;
        ids.push(ack["id"].as_i64().unwrap());
    }
    let (mut b, answer) =
        RawClient::connect(&app.ws_base, json!({ "token": app.token(2), "since": ids[0] })).await;
    assert!(answer.starts_with("40"), "{answer}");
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(b.expect_event("new_message").await["id"].as_i64().unwrap());
    }
    assert_eq!(got, ids[1..]);
    assert!(
        b.next_text_within(Duration::from_millis(300)).await.is_none(),
        "nothing more"
    );
}

#[actix_rt::test]
async fn bad_events_get_codes_and_change_nothing() {
    let app = app_with_people().await;
    let mut a = member(&app, 1).await;
    let cases = [
        (json!({ "recipient_id": 1, "message": "me" }), "invalid_recipient"),
        (
            json!({ "recipient_id": 4242, "message": "nobody" }),
            "unknown_recipient",
        ),
        (json!({ "recipient_id": 2, "message": "" }), "invalid_message"),
        (
            json!({ "recipient_id": 2, "message": "x".repeat(4001) }),
            "invalid_message",
        ),
        (json!({ "recipient_id": 2, "message": 5 }), "invalid_payload"),
        (
            json!({ "recipient_id": 2, "message": "hi", "client_id": "x".repeat(65) }),
            "invalid_payload",
        ),
        (json!({ "message": "hi" }), "invalid_payload"),
        (json!("hello"), "invalid_payload"),
    ];
    for (n, (payload, code)) in cases.into_iter().enumerate() {
        let answer = a.emit_ack(n as u64, "chat_message", payload.clone()).await;
        assert_eq!(answer["ok"], false, "{payload}");
        assert_eq!(answer["error"]["code"], code, "{payload}");
    }
    // 4,000 characters (not bytes) is allowed.
    let long = "न".repeat(4000);
    let ok = a
        .emit_ack(99, "chat_message", json!({ "recipient_id": 2, "message": long }))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    // Binary attachments are refused with a clear error.
    a.send(r#"451-["chat_message",{"recipient_id":2,"message":{"_placeholder":true,"num":0}}]"#)
        .await;
    a.send_raw(Message::binary(vec![1_u8, 2, 3])).await;
    let error = a.expect_event("error").await;
    assert_eq!(error["code"], "binary_not_supported");
    // No ack: the refusal comes as an `error` event.
    a.send(&format!(
        "42{}",
        json!(["chat_message", { "recipient_id": 1, "message": "x" }])
    ))
    .await;
    assert_eq!(a.expect_event("error").await["code"], "invalid_recipient");
    let unknown = a.emit_ack(100, "dance", json!({})).await;
    assert_eq!(unknown["error"]["code"], "unknown_event");
    let count: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "only the valid message was stored");
}

#[actix_rt::test]
async fn senders_over_their_rate_are_limited() {
    let app = app_with_people().await;
    let mut a = member(&app, 1).await;
    // Burst 40 at 20/s: fire 60 at once; some must be refused.
    for n in 0..60_u64 {
        a.send(&format!(
            "42{n}{}",
            json!(["chat_message", { "recipient_id": 2, "message": format!("m{n}") }])
        ))
        .await;
    }
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 60 {
        let text = a.next_text().await.expect("an ack");
        if let Some(rest) = text.strip_prefix("43") {
            let json = &rest[rest.find('[').unwrap()..];
            let answer: Vec<Value> = serde_json::from_str(json).unwrap();
            match answer[0]["ok"].as_bool() {
                Some(true) => ok += 1,
                _ => {
                    assert_eq!(answer[0]["error"]["code"], "rate_limited");
                    limited += 1;
                }
            }
        }
    }
    assert!((40..=45).contains(&ok), "accepted {ok}");
    assert!(limited >= 15, "limited {limited}");
}

#[actix_rt::test]
async fn at_most_ten_sockets_per_user() {
    let app = app_with_people().await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(member(&app, 5).await);
    }
    wait_for_sockets(&app, 5, 10).await;
    let (_eleventh, answer) = RawClient::connect(&app.ws_base, json!({ "token": app.token(5) })).await;
    assert!(answer.starts_with("44"), "{answer}");
    assert!(answer.contains("too_many_sockets"), "{answer}");
    held.pop();
    wait_for_sockets(&app, 5, 9).await;
    let _again = member(&app, 5).await;
}

#[actix_rt::test]
async fn oversize_and_malformed_packets_close_only_that_socket() {
    let app = TestApp::spawn_on(TestDb::migrated(), &["--ws-max-payload=1000"]).await;
    app.seed(1, 5, 3).await;
    let mut bystander = member(&app, 2).await;
    let mut big = member(&app, 1).await;
    big.send(&format!(
        "42{}",
        json!(["chat_message", { "recipient_id": 2, "message": "x".repeat(2000) }])
    ))
    .await;
    assert!(
        big.closed_within(Duration::from_secs(3)).await,
        "oversize packet closes the socket"
    );
    for garbage in ["9nonsense", "42[oops", "4-", "", "42{\"not\":\"an array\"}"] {
        let mut bad = member(&app, 1).await;
        bad.send(garbage).await;
        assert!(
            bad.closed_within(Duration::from_secs(3)).await,
            "{garbage:?} closes the socket"
        );
    }
    wait_for_sockets(&app, 1, 0).await;
    let mut sender = member(&app, 3).await;
    let ack = sender
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "still here?" }),
        )
        .await;
    assert_eq!(ack["ok"], true);
    assert_eq!(
        bystander.expect_event("new_message").await["message"],
        "still here?"
    );
}

#[actix_rt::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_deregistered() {
    let app = TestApp::spawn_on(TestDb::migrated(), &FAST_PINGS).await;
    app.seed(1, 5, 3).await;
    let mut silent = member(&app, 1).await;
    let mut alive = member(&app, 1).await;
    // Keep reading, so the live client answers its pings.
    let reader =
        actix_rt::spawn(
            async move { while alive.next_text_within(Duration::from_secs(10)).await.is_some() {} },
        );
    wait_for_sockets(&app, 1, 2).await;
    silent.auto_pong = false;
    assert!(
        silent.closed_within(Duration::from_secs(3)).await,
        "dropped after a missed pong"
    );
    wait_for_sockets(&app, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.registry().sockets_of(1).await,
        Ok(1),
        "the client that answers stays"
    );
    reader.abort();
}

#[actix_rt::test]
async fn a_crashed_registry_shard_is_restarted_and_refilled() {
    let app = TestApp::spawn_on(TestDb::migrated(), &FREQUENT_PINGS).await;
    app.seed(1, 5, 3).await;
    let mut b = member(&app, 2).await;
    let mut a = member(&app, 1).await;
    wait_for_sockets(&app, 2, 1).await;
    app.registry().crash_shard_of(2);
    assert_eq!(
        app.registry().sockets_of(2).await,
        Ok(0),
        "the restarted shard starts empty"
    );
    // The restarted shard starts empty; B re-registers on its next answered
    // ping (reading answers pings).
    let mut refilled = false;
    for _ in 0..50 {
        let _ = b.next_text_within(Duration::from_millis(100)).await;
        if app.registry().sockets_of(2).await == Ok(1) {
            refilled = true;
            break;
        }
    }
    assert!(refilled, "B was never registered again");
    let ack = a
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "after the crash" }),
        )
        .await;
    assert_eq!(ack["ok"], true);
    assert_eq!(b.expect_event("new_message").await["message"], "after the crash");
}

/// Reads `count` acks (`43<id>[answer]`) and tallies them: accepted, and
/// refused as `rate_limited`; any other refusal must be `allowed_refusal`.
async fn tally_acks(socket: &mut RawClient, count: usize, allowed_refusal: Option<&str>) -> (usize, usize) {
    let (mut passed, mut limited) = (0, 0);
    while passed + limited < count {
        let text = socket.next_text().await.expect("an ack");
        let Some(rest) = text.strip_prefix("43") else {
            continue;
        };
        let answer: Vec<Value> = serde_json::from_str(&rest[rest.find('[').unwrap()..]).unwrap();
        let code = answer[0]["error"]["code"].as_str();
        match code {
            None if answer[0]["ok"] == true => passed += 1,
            Some("rate_limited") => limited += 1,
            Some(other) if Some(other) == allowed_refusal => passed += 1,
            _ => panic!("unexpected answer {text}"),
        }
    }
    (passed, limited)
}

/// Sends `count` acked events `name(payload(n))` back to back, ack ids from `first`.
async fn fire(socket: &mut RawClient, first: u64, count: u64, name: &str, payload: impl Fn(u64) -> Value) {
    for n in first..first + count {
        socket.send(&format!("42{n}{}", json!([name, payload(n)]))).await;
    }
}

/// Most a budget may grant in `elapsed`: the burst, what the rate refilled
/// meanwhile, and one for the refill in progress.
fn most_granted(burst: usize, per_second: f64, elapsed: Duration) -> usize {
    burst + (per_second * elapsed.as_secs_f64()).ceil() as usize + 1
}

#[actix_rt::test]
async fn a_users_sockets_share_one_chat_budget() {
    let app = app_with_people().await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(member(&app, 1).await);
    }
    wait_for_sockets(&app, 1, 5).await;
    let started = std::time::Instant::now();
    // 5 sockets x 60 messages, all sent before any ack is read.
    for socket in &mut sockets {
        fire(
            socket,
            0,
            60,
            "chat_message",
            |n| json!({ "recipient_id": 2, "message": format!("m{n}") }),
        )
        .await;
    }
    let tallies =
        futures_util::future::join_all(sockets.iter_mut().map(|socket| tally_acks(socket, 60, None))).await;
    let elapsed = started.elapsed();
    let accepted: usize = tallies.iter().map(|(ok, _)| ok).sum();
    let limited: usize = tallies.iter().map(|(_, limited)| limited).sum();
    // DESIGN.md: 20 messages/s per sender, burst 40, however many sockets.
    let most = most_granted(40, 20.0, elapsed);
    assert!(
        (40..=most).contains(&accepted),
        "accepted {accepted} of 300 in {elapsed:?} (at most {most})"
    );
    assert_eq!(accepted + limited, 300);
    let stored = query_i64(&app.db.client().await, "SELECT count(*) FROM messages").await;
    assert_eq!(stored, accepted as i64, "refused messages are not stored");
}

#[actix_rt::test]
async fn typing_and_read_marks_have_budgets_of_their_own() {
    let limits = [
        "--chat-rate=1",
        "--chat-burst=10",
        "--typing-rate=1",
        "--typing-burst=5",
        "--read-rate=1",
        "--read-burst=3",
    ];
    let app = TestApp::spawn_on(TestDb::migrated(), &limits).await;
    app.seed(1, 5, 3).await;
    let mut a = member(&app, 1).await;
    let mut other_device = member(&app, 1).await;

    let started = std::time::Instant::now();
    fire(&mut a, 0, 20, "typing", |_| json!({ "recipient_id": 2 })).await;
    let (typed, limited) = tally_acks(&mut a, 20, None).await;
    let most = most_granted(5, 1.0, started.elapsed());
    assert!(
        (5..=most).contains(&typed),
        "typing: {typed} accepted (at most {most})"
    );
    assert_eq!(typed + limited, 20);

    // Typing at its limit left the chat budget whole, on every device.
    let started = std::time::Instant::now();
    fire(
        &mut other_device,
        100,
        15,
        "chat_message",
        |n| json!({ "recipient_id": 2, "message": format!("m{n}") }),
    )
    .await;
    let (sent, limited) = tally_acks(&mut other_device, 15, None).await;
    let most = most_granted(10, 1.0, started.elapsed());
    assert!(
        (10..=most).contains(&sent),
        "chat: {sent} accepted (at most {most})"
    );
    assert_eq!(sent + limited, 15);

    // Read marks write to the database: their budget runs out too. (These
    // name no real message, so the ones let through are `not_found`.)
    let started = std::time::Instant::now();
    fire(
        &mut a,
        200,
        10,
        "mark_read",
        |_| json!({ "conversation_id": 999_999, "message_id": 999_999 }),
    )
    .await;
    let (marked, limited) = tally_acks(&mut a, 10, Some("not_found")).await;
    let most = most_granted(3, 1.0, started.elapsed());
    assert!(
        (3..=most).contains(&marked),
        "mark_read: {marked} let through (at most {most})"
    );
    assert_eq!(marked + limited, 10);
    assert!(limited >= 5, "mark_read: only {limited} limited");

    // Without an ack, the refusal is an `error` event.
    a.send(&format!(
        "42{}",
        json!(["mark_read", { "conversation_id": 1, "message_id": 1 }])
    ))
    .await;
    assert_eq!(a.expect_event("error").await["code"], "rate_limited");
}

#[actix_rt::test]
async fn connect_is_refused_while_the_registry_cannot_answer() {
    // Users 4 and 5 on shards of their own.
    let app = TestApp::spawn_on(TestDb::migrated(), &["--registry-shards=4"]).await;
    app.seed(1, 10, 3).await;
    let registry = app.registry();
    let (stalled_user, other_user) = (4, 5);
    // Longer than the wait for an answer twice over, plus slack.
    registry.stall_shard_of(stalled_user, Duration::from_secs(7));
    let (_refused, answer) =
        RawClient::connect(&app.ws_base, json!({ "token": app.token(stalled_user) })).await;
    let body: Value = serde_json::from_str(answer.strip_prefix("44").expect("CONNECT_ERROR")).unwrap();
    assert_eq!(body["data"]["code"], "unavailable", "{answer}");
    assert!(body["message"].is_string(), "{answer}");
    assert_eq!(
        registry.sockets_of(stalled_user).await,
        Err(aurum_actors::registry::RegisterError::Unavailable)
    );
    // Only that shard is stuck: users of the others connect meanwhile.
    let _other = member(&app, other_user).await;

    // Once the shard answers again, so does CONNECT.
    for _ in 0..100 {
        if registry.sockets_of(stalled_user).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _back = member(&app, stalled_user).await;
    wait_for_sockets(&app, stalled_user, 1).await;
}

/// A token for `user` that expires `secs` seconds from now.
fn token_expiring_in(user: i64, secs: i64) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let claims = json!({ "sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + secs });
    let key = EncodingKey::from_secret(crate::helpers::app::TEST_SECRET.as_bytes());
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
}

#[actix_rt::test]
async fn a_socket_is_told_and_closed_when_its_token_expires() {
    let app = app_with_people().await;
    // Past `exp`, if within the leeway REST grants for clock skew, a socket
    // is refused rather than opened only to be closed at once.
    let (_late, answer) =
        RawClient::connect(&app.ws_base, json!({ "token": token_expiring_in(1, -2) })).await;
    assert!(
        answer.starts_with("44") && answer.contains("unauthorized"),
        "{answer}"
    );

    let (mut a, answer) = RawClient::connect(&app.ws_base, json!({ "token": token_expiring_in(1, 2) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    let ack = a
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "before exp" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    let (texts, close) = a.until_closed(Duration::from_secs(5)).await;
    let expired: Vec<Value> = texts
        .iter()
        .filter_map(|text| text.strip_prefix("42"))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(|event| event[0] == "error")
        .map(|event| event[1].clone())
        .collect();
    assert_eq!(expired.len(), 1, "{texts:?}");
    assert_eq!(expired[0]["code"], "token_expired");
    assert!(expired[0]["message"].is_string());
    // A DISCONNECT would turn the official client's reconnection off.
    assert!(!texts.iter().any(|text| text.starts_with("41")), "{texts:?}");
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert_eq!(close.reason.as_str(), "token expired");
    wait_for_sockets(&app, 1, 0).await;

    // A fresh token connects again.
    let mut again = member(&app, 1).await;
    let ack = again
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "after" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
}

#[actix_rt::test]
async fn presence_on_one_node() {
    let app = app_with_people().await;
    let mut alice = member(&app, 1).await;
    let bob = member(&app, 2).await;
    let ack = alice
        .emit_ack(1, "chat_message", json!({ "recipient_id": 2, "message": "hi" }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let profile = "/api/v1/profiles/2";
    let (_, body) = app.get(profile, Some(&app.admin_token(1))).await;
    assert_eq!(body["online"], true, "{body}");
    drop(bob);
    let offline = alice.expect_offline(2).await;
    let (_, body) = app.get(profile, Some(&app.admin_token(1))).await;
    assert_eq!(body["online"], false, "{body}");
    assert_eq!(body["last_seen_at"], offline["last_seen_at"], "{body}");
    let _bob = member(&app, 2).await;
    let online = alice.expect_event("presence").await;
    assert_eq!(online["online"], true);
}
