//! `/health`, `/health/live`, `/health/ready`.

use actix_web::{HttpResponse, web};
use diesel_async::RunQueryDsl;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde_json::json;

use crate::state::AppState;

/// The process is up and answering.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready for traffic: the database answers within the pool's timeout, and
/// the node is not draining (SIGTERM: the load balancer is to stop sending).
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let draining = is_draining(&state);
    let database = database_ok(&state).await;
    let status = match (draining, database) {
        (true, _) => "draining",
        (false, true) => "ok",
        (false, false) => "unavailable",
    };
    let body = json!({ "status": status, "database": database, "draining": draining });
    if database && !draining {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// A fuller report for operators.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database = database_ok(&state).await;
    // Readiness ignores the bus (DESIGN.md, "Between nodes"); this report
    // does not: a node whose bus is down serves its own sockets only.
    let bus = state.bus.as_ref().map(|bus| {
        let stats = bus.stats();
        let count = |counter: &AtomicU64| AtomicU64::load(counter, Ordering::Relaxed);
        json!({
            "state": if stats.is_up() { "up" } else { "down" },
            "node": bus.node(),
            "subscriptions": count(&stats.subscriptions),
            "received": count(&stats.received),
            "discarded": count(&stats.discarded),
            "published": count(&stats.published),
            "dropped": count(&stats.dropped),
            "outages": count(&stats.outages),
        })
    });
    let bus_up = state.bus.as_ref().is_none_or(|bus| bus.stats().is_up());
    let draining = is_draining(&state);
    let status = if !database {
        "unhealthy"
    } else if bus_up {
        "healthy"
    } else {
        "degraded"
    };
    let resources = state
        .supervisor
        .as_ref()
        .and_then(|supervisor| supervisor.resources());
    let supervisor = state.supervisor.as_ref().map(|supervisor| {
        json!({
            "shedding": supervisor.admission().is_shedding(),
            "last_action": supervisor.last_action(),
        })
    });
    HttpResponse::Ok().json(json!({
        "status": status,
        "resources": resources,
        "supervisor": supervisor.unwrap_or_else(|| json!({ "state": "off" })),
        "node": state.config.node(),
        "draining": draining,
        "sockets": state.sockets.as_ref().map(|count| AtomicUsize::load(count, Ordering::Relaxed)),
        "database": {
            "reachable": database,
            // This HTTP worker's pool (each has its own) and the writer's.
            "pools": { "http_worker": pool_figures(&state.db), "writer": pool_figures(&state.writer_db) },
        },
        "bus": bus.unwrap_or_else(|| json!({ "state": "none" })),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// A pool's size now, its cap, its idle connections and the callers
/// waiting for one (more than a few means the pool is too small or the
/// database too slow).
fn pool_figures(pool: &aurum_schema::pool::DbPool) -> serde_json::Value {
    let figures = pool.state();
    json!({
        "size": figures.connections,
        "max_size": pool.max_size(),
        "idle": figures.idle_connections,
        "waiting": figures.statistics.pending_gets(),
    })
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
