//! `GET /api/v1/matching/profiles/batch?profile_ids=1,2`: the profiles in a
//! viewport, in one query, in the order asked.

use std::collections::{HashMap, HashSet};

use actix_web::web;
use aurum_schema::models::profiles::{self, Profile};
use serde::{Deserialize, Serialize};

use super::presence::{ProfileView, with_presence};
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::handlers::{PageJson, SizeHint, non_blank};
use crate::rest_limits::Endpoint;
use crate::state::AppState;

const MAX_IDS: usize = 50;

#[derive(Debug, Deserialize)]
pub struct BatchQuery {
    profile_ids: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BatchResponse {
    profiles: Vec<ProfileView>,
    missing: Vec<i64>,
}

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
