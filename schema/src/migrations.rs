//! Embedded migrations, run through diesel's synchronous harness.
//!
//! diesel-async's `AsyncMigrationHarness` blocks on a runtime and panics on
//! actix's single-threaded one, so migrations run on a plain thread through
//! `AsyncConnectionWrapper`, which then drives its own runtime.

use diesel::migration::MigrationVersion;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// The session-level advisory lock every migration run holds ("aurum_mg";
/// the message writer's ordering lock is "aurum_ms"). Twenty pods started
/// with `MIGRATE_ON_START`, or two Jobs, would otherwise race to create
/// diesel's bookkeeping table and apply the same migration twice.
const MIGRATION_LOCK: i64 = 7_022_645_042_625_867_111;

type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Run(String),
    #[error("migration thread panicked")]
    Panicked,
}

/// Which way to move the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Apply every pending migration.
    Up,
    /// Revert every applied migration.
    DownAll,
}

/// Runs migrations on a dedicated thread and returns the versions it touched.
/// Safe to call from inside any async runtime: it never blocks that runtime's
/// own thread with a nested `block_on`.
pub fn run(database_url: &str, direction: Direction) -> Result<Vec<String>, MigrationError> {
    let url = database_url.to_owned();
    std::thread::spawn(move || run_on_this_thread(&url, direction))
        .join()
        .map_err(|_| MigrationError::Panicked)?
}

fn run_on_this_thread(url: &str, direction: Direction) -> Result<Vec<String>, MigrationError> {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = SyncConnection::establish(url)?;
    // Held on this connection, the one the harness migrates on, for the
    // whole run: a second run waits here, then finds nothing pending. A
    // session lock rather than a transaction's: diesel runs each migration
    // in a transaction of its own.
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .map_err(|e| MigrationError::Run(format!("cannot take the migration lock: {e}")))?;
    let result = match direction {
        Direction::Up => conn.run_pending_migrations(MIGRATIONS),
        Direction::DownAll => conn.revert_all_migrations(MIGRATIONS),
    }
    .map(|versions: Vec<MigrationVersion<'_>>| versions.iter().map(ToString::to_string).collect())
    .map_err(|e| MigrationError::Run(e.to_string()));
    // Released whatever the outcome; closing the connection would release
    // it too, so a failed unlock only matters for the error it reports.
    let unlocked = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .map_err(|e| MigrationError::Run(format!("cannot release the migration lock: {e}")));
    let versions = result?;
    unlocked?;
    Ok(versions)
}

/// Creates the database `database_url` names when it does not exist yet, by
/// way of the server's `postgres` maintenance database. Lets a fresh machine
/// go from a bare server to a migrated schema without the `psql` client.
pub async fn ensure_database(database_url: &str) -> Result<bool, MigrationError> {
    use diesel::sql_types::{Bool, Text};
    use diesel_async::{AsyncConnection, RunQueryDsl};

    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Bool)]
        exists: bool,
    }

    let (maintenance_url, name) = split_database_name(database_url)
        .ok_or_else(|| MigrationError::Run(format!("no database name in {database_url:?}")))?;
    let mut conn = AsyncPgConnection::establish(&maintenance_url).await?;
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(&name)
            .get_result(&mut conn)
            .await
            .map_err(|e| MigrationError::Run(e.to_string()))?;
    if found.exists {
        return Ok(false);
    }
    // Identifiers cannot be bound; quote it the way PostgreSQL does.
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut conn)
        .await
        .map_err(|e| MigrationError::Run(e.to_string()))?;
    Ok(true)
}

/// `postgres://h/db?x=1` -> (`postgres://h/postgres?x=1`, `db`).
fn split_database_name(url: &str) -> Option<(String, String)> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://")? + 3;
    let slash = authority_start + base[authority_start..].find('/')?;
    let name = &base[slash + 1..];
    if name.is_empty() {
        return None;
    }
    let mut maintenance = format!("{}/postgres", &base[..slash]);
    if let Some(query) = query {
        maintenance.push('?');
        maintenance.push_str(query);
    }
    Some((maintenance, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_database_names() {
        assert_eq!(
            split_database_name("postgres://u@h:5432/aurum?sslmode=disable"),
            Some((
                "postgres://u@h:5432/postgres?sslmode=disable".to_owned(),
                "aurum".to_owned()
            ))
        );
        assert_eq!(split_database_name("postgres://h"), None);
        assert_eq!(split_database_name("postgres://h/"), None);
    }
}
