//! The REST history: a member's conversations, newest activity first, and
//! one conversation's messages, both keyset-paginated.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Int8, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::json_time;
use crate::pg_time::PgInstant;
use crate::schema::{conversations, messages};

/// The position of the last conversation a page returned, in list order
/// (`last_message_at DESC, id DESC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityKey {
    /// Microseconds since the epoch: PostgreSQL's own precision, so the key
    /// compares exactly with the stored value.
    pub last_message_at_us: i64,
    pub id: i64,
}

impl ActivityKey {
    pub fn of(conversation: &ConversationSummary) -> Self {
        Self {
            last_message_at_us: conversation.last_message_at.timestamp_micros(),
            id: conversation.id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastMessage {
    pub id: i64,
    pub sender_id: i64,
    pub message: String,
    #[serde(serialize_with = "json_time::timestamp")]
    pub sent_at: DateTime<Utc>,
}

/// One entry of a member's conversation list, seen from that member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConversationSummary {
    pub id: i64,
    pub other_user_id: i64,
    pub last_message: Option<LastMessage>,
    #[serde(serialize_with = "json_time::timestamp")]
    pub last_message_at: DateTime<Utc>,
    /// Messages from the other member after the viewer's read mark (all of
    /// theirs when the viewer never marked anything read).
    pub unread_count: i64,
}

/// A message as history serves it: the shape of the Socket.IO `new_message`
/// event, so clients handle both with one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HistoryMessage {
    pub id: i64,
    pub conversation_id: i64,
    pub sender_id: i64,
    pub recipient_id: i64,
    pub message: String,
    #[serde(serialize_with = "json_time::timestamp")]
    pub sent_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Which slice of a conversation to read, by message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageWindow {
    /// The newest messages, newest first.
    Latest,
    /// Messages with a smaller id, newest first (scrolling back).
    Before(i64),
    /// Messages with a larger id, oldest first (catching up).
    After(i64),
}

/// One page of the viewer's conversations that have a message, newest
/// activity first, strictly after `after`. Returns up to `limit` rows; ask
/// for one more than a page to learn whether another page exists.
///
/// Conversations without any message yet are left out: there is nothing to
/// show or sort them by (and the chat creates a conversation together with
/// its first message).
pub async fn list_conversations(
    conn: &mut AsyncPgConnection,
    viewer: UserId,
    after: Option<ActivityKey>,
    limit: i64,
) -> QueryResult<Vec<ConversationSummary>> {
    let query = ConversationPageQuery {
        viewer: viewer.0,
        after: after.map(|key| {
            let at = DateTime::from_timestamp_micros(key.last_message_at_us).unwrap_or_default();
            (at, key.id)
        }),
        limit,
    };
    let rows: Vec<ConversationRow> = query.load(conn).await?;
    Ok(rows.into_iter().map(|row| row.into_summary(viewer)).collect())
}

/// A page of a conversation's messages, or `None` when the conversation does
/// not exist or the viewer is not one of its two members (the caller cannot
/// tell which, on purpose).
pub async fn list_messages(
    conn: &mut AsyncPgConnection,
    viewer: UserId,
    conversation_id: i64,
    window: MessageWindow,
    limit: i64,
) -> QueryResult<Option<Vec<HistoryMessage>>> {
    let members: Option<(i64, i64)> = conversations::table
        .find(conversation_id)
        .filter(
            conversations::user_a
                .eq(viewer.0)
                .or(conversations::user_b.eq(viewer.0)),
        )
        .select((conversations::user_a, conversations::user_b))
        .first(conn)
        .await
        .optional()?;
    let Some((user_a, user_b)) = members else {
        return Ok(None);
    };

    let query = messages::table
        .filter(messages::conversation_id.eq(conversation_id))
        .select((
            messages::id,
            messages::sender_id,
            messages::body,
            messages::client_id,
            messages::created_at,
        ))
        .into_boxed();
    let query = match window {
        MessageWindow::Latest => query.order(messages::id.desc()),
        MessageWindow::Before(id) => query.filter(messages::id.lt(id)).order(messages::id.desc()),
        MessageWindow::After(id) => query.filter(messages::id.gt(id)).order(messages::id.asc()),
    };
    let rows: Vec<MessageRow> = query.limit(limit).load(conn).await?;
    let messages = rows
        .into_iter()
        .map(|row| HistoryMessage {
            id: row.id,
            conversation_id,
            sender_id: row.sender_id,
            recipient_id: if row.sender_id == user_a { user_b } else { user_a },
            message: row.body,
            sent_at: row.created_at,
            client_id: row.client_id,
        })
        .collect();
    Ok(Some(messages))
}

#[derive(Debug, Queryable)]
struct MessageRow {
    id: i64,
    sender_id: i64,
    body: String,
    client_id: Option<String>,
    #[diesel(deserialize_as = PgInstant)]
    created_at: DateTime<Utc>,
}

#[derive(Debug, Queryable)]
struct ConversationRow {
    id: i64,
    user_a: i64,
    user_b: i64,
    #[diesel(deserialize_as = PgInstant)]
    last_message_at: DateTime<Utc>,
    last_id: Option<i64>,
    last_sender_id: Option<i64>,
    last_body: Option<String>,
    last_sent_at: Option<DateTime<Utc>>,
    unread_count: i64,
}

impl ConversationRow {
    fn into_summary(self, viewer: UserId) -> ConversationSummary {
        let last_message = match (
            self.last_id,
            self.last_sender_id,
            self.last_body,
            self.last_sent_at,
        ) {
            (Some(id), Some(sender_id), Some(message), Some(sent_at)) => Some(LastMessage {
                id,
                sender_id,
                message,
                sent_at,
            }),
            _ => None,
        };
        ConversationSummary {
            id: self.id,
            other_user_id: if self.user_a == viewer.0 {
                self.user_b
            } else {
                self.user_a
            },
            last_message,
            last_message_at: self.last_message_at,
            unread_count: self.unread_count,
        }
    }
}

/// The conversation list as one statement. diesel's DSL has no FROM
/// subqueries or LATERAL joins, so the SQL is written out here; it is a
/// `QueryFragment` with bind parameters (not `sql_query`), so diesel-async
/// prepares it once per connection and caches it like any DSL query.
///
/// Shape: each side of the pair (`user_a`, `user_b`) reads the member's
/// conversations on that side from its index (the unique pair index, the
/// `user_b` index) and keeps the `limit` newest past the keyset with a top-N
/// sort; the two short runs are merged and cut to `limit`; only then are the
/// last message (one backward step on `messages (conversation_id, id)`) and
/// the unread count (a count on the same index past the read mark) looked
/// up, for those rows alone. There is no index in activity order on purpose:
/// every stored message moves `last_message_at`, and out of every index that
/// update stays on its page (HOT); see migration 000006 for the measured
/// trade.
#[derive(Debug, Clone, Copy)]
struct ConversationPageQuery {
    viewer: i64,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
}

impl QueryId for ConversationPageQuery {
    type QueryId = ();
    // The SQL differs only by whether a keyset is given; the statement cache
    // keys on the SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for ConversationPageQuery {
    type SqlType = (
        Int8,
        Int8,
        Int8,
        Timestamptz,
        Nullable<Int8>,
        Nullable<Int8>,
        Nullable<Text>,
        Nullable<Timestamptz>,
        Int8,
    );
}

impl ConversationPageQuery {
    /// One side's page: `side` is `user_a` or `user_b`, a column name.
    fn walk_side<'b>(&'b self, side: &'static str, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(SELECT id, user_a, user_b, last_message_at FROM conversations WHERE ");
        out.push_sql(side);
        out.push_sql(" = ");
        out.push_bind_param::<Int8, _>(&self.viewer)?;
        out.push_sql(" AND last_message_at IS NOT NULL");
        if let Some((at, id)) = &self.after {
            // A row comparison lets the index scan start right at the key.
            out.push_sql(" AND (last_message_at, id) < (");
            out.push_bind_param::<Timestamptz, _>(at)?;
            out.push_sql(", ");
            out.push_bind_param::<Int8, _>(id)?;
            out.push_sql(")");
        }
        out.push_sql(" ORDER BY last_message_at DESC, id DESC LIMIT ");
        out.push_bind_param::<Int8, _>(&self.limit)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryFragment<Pg> for ConversationPageQuery {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT c.id, c.user_a, c.user_b, c.last_message_at, \
             m.id, m.sender_id, m.body, m.created_at, \
             (SELECT count(*) FROM messages AS u \
             WHERE u.conversation_id = c.id AND u.sender_id <> ",
        );
        out.push_bind_param::<Int8, _>(&self.viewer)?;
        // The read mark as a scalar subquery rather than a join: with both key
        // columns bound it is a primary-key lookup, where a join was planned
        // as a walk over all of the viewer's read marks by `user_id`, once
        // per row.
        out.push_sql(
            " AND u.id > COALESCE((SELECT r.last_read_message_id FROM conversation_reads AS r \
             WHERE r.conversation_id = c.id AND r.user_id = ",
        );
        out.push_bind_param::<Int8, _>(&self.viewer)?;
        out.push_sql("), 0)) FROM (SELECT * FROM (");
        self.walk_side("user_a", out.reborrow())?;
        out.push_sql(" UNION ALL ");
        self.walk_side("user_b", out.reborrow())?;
        out.push_sql(") AS sides ORDER BY last_message_at DESC, id DESC LIMIT ");
        out.push_bind_param::<Int8, _>(&self.limit)?;
        out.push_sql(
            ") AS c \
             LEFT JOIN LATERAL (SELECT id, sender_id, body, created_at FROM messages \
             WHERE conversation_id = c.id ORDER BY id DESC LIMIT 1) AS m ON true \
             ORDER BY c.last_message_at DESC, c.id DESC",
        );
        Ok(())
    }
}
