//! `PUT /api/v1/profiles/me`: create or replace one's own profile, which
//! then waits for review again.

use actix_web::web;
use aurum_schema::models::profiles::{self, Gender, Profile, ProfileForm};
use chrono::{Months, NaiveDate};
use serde::Deserialize;

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{DB_UNAVAILABLE, PAYLOAD_TOO_LARGE, UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE};
use crate::state::AppState;

const MIN_AGE_YEARS: u32 = 18;

/// Text is trimmed before its length is checked.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    #[schema(min_length = 1, max_length = 100, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    display_name: String,
    #[schema(value_type = Gender)]
    gender: String,
    /// At least 18 years ago, not before 1900.
    date_of_birth: NaiveDate,
    #[schema(min_length = 1, max_length = 50, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    religion: String,
    #[schema(min_length = 1, max_length = 100, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    city: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    occupation: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    bio: String,
}

/// Creates or replaces the caller's profile, which goes back to `pending`.
#[utoipa::path(
    put,
    path = "/api/v1/profiles/me",
    tag = "profiles",
    request_body = ProfileInput,
    responses(
        (status = 200, description = "The profile as stored", body = Profile),
        (status = 400, description = "A field out of range (`invalid_profile`) or a body that is not such an object (`invalid_json`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = PAYLOAD_TOO_LARGE, body = ErrorBody),
        (status = 415, description = UNSUPPORTED_MEDIA_TYPE, body = ErrorBody),
        (status = 503, description = DB_UNAVAILABLE, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn put_own_profile(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<ProfileInput>,
) -> Result<web::Json<Profile>, ApiError> {
    let form = validate(body.into_inner())?;
    let mut conn = state.db.get().await?;
    let profile = crate::metrics::timed(
        "profiles_upsert_own",
        profiles::upsert_own(&mut conn, user.id, &form),
    )
    .await?;
    Ok(web::Json(profile))
}

fn validate(input: ProfileInput) -> Result<ProfileForm, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_profile", message);
    let text = |name: &str, value: String, max: usize| {
        let value = value.trim().to_owned();
        let chars = value.chars().count();
        if chars == 0 || chars > max {
            Err(invalid(format!("`{name}` must be 1 to {max} characters")))
        } else if value.contains('\0') {
            // PostgreSQL's text cannot hold it: the insert would fail (a 500).
            Err(invalid(format!("`{name}` cannot contain NUL (U+0000)")))
        } else {
            Ok(value)
        }
    };
    let gender = Gender::parse(&input.gender)
        .ok_or_else(|| invalid("`gender` must be `male` or `female`".to_owned()))?;
    let today = chrono::Utc::now().date_naive();
    let adult_born_by = today.checked_sub_months(Months::new(MIN_AGE_YEARS * 12));
    if adult_born_by.is_none_or(|limit| input.date_of_birth > limit)
        || input.date_of_birth < NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default()
    {
        return Err(invalid(format!(
            "members must be at least {MIN_AGE_YEARS} years old"
        )));
    }
    if input.bio.chars().count() > 2000 {
        return Err(invalid("`bio` must be at most 2000 characters".to_owned()));
    }
    if input.bio.contains('\0') {
        return Err(invalid("`bio` cannot contain NUL (U+0000)".to_owned()));
    }
    Ok(ProfileForm {
        display_name: text("display_name", input.display_name, 100)?,
        gender: gender.as_str().to_owned(),
        date_of_birth: input.date_of_birth,
        religion: text("religion", input.religion, 50)?,
        city: text("city", input.city, 100)?,
        occupation: input.occupation.map(|o| text("occupation", o, 100)).transpose()?,
        bio: input.bio.trim().to_owned(),
    })
}
