//! Replay on CONNECT: every message after the client's `since`, in id order.

use aurum_actors::session::SessionHandle;
use aurum_schema::models::messages;
use aurum_schema::pool::DbPool;
use serde_json::{Value, json};

use super::CHAT_NAMESPACE;

/// Messages replayed per database round trip on reconnect.
const REPLAY_PAGE: i64 = 500;

/// Sends every message after `since`, page by page, in id order.
pub(super) async fn replay(db: &DbPool, session: &SessionHandle, user: i64, mut since: i64) {
    loop {
        let page = match replay_page(db, user, since).await {
            Ok(page) => page,
            Err(()) => {
                let _ = session.emit(
                    CHAT_NAMESPACE,
                    "error",
                    vec![json!({
                    "code": "replay_failed",
                    "message": "missed messages could not be loaded; reconnect with the same since" })],
                );
                return;
            }
        };
        let done = (page.len() as i64) < REPLAY_PAGE;
        for message in page {
            since = message.id;
            let payload = serde_json::to_value(&message).unwrap_or(Value::Null);
            if session
                .emit(CHAT_NAMESPACE, "new_message", vec![payload])
                .is_err()
            {
                return; // the session is gone or too slow; it reconnects with its own since
            }
        }
        if done {
            return;
        }
    }
}

/// One page of the replay; failures are logged here and reported by the caller.
async fn replay_page(db: &DbPool, user: i64, since: i64) -> Result<Vec<messages::ChatMessage>, ()> {
    let mut conn = db.get().await.map_err(|error| {
        tracing::warn!(%error, user, "replay: no database connection");
    })?;
    messages::since(&mut conn, aurum_schema::ids::UserId(user), since, REPLAY_PAGE)
        .await
        .map_err(|error| tracing::error!(%error, user, "replay query failed"))
}
