//! `GET /api/v1/matching/profiles/batch?profile_ids=1,2`: the profiles in a
//! viewport, in one query, in the order asked.

use std::collections::{HashMap, HashSet};

use actix_web::web;
use aurum_schema::models::profiles::{self, Profile};
use serde::{Deserialize, Serialize};

use super::presence::{ProfileView, with_presence};
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{PageJson, SizeHint, non_blank};
use crate::openapi::{DB_UNAVAILABLE, RATE_LIMITED, UNAUTHORIZED};
use crate::rest_limits::Endpoint;
use crate::state::AppState;

const MAX_IDS: usize = 50;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// 1 to 50 positive ids, comma-separated; a repeated id is answered once.
    #[param(required = true, value_type = String, pattern = r"^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}){0,49}$", example = "101,102")]
    profile_ids: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    profiles: Vec<ProfileView>,
    missing: Vec<i64>,
}

/// Approved profiles by id, in the order asked; the others as `missing`.
#[utoipa::path(
    get,
    path = "/api/v1/matching/profiles/batch",
    tag = "profiles",
    params(BatchQuery),
    responses(
        (status = 200, description = "The profiles found and the ids not found", body = BatchResponse),
        (status = 400, description = "`profile_ids` missing, not ids, or more than 50 (`invalid_profile_ids`); a repeated parameter (`invalid_query`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn batch_profiles(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<BatchQuery>,
) -> Result<PageJson<BatchResponse>, ApiError> {
    state.rest_limits.take(Endpoint::Batch, user.id)?;
    let ids = parse_ids(query.profile_ids.as_deref())?;
    let mut conn = state.db.get().await?;
    let found = crate::metrics::timed("profiles_batch", profiles::load_approved(&mut conn, &ids)).await?;
    drop(conn);
    let mut by_id: HashMap<i64, Profile> = found.into_iter().map(|p| (p.id, p)).collect();
    let mut ordered = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match by_id.remove(&id) {
            Some(profile) => ordered.push(profile),
            None => missing.push(id),
        }
    }
    let response = BatchResponse {
        profiles: with_presence(&state, ordered).await,
        missing,
    };
    static SIZE: SizeHint = SizeHint::new();
    Ok(PageJson::new(response, &SIZE))
}

/// `1,2,3` -> `[1, 2, 3]`: 1..=50 positive ids; a repeated id is kept once,
/// at its first position.
fn parse_ids(raw: Option<&str>) -> Result<Vec<i64>, ApiError> {
    let raw = non_blank(raw)
        .ok_or_else(|| ApiError::bad_request("invalid_profile_ids", "`profile_ids` is required"))?;
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    if parts.len() > MAX_IDS {
        return Err(ApiError::bad_request(
            "invalid_profile_ids",
            format!("at most {MAX_IDS} ids per request, got {}", parts.len()),
        ));
    }
    let mut seen = HashSet::with_capacity(parts.len());
    let mut ids = Vec::with_capacity(parts.len());
    for part in parts {
        let id = part.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::bad_request("invalid_profile_ids", format!("{part:?} is not a profile id"))
        })?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    Ok(ids)
}
