//! Replay on CONNECT with `since`: long backlogs stream to the end at the
//! client's pace, live messages that arrive meanwhile follow in id order,
//! a storm of replays waits its turn beside chat, and a backlog too large
//! gets `resync_required`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::ws::RawClient;

/// Stores `count` messages to `recipient` from `senders` in turn, as if sent
/// while it was away (straight into the tables, as `store_messages` leaves
/// them); their ids in order.
pub async fn insert_backlog(app: &TestApp, recipient: i64, senders: &[i64], count: i64) -> Vec<i64> {
    let client = app.db.client().await;
    client
        .execute(
            "INSERT INTO conversations (user_a, user_b) \
             SELECT LEAST($1::int8, s), GREATEST($1::int8, s) FROM unnest($2::int8[]) s \
             ON CONFLICT DO NOTHING",
            &[&recipient, &senders],
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "WITH c AS (SELECT c.id, s.ord - 1 AS k, s.sender \
                        FROM unnest($2::int8[]) WITH ORDINALITY s(sender, ord) \
                        JOIN conversations c ON c.user_a = LEAST($1::int8, s.sender) \
                                            AND c.user_b = GREATEST($1::int8, s.sender)), \
                  inserted AS ( \
               INSERT INTO messages (conversation_id, sender_id, body, created_at) \
               SELECT c.id, c.sender, 'missed ' || g, clock_timestamp() \
               FROM generate_series(1, $3::int8) g JOIN c ON c.k = g % cardinality($2::int8[]) \
               ORDER BY g RETURNING id, conversation_id), \
                  touched AS ( \
               UPDATE conversations SET last_message_id = m.id, last_message_at = now() \
               FROM (SELECT conversation_id, max(id) AS id FROM inserted GROUP BY 1) m \
               WHERE conversations.id = m.conversation_id) \
             SELECT id FROM inserted ORDER BY id",
            &[&recipient, &senders, &count],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

async fn connect_since(app: &TestApp, user: i64, since: i64) -> RawClient {
    let auth = json!({ "token": app.token(user), "since": since });
    let (client, answer) = RawClient::connect(&app.ws_base, auth).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    client
}

/// Reads `new_message` ids until `count` have come (other events are
/// returned beside them); panics if the socket closes or stalls first.
async fn read_messages(client: &mut RawClient, count: usize) -> (Vec<i64>, Vec<(String, Value)>) {
    read_messages_within(client, count, Duration::from_secs(5)).await
}

/// As `read_messages`, waiting up to `wait` for each frame.
async fn read_messages_within(
    client: &mut RawClient,
    count: usize,
    wait: Duration,
) -> (Vec<i64>, Vec<(String, Value)>) {
    let mut ids = Vec::with_capacity(count);
    let mut others = Vec::new();
    while ids.len() < count {
        let text = client.next_text_within(wait).await.unwrap_or_else(|| {
            panic!(
                "the socket closed or stalled after {} of {count} messages",
                ids.len()
            )
        });
        let Some(json) = text.strip_prefix("42") else {
            continue;
        };
        let args: Vec<Value> = serde_json::from_str(json).unwrap();
        let name = args[0].as_str().unwrap().to_owned();
        if name == "new_message" {
            ids.push(args[1]["id"].as_i64().unwrap());
        } else {
            others.push((name, args[1].clone()));
        }
    }
    (ids, others)
}

#[actix_rt::test]
async fn a_ten_thousand_message_backlog_streams_to_the_end() {
    let app = TestApp::spawn().await;
    app.seed(1, 60, 21).await;
    let senders: Vec<i64> = (2..=51).collect();
    let expected = insert_backlog(&app, 1, &senders, 10_000).await;
    assert_eq!(expected.len(), 10_000);

    let mut client = connect_since(&app, 1, 0).await;
    // Not reading for a while: the replay must wait for the client, not
    // fill its queue and drop it as a slow consumer.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ids, others) = read_messages(&mut client, expected.len()).await;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(ids, expected, "every missed message, in id order, once");
    assert!(
        client
            .next_text_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing more"
    );
}

#[actix_rt::test]
async fn live_messages_during_a_replay_follow_it_in_order_once() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 22).await;
    let backlog = insert_backlog(&app, 1, &[3, 4, 5], 3_000).await;

    let mut sender = {
        let (client, answer) = RawClient::connect(&app.ws_base, json!({ "token": app.token(2) })).await;
        assert!(answer.starts_with("40"), "{answer}");
        client
    };
    let mut recipient = connect_since(&app, 1, 0).await;
    // While the recipient is not reading (its replay is held up by it),
    // 30 live messages (within the sender's burst) are committed and delivered.
    let mut live = Vec::new();
    for n in 0..30_u64 {
        let ack = sender
            .emit_ack(
                n,
                "chat_message",
                json!({ "recipient_id": 1, "message": format!("live {n}") }),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        live.push(ack["id"].as_i64().unwrap());
    }
    let mut expected = backlog;
    expected.extend(&live);
    let (ids, _) = read_messages(&mut recipient, expected.len()).await;
    assert_eq!(ids, expected);
    // Live again: the next message comes at once, and only once.
    let ack = sender
        .emit_ack(
            99,
            "chat_message",
            json!({ "recipient_id": 1, "message": "after" }),
        )
        .await;
    let (ids, _) = read_messages(&mut recipient, 1).await;
    assert_eq!(ids, vec![ack["id"].as_i64().unwrap()]);
    assert!(
        recipient
            .next_text_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[actix_rt::test]
async fn a_backlog_over_the_maximum_gets_resync_required() {
    let db = crate::helpers::TestDb::migrated();
    let app = TestApp::spawn_on(db, &["--replay-max-backlog=100"]).await;
    app.seed(1, 10, 23).await;
    let at_limit = insert_backlog(&app, 1, &[2], 100).await;
    let mut client = connect_since(&app, 1, 0).await;
    let (ids, _) = read_messages(&mut client, 100).await;
    assert_eq!(ids, at_limit, "a backlog at the maximum is replayed");

    insert_backlog(&app, 3, &[2], 101).await;
    let mut client = connect_since(&app, 3, 0).await;
    let event = client.expect_event("resync_required").await;
    assert_eq!(event, json!({ "since": 0 }));
    // The socket is live: a new message arrives as usual, and nothing of
    // the backlog does.
    let (mut sender, _) = RawClient::connect(&app.ws_base, json!({ "token": app.token(2) })).await;
    let ack = sender
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 3, "message": "fresh" }),
        )
        .await;
    let (ids, _) = read_messages(&mut client, 1).await;
    assert_eq!(ids, vec![ack["id"].as_i64().unwrap()]);
}

