//! What every handler shares: built once before the HTTP server starts.

use std::sync::Arc;

use aurum_schema::cursor::CursorCodec;
use aurum_schema::pool::{self, DbPool, PoolSet, PoolSettings};

use crate::auth::JwtKeys;
use crate::config::{Config, ConfigError};

#[derive(Clone)]
pub struct AppState {
    /// The pool of whoever holds this state: each HTTP worker gets its own
    /// (see `for_http_worker`); the long-lived actors share the first.
    pub db: DbPool,
    /// The message writer's own pool, apart from every reader's, so replay
    /// and REST can never take the connections persistence needs.
    pub writer_db: DbPool,
    /// Every pool above, the workers' included, for the ResourceSupervisor.
    pub pools: PoolSet,
    pub jwt: JwtKeys,
    pub cursors: CursorCodec,
    pub config: Arc<Config>,
    /// Per-user REST rate limits, shared by every HTTP worker.
    pub rest_limits: Arc<crate::rest_limits::RestLimits>,
    /// Each HTTP worker's pool settings, worked out (and checked) once.
    per_http_worker: PoolSettings,
    /// The bus between nodes, once the realtime side has started it.
    pub bus: Option<aurum_actors::bridge::BridgeHandle>,
    /// This node's sockets, once the realtime side has started.
    pub registry: Option<aurum_actors::registry::RegistryHandle>,
    /// The ResourceSupervisor, once started (and unless turned off).
    pub supervisor: Option<aurum_actors::supervisor::SupervisorHandle>,
    /// Whether new sockets are taken (draining, shedding), once started.
    pub admission: Option<Arc<aurum_actors::supervisor::Admission>>,
    /// Sockets connected now, once the realtime side has started.
    pub sockets: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let secret = config.jwt_secret()?.as_bytes().to_vec();
        let pools = config.pool_settings()?;
        // Installed before anything records: what comes earlier is lost.
        crate::metrics::recorder();
        let (db, writer_db) = (
            pool::build(&config.database_url, &pools.shared),
            pool::build(&config.database_url, &pools.writer),
        );
        let all = PoolSet::default();
        all.add("shared", &db);
        all.add("writer", &writer_db);
        Ok(Self {
            db,
            writer_db,
            pools: all,
            jwt: JwtKeys::new(&secret)
                .expecting(config.jwt_issuer.as_deref(), config.jwt_audience.as_deref()),
            cursors: CursorCodec::derive(&secret),
            rest_limits: Arc::new(crate::rest_limits::RestLimits::new(&config)),
            config: Arc::new(config),
            per_http_worker: pools.per_http_worker,
            bus: None,
            supervisor: None,
            registry: None,
            admission: None,
            sockets: None,
        })
    }

    /// The state for one HTTP worker, with a pool of its own. A connection's
    /// I/O is driven on the thread that opened it, so a pool per worker
    /// keeps each query on the worker's own thread instead of bouncing
    /// through another thread's runtime twice per query. Must be called on
    /// the worker's thread (actix-web's app factory runs there).
    pub fn for_http_worker(&self) -> Self {
        let db = pool::build(&self.config.database_url, &self.per_http_worker);
        self.pools.add("http_worker", &db);
        Self { db, ..self.clone() }
    }
}
