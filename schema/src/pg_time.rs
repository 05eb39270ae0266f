//! `timestamptz` read straight from PostgreSQL's binary value.
//!
//! diesel decodes a `DateTime<Utc>` by building 2000-01-01 with chrono and
//! adding a `Duration` to it through the calendar arithmetic; a scroll page
//! decodes sixty timestamps, and in a profile of the endpoint that work was
//! about 3 % of its CPU. The value on the wire is already microseconds since
//! 2000-01-01 UTC, so shifting it to the Unix epoch and calling chrono's
//! epoch constructor gives the same instant for a fraction of the cost.
//! `tests/it/profiles_own.rs` checks the result against PostgreSQL's own text.

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::Timestamptz;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A timestamp column's value; use it as `#[diesel(deserialize_as = PgInstant)]`
/// on a `DateTime<Utc>` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromSqlRow)]
pub struct PgInstant(pub DateTime<Utc>);

impl FromSql<Timestamptz, Pg> for PgInstant {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let bytes: [u8; 8] = value
            .as_bytes()
            .try_into()
            .map_err(|_| "a timestamptz value is 8 bytes")?;
        // `infinity` and `-infinity` are i64::MAX and MIN: they overflow here
        // or fall outside chrono's range, and are refused as diesel does.
        i64::from_be_bytes(bytes)
            .checked_add(PG_EPOCH_UNIX_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .map(Self)
            .ok_or_else(|| "timestamp outside the range chrono represents".into())
    }
}

impl From<PgInstant> for DateTime<Utc> {
    fn from(instant: PgInstant) -> Self {
        instant.0
    }
}
