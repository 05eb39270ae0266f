use std::net::TcpListener;

use aurum_schema::migrations::{self, Direction};

use super::CliError;
use crate::config::Config;
use crate::state::AppState;

pub fn serve(config: Config) -> Result<(), CliError> {
    tracing::info!(?config, "starting");
    if config.migrate_on_start {
        // Before the actix system exists: the migration harness blocks.
        for version in migrations::run(&config.database_url, Direction::Up)? {
            tracing::info!(%version, "migration applied");
        }
    }
    let listener = TcpListener::bind(config.bind)?;
    let sockets = TcpListener::bind(config.ws_bind)?;
    tracing::info!(bind = %config.bind, ws_bind = %config.ws_bind, "serving HTTP and Socket.IO");
    actix_rt::System::new().block_on(async move {
        // The pool's maintenance task needs a running runtime.
        let state = AppState::new(config)?;
        let realtime = crate::realtime::Realtime::start(&state);
        crate::run(state, realtime, listener, sockets, shutdown_signal()).await?;
        Ok::<(), CliError>(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received, draining");
}
