//! `GET /api/v1/conversations`: the caller's conversations, newest activity
//! first, each with its last message and the caller's unread count,
//! keyset-paginated with a signed cursor.

use actix_web::web;
use aurum_schema::ids::UserId;
use aurum_schema::models::history::{self, ActivityKey, ConversationSummary};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{MemberCursor, PageJson, SizeHint, non_blank, parse_limit, trim_page};
use crate::openapi::{DB_UNAVAILABLE, UNAUTHORIZED};
use crate::state::AppState;

const CURSOR_KIND: &str = "conversations.list";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Conversations per page (default 20).
    #[param(schema_with = crate::openapi::limit_param)]
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// What a cursor carries: who it was issued to and the last row's sort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    pub viewer: UserId,
    pub after: ActivityKey,
}

impl MemberCursor for ListCursor {
    const KIND: &'static str = CURSOR_KIND;

    fn viewer(&self) -> UserId {
        self.viewer
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    items: Vec<ConversationSummary>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// The caller's conversations, newest activity first, with the last message
/// and the unread count.
#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of conversations", body = ConversationPage),
        (status = 400, description = "`limit` out of range (`invalid_limit`, `invalid_query`) or a tampered or foreign cursor (`invalid_cursor`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_conversations(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<PageJson<ConversationPage>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let after = non_blank(query.cursor.as_deref())
        .map(|cursor| ListCursor::decode(&state.cursors, user.id, cursor))
        .transpose()?
        .map(|cursor| cursor.after);

    let mut conn = state.db.get().await?;
    let mut items = crate::metrics::timed(
        "history_conversations",
        history::list_conversations(&mut conn, user.id, after, limit + 1),
    )
    .await?;
    let has_more = trim_page(&mut items, limit);
    let next_cursor = match (has_more, items.last()) {
        (true, Some(last)) => Some(
            ListCursor {
                viewer: user.id,
                after: ActivityKey::of(last),
            }
            .encode(&state.cursors),
        ),
        _ => None,
    };
    static SIZE: SizeHint = SizeHint::new();
    let page = ConversationPage {
        items,
        next_cursor,
        has_more,
    };
    Ok(PageJson::new(page, &SIZE))
}
