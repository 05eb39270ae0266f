//! `typing { recipient_id }`: relayed to the recipient, never stored.

use aurum_actors::session::{AckReply, SessionHandle};
use serde_json::{Value, json};

use super::{ChatError, Router, answer, id_field};

pub(super) fn handle(
    router: &Router,
    session: &SessionHandle,
    user: i64,
    payload: &Value,
    ack: Option<AckReply>,
) {
    let result = id_field(payload, "recipient_id").and_then(|recipient| {
        if recipient == user {
            return Err(ChatError::new("invalid_recipient", "you cannot message yourself"));
        }
        router.notify_user(recipient, "typing", json!({ "sender_id": user }), None);
        Ok(json!({ "ok": true }))
    });
    answer(session, ack, result);
}
