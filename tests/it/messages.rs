//! The message store: batches, idempotent retries, replay and read marks.

use aurum_schema::ids::{ConversationId, MessageId, UserId};
use aurum_schema::models::messages::{self, Outgoing, Stored};
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::helpers::TestApp;
use crate::helpers::db::query_i64;

fn out(sender: i64, recipient: i64, body: &str, client_id: Option<&str>) -> Outgoing {
    Outgoing {
        sender: UserId(sender),
        recipient: UserId(recipient),
        body: body.to_owned(),
        client_id: client_id.map(str::to_owned),
    }
}

fn stored(outcome: &Stored) -> &messages::ChatMessage {
    match outcome {
        Stored::New(m) | Stored::Duplicate(m) => m,
        other => panic!("not stored: {other:?}"),
    }
}

#[actix_rt::test]
async fn a_batch_stores_dedupes_and_refuses_per_message() {
    let app = TestApp::spawn().await;
    app.seed(1, 5, 1).await;
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    let batch = vec![
        out(1, 2, "hello", Some("c1")),
        out(2, 1, "hi back", None),
        out(1, 2, "hello", Some("c1")),
        out(1, 999, "nobody", None),
        out(999, 1, "ghost", None),
        out(3, 1, "from three", Some("c1")),
    ];
    let outcomes = messages::store_batch(&mut conn, &batch).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    let first = match &outcomes[0] {
        Stored::New(m) => m.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (first.sender_id, first.recipient_id, first.body.as_str()),
        (1, 2, "hello")
    );
    assert!(matches!(&outcomes[1], Stored::New(m) if m.conversation_id == first.conversation_id));
    assert_eq!(
        outcomes[2],
        Stored::Duplicate(first.clone()),
        "same sender and client_id in one batch"
    );
    assert_eq!(outcomes[3], Stored::UnknownRecipient);
    assert_eq!(outcomes[4], Stored::UnknownSender);
    assert!(
        matches!(&outcomes[5], Stored::New(m) if m.conversation_id != first.conversation_id),
        "client ids are per sender"
    );
    // Ids follow input order within a batch.
    assert!(stored(&outcomes[0]).id < stored(&outcomes[1]).id);

    // A retry in a later batch gets the first message back; nothing new.
    let retry = messages::store_batch(&mut conn, &[out(1, 2, "hello again?", Some("c1"))])
        .await
        .unwrap();
    assert_eq!(retry, vec![Stored::Duplicate(first.clone())]);
    let client = app.db.client().await;
    let count = query_i64(&client, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 3);
    let last: i64 = client
        .query_one(
            "SELECT last_message_id FROM conversations WHERE id = $1",
            &[&first.conversation_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, stored(&outcomes[1]).id);
}

#[actix_rt::test]
async fn a_full_batch_keeps_input_order_and_stores_the_first_valid_copy() {
    let app = TestApp::spawn().await;
    app.seed(1, 20, 1).await;
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    // A refused first copy does not take the client id: the next valid one
    // with the same id is stored, and a later copy answers with it.
    let batch = [
        out(1, 999, "lost", Some("k")),
        out(1, 2, "kept", Some("k")),
        out(1, 3, "repeat", Some("k")),
    ];
    let outcomes = messages::store_batch(&mut conn, &batch).await.unwrap();
    assert_eq!(outcomes[0], Stored::UnknownRecipient);
    let kept = match &outcomes[1] {
        Stored::New(m) => m.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((kept.recipient_id, kept.body.as_str()), (2, "kept"));
    assert_eq!(outcomes[2], Stored::Duplicate(kept));

    // The writer's largest batch: ids and times follow input order.
    let batch: Vec<Outgoing> = (0..512)
        .map(|i| {
            let client_id = format!("b{i}");
            out(1 + i % 20, 1 + (i + 1) % 20, &format!("m{i}"), Some(&client_id))
        })
        .collect();
    let outcomes = messages::store_batch(&mut conn, &batch).await.unwrap();
    let rows: Vec<&messages::ChatMessage> = outcomes
        .iter()
        .map(|o| match o {
            Stored::New(m) => m,
            other => panic!("{other:?}"),
        })
        .collect();
    for (i, pair) in rows.windows(2).enumerate() {
        assert!(pair[0].id < pair[1].id, "ids out of input order at {i}");
        assert!(pair[0].created_at <= pair[1].created_at);
    }
    for (message, row) in batch.iter().zip(&rows) {
        assert_eq!(
            (row.sender_id, row.recipient_id, row.body.as_str()),
            (message.sender.0, message.recipient.0, message.body.as_str())
        );
    }
    // No conversation was made for the unknown recipient.
    let client = app.db.client().await;
    let orphans = query_i64(&client, "SELECT count(*) FROM conversations WHERE user_b = 999").await;
    assert_eq!(orphans, 0);

    // Both members unknown: refused as the sender, and nothing made.
    let strangers = messages::store_batch(&mut conn, &[out(998, 999, "who?", None)])
        .await
        .unwrap();
    assert_eq!(strangers, vec![Stored::UnknownSender]);
    // messages.sender_id has no foreign key (migration 000007): what stands
    // for it is that every sender is a member of the message's conversation.
    let strays = query_i64(
        &client,
        "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.sender_id NOT IN (c.user_a, c.user_b)",
    )
    .await;
    let total = query_i64(&client, "SELECT count(*) FROM messages").await;
    assert_eq!((strays, total), (0, 513));
}

#[actix_rt::test]
async fn since_replays_in_id_order_and_marks_read() {
    let app = TestApp::spawn().await;
    app.seed(1, 5, 1).await;
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        let batch = [
            out(1, 2, &format!("a{round}"), None),
            out(3, 1, &format!("b{round}"), None),
            out(4, 5, "x", None),
        ];
        for outcome in messages::store_batch(&mut conn, &batch).await.unwrap() {
            ids.push(stored(&outcome).clone());
        }
    }
    let mine: Vec<i64> = ids
        .iter()
        .filter(|m| m.sender_id == 1 || m.recipient_id == 1)
        .map(|m| m.id)
        .collect();
    let replay = messages::since(&mut conn, UserId(1), MessageId(0), 100)
        .await
        .unwrap();
    assert_eq!(replay.iter().map(|m| m.id).collect::<Vec<_>>(), mine);
    let after_second = messages::since(&mut conn, UserId(1), MessageId(mine[1]), 2)
        .await
        .unwrap();
    assert_eq!(after_second.iter().map(|m| m.id).collect::<Vec<_>>(), mine[2..4]);

    let to_two = ids.iter().find(|m| m.recipient_id == 2).unwrap();
    let notified = messages::mark_read(
        &mut conn,
        UserId(2),
        ConversationId(to_two.conversation_id),
        MessageId(to_two.id),
    )
    .await
    .unwrap();
    assert_eq!(notified, Some(UserId(1)));
    // Not a member, or a message of another conversation: nothing happens.
    assert_eq!(
        messages::mark_read(
            &mut conn,
            UserId(5),
            ConversationId(to_two.conversation_id),
            MessageId(to_two.id)
        )
        .await
        .unwrap(),
        None
    );
    let other = ids.iter().find(|m| m.sender_id == 4).unwrap();
    assert_eq!(
        messages::mark_read(
            &mut conn,
            UserId(2),
            ConversationId(to_two.conversation_id),
            MessageId(other.id)
        )
        .await
        .unwrap(),
        None
    );
    // Never backwards.
    let first_to_two = ids.iter().find(|m| m.recipient_id == 2).unwrap().id;
    messages::mark_read(
        &mut conn,
        UserId(2),
        ConversationId(to_two.conversation_id),
        MessageId(first_to_two),
    )
    .await
    .unwrap();
    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT user_id, last_read_message_id FROM conversation_reads",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(1), to_two.id);
}

#[actix_rt::test]
async fn concurrent_writers_commit_in_id_order() {
    // Many writers at once: whenever a reader sees message N, every smaller
    // id must already be visible, or `since` could skip it.
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let url = app.db.url.clone();
    let mut writers = Vec::new();
    for w in 0..4_i64 {
        let url = url.clone();
        writers.push(actix_rt::spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
            for round in 0..40 {
                let batch: Vec<Outgoing> = (0..5)
                    .map(|i| out(1 + (w + i) % 10, 1 + (w + i + 1) % 10, &format!("{round}"), None))
                    .collect();
                messages::store_batch(&mut conn, &batch).await.unwrap();
            }
        }));
    }
    let client = app.db.client().await;
    let mut checks = 0;
    loop {
        let ids: Vec<i64> = client
            .query("SELECT id FROM messages ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            assert_eq!((last - first + 1) as usize, ids.len(), "a gap below a visible id");
            checks += 1;
        }
        if writers.iter().all(|w| w.is_finished()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(checks > 0);
}

/// Every stored message moves its conversation's activity; that update must
/// stay on its page (HOT), touching no index, or the chat's write path pays
/// four index entries per message (migration 000006).
#[actix_rt::test]
async fn moving_a_conversation_touches_no_index() {
    let app = TestApp::spawn().await;
    app.seed(1, 10, 1).await;
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    // The conversations exist before the measured transaction.
    let first = messages::store_batch(&mut conn, &[out(1, 2, "a", None), out(3, 4, "b", None)])
        .await
        .unwrap();
    assert!(matches!(&first[0], Stored::New(_)) && matches!(&first[1], Stored::New(_)));

    let client = app.db.client().await;
    client.batch_execute("BEGIN").await.unwrap();
    for round in 0..20 {
        let stored = query_i64(
            &client,
            "SELECT count(*) FROM store_messages(ARRAY[1, 2, 3, 4]::int8[], ARRAY[2, 1, 4, 3]::int8[],
                    ARRAY['one', 'two', 'three', 'four'], ARRAY[NULL, NULL, NULL, NULL]::text[])
             WHERE outcome = 'new'",
        )
        .await;
        assert_eq!(stored, 4, "round {round}");
    }
    // This transaction's own counters: exact, not the sampled statistics.
    let row = client
        .query_one(
            "SELECT pg_stat_get_xact_tuples_updated('conversations'::regclass),
                    pg_stat_get_xact_tuples_hot_updated('conversations'::regclass)",
            &[],
        )
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    let (updated, hot): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(updated, 40, "one touch per conversation per batch");
    assert_eq!(hot, updated, "every touch a HOT update");
}
