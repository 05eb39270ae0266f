//! The REST history: the conversation list (order, keyset walk, last message,
//! unread counts, cursor checks, its query plan) and a conversation's
//! messages (before/after walks, members only, parameter checks).

use std::collections::HashSet;

use actix_web::http::StatusCode;
use aurum_schema::ids::UserId;
use aurum_schema::models::history::{self, ActivityKey, MessageWindow};
use diesel::QueryableByName;
use diesel::sql_types::Json;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use tokio_postgres::Client;

use crate::helpers::TestApp;
use crate::helpers::app::error_code;
use crate::helpers::plans::{CachedStatement, cached_statement};

const LIST: &str = "/api/v1/conversations";

fn messages_path(conversation: i64) -> String {
    format!("/api/v1/conversations/{conversation}/messages")
}

async fn conversation(db: &Client, x: i64, y: i64) -> i64 {
    db.query_one(
        "INSERT INTO conversations (user_a, user_b) \
         VALUES (LEAST($1::int8, $2::int8), GREATEST($1::int8, $2::int8)) RETURNING id",
        &[&x, &y],
    )
    .await
    .unwrap()
    .get(0)
}

/// Stores a message sent `at` seconds after a fixed origin (so the order of
/// activity is the test's, not the clock's) and moves the conversation's
/// activity to it, as the chat does.
async fn send(db: &Client, conversation: i64, sender: i64, body: &str, at: i32) -> i64 {
    send_with_client_id(db, conversation, sender, body, at, None).await
}

async fn send_with_client_id(
    db: &Client,
    conversation: i64,
    sender: i64,
    body: &str,
    at: i32,
    client_id: Option<&str>,
) -> i64 {
    db.query_one(
        "WITH m AS (
             INSERT INTO messages (conversation_id, sender_id, body, client_id, created_at)
             VALUES ($1, $2, $3, $5, timestamptz '2026-01-01 00:00:00+00' + $4::int4 * interval '1 second')
             RETURNING id, created_at)
         UPDATE conversations c SET last_message_at = m.created_at, last_message_id = m.id
         FROM m WHERE c.id = $1 RETURNING m.id",
        &[&conversation, &sender, &body, &at, &client_id],
    )
    .await
    .unwrap()
    .get(0)
}

async fn mark_read(db: &Client, conversation: i64, user: i64, message: i64) {
    db.execute(
        "INSERT INTO conversation_reads (conversation_id, user_id, last_read_message_id) VALUES ($1, $2, $3) \
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET last_read_message_id = EXCLUDED.last_read_message_id",
        &[&conversation, &user, &message],
    )
    .await
    .unwrap();
}

fn ids(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

/// Walks the whole list with `limit` per page; the ids in the order served.
async fn walk_list(app: &TestApp, token: &str, limit: i64) -> Vec<i64> {
    let mut served: Vec<i64> = Vec::new();
    let mut path = format!("{LIST}?limit={limit}");
    for _ in 0..1_000 {
        let (status, page) = app.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = ids(&page["items"]);
        assert!(items.len() as i64 <= limit);
        served.extend(items);
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["has_more"], true);
                path = format!("{LIST}?limit={limit}&cursor={cursor}");
            }
            None => {
                assert_eq!(page["has_more"], false);
                return served;
            }
        }
    }
    panic!("the list did not end");
}

