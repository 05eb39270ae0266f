//! `/health`, `/health/live`, `/health/ready`.

use actix_web::{HttpResponse, web};
use aurum_actors::supervisor::{Action, Resources};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    #[schema(value_type = ReadyStatus)]
    status: &'static str,
    database: bool,
    draining: bool,
}

/// `/health/ready`'s verdict.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used: `Ready` writes the names
enum ReadyStatus {
    Ok,
    Draining,
    Unavailable,
}

/// The process is up and answering.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = Live)),
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live { status: "ok" })
}

/// Ready for traffic: the database answers within the pool's timeout, and
/// the node is not draining (SIGTERM: the load balancer is to stop sending).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the database answers and the node is not draining", body = Ready),
        (status = 503, description = "Not ready: draining or the database unreachable", body = Ready),
    ),
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let draining = is_draining(&state);
    let database = database_ok(&state).await;
    let status = match (draining, database) {
        (true, _) => "draining",
        (false, true) => "ok",
        (false, false) => "unavailable",
    };
    let body = Ready {
        status,
        database,
        draining,
    };
    if database && !draining {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(value_type = HealthStatus)]
    status: &'static str,
    /// The supervisor's last sample; null before its first or without it.
    resources: Option<Resources>,
    supervisor: SupervisorReport,
    node: String,
    draining: bool,
    /// Open sockets on this node; null when the node serves no sockets.
    sockets: Option<usize>,
    database: DatabaseReport,
    bus: BusReport,
    version: &'static str,
}

/// `/health`'s verdict: `degraded` while the bus between nodes is down.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used: `Health` writes the names
enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum SupervisorReport {
    On {
        shedding: bool,
        last_action: Option<Action>,
    },
    /// `{"state": "off"}` under ENABLE_RESOURCE_MONITOR=false.
    Off { state: &'static str },
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DatabaseReport {
    reachable: bool,
    pools: PoolsReport,
}

/// This HTTP worker's pool (each has its own) and the writer's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PoolsReport {
    http_worker: PoolFigures,
    writer: PoolFigures,
}

/// A pool's size now, its cap, its idle connections and the callers
/// waiting for one (more than a few means the pool is too small or the
/// database too slow).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PoolFigures {
    size: u32,
    max_size: u32,
    idle: u32,
    waiting: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum BusReport {
    Redis {
        #[schema(value_type = BusState)]
        state: &'static str,
        node: String,
        subscriptions: u64,
        received: u64,
        discarded: u64,
        published: u64,
        dropped: u64,
        outages: u64,
    },
    /// `{"state": "none"}` on a single node (no REDIS_URL).
    None {
        #[schema(value_type = NoBus)]
        state: &'static str,
    },
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
enum BusState {
    Up,
    Down,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
enum NoBus {
    None,
}

/// A fuller report for operators.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The node's state, whatever it is", body = Health)),
)]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database = database_ok(&state).await;
    // Readiness ignores the bus (DESIGN.md, "Between nodes"); this report
    // does not: a node whose bus is down serves its own sockets only.
    let bus = match state.bus.as_ref() {
        Some(bus) => {
            let stats = bus.stats();
            let count = |counter: &AtomicU64| AtomicU64::load(counter, Ordering::Relaxed);
            BusReport::Redis {
                state: if stats.is_up() { "up" } else { "down" },
                node: bus.node().to_owned(),
                subscriptions: count(&stats.subscriptions),
                received: count(&stats.received),
                discarded: count(&stats.discarded),
                published: count(&stats.published),
                dropped: count(&stats.dropped),
                outages: count(&stats.outages),
            }
        }
        None => BusReport::None { state: "none" },
    };
    let bus_up = state.bus.as_ref().is_none_or(|bus| bus.stats().is_up());
    let status = if !database {
        "unhealthy"
    } else if bus_up {
        "healthy"
    } else {
        "degraded"
    };
    let supervisor = match &state.supervisor {
        Some(supervisor) => SupervisorReport::On {
            shedding: supervisor.admission().is_shedding(),
            last_action: supervisor.last_action(),
        },
        None => SupervisorReport::Off { state: "off" },
    };
    HttpResponse::Ok().json(Health {
        status,
        resources: state
            .supervisor
            .as_ref()
            .and_then(|supervisor| supervisor.resources()),
        supervisor,
        node: state.config.node(),
        draining: is_draining(&state),
        sockets: state
            .sockets
            .as_ref()
            .map(|count| AtomicUsize::load(count, Ordering::Relaxed)),
        database: DatabaseReport {
            reachable: database,
            pools: PoolsReport {
                http_worker: pool_figures(&state.db),
                writer: pool_figures(&state.writer_db),
            },
        },
        bus,
        version: env!("CARGO_PKG_VERSION"),
    })
}

fn pool_figures(pool: &aurum_schema::pool::DbPool) -> PoolFigures {
    let figures = pool.state();
    PoolFigures {
        size: figures.connections,
        max_size: pool.max_size(),
        idle: figures.idle_connections,
        waiting: figures.statistics.pending_gets(),
    }
}

fn is_draining(state: &AppState) -> bool {
    state
        .admission
        .as_ref()
        .is_some_and(|admission| admission.is_draining())
}

/// Probes must answer quickly, whatever the pool's checkout timeout is.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn database_ok(state: &AppState) -> bool {
    let probe = async {
        let Ok(mut conn) = state.db.get().await else {
            return false;
        };
        crate::metrics::timed("health_ping", diesel::sql_query("SELECT 1").execute(&mut conn))
            .await
            .is_ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe).await.unwrap_or(false)
}
