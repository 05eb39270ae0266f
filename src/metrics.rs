//! Prometheus metrics at `/metrics`: recorded through the `metrics` facade
//! where things happen (the writer, the chat path, HTTP), and read at
//! scrape time where a figure is already kept (pools, the bus, memory).
//!
//! Histograms have explicit buckets: the exporter's default is a summary,
//! whose quantiles cannot be aggregated across nodes.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument as _;

use crate::state::AppState;

/// Seconds: from 0.5 ms (a local delivery) to 10 s (past any timeout).
const SECONDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Messages in one writer batch (at most a few hundred).
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Between upkeeps of the recorder (see `recorder`).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process's recorder on first use; `None` when another
/// recorder was installed first (nothing is then exported).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Full("writer_batch_size".to_owned()), BATCH_SIZES)
                });
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => {
                    // Histogram samples wait in a buffer until an upkeep
                    // folds them into the buckets: without one (nobody
                    // scraping) that buffer grows with every message.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".to_owned())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_INTERVAL);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(error) = spawned {
                        tracing::warn!(%error, "metrics upkeep thread not started; histograms fold at scrape only");
                    }
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// `GET /metrics`: the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 503, description = "No metrics recorder in this process (`metrics_unavailable`)", body = crate::error::ErrorBody),
    ),
)]
pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    let Some(recorder) = recorder() else {
        use actix_web::ResponseError as _;
        return crate::error::ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "no metrics recorder in this process",
        )
        .error_response();
    };
    read_figures(&state);
    recorder.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(recorder.render())
}

/// The figures kept elsewhere, copied into the recorder at scrape time.
fn read_figures(state: &AppState) {
    for (name, pool) in [("shared", &state.db), ("writer", &state.writer_db)] {
        let figures = pool.state();
        let idle = f64::from(figures.idle_connections);
        let busy = f64::from(figures.connections.saturating_sub(figures.idle_connections));
        metrics::gauge!("pool_connections", "pool" => name, "state" => "idle").set(idle);
        metrics::gauge!("pool_connections", "pool" => name, "state" => "busy").set(busy);
    }
    if let Some(bus) = &state.bus {
        let stats = bus.stats();
        for (direction, counter) in [
            ("published", &stats.published),
            ("received", &stats.received),
            ("discarded", &stats.discarded),
            ("dropped", &stats.dropped),
        ] {
            metrics::counter!("bus_messages_total", "direction" => direction)
                .absolute(counter.load(Ordering::Relaxed));
        }
        #[allow(clippy::cast_precision_loss)] // a count of channels
        metrics::gauge!("bus_subscriptions").set(stats.subscriptions.load(Ordering::Relaxed) as f64);
        metrics::gauge!("bus_up").set(if stats.is_up() { 1.0 } else { 0.0 });
    }
    if let Some(percent) = memory_percent() {
        metrics::gauge!("memory_usage_percent").set(percent);
    }
}

/// Resident memory as a percentage of the container's limit (cgroup v2
/// `memory.max`, or v1 `memory.limit_in_bytes`) when there is one, else of
/// the host's memory: under Kubernetes the host's figure means nothing.
pub fn memory_percent() -> Option<f64> {
    let rss = kib_field("/proc/self/status", "VmRSS:")? * 1024.0;
    let limit = cgroup_limit().or_else(|| Some(kib_field("/proc/meminfo", "MemTotal:")? * 1024.0))?;
    Some(rss / limit * 100.0)
}

fn cgroup_limit() -> Option<f64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .filter_map(|text| text.trim().parse::<f64>().ok())
    // v1 writes a huge number for "no limit".
    .find(|limit| *limit < 1e18)
}

/// A `name: 1234 kB` line's figure from a file under /proc.
fn kib_field(path: &str, name: &str) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs the database query `query`: timed into
/// `db_query_duration_seconds{query}`, and traced as a `db.query` span
/// with its name and the rows it answered.
pub async fn timed<T: Rows>(query: &'static str, run: impl Future<Output = T>) -> T {
    let span = tracing::info_span!(
        target: aurum_actors::trace::TARGET,
        "db.query",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = query,
        db.response.returned_rows = tracing::field::Empty,
    );
    let started = Instant::now();
    let answer = run.instrument(span.clone()).await;
    metrics::histogram!("db_query_duration_seconds", "query" => query)
        .record(started.elapsed().as_secs_f64());
    if let Some(rows) = answer.rows() {
        span.record("db.response.returned_rows", rows);
    }
    answer
}

/// How many rows a query's answer holds, for its span; `None` for a failed
/// query.
pub trait Rows {
    fn rows(&self) -> Option<usize>;
}

impl<T: RowCount, E> Rows for Result<T, E> {
    fn rows(&self) -> Option<usize> {
        self.as_ref().ok().map(RowCount::row_count)
    }
}

/// The rows in a successful query's answer.
pub trait RowCount {
    fn row_count(&self) -> usize;
}

impl<T> RowCount for Vec<T> {
    fn row_count(&self) -> usize {
        self.len()
    }
}

impl<T: RowCount> RowCount for Option<T> {
    fn row_count(&self) -> usize {
        self.as_ref().map_or(0, RowCount::row_count)
    }
}

/// `execute`'s affected rows.
impl RowCount for usize {
    fn row_count(&self) -> usize {
        *self
    }
}

/// A yes-or-no query reads one row.
impl RowCount for bool {
    fn row_count(&self) -> usize {
        1
    }
}

macro_rules! one_row {
    ($($row:ty),* $(,)?) => {
        $(impl RowCount for $row {
            fn row_count(&self) -> usize {
                1
            }
        })*
    };
}

one_row!(aurum_schema::models::profiles::Profile, aurum_schema::ids::UserId,);
