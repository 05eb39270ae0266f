//! `GET /api/v1/conversations/{id}/messages?before=&after=&limit=`: a page of
//! one conversation's messages, keyset on the message id, for its two
//! members only.

use actix_web::web;
use aurum_schema::models::history::{self, HistoryMessage, MessageWindow};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{PageJson, SizeHint, parse_limit, parse_number, trim_page};
use crate::openapi::{DB_UNAVAILABLE, UNAUTHORIZED};
use crate::state::AppState;

/// `before` and `after` exclude each other.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Messages with a smaller id, newest of them first.
    #[param(schema_with = crate::openapi::message_id_param)]
    before: Option<String>,
    /// Messages with a larger id, oldest of them first.
    #[param(schema_with = crate::openapi::message_id_param)]
    after: Option<String>,
    /// Messages per page (default 20).
    #[param(schema_with = crate::openapi::limit_param)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    items: Vec<HistoryMessage>,
    has_more: bool,
}

/// A page of one conversation's messages, for its two members only.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "conversations",
    params(
        ("id" = i64, Path, minimum = 1, description = "The conversation's id"),
        MessagesQuery,
    ),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "A parameter out of range or both `before` and `after` (`invalid_limit`, `invalid_query`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "No such conversation, or not the caller's (`not_found`): the two look the same", body = ErrorBody),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_messages(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<MessagesQuery>,
) -> Result<PageJson<MessagePage>, ApiError> {
    // Non-members, unknown ids and ids that are not ids all look the same, so
    // probing reveals nothing about other members' conversations.
    let not_found = || ApiError::not_found("no such conversation");
    let conversation_id = path
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(not_found)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let window = parse_window(query.before.as_deref(), query.after.as_deref())?;

    let mut conn = state.db.get().await?;
    let page = history::list_messages(&mut conn, user.id, conversation_id, window, limit + 1);
    let mut items = crate::metrics::timed("history_messages", page)
        .await?
        .ok_or_else(not_found)?;
    let has_more = trim_page(&mut items, limit);
    static SIZE: SizeHint = SizeHint::new();
    Ok(PageJson::new(MessagePage { items, has_more }, &SIZE))
}

fn parse_window(before: Option<&str>, after: Option<&str>) -> Result<MessageWindow, ApiError> {
    let before = parse_number::<i64>("before", before)?;
    let after = parse_number::<i64>("after", after)?;
    if [before, after].into_iter().flatten().any(|id| id < 0) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`before` and `after` are message ids and cannot be negative",
        ));
    }
    match (before, after) {
        (None, None) => Ok(MessageWindow::Latest),
        (Some(before), None) => Ok(MessageWindow::Before(before)),
        (None, Some(after)) => Ok(MessageWindow::After(after)),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_query",
            "give `before` or `after`, not both",
        )),
    }
}
