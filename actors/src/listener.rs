//! The socket listener: a tokio accept loop of its own, not actix-web.
//!
//! DESIGN.md measured an idle socket behind actix-web at about 16 KiB (the
//! HTTP/1 dispatcher keeps an 8 KiB read and an 8 KiB write buffer for the
//! socket's life), against under 4 KiB for tokio-tungstenite with a small read
//! buffer and no write buffer. So this module reads HTTP requests itself
//! (`crate::http`), into buffers that live only while a request is read,
//! and serves each connection on one of a fixed set of arbiters, round
//! robin:
//!
//! - a WebSocket upgrade starts a [`Session`] there, after which
//!   `crate::ws` frames the socket with no buffer while idle; with the
//!   `sid` of a long-polling session, the socket is handed to that session
//!   instead, which may live on another arbiter;
//! - Engine.IO long-polling is served as HTTP/1.1 with keep-alive: a
//!   handshake starts a session in polling mode, listed by sid in
//!   [`PollingSessions`](crate::sids::PollingSessions); a GET waits for
//!   that session's packets, a POST brings it the client's;
//! - anything else gets a JSON error.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use actix::{Addr, Arbiter, ArbiterHandle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::codec::engine;
use crate::http::{self, Head, Parsed, RETRY_AFTER_SECS, Refusal, Route};
use crate::limits::{Admitted, LimitRefusal};
use crate::live::{LiveGuard, Tracker};
use crate::session::{
    Attach, Close, DisconnectReason, Poll, PollAbandoned, Push, Session, SocketApp, SocketConfig,
};
use crate::ws::{WsReader, WsWriter};

/// Pause after a failed accept (typically out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a refused client may keep sending its request body before the
/// connection is dropped (closing with unread data would reset it, and the
/// client could lose the error response).
const REFUSAL_DRAIN: Duration = Duration::from_millis(500);

/// How long a kept-alive connection may wait for its next request. Longer
/// than the 5 s after which Node's HTTP agent drops an idle connection, so
/// it is the client that closes (the server closing one just as the client
/// reuses it fails that request); short enough that a polling client's
/// spare connection does not sit for its whole ping interval.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(10);

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
            peer: peer.ip(),
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

/// An accepted connection, served on the arbiter chosen for it.
struct Connection {
    config: Arc<SocketConfig>,
    app: Arc<dyn SocketApp>,
    shutdown: watch::Receiver<bool>,
    live: LiveGuard,
    /// The TCP peer (a client, or a proxy in front of clients).
    peer: IpAddr,
}

impl Connection {
    async fn run(mut self, stream: std::net::TcpStream, peer: SocketAddr) {
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
        // Autotuned, a socket whose client stops reading takes up to
        // tcp_wmem's maximum (4 MiB) of kernel memory, counted in the
        // pod's cgroup, before its writes block and its bounded queue can
        // fill: thousands of such clients would take gigabytes.
        if self.config.send_buffer > 0
            && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(self.config.send_buffer)
        {
            tracing::debug!(%error, %peer, "could not set SO_SNDBUF");
        }
        let mut stream = Some(stream);
        // Bytes read and not yet used: empty, and so unallocated, between requests.
        let mut pending = Vec::new();
        let mut first = true;
        while let Some(conn) = stream.take() {
            let wait = if first {
                self.config.handshake_timeout
            } else {
                KEEP_ALIVE_IDLE
            };
            first = false;
            // A request that has arrived is served before a shutdown closes
            // the connection; one still on its way fails, and the client
            // connects again, to a node that is not stopping.
            let head = tokio::select! {
                biased;
                head = tokio::time::timeout(wait, read_head(&self.config, &conn, &mut pending)) => head,
                _ = self.shutdown.wait_for(|stop| *stop) => return,
            };
            let head = match head {
                Ok(Ok(Some(head))) => head,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "reading a request failed");
                    return;
                }
                Err(_elapsed) => {
                    tracing::debug!(%peer, "no request within the timeout");
                    return;
                }
            };
            match self.serve(conn, head, &mut pending).await {
                Ok(Some(conn)) if !*self.shutdown.borrow() => stream = Some(conn),
                Ok(_) => return,
                Err(error) => {
                    tracing::debug!(%error, %peer, "serving a request failed");
                    return;
                }
            }
            if pending.is_empty() {
                // A connection between requests holds no buffer.
                pending = Vec::new();
            }
        }
    }
}

