//! The PostgreSQL connection pool (bb8 over diesel-async).

use std::time::Duration;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

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
    /// PostgreSQL's `statement_timeout` on every connection of the pool:
    /// a statement that runs (or waits on a lock) longer is cancelled and
    /// fails, so a stuck query frees its connection instead of holding it
    /// and its caller for ever. Zero turns it off.
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 50,
            recycle_after: Duration::from_secs(3600),
            checkout_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Every statement the service runs is prepared once per connection, and
/// each one's plan shape is fixed by its SQL text: which filters a scroll
/// has picks its partial index, whatever the values. Under the default
/// `plan_cache_mode = auto` PostgreSQL still re-plans the scroll with the
/// parameters on every execution, because its generic estimate for the age
/// range loses to the custom plans' average; that planning doubled
/// PostgreSQL's CPU per request (docs/benchmarks.md). The plan tests
/// (`tests/it/explain.rs`, `tests/it/conversations.rs`) EXPLAIN the cached
/// statements of the profile and history endpoints under
/// `force_generic_plan` and fail if one loses its index, which is what makes
/// forcing it here safe; `store_messages` pins its own plans (migrations
/// 000005 and 000007).
///
/// `statement_timeout` goes in the same batch: one round trip per new
/// connection, none per checkout. A statement it cancels fails on its own
/// (its implicit transaction rolls back) and leaves the connection usable.
async fn establish_configured(url: &str, statement_timeout_ms: u128) -> ConnectionResult<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    conn.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan; SET statement_timeout = {statement_timeout_ms}"
    ))
    .await
    .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// Builds the pool without connecting: the first checkout connects, so the
/// service starts (and reports itself not ready) while the database is down.
pub fn build(database_url: &str, settings: &PoolSettings) -> DbPool {
    let mut manager_config = ManagerConfig::default();
    // `Verified` would add a `SELECT 1` round trip to every checkout, halving
    // the throughput of one-query endpoints; a dead connection instead fails
    // its query, which the HTTP layer answers with 503, and bb8 drops it.
    manager_config.recycling_method = RecyclingMethod::Fast;
    let statement_timeout_ms = settings.statement_timeout.as_millis();
    manager_config.custom_setup =
        Box::new(move |url| Box::pin(establish_configured(url, statement_timeout_ms)));
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
