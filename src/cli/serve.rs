use std::net::{SocketAddr, TcpListener};

use aurum_schema::migrations::{self, Direction};

use super::CliError;
use crate::config::Config;
use crate::state::AppState;

pub fn serve(config: Config) -> Result<(), CliError> {
    config.check_supported()?;
    tracing::info!(?config, "starting");
    if config.migrate_on_start {
        // Before the actix system exists: the migration harness blocks.
        for version in migrations::run(&config.database_url, Direction::Up)? {
            tracing::info!(%version, "migration applied");
        }
    }
    let listener = listen(config.bind)?;
    let sockets = listen(config.ws_bind)?;
    tracing::info!(bind = %config.bind, ws_bind = %config.ws_bind, "serving HTTP and Socket.IO");
    actix_rt::System::new().block_on(async move {
        // The pool's maintenance task needs a running runtime.
        let state = AppState::new(config)?;
        let realtime = crate::realtime::Realtime::start(&state)?;
        crate::run(state, realtime, listener, sockets, shutdown_signal()).await?;
        Ok::<(), CliError>(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Connections the kernel completes before the server accepts them; it caps
/// this at `net.core.somaxconn`. std's 128 overflowed when thousands of
/// sockets connected at once, and a dropped SYN is retried only after a
/// second (measured: 5,000 sockets took 5.2 s instead of 0.6 s).
const LISTEN_BACKLOG: i32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    // As std does: a restarted server rebinds while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
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
