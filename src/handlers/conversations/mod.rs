//! `/api/v1/conversations`: the REST history of the chat.

mod list;
mod messages;

pub use list::list_conversations;
pub use messages::list_messages;
