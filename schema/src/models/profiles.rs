//! `profiles`: members' profiles, the scroll and the batch load.

use chrono::{DateTime, Months, NaiveDate, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Int8, Text, Timestamptz};
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::json_time;
use crate::models::audit_logs::{self, NewAuditLog};
use crate::pg_time::PgInstant;
use crate::schema::profiles;

/// `verification_status = 'approved'` with the value as SQL text, not a bind
/// parameter, so that every plan, including a prepared statement's generic
/// plan, can prove the partial scroll indexes' predicate. (diesel's `sql()`
/// literal would do that too, but marks the whole query as not cacheable, so
/// it would be parsed and planned again on every request.)
#[derive(Debug, Clone, Copy, QueryId, diesel::expression::ValidGrouping)]
struct Approved;

impl diesel::Expression for Approved {
    type SqlType = Bool;
}

impl diesel::AppearsOnTable<profiles::table> for Approved {}
impl diesel::SelectableExpression<profiles::table> for Approved {}

impl QueryFragment<Pg> for Approved {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("\"profiles\".\"verification_status\" = 'approved'");
        Ok(())
    }
}

/// `(created_at, id) < (key)`: a row comparison is what lets PostgreSQL start
/// the index scan right at the key, so a deep page costs what the first does.
#[derive(Debug, Clone, Copy, diesel::expression::ValidGrouping)]
struct Before {
    created_at: DateTime<Utc>,
    id: i64,
}

impl QueryId for Before {
    type QueryId = ();
    // The SQL is the same for every key; the statement cache keys on it.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::Expression for Before {
    type SqlType = Bool;
}

impl diesel::AppearsOnTable<profiles::table> for Before {}
impl diesel::SelectableExpression<profiles::table> for Before {}

impl QueryFragment<Pg> for Before {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(\"profiles\".\"created_at\", \"profiles\".\"id\") < (");
        out.push_bind_param::<Timestamptz, _>(&self.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Int8, _>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, deserialize::FromSqlRow, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
}

impl Gender {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Male => "male",
            Self::Female => "female",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "male" => Some(Self::Male),
            "female" => Some(Self::Female),
            _ => None,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, deserialize::FromSqlRow, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VerificationStatus {
    Pending,
    Approved,
    Rejected,
}

impl VerificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// Read from the text column without allocating: every scrolled profile
/// carries both, and a `String` each was two of the row's seven allocations.
/// The columns' CHECK constraints admit only the variants' names.
impl FromSql<Text, Pg> for Gender {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let text = std::str::from_utf8(bytes.as_bytes())?;
        Self::parse(text).ok_or_else(|| format!("unknown gender {text:?}").into())
    }
}

impl FromSql<Text, Pg> for VerificationStatus {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let text = std::str::from_utf8(bytes.as_bytes())?;
        Self::parse(text).ok_or_else(|| format!("unknown verification status {text:?}").into())
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = profiles, check_for_backend(diesel::pg::Pg))]
pub struct Profile {
    pub id: i64,
    pub display_name: String,
    pub gender: Gender,
    #[serde(serialize_with = "json_time::date")]
    pub date_of_birth: NaiveDate,
    pub religion: String,
    pub city: String,
    pub occupation: Option<String>,
    pub bio: String,
    pub verification_status: VerificationStatus,
    #[serde(serialize_with = "json_time::timestamp")]
    #[diesel(deserialize_as = PgInstant)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "json_time::timestamp")]
    #[diesel(deserialize_as = PgInstant)]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "json_time::timestamp")]
    #[diesel(deserialize_as = PgInstant)]
    pub last_active_at: DateTime<Utc>,
}

impl Profile {
    pub fn is_approved(&self) -> bool {
        self.verification_status == VerificationStatus::Approved
    }
}

/// What a member writes about themselves; validated by the caller.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = profiles)]
pub struct ProfileForm {
    pub display_name: String,
    pub gender: String,
    pub date_of_birth: NaiveDate,
    pub religion: String,
    pub city: String,
    pub occupation: Option<String>,
    pub bio: String,
}

/// The scroll's filters. They travel inside the cursor, so a page-2 request
/// gets exactly the filters page 1 had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrollFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub religion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// The position of the last row a page returned, in sort order
/// (`created_at DESC, id DESC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrollKey {
    /// Microseconds since the epoch: PostgreSQL's own precision, so the key
    /// compares exactly with the stored value.
    pub created_at_us: i64,
    pub id: i64,
}

impl ScrollKey {
    pub fn of(profile: &Profile) -> Self {
        Self {
            created_at_us: profile.created_at.timestamp_micros(),
            id: profile.id,
        }
    }
}

