//! The PostgreSQL connection pool (bb8 over diesel-async).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError as ManagerError, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

pub type DbConn<'a> = PooledConnection<'a, Manager>;
pub type PoolError = RunError<ManagerError>;

/// diesel-async's connection manager, with one thing more: a pool that was
/// replaced is retired, and from then on every connection it hands back
/// counts as broken, so bb8 closes it instead of keeping it idle.
pub struct Manager {
    inner: AsyncDieselConnectionManager<AsyncPgConnection>,
    retired: Arc<AtomicBool>,
}

impl ManageConnection for Manager {
    type Connection = AsyncPgConnection;
    type Error = ManagerError;

    fn connect(&self) -> impl Future<Output = Result<AsyncPgConnection, ManagerError>> + Send {
        self.inner.connect()
    }

    fn is_valid(
        &self,
        conn: &mut AsyncPgConnection,
    ) -> impl Future<Output = Result<(), ManagerError>> + Send {
        self.inner.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut AsyncPgConnection) -> bool {
        self.retired.load(Ordering::Relaxed) || self.inner.has_broken(conn)
    }
}

/// Pool settings, read from the environment by the binary's config.
/// A connection pool that can be rebuilt while in use (cheap to clone; the
/// clones share it).
///
/// bb8 closes connections only when they break, grow old or sit idle past
/// `idle_timeout`; nothing from outside can close them. A rebuild swaps in
/// a fresh, empty pool: the old one's idle connections close at once, the
/// ones checked out when they come back, and new checkouts connect afresh.
/// The ResourceSupervisor rebuilds a pool to hand its idle connections back
/// under memory pressure, and when its health checks keep failing (a
/// failover that left connections hanging).
#[derive(Clone)]
pub struct DbPool {
    shared: Arc<Rebuildable>,
}

struct Rebuildable {
    url: String,
    settings: PoolSettings,
    current: RwLock<Current>,
}

/// The pool in use, and the flag that retires it.
#[derive(Clone)]
struct Current {
    pool: Pool<Manager>,
    retired: Arc<AtomicBool>,
}

impl DbPool {
    /// A connection, within the pool's checkout timeout.
    ///
    /// # Errors
    ///
    /// When none is free in time or a new one cannot be made.
    pub async fn get(&self) -> Result<DbConn<'static>, PoolError> {
        let pool = self.current().pool;
        pool.get_owned().await
    }

    /// Connections now: open, idle, and the checkout statistics.
    pub fn state(&self) -> bb8::State {
        self.current().pool.state()
    }

    /// The most connections it opens.
    pub fn max_size(&self) -> u32 {
        self.current().pool.config().max_size
    }

    /// PostgreSQL's `statement_timeout` on its connections (zero: none).
    pub fn statement_timeout(&self) -> Duration {
        self.shared.settings.statement_timeout
    }

    /// Replaces the pool with a fresh, empty one (see [`DbPool`]). Builds
    /// without connecting: connections are made by the next checkouts, on
    /// their callers' threads, as before.
    pub fn rebuild(&self) {
        let fresh = build_pool(&self.shared.url, &self.shared.settings);
        let old = std::mem::replace(
            &mut *self
                .shared
                .current
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        old.retired.store(true, Ordering::Relaxed);
        // The connections checked out keep the old pool alive, and with it
        // its idle ones: take those out and drop them, broken as they count
        // now, so they close at once. A checkout can find none, but never
        // waits for one: only idle connections are taken.
        let idle = old.pool.state().idle_connections;
        let pool = old.pool;
        if idle > 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let mut taken = Vec::new();
                for _ in 0..idle {
                    if pool.state().idle_connections == 0 {
                        break;
                    }
                    match pool.get().await {
                        Ok(conn) => taken.push(conn),
                        Err(_) => break,
                    }
                }
                drop(taken);
            });
        }
    }

    /// A health check: `SELECT 1` on an idle connection, within `within`.
    /// Only idle connections are tried: a pool with none has nothing a
    /// rebuild would replace (or is busy, which is not broken), and a
    /// checkout that had to connect would open the connection on the
    /// checker's thread instead of its user's.
    pub async fn check(&self, within: Duration) -> PoolHealth {
        use diesel_async::RunQueryDsl;
        let pool = self.current().pool;
        if pool.state().idle_connections == 0 {
            return PoolHealth::Unchecked;
        }
        let probe = async {
            let mut conn = pool.get_owned().await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut *conn).await.ok()
        };
        match tokio::time::timeout(within, probe).await {
            Ok(Some(_)) => PoolHealth::Healthy,
            Ok(None) | Err(_) => PoolHealth::Failed,
        }
    }

    /// The same for every clone of this pool, different for another pool.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    fn current(&self) -> Current {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What a health check found (see [`DbPool::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolHealth {
    Healthy,
    Failed,
    /// No idle connection to try.
    Unchecked,
}

/// Every pool of the process, named, for the ResourceSupervisor (cheap to
/// clone; the clones share the list).
#[derive(Clone, Default)]
pub struct PoolSet {
    pools: Arc<Mutex<Vec<(&'static str, DbPool)>>>,
}

impl std::fmt::Debug for PoolSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.all().into_iter().map(|(name, _)| name).collect();
        f.debug_struct("PoolSet").field("pools", &names).finish()
    }
}

impl PoolSet {
    pub fn add(&self, name: &'static str, pool: &DbPool) {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, pool.clone()));
    }

    pub fn all(&self) -> Vec<(&'static str, DbPool)> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

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
    DbPool {
        shared: Arc::new(Rebuildable {
            url: database_url.to_owned(),
            settings: settings.clone(),
            current: RwLock::new(build_pool(database_url, settings)),
        }),
    }
}

fn build_pool(database_url: &str, settings: &PoolSettings) -> Current {
    let mut manager_config = ManagerConfig::default();
    // `Verified` would add a `SELECT 1` round trip to every checkout, halving
    // the throughput of one-query endpoints; a dead connection instead fails
    // its query, which the HTTP layer answers with 503, and bb8 drops it.
    manager_config.recycling_method = RecyclingMethod::Fast;
    let statement_timeout_ms = settings.statement_timeout.as_millis();
    manager_config.custom_setup =
        Box::new(move |url| Box::pin(establish_configured(url, statement_timeout_ms)));
    let retired = Arc::new(AtomicBool::new(false));
    let manager = Manager {
        inner: AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            database_url,
            manager_config,
        ),
        retired: Arc::clone(&retired),
    };
    let pool = Pool::builder()
        .max_size(settings.max_connections.max(1))
        .min_idle(None)
        .max_lifetime(Some(settings.recycle_after))
        .idle_timeout(Some(Duration::from_secs(600)))
        .connection_timeout(settings.checkout_timeout)
        .build_unchecked(manager);
    Current { pool, retired }
}
