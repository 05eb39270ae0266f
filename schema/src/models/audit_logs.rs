//! `audit_logs`: who did what to which record, append-only.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::schema::audit_logs;

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::pg::Pg))]
pub struct AuditLog {
    pub id: i64,
    pub actor_id: i64,
    pub action: String,
    pub target_type: String,
    pub target_id: i64,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = audit_logs)]
pub struct NewAuditLog<'a> {
    pub actor_id: i64,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: i64,
    pub details: serde_json::Value,
}

pub async fn insert(conn: &mut AsyncPgConnection, entry: &NewAuditLog<'_>) -> QueryResult<AuditLog> {
    diesel::insert_into(audit_logs::table)
        .values(entry)
        .returning(AuditLog::as_returning())
        .get_result(conn)
        .await
}

/// Entries about one record within a time window, oldest first. The time
/// range is what the BRIN index on `created_at` serves.
pub async fn list_for_target(
    conn: &mut AsyncPgConnection,
    target_type: &str,
    target_id: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> QueryResult<Vec<AuditLog>> {
    audit_logs::table
        .filter(audit_logs::created_at.ge(since))
        .filter(audit_logs::created_at.lt(until))
        .filter(audit_logs::target_type.eq(target_type))
        .filter(audit_logs::target_id.eq(target_id))
        .order((audit_logs::created_at.asc(), audit_logs::id.asc()))
        .select(AuditLog::as_select())
        .load(conn)
        .await
}
