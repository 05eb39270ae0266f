//! The PostgreSQL connection pool (bb8 over diesel-async).

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn<'a> = PooledConnection<'a, AsyncPgConnection>;
pub type PoolError = RunError;

/// Pool settings, read from the environment by the binary's config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// A connection is closed and replaced after this long, so server-side
    /// memory growth and failovers are picked up.
    pub recycle_after: Duration,
    /// How long a request waits for a free connection before giving up.
    pub checkout_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 50,
            recycle_after: Duration::from_secs(3600),
            checkout_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds the pool without connecting: the first checkout connects, so the
/// service starts (and reports itself not ready) while the database is down.
pub fn build(database_url: &str, settings: &PoolSettings) -> DbPool {
    let mut manager_config = ManagerConfig::default();
    // `Verified` would add a `SELECT 1` round trip to every checkout, halving
    // the throughput of one-query endpoints; a dead connection instead fails
    // its query, which the HTTP layer answers with 503, and bb8 drops it.
    manager_config.recycling_method = RecyclingMethod::Fast;
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, manager_config);
    Pool::builder()
        .max_size(settings.max_connections.max(1))
        .min_idle(None)
        .max_lifetime(Some(settings.recycle_after))
        .idle_timeout(Some(Duration::from_secs(600)))
        .connection_timeout(settings.checkout_timeout)
        .build_unchecked(manager)
}
