//! HTTP handlers, one file per action. Each extracts its input, calls the
//! data layer and maps errors; business rules live in the types they call.

pub mod admin;
pub mod conversations;
pub mod health;
pub mod profiles;

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
