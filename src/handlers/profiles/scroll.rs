//! `GET /api/v1/matching/profiles/scroll`: approved profiles, newest first,
//! keyset-paginated with a signed cursor that carries the filters.

use actix_web::web;
use aurum_schema::ids::UserId;
use aurum_schema::models::profiles::{self, Gender, Profile, ScrollFilter, ScrollKey};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{MemberCursor, PageJson, SizeHint, non_blank, parse_limit, parse_number, trim_page};
use crate::openapi::{DB_UNAVAILABLE, RATE_LIMITED, UNAUTHORIZED};
use crate::rest_limits::Endpoint;
use crate::state::AppState;

const CURSOR_KIND: &str = "profiles.scroll";
const MIN_AGE: u16 = 18;
const MAX_AGE: u16 = 120;
const MAX_RELIGION_CHARS: usize = 50;
const MAX_CITY_CHARS: usize = 100;

/// Read as text and parsed by hand, so a bad value gets its own error code;
/// the document gives the types and ranges the parsing enforces.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScrollQuery {
    /// Profiles per page (default 20).
    #[param(schema_with = crate::openapi::limit_param)]
    limit: Option<String>,
    #[param(schema_with = crate::openapi::gender_param)]
    gender: Option<String>,
    /// In whole years, at most `max_age`.
    #[param(schema_with = crate::openapi::age_param)]
    min_age: Option<String>,
    #[param(schema_with = crate::openapi::age_param)]
    max_age: Option<String>,
    #[param(max_length = 50, pattern = r"^[^\x00]*$")]
    religion: Option<String>,
    #[param(max_length = 100, pattern = r"^[^\x00]*$")]
    city: Option<String>,
    /// The previous page's `next_cursor`; the filters travel in it.
    cursor: Option<String>,
}

/// What a cursor carries: who it was issued to, the filters, the day ages
/// were computed on (so a scroll across midnight stays consistent) and the
/// last row's sort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrollCursor {
    pub viewer: UserId,
    pub filter: ScrollFilter,
    pub today: NaiveDate,
    pub after: ScrollKey,
}

impl MemberCursor for ScrollCursor {
    const KIND: &'static str = CURSOR_KIND;

    fn viewer(&self) -> UserId {
        self.viewer
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScrollPage {
    items: Vec<Profile>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// Approved profiles other than the caller's, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/matching/profiles/scroll",
    tag = "profiles",
    params(ScrollQuery),
    responses(
        (status = 200, description = "A page of profiles", body = ScrollPage),
        (status = 400, description = "A parameter out of range (`invalid_limit`, `invalid_filter`, `invalid_query`), a tampered or foreign cursor (`invalid_cursor`) or filters that contradict it (`cursor_mismatch`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn scroll_profiles(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ScrollQuery>,
) -> Result<PageJson<ScrollPage>, ApiError> {
    state.rest_limits.take(Endpoint::Scroll, user.id)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let asked = parse_filter(&query)?;
    let (filter, today, after) = match non_blank(query.cursor.as_deref()) {
        Some(cursor) => {
            let cursor = ScrollCursor::decode(&state.cursors, user.id, cursor)?;
            ensure_consistent(&asked, &cursor.filter)?;
            (cursor.filter, cursor.today, Some(cursor.after))
        }
        None => (asked, chrono::Utc::now().date_naive(), None),
    };

    let mut conn = state.db.get().await?;
    let mut items = crate::metrics::timed(
        "profiles_scroll",
        profiles::scroll(&mut conn, user.id, &filter, after, limit + 1, today),
    )
    .await?;
    let has_more = trim_page(&mut items, limit);
    let next_cursor = match (has_more, items.last()) {
        (true, Some(last)) => Some(
            ScrollCursor {
                viewer: user.id,
                filter,
                today,
                after: ScrollKey::of(last),
            }
            .encode(&state.cursors),
        ),
        _ => None,
    };
    static SIZE: SizeHint = SizeHint::new();
    let page = ScrollPage {
        items,
        next_cursor,
        has_more,
    };
    Ok(PageJson::new(page, &SIZE))
}

fn parse_filter(query: &ScrollQuery) -> Result<ScrollFilter, ApiError> {
    let gender = non_blank(query.gender.as_deref())
        .map(|g| {
            Gender::parse(g)
                .ok_or_else(|| ApiError::bad_request("invalid_filter", "`gender` must be `male` or `female`"))
        })
        .transpose()?;
    let min_age = parse_number::<u16>("min_age", query.min_age.as_deref())?;
    let max_age = parse_number::<u16>("max_age", query.max_age.as_deref())?;
    for age in [min_age, max_age].into_iter().flatten() {
        if !(MIN_AGE..=MAX_AGE).contains(&age) {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("ages must be between {MIN_AGE} and {MAX_AGE}"),
            ));
        }
    }
    if let (Some(min), Some(max)) = (min_age, max_age)
        && min > max
    {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "`min_age` is greater than `max_age`",
        ));
    }
    let text = |value: Option<&str>| non_blank(value).map(str::to_owned);
    // PostgreSQL's text cannot hold NUL: the query would fail (a 500).
    if [&query.religion, &query.city]
        .into_iter()
        .flatten()
        .any(|value| value.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "`religion` and `city` cannot contain NUL (U+0000)",
        ));
    }
    // No profile holds a longer one (PUT /profiles/me caps them), and the
    // document promises these limits.
    for (name, value, max) in [
        ("religion", &query.religion, MAX_RELIGION_CHARS),
        ("city", &query.city, MAX_CITY_CHARS),
    ] {
        if value.as_deref().is_some_and(|v| v.chars().count() > max) {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("`{name}` must be at most {max} characters"),
            ));
        }
    }
    Ok(ScrollFilter {
        gender,
        min_age,
        max_age,
        religion: text(query.religion.as_deref()),
        city: text(query.city.as_deref()),
    })
}

/// Filters may be repeated alongside a cursor, but not changed.
fn ensure_consistent(asked: &ScrollFilter, carried: &ScrollFilter) -> Result<(), ApiError> {
    fn clash<T: PartialEq>(asked: &Option<T>, carried: &Option<T>) -> bool {
        asked.is_some() && asked != carried
    }
    if clash(&asked.gender, &carried.gender)
        || clash(&asked.min_age, &carried.min_age)
        || clash(&asked.max_age, &carried.max_age)
        || clash(&asked.religion, &carried.religion)
        || clash(&asked.city, &carried.city)
    {
        return Err(ApiError::bad_request(
            "cursor_mismatch",
            "the filters differ from the cursor's; start again without a cursor to change filters",
        ));
    }
    Ok(())
}
