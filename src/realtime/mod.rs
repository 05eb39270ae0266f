//! Chat over Socket.IO: the application behind the socket listener.
//!
//! A socket authenticates on CONNECT with its JWT, registers with the
//! session registry, gets what it missed (`since`), and then sends
//! `chat_message`, `typing` and `mark_read`. Messages are committed by the
//! MessageWriter before they are acknowledged, then delivered through
//! [`Router`], the one seam between this node's registry and other nodes.

mod app;
mod chat_message;
mod mark_read;
pub mod presence;
pub mod rate;
pub mod replay;
mod router;
mod startup;
mod typing;

use aurum_actors::session::{AckReply, SessionHandle};
use serde_json::{Value, json};

pub use app::ChatApp;
pub use router::Router;
pub use startup::Realtime;

use self::rate::Rate;
use crate::config::Config;

/// The only namespace chat serves.
pub const CHAT_NAMESPACE: &str = "/";

/// What one user may do on this node, from the configuration.
#[derive(Debug, Clone)]
pub struct ChatLimits {
    pub chat_message: Rate,
    pub typing: Rate,
    pub mark_read: Rate,
    pub max_message_chars: usize,
    pub max_client_id_chars: usize,
    pub max_sockets_per_user: usize,
}

impl ChatLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            chat_message: Rate {
                per_second: config.chat_rate,
                burst: config.chat_burst,
            },
            typing: Rate {
                per_second: config.typing_rate,
                burst: config.typing_burst,
            },
            mark_read: Rate {
                per_second: config.read_rate,
                burst: config.read_burst,
            },
            // DESIGN.md's contract, not a setting: clients are built against it.
            max_message_chars: 4000,
            max_client_id_chars: 64,
            max_sockets_per_user: usize::try_from(config.max_sockets_per_user).unwrap_or(usize::MAX),
        }
    }
}

/// The answer to an event: through its ack when it has one, else as an
/// `error` event (DESIGN.md: `error` is for what has no ack).
pub(crate) fn answer(session: &SessionHandle, ack: Option<AckReply>, result: Result<Value, ChatError>) {
    let outcome = match (ack, result) {
        (Some(ack), Ok(value)) => ack.send(vec![value]),
        (Some(ack), Err(error)) => ack.send(vec![json!({ "ok": false, "error": error.body() })]),
        (None, Ok(_)) => Ok(()),
        (None, Err(error)) => session.emit(CHAT_NAMESPACE, "error", vec![error.body()]),
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, session = %session.id(), "answer not delivered");
    }
}

/// A refusal with a stable code, sent in an ack or an `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatError {
    pub code: &'static str,
    pub message: String,
}

impl ChatError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

/// A positive id from a JSON number (or a numeric string, as some clients send).
pub(crate) fn id_field(payload: &Value, name: &str) -> Result<i64, ChatError> {
    let value = payload
        .get(name)
        .ok_or_else(|| ChatError::new("invalid_payload", format!("`{name}` is required")))?;
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .filter(|id| *id > 0)
        .ok_or_else(|| ChatError::new("invalid_payload", format!("`{name}` must be a positive id")))
}
