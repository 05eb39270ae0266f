//! The socket listener: a tokio accept loop of its own, not actix-web.
//!
//! DESIGN.md measured an idle socket behind actix-web at about 16 KiB (the
//! HTTP/1 dispatcher keeps an 8 KiB read and an 8 KiB write buffer for the
//! socket's life), against under 4 KiB for tokio-tungstenite with a small read
//! buffer and no write buffer. So this module reads the upgrade request
//! itself into a buffer that is freed once the socket is upgraded (after
//! which `crate::ws` frames the socket with no buffer while idle), answers
//! anything that is not a Socket.IO WebSocket upgrade with a JSON error, and
//! starts each socket's [`Session`] on one of a fixed set of arbiters, round
//! robin, where its I/O is then polled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::live::{LiveGuard, Tracker};
use crate::session::{Session, SocketApp, SocketConfig};
use crate::ws::{WsReader, WsWriter};

/// The path Socket.IO clients connect to.
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Headers read from an upgrade request; browsers send about 15.
const MAX_HEADERS: usize = 48;

/// Pause after a failed accept (typically out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a refused client may keep sending its request body before the
/// connection is dropped (closing with unread data would reset it, and the
/// client could lose the error response).
const REFUSAL_DRAIN: Duration = Duration::from_millis(500);

/// Accepts sockets on `listener` until `shutdown` resolves, then closes every
/// session and returns once they are gone (or `config.shutdown_grace` has passed).
///
/// Runs sessions on `config.arbiters`, or else starts its own arbiters, one
/// per core unless `config.workers` says otherwise; either way it must run
/// inside an actix `System`.
pub async fn serve(
    listener: TcpListener,
    config: SocketConfig,
    app: Arc<dyn SocketApp>,
    shutdown: impl Future<Output = ()>,
) {
    serve_and_drain(listener, config, app, shutdown, std::future::ready(())).await;
}

/// As [`serve`], for a drain that closes the sessions itself: once
/// `stop_accepting` resolves the listening socket is closed, and the
/// sessions still open are closed only when `close_rest` resolves (the
/// caller closes the ones it knows in batches in between), after which it
/// waits for them as `serve` does.
pub async fn serve_and_drain(
    listener: TcpListener,
    config: SocketConfig,
    app: Arc<dyn SocketApp>,
    stop_accepting: impl Future<Output = ()>,
    close_rest: impl Future<Output = ()>,
) {
    let shutdown = stop_accepting;
    let config = Arc::new(config);
    // Arbiters started here are stopped here; the caller's are the caller's.
    let (owned, arbiters): (Vec<Arbiter>, Vec<ArbiterHandle>) = if config.arbiters.is_empty() {
        let owned: Vec<Arbiter> = (0..config.worker_count()).map(|_| Arbiter::new()).collect();
        let handles = owned.iter().map(Arbiter::handle).collect();
        (owned, handles)
    } else {
        (Vec::new(), config.arbiters.clone())
    };
    let tracker = Arc::new(Tracker::new(config.tasks.clone()));
    let (stop_sessions, stop_signal) = watch::channel(false);

    tokio::pin!(shutdown);
    let mut next = 0_usize;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a socket failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Detached from this thread's reactor, so that the arbiter that gets
        // it registers it with its own and polls it there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, %peer, "could not hand a socket over");
                continue;
            }
        };
        let Some(arbiter) = arbiters.get(next % arbiters.len()) else {
            break;
        };
        next = next.wrapping_add(1);
        let connection = Connection {
            config: Arc::clone(&config),
            app: Arc::clone(&app),
            shutdown: stop_signal.clone(),
            live: LiveGuard::new(&tracker),
        };
        if !arbiter.spawn(connection.run(stream, peer)) {
            tracing::error!("a socket arbiter has stopped; refusing sockets");
            break;
        }
    }

    drop(listener);
    tracing::info!(sessions = tracker.live(), "socket listener stopped accepting");
    close_rest.await;
    tracing::info!(sessions = tracker.live(), "closing the sessions still open");
    // Ignored error: no receiver left means no session left to tell.
    let _ = stop_sessions.send(true);
    if tokio::time::timeout(config.shutdown_grace, tracker.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = tracker.live(),
            "sessions still open after the shutdown grace"
        );
    }
    for worker in owned {
        worker.stop();
    }
}

/// An accepted connection on its way to becoming a session.
struct Connection {
    config: Arc<SocketConfig>,
    app: Arc<dyn SocketApp>,
    shutdown: watch::Receiver<bool>,
    live: LiveGuard,
}