/// The next request head, consumed from `pending`; `None` when the client
/// closed between requests.
async fn read_head(
    config: &SocketConfig,
    stream: &TcpStream,
    pending: &mut Vec<u8>,
) -> io::Result<Option<Head>> {
    loop {
        if !pending.is_empty() {
            // Parsed before the size is checked: a body may follow the head.
            match http::parse_head(pending, config.max_payload, &config.cors_origins) {
                Parsed::Complete(head) => {
                    pending.drain(..head.len.min(pending.len()));
                    return Ok(Some(head));
                }
                Parsed::Partial if pending.len() > config.max_request_head => {
                    return Ok(Some(Head {
                        len: pending.len(),
                        route: Route::Refused(Refusal {
                            status: 431,
                            code: "request_too_large",
                            message: "the request head is too large",
                            engine: None,
                            retry_after: None,
                        }),
                        keep_alive: false,
                        cors: String::new(),
                        forwarded_for: None,
                    }));
                }
                Parsed::Partial => {}
            }
        }
        if !http::read_more(stream, pending).await? {
            return if pending.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

impl Connection {
    /// Serves one request; gives the connection back when it may serve another.
    async fn serve(
        &mut self,
        mut stream: TcpStream,
        head: Head,
        pending: &mut Vec<u8>,
    ) -> io::Result<Option<TcpStream>> {
        let Head {
            route,
            keep_alive,
            cors,
            forwarded_for,
            ..
        } = head;
        let sessions = Arc::clone(&self.config.polling_sessions);
        let response = match route {
            Route::Refused(refusal) => return refused(stream, refusal, &cors).await,
            Route::WebSocket { accept, sid: None } => {
                let admitted = match self.admit(forwarded_for.as_deref()).await {
                    Ok(admitted) => admitted,
                    Err(refusal) => return refused(stream, refusal, &cors).await,
                };
                let (reader, writer) = websocket(stream, &accept, pending, &self.config).await?;
                let id = Session::launch(
                    reader,
                    writer,
                    Arc::clone(&self.config),
                    Arc::clone(&self.app),
                    self.shutdown.clone(),
                    self.live.sibling(),
                    admitted,
                );
                tracing::debug!(session = %id, "socket upgraded");
                return Ok(None);
            }
            Route::WebSocket {
                accept,
                sid: Some(sid),
            } => {
                let Some(session) = sessions.get(&sid) else {
                    return refused(stream, Refusal::unknown_sid(), &cors).await;
                };
                hand_over(stream, &accept, pending, session).await?;
                return Ok(None);
            }
            Route::Preflight { allow_headers } => {
                http::preflight_response(&cors, allow_headers.as_deref(), keep_alive)
            }
            Route::Handshake => {
                let admitted = match self.admit(forwarded_for.as_deref()).await {
                    Ok(admitted) => admitted,
                    Err(refusal) => return refused(stream, refusal, &cors).await,
                };
                let (first, open) = oneshot::channel();
                let id = Session::launch_polling(
                    first,
                    &sessions,
                    Arc::clone(&self.config),
                    Arc::clone(&self.app),
                    self.shutdown.clone(),
                    self.live.sibling(),
                    admitted,
                );
                tracing::debug!(session = %id, "long-polling session opened");
                match open.await {
                    Ok(open) => http::ok_response(PAYLOAD_TYPE, &open, &cors, keep_alive),
                    // The session ended before it began (the node is stopping).
                    Err(_) => {
                        let refusal = Refusal::unavailable("this node is shutting down; connect again");
                        return refused(stream, refusal, &cors).await;
                    }
                }
            }
            Route::Poll { sid } => {
                // A GET read after the client's close (`POST 1` sent at the
                // same time) ends as if it had been waiting: with a NOOP, as
                // engine.io answers it, not as a stranger's sid.
                let gone = || {
                    if sessions.closed_by_client(&sid) {
                        Ok(http::ok_response(
                            PAYLOAD_TYPE,
                            engine::NOOP_PACKET,
                            &cors,
                            keep_alive,
                        ))
                    } else {
                        Err(Refusal::unknown_sid())
                    }
                };
                let Some(session) = sessions.get(&sid) else {
                    match gone() {
                        Ok(noop) => {
                            stream.write_all(noop.as_bytes()).await?;
                            return Ok(keep_alive.then_some(stream));
                        }
                        Err(refusal) => return refused(stream, refusal, &cors).await,
                    }
                };
                let (reply, answer) = oneshot::channel();
                match session.send(Poll { reply }).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        let refusal = Refusal::bad_request(
                            "a long-poll was already waiting (the session is closed), or the session was upgraded",
                        );
                        return refused(stream, refusal, &cors).await;
                    }
                    Err(_) => match gone() {
                        Ok(noop) => {
                            stream.write_all(noop.as_bytes()).await?;
                            return Ok(keep_alive.then_some(stream));
                        }
                        Err(refusal) => return refused(stream, refusal, &cors).await,
                    },
                }
                match wait_answer(&stream, answer, pending).await {
                    Some(payload) => http::ok_response(PAYLOAD_TYPE, &payload, &cors, keep_alive),
                    None => {
                        // Best effort: a full mailbox means the session is
                        // closing anyway, and it notices at its next flush.
                        let _ = session.try_send(PollAbandoned);
                        return Ok(None);
                    }
                }
            }
            Route::TooLarge { sid } => {
                if let Some(session) = sessions.get(&sid) {
                    tracing::warn!("closing socket: long-polling payload over maxPayload");
                    let _ = session.try_send(Close(DisconnectReason::PayloadTooLarge));
                }
                let refusal = Refusal {
                    status: 413,
                    code: "payload_too_large",
                    message: "the payload is over maxPayload; the session is closed",
                    engine: None,
                    retry_after: None,
                };
                return refused(stream, refusal, &cors).await;
            }
            Route::Push { sid, length } => {
                let Some(session) = sessions.get(&sid) else {
                    return refused(stream, Refusal::unknown_sid(), &cors).await;
                };
                let body = tokio::time::timeout(
                    self.config.handshake_timeout,
                    http::read_body(&stream, pending, length),
                )
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                if let Err(refusal) = push(&session, body).await {
                    return refused(stream, refusal, &cors).await;
                }
                // text/html, as engine.io answers: some browsers offered
                // text/plain answers to POSTs as downloads.
                http::ok_response("text/html", "ok", &cors, keep_alive)
            }
        };
        stream.write_all(response.as_bytes()).await?;
        Ok(keep_alive.then_some(stream))
    }

    /// Admits a new session, or refuses it (counted by reason in
    /// `connections_refused_total`): a node that sheds or drains refuses
    /// every one; an address over its share of sockets or its handshake
    /// rate gets 429; a handshake that finds no room in flight within the
    /// wait gets 503.
    async fn admit(&self, forwarded_for: Option<&str>) -> Result<Admitted, Refusal> {
        let refuse = |reason: &'static str, refusal: Refusal| {
            metrics::counter!("connections_refused_total", "reason" => reason).increment(1);
            refusal
        };
        if let Some(why) = self.config.admission.refusal() {
            return Err(refuse(
                why,
                Refusal::unavailable(if why == "draining" {
                    "this node is shutting down; connect again"
                } else {
                    "this node is short of memory; connect again shortly"
                }),
            ));
        }
        let limits = &self.config.limits;
        let client = limits.client_address(self.peer, forwarded_for);
        let limited = |refusal: LimitRefusal| match refusal {
            LimitRefusal::TooManyFromAddress => refuse(
                "per_address",
                Refusal::too_many(
                    "too_many_connections",
                    "this address holds as many sockets as it may; close one or connect again later",
                    RETRY_AFTER_SECS,
                ),
            ),
            LimitRefusal::HandshakeRate(wait) => refuse(
                "handshake_rate",
                Refusal::too_many(
                    "rate_limited",
                    "this address opens sockets too fast; connect again after Retry-After",
                    u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX),
                ),
            ),
            LimitRefusal::Busy => refuse("in_flight", {
                let mut busy = Refusal::unavailable(
                    "this node has too many handshakes under way; connect again shortly",
                );
                busy.code = "busy";
                busy
            }),
        };
        let slot = limits.admit(client, Instant::now()).map_err(limited)?;
        let handshake = limits.handshake_permit().await.map_err(limited)?;
        Ok(Admitted {
            slot: slot.held_in(limits),
            handshake,
        })
    }
}

