//! `messages`, `conversations` and `conversation_reads` on the write side:
//! the MessageWriter's batched insert, `since` replay and read receipts.
//!
//! Ordering guarantee (DESIGN.md, "Delivery"): every batch takes one
//! transaction-scoped advisory lock before it draws ids, and holds it until
//! it has committed. Batches from every writer on every node therefore
//! commit in id order, so once a client has seen message N every message
//! with a smaller id is already committed, and replaying `id > since` can
//! never skip one. A batch is a few milliseconds, so the lock costs little:
//! it serialises batches, not messages.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::ids::UserId;
use crate::json_time;
use crate::raw::{Bind, RawSql};

/// Any value: it only has to differ from other advisory locks in the schema.
const MESSAGE_ORDER_LOCK: i64 = 0x6175_7275_6d5f_6d73; // "aurum_ms"

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

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct ConversationRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    user_a: i64,
    #[diesel(sql_type = BigInt)]
    user_b: i64,
}

const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.sender_id, \
     CASE WHEN c.user_a = m.sender_id THEN c.user_b ELSE c.user_a END AS recipient_id, \
     m.body, m.created_at, m.client_id";

/// Stores a batch in one transaction and returns one outcome per input, in
/// input order. Validation of lengths and self-messages is the caller's.
///
/// Only the id-drawing part runs under the ordering lock: classification
/// and conversation upserts happen before it, so batches of several writers
/// overlap everywhere but there. Every statement is cached (see `raw`).
pub async fn store_batch(conn: &mut AsyncPgConnection, batch: &[Outgoing]) -> QueryResult<Vec<Stored>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    conn.transaction(async |conn| {
        let people: Vec<i64> = batch
            .iter()
            .flat_map(|m| [m.sender.0, m.recipient.0])
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let existing: HashSet<i64> = RawSql::new(
            &["SELECT id FROM profiles WHERE id = ANY(", ")"],
            vec![Bind::Int8s(&people)],
        )
        .load::<Id>(conn)
        .await?
        .into_iter()
        .map(|row| row.id)
        .collect();

        let keyed: Vec<(i64, &str)> = batch
            .iter()
            .filter_map(|m| m.client_id.as_deref().map(|c| (m.sender.0, c)))
            .collect();
        let mut earlier = earlier_messages(conn, &keyed).await?;

        // Decide each message's fate; `fresh` indexes the ones to insert.
        let mut outcomes: Vec<Option<Stored>> = vec![None; batch.len()];
        let mut fresh: Vec<usize> = Vec::new();
        let mut first_in_batch: HashMap<(i64, &str), usize> = HashMap::new();
        let mut duplicate_of: Vec<(usize, usize)> = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            if !existing.contains(&message.sender.0) {
                outcomes[index] = Some(Stored::UnknownSender);
            } else if !existing.contains(&message.recipient.0) {
                outcomes[index] = Some(Stored::UnknownRecipient);
            } else if let Some(client_id) = message.client_id.as_deref() {
                if let Some(row) = earlier.get(&(message.sender.0, client_id.to_owned())) {
                    outcomes[index] = Some(Stored::Duplicate(row.clone()));
                } else if let Some(first) = first_in_batch.get(&(message.sender.0, client_id)) {
                    duplicate_of.push((index, *first));
                } else {
                    first_in_batch.insert((message.sender.0, client_id), index);
                    fresh.push(index);
                }
            } else {
                fresh.push(index);
            }
        }

        if !fresh.is_empty() {
            let conversations = upsert_conversations(conn, batch, &fresh).await?;
            let mut conversation_ids = Vec::with_capacity(fresh.len());
            let mut senders = Vec::with_capacity(fresh.len());
            let mut bodies = Vec::with_capacity(fresh.len());
            let mut client_ids = Vec::with_capacity(fresh.len());
            for &index in &fresh {
                let message = &batch[index];
                let pair = ordered_pair(message.sender, message.recipient);
                conversation_ids.push(conversations.get(&pair).copied().unwrap_or_default());
                senders.push(message.sender.0);
                bodies.push(message.body.as_str());
                client_ids.push(message.client_id.as_deref());
            }

            // From here to commit, batches of every writer take turns. The
            // lock and the ids come in one statement: every id is computed
            // from a row of the join with the lock's CTE, so after the lock.
            let ids: Vec<i64> = RawSql::new(
                &[
                    "WITH ordering AS (SELECT pg_advisory_xact_lock(",
                    ")) SELECT nextval('messages_id_seq') AS id FROM ordering, generate_series(1, ",
                    ")",
                ],
                vec![Bind::Int8(MESSAGE_ORDER_LOCK), Bind::Int8(fresh.len() as i64)],
            )
            .load::<Id>(conn)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
            // Ids are drawn under the lock, so they follow commit order;
            // `created_at` is the insert's own time (not the transaction's
            // start, which may precede a batch that committed first), so time
            // follows id order too. A retry that raced past the duplicate
            // check above is skipped by ON CONFLICT and looked up below.
            let rows: Vec<ChatMessage> = RawSql::new(
                &[
                    "WITH m AS ( \
                       INSERT INTO messages (id, conversation_id, sender_id, body, client_id, created_at) \
                       SELECT *, statement_timestamp() FROM unnest(",
                    "::int8[], ",
                    "::int8[], ",
                    "::int8[], ",
                    "::text[], ",
                    "::text[]) \
                       ON CONFLICT (sender_id, client_id) DO NOTHING \
                       RETURNING * ), \
                     newest AS ( \
                       SELECT DISTINCT ON (conversation_id) conversation_id, id, created_at FROM m \
                       ORDER BY conversation_id, id DESC ), \
                     touched AS ( \
                       UPDATE conversations c SET last_message_id = n.id, last_message_at = n.created_at \
                       FROM newest n \
                       WHERE c.id = n.conversation_id \
                         AND (c.last_message_id IS NULL OR c.last_message_id < n.id) ) \
                     SELECT m.id, m.conversation_id, m.sender_id, \
                       CASE WHEN c.user_a = m.sender_id THEN c.user_b ELSE c.user_a END AS recipient_id, \
                       m.body, m.created_at, m.client_id \
                     FROM m JOIN conversations c ON c.id = m.conversation_id",
                ],
                vec![
                    Bind::Int8s(&ids),
                    Bind::Int8s(&conversation_ids),
                    Bind::Int8s(&senders),
                    Bind::Texts(&bodies),
                    Bind::OptionalTexts(&client_ids),
                ],
            )
            .load(conn)
            .await?;
            let by_id: HashMap<i64, ChatMessage> = rows.into_iter().map(|row| (row.id, row)).collect();
            let mut raced: Vec<(i64, &str)> = Vec::new();
            for (index, id) in fresh.iter().zip(&ids) {
                outcomes[*index] = by_id.get(id).cloned().map(Stored::New);
                if outcomes[*index].is_none()
                    && let Some(client_id) = batch[*index].client_id.as_deref()
                {
                    raced.push((batch[*index].sender.0, client_id));
                }
            }
            if !raced.is_empty() {
                earlier = earlier_messages(conn, &raced).await?;
                for &index in &fresh {
                    let message = &batch[index];
                    if outcomes[index].is_none()
                        && let Some(client_id) = message.client_id.as_deref()
                    {
                        outcomes[index] = earlier
                            .get(&(message.sender.0, client_id.to_owned()))
                            .cloned()
                            .map(Stored::Duplicate);
                    }
                }
            }
        }
        for (index, first) in duplicate_of {
            outcomes[index] = match &outcomes[first] {
                Some(Stored::New(row)) => Some(Stored::Duplicate(row.clone())),
                other => other.clone(),
            };
        }
        // Every index was given an outcome above; a gap would be a bug, and
        // failing the batch is safer than acknowledging something unstored.
        outcomes
            .into_iter()
            .map(|o| o.ok_or(diesel::result::Error::RollbackTransaction))
            .collect()
    })
    .await
}

