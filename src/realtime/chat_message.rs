//! `chat_message { recipient_id, message, client_id? }`: validated,
//! committed, acknowledged, then delivered to the recipient's sockets and
//! the sender's other sockets.

use std::sync::LazyLock;
use std::time::Instant;

use aurum_actors::session::{AckReply, EncodedPacket, SessionHandle};
use aurum_actors::writer::{WriteError, WriterHandle};
use aurum_schema::ids::UserId;
use aurum_schema::models::messages::{ChatMessage, Outgoing, Stored};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{CHAT_NAMESPACE, ChatError, ChatLimits, Router, answer, id_field};

pub(super) async fn handle(
    writer: WriterHandle,
    router: Router,
    limits: ChatLimits,
    session: SessionHandle,
    user: i64,
    payload: Value,
    ack: Option<AckReply>,
) {
    let received = Instant::now();
    let outgoing = match validate(&limits, user, &payload) {
        Ok(outgoing) => outgoing,
        Err(error) => {
            counted(error.code);
            return answer(&session, ack, Err(error));
        }
    };
    // The ack and the deliveries leave from the writer's thread, in commit
    // order (see `committed`); this future only waits for them, so the
    // session's bound on events in progress still holds back a sender.
    let (done, finished) = oneshot::channel();
    let origin = session.clone();
    writer.submit(
        outgoing,
        Box::new(move |result| {
            committed(&router, &origin, ack, result, received);
            let _ = done.send(());
        }),
    );
    let _ = finished.await;
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
    // PostgreSQL's text cannot hold NUL: such a message would fail the
    // whole batch it was written in, other members' messages with it.
    // Other control characters are text like any other, stored and sent
    // back as they came (JSON escapes them).
    if body.contains('\0') {
        return Err(ChatError::new(
            "invalid_message",
            "messages cannot contain NUL (U+0000)",
        ));
    }
    let client_id = match payload.get("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id))
            if !id.is_empty() && id.chars().count() <= limits.max_client_id_chars && !id.contains('\0') =>
        {
            Some(id.clone())
        }
        Some(_) => {
            return Err(ChatError::new(
                "invalid_payload",
                format!(
                    "`client_id` must be a string of 1 to {} characters, without NUL",
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

/// Answers the sender and delivers a committed message. Runs on the
/// writer's thread in commit order, so every user's sockets get their
/// stream's messages, and the acks of their own, in id order (DESIGN.md,
/// "Delivery": a client's largest id then never passes an id it lacks).
fn committed(
    router: &Router,
    session: &SessionHandle,
    ack: Option<AckReply>,
    result: Result<Stored, WriteError>,
    received: Instant,
) {
    let stored = match result {
        Ok(stored) => stored,
        Err(error) => {
            let code = match error {
                WriteError::Busy => "busy",
                WriteError::Unavailable => "unavailable",
            };
            counted(code);
            return answer(session, ack, Err(ChatError::new(code, error.to_string())));
        }
    };
    let (message, fresh) = match stored {
        Stored::New(message) => (message, true),
        Stored::Duplicate(message) => (message, false),
        Stored::UnknownRecipient => {
            counted("unknown_recipient");
            return answer(
                session,
                ack,
                Err(ChatError::new("unknown_recipient", "no such user")),
            );
        }
        Stored::UnknownSender => {
            counted("no_profile");
            let error = ChatError::new("no_profile", "create your profile before you chat");
            return answer(session, ack, Err(error));
        }
    };
    if !fresh {
        counted("duplicate");
        // A retry, delivered again: its first copy may never have been. A
        // sender retries after `unavailable`, which its first copy may have
        // heard although it committed (its batch's answer was lost to a cut
        // network or a writer restart, and nobody delivered it); the
        // recipient's `since` may already be past its id. Clients dedupe
        // by id, so a second copy costs nothing but the bytes.
    }
    // Serialized from the types, no `Value` in between: this runs on the
    // writer's thread for every message, in series with its next batch.
    // The ack's `sent_at` goes through the event's formatter, so the two
    // agree to the letter.
    let packet = match EncodedPacket::event_of(CHAT_NAMESPACE, "new_message", &message) {
        Ok(packet) => packet.at_position(message.id),
        Err(error) => {
            // Stored, but not expressible: the sender hears why, and a
            // retry with its client_id finds the stored message.
            tracing::error!(%error, id = message.id, "a stored message could not be serialized");
            let error = ChatError::new("internal", "the message was stored but cannot be shown");
            return answer(session, ack, Err(error));
        }
    };
    let ack = match ack.map(|ack| ack.prepare_at_position(&Sent::of(&message), message.id)) {
        None => None,
        Some(Ok(ack)) => Some(ack),
        Some(Err((ack, error))) => {
            tracing::error!(%error, id = message.id, "a stored message's ack could not be serialized");
            let error = ChatError::new("internal", "the message was stored but its ack cannot be written");
            answer(session, Some(ack), Err(error));
            None
        }
    };
    router.deliver_committed(&message, packet, session.id(), ack);
    if !fresh {
        return;
    }
    // Handles made once: this runs on the writer's thread for every
    // message, where looking a labelled series up each time shows.
    static OK: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("chat_messages_total", "outcome" => "ok"));
    static DELIVERY: LazyLock<metrics::Histogram> =
        LazyLock::new(|| metrics::histogram!("chat_delivery_seconds"));
    OK.increment(1);
    DELIVERY.record(received.elapsed().as_secs_f64());
}

/// `chat_messages_total{outcome}` for anything but `ok`: `duplicate`, or
/// the error code.
fn counted(outcome: &'static str) {
    metrics::counter!("chat_messages_total", "outcome" => outcome).increment(1);
}

/// The ack of a committed message (`{ ok, id, conversation_id, sent_at }`).
#[derive(serde::Serialize)]
pub(super) struct Sent<'a> {
    ok: bool,
    id: i64,
    conversation_id: i64,
    #[serde(serialize_with = "aurum_schema::json_time::timestamp")]
    sent_at: &'a chrono::DateTime<chrono::Utc>,
}

impl<'a> Sent<'a> {
    pub(super) fn of(message: &'a ChatMessage) -> Self {
        Self {
            ok: true,
            id: message.id,
            conversation_id: message.conversation_id,
            sent_at: &message.created_at,
        }
    }
}
