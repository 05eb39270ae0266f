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
pub mod realtime;
pub mod routes;
pub mod state;

use std::future::Future;
use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};

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
            // Outermost: the time of the whole request, by the route it
            // matched (its pattern, not its path: ids would make a series
            // per profile) and its status.
            let started = std::time::Instant::now();
            let call = service.call(req);
            async move {
                let response = call.await?;
                let route = response
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned());
                let status = response.status().as_u16().to_string();
                ::metrics::histogram!("http_request_duration_seconds", "route" => route, "status" => status)
                    .record(started.elapsed().as_secs_f64());
                Ok(response)
            }
        })
        .wrap_fn(|mut req, service| {
            normalize_path::normalize(&mut req);
            service.call(req)
        })
        .configure(routes::configure)
}

/// Serves HTTP on `http` and Socket.IO on `sockets` until `shutdown`
/// resolves, then drains in-flight requests, closes sockets and returns.
/// `realtime` holds the long-lived actors, started once by the caller
/// before any worker exists. Call inside the actix system.
pub async fn run(
    state: AppState,
    realtime: realtime::Realtime,
    http: TcpListener,
    sockets: TcpListener,
    shutdown: impl Future<Output = ()> + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    actix_rt::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let wait_for = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    sockets.set_nonblocking(true)?;
    let sockets = tokio::net::TcpListener::from_std(sockets)?;
    let socket_config = realtime.socket_config(&state.config);
    let app: std::sync::Arc<dyn aurum_actors::session::SocketApp> = realtime.app.clone();
    let socket_server = actix_rt::spawn(aurum_actors::serve(
        sockets,
        socket_config,
        app,
        wait_for(stopped.clone()),
    ));

    let workers = state.config.http_workers();
    let mut state = state;
    state.bus = realtime.bridge.clone();
    state.supervisor = realtime.supervisor.clone();
    state.registry = Some(realtime.registry.clone());
    let server = HttpServer::new(move || build_app(state.for_http_worker()))
        .workers(workers)
        .shutdown_timeout(30)
        .disable_signals()
        .listen(http)?
        .run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        wait_for(stopped).await;
        handle.stop(true).await;
    });
    let served = server.await;
    let _ = socket_server.await;
    drop(realtime);
    served
}
