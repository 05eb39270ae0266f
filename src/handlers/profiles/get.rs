//! `GET /api/v1/profiles/{id}`: an approved profile, or one's own, or any
//! profile for an admin.

use actix_web::web;
use aurum_schema::ids::UserId;
use aurum_schema::models::profiles;

use super::presence::{ProfileView, with_presence};
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{DB_UNAVAILABLE, UNAUTHORIZED};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/v1/profiles/{id}",
    tag = "profiles",
    params(("id" = i64, Path, minimum = 1, description = "The profile's (its member's) id")),
    responses(
        (status = 200, description = "The profile with its member's presence", body = ProfileView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "No such profile, or one not approved that is not the caller's (`not_found`)", body = ErrorBody),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_profile(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<web::Json<ProfileView>, ApiError> {
    let not_found = || ApiError::not_found("no such profile");
    let id = UserId::parse(&path).ok_or_else(not_found)?;
    let mut conn = state.db.get().await?;
    let profile = crate::metrics::timed("profiles_find", profiles::find(&mut conn, id))
        .await?
        .ok_or_else(not_found)?;
    drop(conn);
    // Unapproved profiles are hidden as if absent, so their existence leaks nothing.
    if profile.is_approved() || profile.id == user.id.0 || user.admin {
        let mut shown = with_presence(&state, vec![profile]).await;
        shown.pop().map(web::Json).ok_or_else(not_found)
    } else {
        Err(not_found())
    }
}
