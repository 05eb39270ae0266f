//! `/api/v1/conversations`: the REST history of the chat.

mod list;
mod messages;

pub use list::list_conversations;
pub use messages::list_messages;

use crate::error::ApiError;
use crate::handlers::parse_number;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// `limit`: 1..=100, 20 when absent.
fn parse_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    let limit = parse_number::<i64>("limit", raw)?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("`limit` must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}