/// The Content-Type of a long-polling payload, as engine.io sends it.
const PAYLOAD_TYPE: &str = "text/plain; charset=UTF-8";

/// Refuses the request; the connection is done.
async fn refused(stream: TcpStream, refusal: Refusal, cors: &str) -> io::Result<Option<TcpStream>> {
    refuse(stream, refusal, cors).await;
    Ok(None)
}

/// Answers a WebSocket upgrade and frames the socket.
async fn websocket(
    mut stream: TcpStream,
    accept: &str,
    pending: &mut Vec<u8>,
    config: &SocketConfig,
) -> io::Result<(WsReader, WsWriter)> {
    stream.write_all(switching_protocols(accept).as_bytes()).await?;
    // Frames the client sent right behind its request, if any.
    let early = std::mem::take(pending);
    let (read, write) = stream.into_split();
    let reader = WsReader::new(
        read,
        early,
        config.read_buffer_size,
        config.max_payload,
        config.message_timeout(),
    );
    Ok((reader, WsWriter::new(write)))
}

fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Answers a WebSocket upgrade for a long-polling session and hands the
/// socket to that session, on whichever arbiter it lives; closes it if the
/// session takes none now (engine.io upgrades, then closes, too).
async fn hand_over(
    mut stream: TcpStream,
    accept: &str,
    pending: &mut Vec<u8>,
    session: Addr<Session>,
) -> io::Result<()> {
    stream.write_all(switching_protocols(accept).as_bytes()).await?;
    let early = std::mem::take(pending);
    // Detached from this arbiter's reactor, for the session's to take.
    let taken = session.send(Attach {
        stream: stream.into_std()?,
        early,
    });
    let Ok(Err(refused)) = taken.await else {
        // Taken, or the session is gone (and dropping the socket closes it).
        return Ok(());
    };
    let (_, write) = TcpStream::from_std(refused)?.into_split();
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: "this session takes no WebSocket now".into(),
    }));
    WsWriter::new(write).send(VecDeque::from([close])).await
}

