//! `/api/v1/conversations`: the REST history of the chat.

pub(crate) mod list;
pub(crate) mod messages;

pub use list::{ListCursor, list_conversations};
pub use messages::list_messages;