/// Stored messages with these (sender, client_id) keys.
async fn earlier_messages(
    conn: &mut AsyncPgConnection,
    keyed: &[(i64, &str)],
) -> QueryResult<HashMap<(i64, String), ChatMessage>> {
    let mut earlier = HashMap::new();
    if keyed.is_empty() {
        return Ok(earlier);
    }
    let (senders, client_ids): (Vec<i64>, Vec<&str>) = keyed.iter().copied().unzip();
    let rows: Vec<ChatMessage> = RawSql::new(
        &[
            "SELECT m.id, m.conversation_id, m.sender_id, \
               CASE WHEN c.user_a = m.sender_id THEN c.user_b ELSE c.user_a END AS recipient_id, \
               m.body, m.created_at, m.client_id \
             FROM unnest(",
            "::int8[], ",
            "::text[]) AS k(sender_id, client_id) \
             JOIN messages m ON m.sender_id = k.sender_id AND m.client_id = k.client_id \
             JOIN conversations c ON c.id = m.conversation_id",
        ],
        vec![Bind::Int8s(&senders), Bind::Texts(&client_ids)],
    )
    .load(conn)
    .await?;
    for row in rows {
        if let Some(client_id) = row.client_id.clone() {
            earlier.insert((row.sender_id, client_id), row);
        }
    }
    Ok(earlier)
}

