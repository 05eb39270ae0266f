//! The Aurum service: configuration, start-up, HTTP routes and the CLI.
//!
//! `run` takes its listener and a shutdown signal as arguments, so tests start
//! the real server on a real port and stop it.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod normalize_path;
pub mod openapi;
pub mod realtime;
pub mod rest_limits;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use tracing::Instrument as _;

pub use crate::config::Config;
pub use crate::state::AppState;

/// The application with every route, for `HttpServer` and for tests.
pub fn build_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .wrap_fn(|req, service| {
            // Around the routes (inside the path normalizer): the time of
            // the whole request, by the route it matches (its pattern, not
            // its path: ids would make a series per profile) and its
            // status; and its span, named by the route, a child of the
            // caller's when it sends a W3C `traceparent`.
            let started = std::time::Instant::now();
            let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
            let span = tracing::info_span!(
                target: aurum_actors::trace::TARGET,
                "http.request",
                otel.name = format!("{} {route}", req.method()),
                otel.kind = "server",
                http.request.method = req.method().as_str(),
                http.route = route.as_str(),
                url.path = req.path(),
                http.response.status_code = tracing::field::Empty,
            );
            if !span.is_disabled() {
                let traceparent = req.headers().get("traceparent").and_then(|value| value.to_str().ok());
                aurum_actors::trace::continue_from(&span, traceparent);
            }
            let call = span.in_scope(|| service.call(req));
            let request_span = span.clone();
            async move {
                let response = call.await?;
                let status = response.status().as_u16();
                request_span.record("http.response.status_code", status);
                ::metrics::histogram!("http_request_duration_seconds", "route" => route, "status" => status.to_string())
                    .record(started.elapsed().as_secs_f64());
                Ok(response)
            }
            .instrument(span)
        })
        .wrap_fn(|mut req, service| {
            normalize_path::normalize(&mut req);
            service.call(req)
        })
        .configure(routes::configure)
}

/// Serves HTTP on `http` and Socket.IO on `sockets` until `shutdown`
/// resolves, then drains (see [`drain`]) and returns.
/// `realtime` holds the long-lived actors, started once by the caller
/// before any worker exists. Call inside the actix system.
pub async fn run(
    state: AppState,
    realtime: realtime::Realtime,
    http: TcpListener,
    sockets: TcpListener,
    shutdown: impl Future<Output = ()> + 'static,
) -> std::io::Result<()> {
    let (stop_accepting, accepting) = tokio::sync::watch::channel(false);
    let (close_rest, closing) = tokio::sync::watch::channel(false);
    let wait_for = |mut signal: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: the drain is over either way.
        let _ = signal.wait_for(|set| *set).await;
    };

    sockets.set_nonblocking(true)?;
    let sockets = tokio::net::TcpListener::from_std(sockets)?;
    let socket_config = realtime.socket_config(&state.config);
    let app: std::sync::Arc<dyn aurum_actors::session::SocketApp> = realtime.app.clone();
    let socket_server = actix_rt::spawn(aurum_actors::listener::serve_and_drain(
        sockets,
        socket_config,
        app,
        wait_for(accepting),
        wait_for(closing),
    ));

    let config = std::sync::Arc::clone(&state.config);
    let workers = config.http_workers();
    let mut state = state;
    state.bus = realtime.bridge.clone();
    state.supervisor = realtime.supervisor.clone();
    state.registry = Some(realtime.registry.clone());
    state.admission = Some(std::sync::Arc::clone(&realtime.admission));
    state.sockets = Some(realtime.app.connected());
    let server = HttpServer::new(move || build_app(state.for_http_worker()))
        .workers(workers)
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
        .disable_signals()
        .listen(http)?
        .run();
    let handle = server.handle();
    let mut server = actix_rt::spawn(server);

    tokio::select! {
        () = shutdown => {}
        // The HTTP server only stops by itself when it failed.
        served = &mut server => {
            return served.unwrap_or_else(|error| Err(std::io::Error::other(error)));
        }
    }
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    drain(
        &config,
        &realtime,
        deadline,
        || {
            let _ = stop_accepting.send(true);
            let handle = handle.clone();
            // Graceful: requests in flight finish (within the server's own
            // shutdown timeout), new connections are refused.
            actix_rt::spawn(async move { handle.stop(true).await });
        },
        &close_rest,
    )
    .await;
    let rest = async {
        let _ = socket_server.await;
        // Every socket is closed, so nothing more is coming: what the writer
        // holds is committed before the process goes.
        realtime.writer.flushed().await;
        if let Some(bridge) = &realtime.bridge {
            bridge.depart().await;
        }
        server.await
    };
    let served = match tokio::time::timeout_at(deadline, rest).await {
        Ok(served) => served.unwrap_or_else(|error| Err(std::io::Error::other(error))),
        Err(_elapsed) => {
            tracing::warn!("SHUTDOWN_TIMEOUT reached with work still open; exiting");
            Ok(())
        }
    };
    drop(realtime);
    tracing::info!("drained");
    served
}

/// Sockets closed per batch while draining, and the pause between batches:
/// each client reconnects at once (socket.io-client's first retry comes
/// within 0.5 to 1.5 s), so a node holding 19,000 sockets sends them to the
/// others at 5,000 a second over about 4 s, not all in one burst.
const DRAIN_BATCH: usize = 500;
const DRAIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// SIGTERM's drain, before the caller waits for the rest: not ready at
/// once (new sockets get 503), serving for `DRAIN_DELAY` so the load
/// balancer stops sending, then `stop_accepting`, then every socket's
/// transport closed in batches, without a Socket.IO DISCONNECT (which
/// would turn the official client's reconnection off), so each client
/// reconnects to another node and replays from its `since`; then
/// `close_rest` closes the sockets no registry knows (not yet connected).
async fn drain(
    config: &Config,
    realtime: &realtime::Realtime,
    deadline: tokio::time::Instant,
    stop_accepting: impl FnOnce(),
    close_rest: &tokio::sync::watch::Sender<bool>,
) {
    realtime.admission.set_draining();
    tracing::info!(delay = ?config.drain_delay, "draining: not ready, still serving");
    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + config.drain_delay)).await;
    stop_accepting();
    let sessions = realtime.registry.all_sessions().await;
    let batches = sessions.len().div_ceil(DRAIN_BATCH);
    tracing::info!(sockets = sessions.len(), batches, "draining: closing sockets");
    // Half of what is left at most goes to pauses: the writer and the HTTP
    // server need the rest.
    let budget = deadline.saturating_duration_since(tokio::time::Instant::now()) / 2;
    let pause = DRAIN_PAUSE.min(budget / u32::try_from(batches.max(1)).unwrap_or(u32::MAX));
    for (index, batch) in sessions.chunks(DRAIN_BATCH).enumerate() {
        if index > 0 {
            tokio::time::sleep(pause).await;
        }
        for session in batch {
            session.shut_down();
        }
    }
    let _ = close_rest.send(true);
}
