//! `GET /api/v1/profiles/me`: one's own profile, shown as everyone else's
//! is (with presence).

use actix_web::web;
use aurum_schema::models::profiles;

use super::presence::{ProfileView, with_presence};
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{DB_UNAVAILABLE, UNAUTHORIZED};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/v1/profiles/me",
    tag = "profiles",
    responses(
        (status = 200, description = "The caller's profile, whatever its review status", body = ProfileView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "The caller has no profile yet (`not_found`)", body = ErrorBody),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_own_profile(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<web::Json<ProfileView>, ApiError> {
    let not_found = || ApiError::not_found("you have no profile yet; create it with PUT");
    let mut conn = state.db.get().await?;
    let profile = crate::metrics::timed("profiles_find", profiles::find(&mut conn, user.id))
        .await?
        .ok_or_else(not_found)?;
    drop(conn);
    let mut shown = with_presence(&state, vec![profile]).await;
    shown.pop().map(web::Json).ok_or_else(not_found)
}