impl Connection {
    /// Runs on the arbiter chosen for the socket.
    async fn run(self, stream: std::net::TcpStream, peer: SocketAddr) {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, %peer, "could not register a socket");
                return;
            }
        };
        // Small Engine.IO packets (pings, acks) must not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let upgraded =
            tokio::time::timeout(self.config.handshake_timeout, upgrade(stream, &self.config)).await;
        let (reader, writer) = match upgraded {
            Ok(Ok(Some(halves))) => halves,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "WebSocket handshake failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!(%peer, "WebSocket handshake timed out");
                return;
            }
        };
        let id = Session::launch(reader, writer, self.config, self.app, self.shutdown, self.live);
        tracing::debug!(session = %id, %peer, "socket upgraded");
    }
}

/// Why an HTTP request is not upgraded: the status line and the JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    status: u16,
    code: &'static str,
    message: &'static str,
}

/// Seconds a refused client is told to wait when the node sheds load.
const RETRY_AFTER_SECS: u32 = 5;

impl Refusal {
    const fn bad_request(code: &'static str, message: &'static str) -> Self {
        Self {
            status: 400,
            code,
            message,
        }
    }

    fn response(&self) -> String {
        let reason = match self.status {
            404 => "Not Found",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Bad Request",
        };
        let retry = if self.status == 503 {
            format!("Retry-After: {RETRY_AFTER_SECS}\r\n")
        } else {
            String::new()
        };
        let body = json!({"error": {"code": self.code, "message": self.message}}).to_string();
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             {retry}Connection: close\r\nCache-Control: no-store\r\n\r\n{body}",
            self.status,
            body.len(),
        )
    }
}

/// What reading the request head gave.
enum Head {
    /// More bytes are needed.
    Partial,
    /// A valid upgrade request of `len` bytes; `accept` is the Sec-WebSocket-Accept value.
    Upgrade {
        len: usize,
        accept: String,
    },
    Refused(Refusal),
}

/// Reads the upgrade request and answers it: `Some` socket halves when
/// upgraded, `None` when refused (the client got its JSON error) or gone.
async fn upgrade(mut stream: TcpStream, config: &SocketConfig) -> io::Result<Option<(WsReader, WsWriter)>> {
    // Dropped as soon as the socket is upgraded: idle sockets keep no HTTP buffer.
    let mut buffer = Vec::with_capacity(1024);
    let (head_len, accept) = loop {
        if stream.read_buf(&mut buffer).await? == 0 {
            return Ok(None);
        }
        let head = if buffer.len() > config.max_request_head {
            Head::Refused(Refusal {
                status: 431,
                code: "request_too_large",
                message: "the request head is too large",
            })
        } else {
            parse_head(&buffer)
        };
        match head {
            Head::Partial => {}
            Head::Upgrade { len, accept } => {
                // Checked once the request is whole, so the client gets a
                // clear answer instead of a reset.
                if let Some(why) = config.admission.refusal() {
                    let message = if why == "draining" {
                        "this node is shutting down; connect again"
                    } else {
                        "this node is short of memory; connect again shortly"
                    };
                    refuse(
                        stream,
                        Refusal {
                            status: 503,
                            code: "unavailable",
                            message,
                        },
                    )
                    .await;
                    return Ok(None);
                }
                break (len, accept);
            }
            Head::Refused(refusal) => {
                refuse(stream, refusal).await;
                return Ok(None);
            }
        }
    };

    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;

    // Frames the client sent right behind its request, if any.
    let early = buffer.split_off(head_len);
    drop(buffer);
    let (read, write) = stream.into_split();
    let reader = WsReader::new(read, early, config.read_buffer_size, config.max_payload);
    Ok(Some((reader, WsWriter::new(write))))
}

/// Sends the JSON error, then lets the client finish sending before closing.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    tracing::debug!(
        status = refusal.status,
        code = refusal.code,
        "refusing a socket request"
    );
    let sent = async {
        stream.write_all(refusal.response().as_bytes()).await?;
        stream.shutdown().await
    };
    if sent.await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0_u8; 512];
        while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
    };
    let _ = tokio::time::timeout(REFUSAL_DRAIN, drain).await;
}

/// Parses and checks the request head in `buffer`.
fn parse_head(buffer: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buffer) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(len)) => match check_request(&request) {
            Ok(accept) => Head::Upgrade { len, accept },
            Err(refusal) => Head::Refused(refusal),
        },
        Err(_) => Head::Refused(Refusal::bad_request(
            "bad_request",
            "the request is not valid HTTP/1.1",
        )),
    }
}

