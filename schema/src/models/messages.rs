//! `messages`, `conversations` and `conversation_reads` on the write side:
//! the MessageWriter's batched insert, `since` replay and read receipts.
//!
//! Ordering guarantee (DESIGN.md, "Delivery"): every batch takes one
//! transaction-scoped advisory lock before it draws ids, and holds it until
//! it has committed (in the `store_messages` function: migration 000005,
//! redefined by 000007). Batches from every writer on every node therefore
//! commit in id order, so once a client has seen message N every message
//! with a smaller id is already committed, and replaying `id > since` can
//! never skip one. A batch is a few milliseconds, so the lock costs little:
//! it serialises batches, not messages.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::ids::{ConversationId, MessageId, UserId};
use crate::json_time;
use crate::raw::{Bind, RawSql};

/// A chat message as stored and as sent to clients (`new_message`).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName, Serialize)]
pub struct ChatMessage {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub conversation_id: i64,
    #[diesel(sql_type = BigInt)]
    pub sender_id: i64,
    #[diesel(sql_type = BigInt)]
    pub recipient_id: i64,
    #[diesel(sql_type = Text)]
    #[serde(rename = "message")]
    pub body: String,
    #[diesel(sql_type = Timestamptz)]
    #[serde(rename = "sent_at", serialize_with = "json_time::timestamp")]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A message a sender asked to store, already validated for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub sender: UserId,
    pub recipient: UserId,
    pub body: String,
    pub client_id: Option<String>,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Newly committed.
    New(ChatMessage),
    /// A retry of a message already stored (same sender and `client_id`):
    /// the first message, unchanged; nothing new was stored.
    Duplicate(ChatMessage),
    /// The recipient has no profile; nothing was stored.
    UnknownRecipient,
    /// The sender has no profile yet, so cannot chat; nothing was stored.
    UnknownSender,
}

/// One row of `store_messages`: the outcome of the input at `ord` (from 1)
/// and, for `new` and `duplicate`, the stored message.
#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    conversation_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    sender_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    recipient_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    client_id: Option<String>,
}

impl StoredRow {
    fn into_stored(self) -> Option<Stored> {
        let stored: fn(ChatMessage) -> Stored = match self.outcome.as_str() {
            "new" => Stored::New,
            "duplicate" => Stored::Duplicate,
            "unknown_sender" => return Some(Stored::UnknownSender),
            "unknown_recipient" => return Some(Stored::UnknownRecipient),
            _ => return None,
        };
        Some(stored(ChatMessage {
            id: self.id?,
            conversation_id: self.conversation_id?,
            sender_id: self.sender_id?,
            recipient_id: self.recipient_id?,
            body: self.body?,
            created_at: self.created_at?,
            client_id: self.client_id,
        }))
    }
}

const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.sender_id, \
     CASE WHEN c.user_a = m.sender_id THEN c.user_b ELSE c.user_a END AS recipient_id, \
     m.body, m.created_at, m.client_id";

/// Stores a batch as one transaction in one round trip and returns one
/// outcome per input, in input order. Validation of lengths and
/// self-messages is the caller's. The work, and the ordering lock that
/// makes `since` replay safe, is the `store_messages` function's (migration
/// 000005, redefined by 000007); the statement is cached like every other
/// (see `raw`).
pub async fn store_batch(conn: &mut AsyncPgConnection, batch: &[Outgoing]) -> QueryResult<Vec<Stored>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let senders: Vec<i64> = batch.iter().map(|m| m.sender.0).collect();
    let recipients: Vec<i64> = batch.iter().map(|m| m.recipient.0).collect();
    let bodies: Vec<&str> = batch.iter().map(|m| m.body.as_str()).collect();
    let client_ids: Vec<Option<&str>> = batch.iter().map(|m| m.client_id.as_deref()).collect();
    let rows: Vec<StoredRow> = RawSql::new(
        &[
            "SELECT ord, outcome, id, conversation_id, sender_id, recipient_id, body, created_at, client_id \
             FROM store_messages(",
            ", ",
            ", ",
            ", ",
            ")",
        ],
        vec![
            Bind::Int8s(&senders),
            Bind::Int8s(&recipients),
            Bind::Texts(&bodies),
            Bind::OptionalTexts(&client_ids),
        ],
    )
    .load(conn)
    .await?;
    // The function answers every input once, in order, and fails the whole
    // batch rather than leave one unexplained; anything else here is a
    // mismatch between this code and the schema, reported as an error.
    let in_order = rows.len() == batch.len() && rows.iter().zip(1..).all(|(row, ord)| row.ord == ord);
    if !in_order {
        return Err(diesel::result::Error::DeserializationError(
            "store_messages answered out of order".into(),
        ));
    }
    rows.into_iter()
        .map(|row| {
            let ord = row.ord;
            row.into_stored().ok_or_else(|| {
                diesel::result::Error::DeserializationError(
                    format!("store_messages: unexpected outcome for message {ord}").into(),
                )
            })
        })
        .collect()
}

