//! `POST /api/v1/dev/token {user_id}`: the web page's sign-in under `--dev`
//! only, so a new user picks a seeded member without a shell. Without
//! `--dev` the route does not match and the request is an ordinary 404:
//! in production the page takes a token from the caller's own auth.

use actix_web::guard::GuardContext;
use actix_web::web;
use aurum_schema::ids::UserId;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// A day, as `aurum token` issues by default.
const DEV_TOKEN_TTL_SECS: u64 = 86_400;

#[derive(Debug, Deserialize)]
pub struct DevTokenRequest {
    user_id: i64,
}

#[derive(Debug, Serialize)]
pub struct DevToken {
    token: String,
    user_id: i64,
}

/// The guard that mounts the route under `--dev` alone.
pub fn dev_only(ctx: &GuardContext<'_>) -> bool {
    ctx.app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.config.dev)
}

pub async fn create_dev_token(
    state: web::Data<AppState>,
    body: web::Json<DevTokenRequest>,
) -> Result<web::Json<DevToken>, ApiError> {
    let user = UserId::parse(&body.user_id.to_string())
        .ok_or_else(|| ApiError::bad_request("invalid_user_id", "`user_id` must be a positive id"))?;
    let token = state
        .jwt
        .issue(user, false, DEV_TOKEN_TTL_SECS)
        .map_err(|_| ApiError::internal())?;
    Ok(web::Json(DevToken {
        token,
        user_id: body.user_id,
    }))
}
