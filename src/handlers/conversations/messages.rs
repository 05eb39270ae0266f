//! `GET /api/v1/conversations/{id}/messages?before=&after=&limit=`: a page of
//! one conversation's messages, keyset on the message id, for its two
//! members only.

use actix_web::web;
use aurum_schema::models::history::{self, HistoryMessage, MessageWindow};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::handlers::{PageJson, SizeHint, parse_limit, parse_number, trim_page};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MessagePage {
    items: Vec<HistoryMessage>,
    has_more: bool,
}

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
