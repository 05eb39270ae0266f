//! `POST /api/v1/admin/profiles/{id}/verification` `{status, reason?}`.

use actix_web::web;
use aurum_schema::ids::UserId;
use aurum_schema::models::profiles::{self, Profile, VerificationStatus};
use serde::Deserialize;

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationInput {
    status: VerificationStatus,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn verify_profile(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    path: web::Path<String>,
    body: web::Json<VerificationInput>,
) -> Result<web::Json<Profile>, ApiError> {
    let not_found = || ApiError::not_found("no such profile");
    let id = UserId::parse(&path).ok_or_else(not_found)?;
    if body.reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "`reason` must be at most 1000 characters",
        ));
    }
    // PostgreSQL's text cannot hold NUL: the insert would fail (a 500).
    if body.reason.as_ref().is_some_and(|r| r.contains('\0')) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "`reason` cannot contain NUL (U+0000)",
        ));
    }
    let mut conn = state.db.get().await?;
    let verification =
        profiles::set_verification(&mut conn, admin.id, id, body.status, body.reason.as_deref());
    crate::metrics::timed("profiles_set_verification", verification)
        .await?
        .map(web::Json)
        .ok_or_else(not_found)
}