#[actix_rt::test]
async fn lists_conversations_by_activity_with_last_message_and_unread_counts() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let db = app.db.client().await;
    let me = 5;

    // Member 5 is user_b with 1 and 2 and user_a with 7 and 9.
    let with_1 = conversation(&db, me, 1).await;
    let with_2 = conversation(&db, 2, me).await;
    let with_7 = conversation(&db, me, 7).await;
    let with_9 = conversation(&db, 9, me).await;
    let empty = conversation(&db, me, 3).await;
    let others = conversation(&db, 1, 2).await;

    // No read row: all of 1's messages are unread, never 5's own.
    send(&db, with_1, 1, "hi", 10).await;
    send(&db, with_1, 1, "there", 11).await;
    send(&db, with_1, me, "hello", 12).await;
    let last_from_1 = send(&db, with_1, 1, "how are you?", 40).await;
    // Read up to 2's first message: the second is unread.
    let first_from_2 = send(&db, with_2, 2, "one", 20).await;
    send(&db, with_2, 2, "two", 21).await;
    mark_read(&db, with_2, me, first_from_2).await;
    // Only 5 wrote: nothing unread.
    send(&db, with_7, me, "anyone?", 30).await;
    send(&db, with_7, me, "hello?", 31).await;
    // Read everything.
    send(&db, with_9, 9, "a", 5).await;
    let last_from_9 = send(&db, with_9, 9, "b", 6).await;
    mark_read(&db, with_9, me, last_from_9).await;
    // Activity elsewhere never shows up.
    send(&db, others, 1, "not for 5", 50).await;

    let (status, page) = app.get(LIST, Some(&app.token(me))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["next_cursor"], Value::Null);
    // Newest activity first; the conversation without a message is left out.
    assert_eq!(ids(&page["items"]), [with_1, with_7, with_2, with_9]);
    assert!(!ids(&page["items"]).contains(&empty));

    let items = page["items"].as_array().unwrap();
    assert_eq!(
        items[0],
        json!({
            "id": with_1,
            "other_user_id": 1,
            "last_message": {
                "id": last_from_1,
                "sender_id": 1,
                "message": "how are you?",
                "sent_at": "2026-01-01T00:00:40.000000Z",
            },
            "last_message_at": "2026-01-01T00:00:40.000000Z",
            "unread_count": 3,
        })
    );
    let others_of = |item: &Value| item["other_user_id"].as_i64().unwrap();
    let unread = |item: &Value| item["unread_count"].as_i64().unwrap();
    assert_eq!(items.iter().map(others_of).collect::<Vec<_>>(), [1, 7, 2, 9]);
    assert_eq!(items.iter().map(unread).collect::<Vec<_>>(), [3, 0, 1, 0]);
    assert_eq!(items[1]["last_message"]["message"], "hello?");
    assert_eq!(items[1]["last_message"]["sender_id"], me);

    // The other side of one pair counts the other way round.
    let (status, page) = app.get(LIST, Some(&app.token(1))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page["items"]), [others, with_1]);
    assert_eq!(page["items"][1]["other_user_id"], me);
    assert_eq!(page["items"][1]["unread_count"], 1);
    // 1 wrote the last message in `others`; 2 never did: nothing unread.
    assert_eq!(page["items"][0]["unread_count"], 0);

    // Reading moves the count; a read mark past everything leaves nothing.
    mark_read(&db, with_1, me, last_from_1 - 1).await;
    let (_, page) = app.get(LIST, Some(&app.token(me))).await;
    assert_eq!(page["items"][0]["unread_count"], 1);
    mark_read(&db, with_1, me, last_from_1).await;
    let (_, page) = app.get(LIST, Some(&app.token(me))).await;
    assert_eq!(page["items"][0]["unread_count"], 0);

    // A member with no conversation gets an empty list.
    let (status, page) = app.get(LIST, Some(&app.token(8))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page,
        json!({ "items": [], "next_cursor": null, "has_more": false })
    );
}

