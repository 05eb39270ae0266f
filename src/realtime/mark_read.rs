//! `mark_read { conversation_id, message_id }`: stored; the other member
//! (and the reader's other sockets) get `message_read`.

use aurum_actors::session::{AckReply, SessionHandle};
use aurum_schema::ids::{ConversationId, MessageId, UserId};
use aurum_schema::models::messages;
use aurum_schema::pool::DbPool;
use serde_json::{Value, json};

use super::{ChatError, Router, answer, id_field};

pub(super) async fn handle(
    db: DbPool,
    router: Router,
    session: SessionHandle,
    user: i64,
    payload: Value,
    ack: Option<AckReply>,
) {
    let result = mark(&db, &router, &session, user, &payload).await;
    answer(&session, ack, result);
}

async fn mark(
    db: &DbPool,
    router: &Router,
    session: &SessionHandle,
    user: i64,
    payload: &Value,
) -> Result<Value, ChatError> {
    let conversation_id = id_field(payload, "conversation_id")?;
    let message_id = id_field(payload, "message_id")?;
    let unavailable = |_| {
        ChatError::new(
            "unavailable",
            "read marks cannot be stored right now; retry shortly",
        )
    };
    let mut conn = db.get().await.map_err(unavailable)?;
    let read = messages::mark_read(
        &mut conn,
        UserId(user),
        ConversationId(conversation_id),
        MessageId(message_id),
    );
    let other = crate::metrics::timed("mark_read", read)
        .await
        .map_err(|error| {
            tracing::error!(%error, "mark_read failed");
            ChatError::new(
                "unavailable",
                "read marks cannot be stored right now; retry shortly",
            )
        })?
        .ok_or_else(|| ChatError::new("not_found", "no such message in a conversation of yours"))?;
    let event = json!({ "conversation_id": conversation_id, "reader_id": user, "message_id": message_id });
    router.emit_to_pair("message_read", event, other.0, user, session.id());
    Ok(json!({ "ok": true }))
}
