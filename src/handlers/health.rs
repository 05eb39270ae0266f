//! `/health`, `/health/live`, `/health/ready`.

use actix_web::{HttpResponse, web};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::state::AppState;

/// The process is up and answering.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready for traffic: the database answers within the pool's timeout.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = database_ok(&state).await;
    let body = json!({ "status": if database { "ok" } else { "unavailable" }, "database": database });
    if database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// A fuller report for operators.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database = database_ok(&state).await;
    let pool = state.db.state();
    HttpResponse::Ok().json(json!({
        "status": if database { "ok" } else { "degraded" },
        "database": { "reachable": database, "pool_connections": pool.connections, "pool_idle": pool.idle_connections },
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Probes must answer quickly, whatever the pool's checkout timeout is.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn database_ok(state: &AppState) -> bool {
    let probe = async {
        let Ok(mut conn) = state.db.get().await else {
            return false;
        };
        diesel::sql_query("SELECT 1").execute(&mut conn).await.is_ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe).await.unwrap_or(false)
}
