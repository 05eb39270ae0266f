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
    use diesel::Connection;
    let mut conn = SyncConnection::establish(url)?;
    let versions: Vec<MigrationVersion<'_>> = match direction {
        Direction::Up => conn.run_pending_migrations(MIGRATIONS),
        Direction::DownAll => conn.revert_all_migrations(MIGRATIONS),
    }
    .map_err(|e| MigrationError::Run(e.to_string()))?;
    Ok(versions.iter().map(ToString::to_string).collect())
}
