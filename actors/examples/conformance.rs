//! The reference server of the official Socket.IO protocol test suite
//! (`test-suite/` in the socketio/socket.io-protocol repository), built on
//! Aurum's listener and Session actor:
//!
//! ```text
//! cargo run --release -p aurum-actors --example conformance
//! # then, in the suite's folder: npm ci && npm test
//! ```
//!
//! Listens on 127.0.0.1:3000 (or the address given as first argument) with
//! the suite's settings: pingInterval 300 ms, pingTimeout 200 ms, maxPayload
//! 1,000,000, a 1 s connect timeout, namespaces `/` and `/custom`. On connect
//! it emits `auth` with the CONNECT payload, echoes `message` as
//! `message-back` and acks `message-with-ack` with its own arguments, binary
//! attachments included.

use std::sync::Arc;
use std::time::Duration;

use aurum_actors::{
    AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, Event, SessionHandle, SocketApp,
    SocketConfig,
};
use serde_json::{Map, Value};

struct Conformance;

/// See [`Conformance::connected`].
const AUTH_EMIT_DELAY: Duration = Duration::from_millis(10);

/// The CONNECT payload, kept until `connected` emits it back.
struct Auth(Value);

impl SocketApp for Conformance {
    fn accepts_namespace(&self, nsp: &str) -> bool {
        matches!(nsp, "/" | "/custom")
    }

    fn connect(&self, request: ConnectRequest) -> AppFuture<Result<ConnState, ConnectRefusal>> {
        let auth = request.auth.unwrap_or_else(|| Value::Object(Map::new()));
        Box::pin(async move { Ok(ConnState::new(Auth(auth))) })
    }

    fn connected(&self, session: &SessionHandle, nsp: &str, state: &mut ConnState) {
        let auth = state.get::<Auth>().map_or(Value::Null, |Auth(auth)| auth.clone());
        let (session, nsp) = (session.clone(), nsp.to_owned());
        // The suite's client (ws 8.5) fires `message` for every frame of one
        // TCP read at once, while each test awaits one event before listening
        // for the next: an `auth` frame arriving in the same segment as the
        // CONNECT answer would be missed. The reference server writes it an
        // event-loop turn later; this pause reproduces that gap. The frames
        // and their order are the same either way.
        actix::spawn(async move {
            tokio::time::sleep(AUTH_EMIT_DELAY).await;
            if let Err(error) = session.emit(&nsp, "auth", vec![auth]) {
                tracing::warn!(%error, "could not emit auth");
            }
        });
    }

    fn event(&self, session: &SessionHandle, _state: &mut ConnState, event: Event) -> AppFuture<()> {
        let Event {
            nsp,
            name,
            args,
            attachments,
            ack,
            ..
        } = event;
        let sent = match (name.as_str(), ack) {
            ("message", _) => session.emit_binary(&nsp, "message-back", args, attachments),
            ("message-with-ack", Some(ack)) => ack.send_binary(args, attachments),
            _ => Ok(()),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, event = name, "could not answer");
        }
        Box::pin(async {})
    }

    fn disconnect(&self, session: &SessionHandle, nsp: &str, _state: ConnState, reason: DisconnectReason) {
        tracing::debug!(session = %session.id(), nsp, %reason, "disconnected");
    }
}

#[actix::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    tracing::info!(%address, "conformance server listening");

    let config = SocketConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        connect_timeout: Duration::from_secs(1),
        ..SocketConfig::default()
    };
    let shutdown = async {
        // Without a Ctrl-C handler the server runs until killed, which is fine too.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    aurum_actors::serve(listener, config, Arc::new(Conformance), shutdown).await;
    Ok(())
}
