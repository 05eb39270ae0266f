//! HTTP handlers, one file per action. Each extracts its input, calls the
//! data layer and maps errors; business rules live in the types they call.

pub mod admin;
pub mod conversations;
pub mod health;
mod member_cursor;
mod page_json;
pub mod profiles;
pub mod web;

pub use member_cursor::MemberCursor;
pub use page_json::{PageJson, SizeHint};

use crate::error::ApiError;

/// A query-string value that is present and not blank.
pub(crate) fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Parses an optional numeric query parameter, naming it in the error.
pub(crate) fn parse_number<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    non_blank(value)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`{name}` must be a whole number, got {v:?}"),
                )
            })
        })
        .transpose()
}

/// A page's `limit` query parameter: 1..=100, 20 when absent. The same rule
/// for every paginated endpoint.
pub(crate) fn parse_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    const DEFAULT_LIMIT: i64 = 20;
    const MAX_LIMIT: i64 = 100;
    let limit = parse_number::<i64>("limit", raw)?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("`limit` must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// Cuts a page fetched with `limit + 1` rows back to `limit`; true when the
/// extra row was there, so `has_more` is exact without a count.
pub(crate) fn trim_page<T>(items: &mut Vec<T>, limit: i64) -> bool {
    let has_more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    has_more
}
