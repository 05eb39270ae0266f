//! `POST /api/v1/dev/token {user_id}`: the web page's sign-in under `--dev`
//! only, so a new user picks a seeded member without a shell. Without
//! `--dev` the route does not match and the request is an ordinary 404:
//! in production the page takes a token from the caller's own auth.

use actix_web::guard::GuardContext;
use actix_web::web;
use aurum_schema::ids::UserId;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorBody};
use crate::openapi::{PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE};
use crate::state::AppState;

/// A day, as `aurum token` issues by default.
const DEV_TOKEN_TTL_SECS: u64 = 86_400;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DevTokenRequest {
    #[schema(minimum = 1)]
    user_id: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DevToken {
    token: String,
    user_id: i64,
}

/// The guard that mounts the route under `--dev` alone.
pub fn dev_only(ctx: &GuardContext<'_>) -> bool {
    ctx.app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.config.dev)
}

/// A member token for the web page's sign-in; mounted (and documented)
/// under `--dev` only.
#[utoipa::path(
    post,
    path = "/api/v1/dev/token",
    tag = "web",
    request_body = DevTokenRequest,
    responses(
        (status = 200, description = "A token valid for a day", body = DevToken),
        (status = 400, description = "`user_id` not a positive id (`invalid_user_id`) or a body that is not such an object (`invalid_json`)", body = ErrorBody),
        (status = 413, description = PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 415, description = UNSUPPORTED_MEDIA_TYPE, body = ErrorBody),
    ),
)]
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
