//! The Aurum service: configuration, start-up, HTTP routes and the CLI.
//!
//! `run` takes its listener and a shutdown signal as arguments, so tests start
//! the real server on a real port and stop it.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod handlers;
pub mod routes;
pub mod state;

use std::future::Future;
use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
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
        .wrap(actix_web::middleware::NormalizePath::trim())
        .configure(routes::configure)
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains in-flight
/// requests and returns.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + 'static,
) -> std::io::Result<()> {
    let workers = state
        .config
        .http_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let server = HttpServer::new(move || build_app(state.clone()))
        .workers(workers)
        .shutdown_timeout(30)
        .disable_signals()
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    server.await
}