#[actix_rt::test]
async fn a_storm_of_replays_waits_its_turn_beside_chat() {
    const SOCKETS: i64 = 2_000;
    const EACH: i64 = 5;
    let db = crate::helpers::TestDb::migrated();
    let app = TestApp::spawn_on(db, &["--replay-concurrency=4"]).await;
    app.seed(1, SOCKETS as usize + 2, 24).await;
    let (talker, listener) = (SOCKETS + 1, SOCKETS + 2);
    // Every member has missed EACH messages from `talker`: one statement.
    let rows = app
        .db
        .client()
        .await
        .query(
            "WITH c AS (INSERT INTO conversations (user_a, user_b) \
                        SELECT u, $1::int8 FROM generate_series(1, $2::int8) u RETURNING id, user_a), \
                  m AS (INSERT INTO messages (conversation_id, sender_id, body, created_at) \
                        SELECT c.id, $1::int8, 'missed', clock_timestamp() \
                        FROM c, generate_series(1, $3::int8) ORDER BY c.user_a RETURNING id, conversation_id) \
             SELECT c.user_a, array_agg(m.id ORDER BY m.id) FROM m JOIN c ON c.id = m.conversation_id \
             GROUP BY c.user_a ORDER BY c.user_a",
            &[&talker, &SOCKETS, &EACH],
        )
        .await
        .unwrap();
    let backlogs: Vec<Vec<i64>> = rows.iter().map(|row| row.get(1)).collect();
    assert_eq!(backlogs.len(), SOCKETS as usize);

    let (mut chat_from, _) = RawClient::connect(&app.ws_base, json!({ "token": app.token(talker) })).await;
    let (mut chat_to, _) = RawClient::connect(&app.ws_base, json!({ "token": app.token(listener) })).await;

    let started = Instant::now();
    let storm: Vec<_> = (1..=SOCKETS)
        .zip(backlogs)
        .map(|(user, expected)| {
            let ws_base = app.ws_base.clone();
            let token = app.token(user);
            actix_rt::spawn(async move {
                let auth = json!({ "token": token, "since": 0 });
                let (mut client, answer) = RawClient::connect(&ws_base, auth).await;
                assert!(answer.starts_with("40"), "{answer}");
                // Waiting its turn behind the others takes a while.
                let (ids, _) =
                    read_messages_within(&mut client, expected.len(), Duration::from_secs(60)).await;
                assert_eq!(ids, expected);
                client
            })
        })
        .collect();
    // Chat goes on while the storm replays, every message acked (at the
    // sender's rate: 20 a second).
    let mut slowest = Duration::ZERO;
    for n in 0..40_u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = Instant::now();
        let ack = chat_from
            .emit_ack(
                n,
                "chat_message",
                json!({ "recipient_id": listener, "message": "meanwhile" }),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        slowest = slowest.max(sent.elapsed());
        chat_to.expect_event("new_message").await;
    }
    let mut clients = Vec::new();
    for task in storm {
        clients.push(task.await.unwrap());
    }
    eprintln!(
        "{SOCKETS} replays of {EACH} done in {:?}; slowest chat ack meanwhile {slowest:?}",
        started.elapsed()
    );
    assert!(slowest < Duration::from_secs(2), "chat stalled: {slowest:?}");
}
