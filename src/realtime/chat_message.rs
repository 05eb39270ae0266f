//! `chat_message { recipient_id, message, client_id? }`: validated,
//! committed, acknowledged, then delivered to the recipient's sockets and
//! the sender's other sockets.

use aurum_actors::session::{AckReply, SessionHandle};
use aurum_actors::writer::{WriteError, WriterHandle};
use aurum_schema::ids::UserId;
use aurum_schema::models::messages::{Outgoing, Stored};
use serde_json::{Value, json};

use super::{ChatError, ChatLimits, Router, answer, id_field};

pub(super) async fn handle(
    writer: WriterHandle,
    router: Router,
    limits: ChatLimits,
    session: SessionHandle,
    user: i64,
    payload: Value,
    ack: Option<AckReply>,
) {
    let result = send(&writer, &router, &limits, &session, user, &payload).await;
    answer(&session, ack, result);
}

fn validate(limits: &ChatLimits, user: i64, payload: &Value) -> Result<Outgoing, ChatError> {
    if !payload.is_object() {
        return Err(ChatError::new(
            "invalid_payload",
            "expected { recipient_id, message, client_id? }",
        ));
    }
    let recipient = id_field(payload, "recipient_id")?;
    if recipient == user {
        return Err(ChatError::new("invalid_recipient", "you cannot message yourself"));
    }
    let body = payload
        .get("message")
        .and_then(Value::as_str)
        .ok_or_else(|| ChatError::new("invalid_payload", "`message` must be a string"))?;
    let chars = body.chars().count();
    if chars == 0 || chars > limits.max_message_chars {
        return Err(ChatError::new(
            "invalid_message",
            format!("messages are 1 to {} characters", limits.max_message_chars),
        ));
    }
    let client_id = match payload.get("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= limits.max_client_id_chars => {
            Some(id.clone())
        }
        Some(_) => {
            return Err(ChatError::new(
                "invalid_payload",
                format!(
                    "`client_id` must be a string of 1 to {} characters",
                    limits.max_client_id_chars
                ),
            ));
        }
    };
    Ok(Outgoing {
        sender: UserId(user),
        recipient: UserId(recipient),
        body: body.to_owned(),
        client_id,
    })
}

async fn send(
    writer: &WriterHandle,
    router: &Router,
    limits: &ChatLimits,
    session: &SessionHandle,
    user: i64,
    payload: &Value,
) -> Result<Value, ChatError> {
    let outgoing = validate(limits, user, payload)?;
    let stored = writer.persist(outgoing).await.map_err(|error| match error {
        WriteError::Busy => ChatError::new("busy", error.to_string()),
        WriteError::Unavailable => ChatError::new("unavailable", error.to_string()),
    })?;
    let (message, fresh) = match stored {
        Stored::New(message) => (message, true),
        Stored::Duplicate(message) => (message, false),
        Stored::UnknownRecipient => return Err(ChatError::new("unknown_recipient", "no such user")),
        Stored::UnknownSender => {
            return Err(ChatError::new(
                "no_profile",
                "create your profile before you chat",
            ));
        }
    };
    // One serialisation: the ack's `sent_at` is the event's, to the letter.
    let event = serde_json::to_value(&message).unwrap_or(Value::Null);
    let ack = json!({
        "ok": true,
        "id": message.id,
        "conversation_id": message.conversation_id,
        "sent_at": event["sent_at"],
    });
    if fresh {
        router.emit_to_pair("new_message", event, message.recipient_id, user, session.id());
    }
    Ok(ack)
}