/// Messages of `user`'s conversations with an id above `since`, oldest
/// first, at most `limit`; call again from the last id for more.
pub async fn since(
    conn: &mut AsyncPgConnection,
    user: UserId,
    since: MessageId,
    limit: i64,
) -> QueryResult<Vec<ChatMessage>> {
    diesel::sql_query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM conversations c \
         JOIN messages m ON m.conversation_id = c.id AND m.id > $2 \
         WHERE c.id IN (SELECT id FROM conversations WHERE user_a = $1 \
                        UNION ALL SELECT id FROM conversations WHERE user_b = $1) \
         ORDER BY m.id LIMIT $3"
    ))
    .bind::<BigInt, _>(user.0)
    .bind::<BigInt, _>(since.0)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Whether `user`'s conversations hold more than `max` messages after
/// `since`: counts at most `max + 1` of them, through the same index scans
/// as [`since`].
pub async fn backlog_over(
    conn: &mut AsyncPgConnection,
    user: UserId,
    since: MessageId,
    max: i64,
) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM (SELECT 1 FROM conversations c \
         JOIN messages m ON m.conversation_id = c.id AND m.id > $2 \
         WHERE c.id IN (SELECT id FROM conversations WHERE user_a = $1 \
                        UNION ALL SELECT id FROM conversations WHERE user_b = $1) \
         LIMIT $3) backlog",
    )
    .bind::<BigInt, _>(user.0)
    .bind::<BigInt, _>(since.0)
    .bind::<BigInt, _>(max.saturating_add(1))
    .get_result(conn)
    .await?;
    Ok(count.n > max)
}

/// Records that `reader` has read `conversation` up to `message_id` (never
/// moving backwards). Returns the other member to notify, or `None` when the
/// reader is not a member or the message is not in that conversation.
pub async fn mark_read(
    conn: &mut AsyncPgConnection,
    reader: UserId,
    conversation: ConversationId,
    message_id: MessageId,
) -> QueryResult<Option<UserId>> {
    #[derive(QueryableByName)]
    struct Other {
        #[diesel(sql_type = BigInt)]
        other: i64,
    }
    let other: Option<Other> = RawSql::new(
        &[
            "WITH target AS ( \
               SELECT c.id, CASE WHEN c.user_a = r.reader THEN c.user_b ELSE c.user_a END AS other, \
                      r.reader, r.message_id \
               FROM (SELECT ",
            "::int8 AS reader, ",
            "::int8 AS conversation_id, ",
            "::int8 AS message_id) r \
               JOIN conversations c ON c.id = r.conversation_id AND r.reader IN (c.user_a, c.user_b) \
               JOIN messages m ON m.conversation_id = c.id AND m.id = r.message_id ), \
             upsert AS ( \
               INSERT INTO conversation_reads (conversation_id, user_id, last_read_message_id) \
               SELECT id, reader, message_id FROM target \
               ON CONFLICT (conversation_id, user_id) DO UPDATE \
                 SET last_read_message_id = GREATEST(conversation_reads.last_read_message_id, \
                                                     EXCLUDED.last_read_message_id), \
                     updated_at = now() ) \
             SELECT other FROM target",
        ],
        vec![
            Bind::Int8(reader.0),
            Bind::Int8(conversation.0),
            Bind::Int8(message_id.0),
        ],
    )
    .get_result(conn)
    .await
    .optional()?;
    Ok(other.map(|o| UserId(o.other)))
}