/// Waits for the session's answer to a long-poll, watching the connection
/// meanwhile: `None` once the client has closed it. Bytes the client sends
/// meanwhile (a pipelined request) are kept in `pending` for later.
async fn wait_answer(
    stream: &TcpStream,
    mut answer: oneshot::Receiver<String>,
    pending: &mut Vec<u8>,
) -> Option<String> {
    let mut watching = true;
    loop {
        tokio::select! {
            // A session that vanished without answering has ended.
            payload = &mut answer => return Some(payload.unwrap_or_else(|_| engine::CLOSE_PACKET.to_owned())),
            readable = stream.readable(), if watching => {
                if readable.is_err() {
                    return None;
                }
                let mut chunk = [0_u8; 512];
                match stream.try_read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(read) => {
                        pending.extend_from_slice(&chunk[..read]);
                        watching = false;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return None,
                }
            }
        }
    }
}

/// Decodes a POST's payload and gives its packets to the session.
async fn push(session: &Addr<Session>, body: Vec<u8>) -> Result<(), Refusal> {
    let malformed = |what: &str| {
        tracing::warn!(reason = what, "closing socket: malformed long-polling payload");
        let _ = session.try_send(Close(DisconnectReason::ProtocolError));
        Refusal::bad_request("the payload is malformed; the session is closed")
    };
    let Ok(body) = String::from_utf8(body) else {
        return Err(malformed("not UTF-8"));
    };
    let packets = match engine::decode_payload(&body) {
        Ok(packets) => packets,
        Err(error) => return Err(malformed(&error.to_string())),
    };
    match session.send(Push { packets }).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Refusal::bad_request(
            "the payload broke the protocol, or the session was upgraded",
        )),
        Err(_) => Err(Refusal::unknown_sid()),
    }
}

/// Sends the JSON error, then lets the client finish sending before closing.
async fn refuse(mut stream: TcpStream, refusal: Refusal, cors: &str) {
    tracing::debug!(status = refusal.status, code = refusal.code, "refusing a request");
    let sent = async {
        stream.write_all(refusal.response(cors).as_bytes()).await?;
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