/// The latest date of birth of someone at least `age` years old on `today`.
fn born_on_or_before(today: NaiveDate, age: u16) -> Option<NaiveDate> {
    today.checked_sub_months(Months::new(u32::from(age) * 12))
}

/// One page of approved profiles other than the viewer's, newest first,
/// strictly after `after`. Returns up to `limit` rows; ask for one more than
/// a page to learn whether another page exists.
pub async fn scroll(
    conn: &mut AsyncPgConnection,
    viewer: UserId,
    filter: &ScrollFilter,
    after: Option<ScrollKey>,
    limit: i64,
    today: NaiveDate,
) -> QueryResult<Vec<Profile>> {
    let mut query = profiles::table
        .select(Profile::as_select())
        .filter(Approved)
        .filter(profiles::id.ne(viewer.0))
        .into_boxed();
    if let Some(gender) = filter.gender {
        query = query.filter(profiles::gender.eq(gender.as_str()));
    }
    if let Some(city) = &filter.city {
        query = query.filter(profiles::city.eq(city.clone()));
    }
    if let Some(religion) = &filter.religion {
        query = query.filter(profiles::religion.eq(religion.clone()));
    }
    if let Some(latest) = filter.min_age.and_then(|age| born_on_or_before(today, age)) {
        query = query.filter(profiles::date_of_birth.le(latest));
    }
    if let Some(earliest) = filter
        .max_age
        .and_then(|age| born_on_or_before(today, age.saturating_add(1)))
    {
        query = query.filter(profiles::date_of_birth.gt(earliest));
    }
    if let Some(key) = after {
        let created_at = DateTime::from_timestamp_micros(key.created_at_us).unwrap_or_default();
        query = query.filter(Before {
            created_at,
            id: key.id,
        });
    }
    query
        .order((profiles::created_at.desc(), profiles::id.desc()))
        .limit(limit)
        .load(conn)
        .await
}

/// Approved profiles among `ids`, in one query, in no particular order.
pub async fn load_approved(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<Vec<Profile>> {
    profiles::table
        .select(Profile::as_select())
        .filter(profiles::id.eq_any(ids))
        .filter(Approved)
        .load(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: UserId) -> QueryResult<Option<Profile>> {
    profiles::table
        .find(id.0)
        .select(Profile::as_select())
        .first(conn)
        .await
        .optional()
}

/// Creates or replaces the member's own profile. Any change sends it back to
/// `pending` for review.
pub async fn upsert_own(
    conn: &mut AsyncPgConnection,
    id: UserId,
    form: &ProfileForm,
) -> QueryResult<Profile> {
    diesel::insert_into(profiles::table)
        .values((profiles::id.eq(id.0), form))
        .on_conflict(profiles::id)
        .do_update()
        .set((
            profiles::display_name.eq(excluded(profiles::display_name)),
            profiles::gender.eq(excluded(profiles::gender)),
            profiles::date_of_birth.eq(excluded(profiles::date_of_birth)),
            profiles::religion.eq(excluded(profiles::religion)),
            profiles::city.eq(excluded(profiles::city)),
            profiles::occupation.eq(excluded(profiles::occupation)),
            profiles::bio.eq(excluded(profiles::bio)),
            profiles::verification_status.eq(VerificationStatus::Pending.as_str()),
            profiles::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Profile::as_returning())
        .get_result(conn)
        .await
}

/// Sets a profile's verification status and records who did it, atomically.
/// `None` when no such profile exists (and nothing is written).
pub async fn set_verification(
    conn: &mut AsyncPgConnection,
    actor: UserId,
    id: UserId,
    status: VerificationStatus,
    reason: Option<&str>,
) -> QueryResult<Option<Profile>> {
    conn.transaction(async |conn| {
        let updated = diesel::update(profiles::table.find(id.0))
            .set((
                profiles::verification_status.eq(status.as_str()),
                profiles::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Profile::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        if updated.is_some() {
            let entry = NewAuditLog {
                actor_id: actor.0,
                action: "profile.verification",
                target_type: "profile",
                target_id: id.0,
                details: serde_json::json!({ "status": status.as_str(), "reason": reason }),
            };
            audit_logs::insert(conn, &entry).await?;
        }
        Ok(updated)
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn age_bounds_follow_birthdays() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(
            born_on_or_before(today, 25),
            NaiveDate::from_ymd_opt(2001, 11, 27)
        );
        // Leap day: someone born 2000-02-29 turns 26 on 2026-02-28.
        let feb = NaiveDate::from_ymd_opt(2026, 2, 28).unwrap();
        assert_eq!(born_on_or_before(feb, 26), NaiveDate::from_ymd_opt(2000, 2, 28));
    }
}