fn ordered_pair(a: UserId, b: UserId) -> (i64, i64) {
    if a.0 < b.0 { (a.0, b.0) } else { (b.0, a.0) }
}

/// Creates missing conversations; maps each pair to its conversation id.
async fn upsert_conversations(
    conn: &mut AsyncPgConnection,
    batch: &[Outgoing],
    fresh: &[usize],
) -> QueryResult<HashMap<(i64, i64), i64>> {
    // Sorted, and inserted in this order: two writers adding the same new
    // pairs then wait on each other in one order, never in a cycle.
    let pairs: std::collections::BTreeSet<(i64, i64)> = fresh
        .iter()
        .map(|&i| ordered_pair(batch[i].sender, batch[i].recipient))
        .collect();
    let (user_a, user_b): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
    // Existing pairs are read first and only missing ones inserted, so a
    // steady conversation costs one index lookup, not a row update. DO
    // NOTHING (not a no-op update) keeps this part free of row locks that
    // could meet the ordering lock in a deadlock; a pair another writer
    // inserted meanwhile is simply not returned, and the next round, with a
    // fresh snapshot, finds it.
    let mut found = HashMap::with_capacity(user_a.len());
    for _ in 0..3 {
        let rows: Vec<ConversationRow> = RawSql::new(
            &[
                "WITH wanted AS (SELECT * FROM unnest(",
                "::int8[], ",
                "::int8[]) AS w(user_a, user_b)), \
                 found AS (SELECT c.id, c.user_a, c.user_b FROM conversations c \
                           JOIN wanted w ON c.user_a = w.user_a AND c.user_b = w.user_b), \
                 added AS (INSERT INTO conversations (user_a, user_b) \
                           SELECT w.user_a, w.user_b FROM wanted w \
                           WHERE NOT EXISTS (SELECT 1 FROM found f \
                                             WHERE f.user_a = w.user_a AND f.user_b = w.user_b) \
                           ORDER BY w.user_a, w.user_b \
                           ON CONFLICT (user_a, user_b) DO NOTHING \
                           RETURNING id, user_a, user_b) \
                 SELECT id, user_a, user_b FROM found UNION ALL SELECT id, user_a, user_b FROM added",
            ],
            vec![Bind::Int8s(&user_a), Bind::Int8s(&user_b)],
        )
        .load(conn)
        .await?;
        found.extend(rows.into_iter().map(|row| ((row.user_a, row.user_b), row.id)));
        if found.len() == user_a.len() {
            return Ok(found);
        }
    }
    // Three rounds cannot all miss a committed pair; fail the batch rather
    // than store a message without its conversation.
    Err(diesel::result::Error::RollbackTransaction)
}

/// Messages of `user`'s conversations with an id above `since`, oldest
/// first, at most `limit`; call again from the last id for more.
pub async fn since(
    conn: &mut AsyncPgConnection,
    user: UserId,
    since: i64,
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
    .bind::<BigInt, _>(since)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Records that `reader` has read `conversation` up to `message_id` (never
/// moving backwards). Returns the other member to notify, or `None` when the
/// reader is not a member or the message is not in that conversation.
pub async fn mark_read(
    conn: &mut AsyncPgConnection,
    reader: UserId,
    conversation: i64,
    message_id: i64,
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
            Bind::Int8(conversation),
            Bind::Int8(message_id),
        ],
    )
    .get_result(conn)
    .await
    .optional()?;
    Ok(other.map(|o| UserId(o.other)))
}