/// Checks that the request is `GET /socket.io/?EIO=4&transport=websocket`
/// with WebSocket upgrade headers, and returns the Sec-WebSocket-Accept value.
fn check_request(request: &httparse::Request<'_, '_>) -> Result<String, Refusal> {
    let target = request.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != SOCKET_IO_PATH && path != SOCKET_IO_PATH.trim_end_matches('/') {
        return Err(Refusal {
            status: 404,
            code: "not_found",
            message: "sockets are served under /socket.io/",
        });
    }

    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find_map(|(key, value)| (key == name).then_some(value))
    };
    if param("EIO") != Some("4") {
        return Err(Refusal::bad_request(
            "unsupported_protocol_version",
            "only Engine.IO v4 is supported (EIO=4)",
        ));
    }
    match param("transport") {
        Some("websocket") => {}
        Some("polling") => {
            return Err(Refusal::bad_request(
                "unsupported_transport",
                "HTTP long-polling is not supported; use transport=websocket",
            ));
        }
        _ => {
            return Err(Refusal::bad_request(
                "unknown_transport",
                "the transport must be websocket",
            ));
        }
    }
    if param("sid").is_some() {
        return Err(Refusal::bad_request(
            "unknown_sid",
            "sessions cannot be upgraded or resumed; connect without sid",
        ));
    }
    if request.method != Some("GET") {
        return Err(Refusal::bad_request(
            "bad_method",
            "a WebSocket upgrade is a GET request",
        ));
    }

    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .and_then(|header| std::str::from_utf8(header.value).ok())
            .map(str::trim)
    };
    let has_token = |value: Option<&str>, token: &str| {
        value.is_some_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return Err(Refusal::bad_request(
            "upgrade_required",
            "expected a WebSocket upgrade request",
        ));
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(Refusal::bad_request(
            "unsupported_websocket_version",
            "only WebSocket version 13 is supported",
        ));
    }
    let key = header("sec-websocket-key")
        .filter(|key| !key.is_empty())
        .ok_or(Refusal::bad_request(
            "bad_handshake",
            "Sec-WebSocket-Key is missing",
        ))?;
    Ok(derive_accept_key(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{Head, parse_head};

    fn head(request: &str) -> Head {
        parse_head(request.as_bytes())
    }

    fn refused(request: &str) -> (u16, &'static str) {
        match head(request) {
            Head::Refused(refusal) => (refusal.status, refusal.code),
            Head::Partial => panic!("partial"),
            Head::Upgrade { .. } => panic!("upgraded"),
        }
    }

    const UPGRADE_HEADERS: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn accepts_an_engine_io_v4_websocket_upgrade() {
        let request = format!("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n{UPGRADE_HEADERS}");
        match head(&request) {
            // The example key and answer of RFC 6455, section 1.3.
            Head::Upgrade { len, accept } => {
                assert_eq!(len, request.len());
                assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            }
            _ => panic!("not upgraded"),
        }
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(matches!(
            head("GET /socket.io/?EIO=4&transport=web"),
            Head::Partial
        ));
    }

    #[test]
    fn refuses_what_is_not_a_socket_io_upgrade() {
        let with = |line: &str| format!("{line}\r\n{UPGRADE_HEADERS}");
        let cases = [
            (with("GET /chat HTTP/1.1"), (404, "not_found")),
            (
                with("GET /socket.io/?EIO=3&transport=websocket HTTP/1.1"),
                (400, "unsupported_protocol_version"),
            ),
            (
                with("GET /socket.io/?transport=websocket HTTP/1.1"),
                (400, "unsupported_protocol_version"),
            ),
            (
                with("GET /socket.io/?EIO=4&transport=polling HTTP/1.1"),
                (400, "unsupported_transport"),
            ),
            (with("GET /socket.io/?EIO=4 HTTP/1.1"), (400, "unknown_transport")),
            (
                with("GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1"),
                (400, "unknown_sid"),
            ),
            (
                with("POST /socket.io/?EIO=4&transport=websocket HTTP/1.1"),
                (400, "bad_method"),
            ),
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
                (400, "upgrade_required"),
            ),
            ("GARBAGE\r\n\r\n".to_owned(), (400, "bad_request")),
        ];
        for (request, expected) in cases {
            assert_eq!(refused(&request), expected, "{request}");
        }
    }
}
