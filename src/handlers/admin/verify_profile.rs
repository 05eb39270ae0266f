//! `POST /api/v1/admin/profiles/{id}/verification` `{status, reason?}`.

use actix_web::web;
use aurum_schema::ids::UserId;
use aurum_schema::models::profiles::{self, Profile, VerificationStatus};
use serde::Deserialize;

use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{DB_UNAVAILABLE, PAYLOAD_TOO_LARGE, UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationInput {
    status: VerificationStatus,
    /// Written to the audit log.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    reason: Option<String>,
}

/// Sets a profile's review status (admin role), recorded in `audit_logs`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/profiles/{id}/verification",
    tag = "admin",
    params(("id" = i64, Path, minimum = 1, description = "The profile's id")),
    request_body = VerificationInput,
    responses(
        (status = 200, description = "The profile as it now is", body = Profile),
        (status = 400, description = "A reason too long or holding NUL (`invalid_reason`), or a body that is not such an object (`invalid_json`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "The token lacks the admin role (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ErrorBody),
        (status = 413, description = PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 415, description = UNSUPPORTED_MEDIA_TYPE, body = ErrorBody),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
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