#[actix_rt::test]
async fn list_walk_visits_every_conversation_once_in_order() {
    let app = TestApp::spawn().await;
    app.seed(1, 80, 1).await;
    let db = app.db.client().await;
    let me = 40;
    // Conversations with everyone else, on both sides of the pair, with many
    // ties on the activity time so the id must break them; a few never got
    // a message.
    db.batch_execute(
        "INSERT INTO conversations (user_a, user_b, last_message_at)
         SELECT LEAST(40, p), GREATEST(40, p),
                CASE WHEN p % 13 = 0 THEN NULL
                     ELSE timestamptz '2026-01-01 00:00:00+00' + (p % 6) * interval '1 minute' END
         FROM generate_series(1, 80) p WHERE p <> 40;
         INSERT INTO conversations (user_a, user_b, last_message_at)
         SELECT p, p + 1, now() FROM generate_series(1, 79) p WHERE p <> 40 AND p + 1 <> 40;",
    )
    .await
    .unwrap();
    let expected: Vec<i64> = db
        .query(
            "SELECT id FROM conversations WHERE (user_a = 40 OR user_b = 40) AND last_message_at IS NOT NULL \
             ORDER BY last_message_at DESC, id DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(expected.len(), 79 - 6);

    let token = app.token(me);
    for limit in [1, 7, 20, 72, 73, 100] {
        let served = walk_list(&app, &token, limit).await;
        assert_eq!(served, expected, "limit={limit}");
        let unique: HashSet<_> = served.iter().collect();
        assert_eq!(
            unique.len(),
            served.len(),
            "limit={limit}: a conversation served twice"
        );
    }
    // Without `limit`, pages of 20.
    let (_, page) = app.get(LIST, Some(&token)).await;
    assert_eq!(ids(&page["items"]), expected[..20]);
    assert_eq!(page["has_more"], true);
}

#[actix_rt::test]
async fn list_cursors_are_checked() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let db = app.db.client().await;
    for other in [1, 2, 3] {
        let id = conversation(&db, 5, other).await;
        send(&db, id, other, "hi", other as i32).await;
    }
    let token = app.token(5);
    let (_, page) = app.get(&format!("{LIST}?limit=1"), Some(&token)).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (status, _) = app.get(&format!("{LIST}?cursor={cursor}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);

    // Another member's cursor, an edited one, garbage, and a cursor of
    // another endpoint are all refused.
    let (status, body) = app
        .get(&format!("{LIST}?cursor={cursor}"), Some(&app.token(1)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_cursor");
    let mut edited = cursor.clone().into_bytes();
    edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    app.seed(100, 50, 2).await;
    let (_, scroll) = app
        .get("/api/v1/matching/profiles/scroll?limit=1", Some(&token))
        .await;
    let scroll_cursor = scroll["next_cursor"].as_str().unwrap().to_owned();
    for bad in [edited.as_str(), "garbage", "a.b", scroll_cursor.as_str()] {
        let (status, body) = app.get(&format!("{LIST}?cursor={bad}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "cursor={bad}");
        assert_eq!(error_code(&body), "invalid_cursor", "cursor={bad}");
    }
    for bad in ["0", "101", "-1", "abc"] {
        let (status, body) = app.get(&format!("{LIST}?limit={bad}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert!(
            matches!(error_code(&body), "invalid_limit" | "invalid_query"),
            "{body}"
        );
    }
}

#[actix_rt::test]
async fn messages_walk_back_and_forth_by_id() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let db = app.db.client().await;
    let chat = conversation(&db, 3, 2).await;
    let elsewhere = conversation(&db, 2, 4).await;
    let mut sent = Vec::new();
    for n in 0..45 {
        let sender = if n % 3 == 0 { 2 } else { 3 };
        let client_id = (n % 2 == 0).then(|| format!("c-{n}"));
        sent.push(send_with_client_id(&db, chat, sender, &format!("m{n}"), n, client_id.as_deref()).await);
        // Interleaved messages of another conversation must never leak in.
        send(&db, elsewhere, 4, "other", n).await;
    }
    let newest_first: Vec<i64> = sent.iter().rev().copied().collect();
    let token = app.token(2);
    let path = messages_path(chat);

    // Scrolling back from the newest.
    let mut served: Vec<i64> = Vec::new();
    let mut query = "limit=10".to_owned();
    loop {
        let (status, page) = app.get(&format!("{path}?{query}"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_ids = ids(&page["items"]);
        served.extend(&page_ids);
        if page["has_more"] == false {
            break;
        }
        query = format!("limit=10&before={}", page_ids.last().unwrap());
    }
    assert_eq!(served, newest_first);

    // Catching up from the start, oldest first.
    let mut served: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = app
            .get(&format!("{path}?limit=7&after={after}"), Some(&token))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_ids = ids(&page["items"]);
        served.extend(&page_ids);
        if page["has_more"] == false {
            break;
        }
        after = *page_ids.last().unwrap();
    }
    assert_eq!(served, sent);

    // Defaults: the newest 20. Limits at the edges.
    let (_, page) = app.get(&path, Some(&token)).await;
    assert_eq!(ids(&page["items"]), newest_first[..20]);
    assert_eq!(page["has_more"], true);
    let (_, page) = app.get(&format!("{path}?limit=100"), Some(&token)).await;
    assert_eq!(ids(&page["items"]), newest_first);
    assert_eq!(page["has_more"], false);
    let (_, page) = app.get(&format!("{path}?after={}", sent[44]), Some(&token)).await;
    assert_eq!(page, json!({ "items": [], "has_more": false }));
    let (_, page) = app
        .get(&format!("{path}?before={}&limit=2", sent[2]), Some(&token))
        .await;
    assert_eq!(ids(&page["items"]), [sent[1], sent[0]]);
    assert_eq!(page["has_more"], false);

    // The item shape, as `new_message` has it; `client_id` only when given.
    let (_, page) = app
        .get(&format!("{path}?after={}&limit=2", sent[0]), Some(&token))
        .await;
    assert_eq!(
        page["items"],
        json!([
            {
                "id": sent[1],
                "conversation_id": chat,
                "sender_id": 3,
                "recipient_id": 2,
                "message": "m1",
                "sent_at": "2026-01-01T00:00:01.000000Z",
            },
            {
                "id": sent[2],
                "conversation_id": chat,
                "sender_id": 3,
                "recipient_id": 2,
                "message": "m2",
                "sent_at": "2026-01-01T00:00:02.000000Z",
                "client_id": "c-2",
            },
        ])
    );
    let (_, page) = app
        .get(&format!("{path}?limit=1&before={}", sent[4]), Some(&token))
        .await;
    assert_eq!(page["items"][0]["sender_id"], 2);
    assert_eq!(page["items"][0]["recipient_id"], 3);

    // Both members read the same history.
    let (_, mine) = app.get(&path, Some(&token)).await;
    let (_, theirs) = app.get(&path, Some(&app.token(3))).await;
    assert_eq!(mine, theirs);

    // A conversation with no message yet is an empty page, not a 404.
    let quiet = conversation(&db, 2, 9).await;
    let (status, page) = app.get(&messages_path(quiet), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "items": [], "has_more": false }));
}

#[actix_rt::test]
async fn messages_are_for_members_only() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let db = app.db.client().await;
    let chat = conversation(&db, 1, 2).await;
    send(&db, chat, 1, "private", 1).await;
    let (status, _) = app.get(&messages_path(chat), Some(&app.token(1))).await;
    assert_eq!(status, StatusCode::OK);

    // A stranger, and the member of another conversation, see nothing.
    conversation(&db, 3, 4).await;
    for outsider in [3, 10, 999] {
        let (status, body) = app.get(&messages_path(chat), Some(&app.token(outsider))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "user {outsider}: {body}");
        assert_eq!(error_code(&body), "not_found");
        assert!(!body.to_string().contains("private"));
    }
    // Unknown ids and ids that are not ids: the same 404.
    let token = app.token(1);
    for id in ["999999", "0", "-1", "abc", "1.5", "99999999999999999999"] {
        let (status, body) = app
            .get(&format!("/api/v1/conversations/{id}/messages"), Some(&token))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "id={id}: {body}");
        assert_eq!(error_code(&body), "not_found", "id={id}");
    }
}

#[actix_rt::test]
async fn message_parameters_are_checked() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let db = app.db.client().await;
    let chat = conversation(&db, 1, 2).await;
    send(&db, chat, 1, "hi", 1).await;
    let token = app.token(1);
    let path = messages_path(chat);
    for query in [
        "before=5&after=1",
        "before=abc",
        "after=1.5",
        "before=-1",
        "after=-3",
        "limit=0",
        "limit=101",
        "limit=abc",
        "before=99999999999999999999",
    ] {
        let (status, body) = app.get(&format!("{path}?{query}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            matches!(error_code(&body), "invalid_query" | "invalid_limit"),
            "{query}: {body}"
        );
    }
    // Blank values count as absent.
    let (status, _) = app
        .get(&format!("{path}?before=&after=&limit="), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_rt::test]
async fn history_needs_a_token() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let db = app.db.client().await;
    let chat = conversation(&db, 1, 2).await;
    for path in [LIST.to_owned(), messages_path(chat), messages_path(999)] {
        let (status, body) = app.get(&path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(error_code(&body), "unauthorized");
        let (status, _) = app.get(&path, Some("not-a-jwt")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[derive(QueryableByName)]
struct JsonPlan {
    #[diesel(sql_type = Json, column_name = "QUERY PLAN")]
    plan: Value,
}

/// `EXPLAIN (ANALYZE)` of the cached statement itself, as the default plan
/// cache mode or a forced generic plan would run it.
async fn explain_analyze(
    conn: &mut AsyncPgConnection,
    statement: &CachedStatement,
    args: &[String],
    generic: bool,
) -> Value {
    assert_eq!(
        statement.params as usize,
        args.len(),
        "the statement's parameters changed; update the test:\n{}",
        statement.statement
    );
    let mode = if generic { "force_generic_plan" } else { "auto" };
    diesel::sql_query(format!("SET plan_cache_mode = {mode}"))
        .execute(conn)
        .await
        .unwrap();
    let sql = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {}({})",
        statement.name,
        args.join(", ")
    );
    let plan: JsonPlan = diesel::sql_query(sql).get_result(conn).await.unwrap();
    diesel::sql_query("RESET plan_cache_mode")
        .execute(conn)
        .await
        .unwrap();
    plan.plan[0]["Plan"].clone()
}

/// Every node of a JSON plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut out = vec![plan];
    for child in plan["Plans"].as_array().into_iter().flatten() {
        out.extend(nodes(child));
    }
    out
}

fn actual_rows(node: &Value) -> f64 {
    node["Actual Rows"].as_f64().unwrap() * node["Actual Loops"].as_f64().unwrap()
}

/// The listing reads the member's conversations through the pair index and
/// the `user_b` index, never the whole table, and sorts no more than those;
/// the read marks, last messages and unread counts are looked up for the
/// page's rows alone, on their indexes. (There is no index in activity order:
/// see migration 000006.)
fn assert_bounded_listing(plan: &Value, page: f64, members: f64, what: &str) {
    let all = nodes(plan);
    let text = plan.to_string();
    for index in [
        "conversations_user_a_user_b_key",
        "conversations_user_b_idx",
        "messages_conversation_id_idx",
        "conversation_reads_pkey",
    ] {
        assert!(text.contains(index), "{what}: {index} not used:\n{plan:#}");
    }
    for node in &all {
        let kind = node["Node Type"].as_str().unwrap();
        assert_ne!(kind, "Seq Scan", "{what}: sequential scan:\n{plan:#}");
        if node["Relation Name"] == "conversation_reads" {
            assert!(
                actual_rows(node) <= page,
                "{what}: read {} read marks for a page of {page}:\n{plan:#}",
                actual_rows(node)
            );
        }
        if kind == "Sort" {
            assert!(
                actual_rows(node) <= members,
                "{what}: sorted {} rows for a member with {members} conversations:\n{plan:#}",
                actual_rows(node)
            );
        }
    }
    let conversations_read: f64 = all
        .iter()
        .filter(|n| n["Relation Name"] == "conversations")
        .map(|n| actual_rows(n))
        .sum();
    assert!(
        conversations_read <= members,
        "{what}: read {conversations_read} conversations for a member with {members}:\n{plan:#}"
    );
}

#[actix_rt::test]
async fn listing_plan_reads_only_the_members_conversations() {
    let app = TestApp::spawn().await;
    app.seed(1, 3000, 1).await;
    let db = app.db.client().await;
    let me: i64 = 1500;
    // 2,999 conversations for the member, about half on each side of the
    // pair, among ~15,000 others; three messages each; a third read.
    db.batch_execute(
        "INSERT INTO conversations (user_a, user_b, last_message_at)
         SELECT LEAST(1500, p), GREATEST(1500, p), now() - random() * interval '30 days'
         FROM generate_series(1, 3000) p WHERE p <> 1500;
         INSERT INTO conversations (user_a, user_b, last_message_at)
         SELECT a, a + k, now() - random() * interval '30 days'
         FROM generate_series(1, 2990) a, generate_series(1, 5) k
         WHERE a <> 1500 AND a + k <> 1500;
         INSERT INTO messages (conversation_id, sender_id, body)
         SELECT c.id, CASE WHEN s = 1 THEN c.user_b ELSE c.user_a END, 'hello'
         FROM conversations c, generate_series(0, 2) s;
         INSERT INTO conversation_reads (conversation_id, user_id, last_read_message_id)
         SELECT c.id, c.user_a, (SELECT min(id) FROM messages m WHERE m.conversation_id = c.id)
         FROM conversations c WHERE c.id % 3 = 0;
         ANALYZE;",
    )
    .await
    .unwrap();
    let key = db
        .query_one(
            "SELECT last_message_at::text, (extract(epoch FROM last_message_at) * 1000000)::int8, id
             FROM conversations WHERE user_a = 1500 OR user_b = 1500
             ORDER BY last_message_at DESC, id DESC OFFSET 1000 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (key_text, key_us, key_id): (String, i64, i64) = (key.get(0), key.get(1), key.get(2));
    let members = 2999.0;

    // Through the real code path, more than five times, so the statements
    // are cached and PostgreSQL may have switched them to a generic plan.
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    let after = ActivityKey {
        last_message_at_us: key_us,
        id: key_id,
    };
    let limit = 21;
    for _ in 0..8 {
        let first = history::list_conversations(&mut conn, UserId(me), None, limit)
            .await
            .unwrap();
        assert_eq!(first.len(), limit as usize);
        let deep = history::list_conversations(&mut conn, UserId(me), Some(after), limit)
            .await
            .unwrap();
        assert_eq!(deep.len(), limit as usize);
        assert!(
            deep.iter()
                .all(|c| (c.last_message_at.timestamp_micros(), c.id) < (key_us, key_id))
        );
    }

    let keyset = "(last_message_at, id) <";
    let first = cached_statement(&mut conn, &["UNION ALL"], &[keyset]).await;
    let deep = cached_statement(&mut conn, &["UNION ALL", keyset], &[]).await;
    let viewer = me.to_string();
    let limit_arg = limit.to_string();
    let at = format!("'{key_text}'::timestamptz");
    let id = key_id.to_string();
    // In text order: the unread count's two, then each side's, then the page's limit.
    let first_args: Vec<String> = [
        &viewer, &viewer, &viewer, &limit_arg, &viewer, &limit_arg, &limit_arg,
    ]
    .map(String::clone)
    .to_vec();
    let deep_args: Vec<String> = [
        &viewer, &viewer, &viewer, &at, &id, &limit_arg, &viewer, &at, &id, &limit_arg, &limit_arg,
    ]
    .map(String::clone)
    .to_vec();
    for generic in [false, true] {
        let plan = explain_analyze(&mut conn, &first, &first_args, generic).await;
        assert_bounded_listing(
            &plan,
            limit as f64,
            members,
            &format!("first page, generic={generic}"),
        );
        let plan = explain_analyze(&mut conn, &deep, &deep_args, generic).await;
        assert_bounded_listing(
            &plan,
            limit as f64,
            members,
            &format!("deep page, generic={generic}"),
        );
    }

    // A message page is one range read on the conversation's id index.
    for _ in 0..8 {
        history::list_messages(&mut conn, UserId(me), key_id, MessageWindow::Before(i64::MAX), 21)
            .await
            .unwrap()
            .unwrap();
    }
    let page = cached_statement(&mut conn, &["\"messages\".\"id\" < $"], &[]).await;
    let args = vec![key_id.to_string(), i64::MAX.to_string(), "21".to_owned()];
    for generic in [false, true] {
        let plan = explain_analyze(&mut conn, &page, &args, generic).await;
        let text = plan.to_string();
        assert!(text.contains("messages_conversation_id_idx"), "{plan:#}");
        assert!(
            nodes(&plan)
                .iter()
                .all(|n| n["Node Type"] != "Seq Scan" && n["Node Type"] != "Sort"),
            "{plan:#}"
        );
    }
}
