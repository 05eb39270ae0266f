//! `GET /api/v1/profiles/me`.

use actix_web::web;
use aurum_schema::models::profiles::{self, Profile};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn get_own_profile(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<web::Json<Profile>, ApiError> {
    let mut conn = state.db.get().await?;
    profiles::find(&mut conn, user.id)
        .await?
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found("you have no profile yet; create it with PUT"))
}
