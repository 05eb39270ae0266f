//! `idle`: open many authenticated sockets, answer the server's pings, hold.
//!
//! Over long-polling (an `http://` URL) each socket is one keep-alive
//! connection that completed the handshake and CONNECT and keeps a GET
//! waiting, as an idle client does; a PING's pong is POSTed on it between
//! GETs (`crate::poll::hold_idle`).
//!
//! Prints two JSON lines on stdout: `{"phase":"established",...}` once every
//! socket has connected or failed, and `{"phase":"held",...}` after the hold.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::poll::{self, Opened};
use crate::proto::{self, Error, Target, Tokens, Transport, Ws};
use crate::stats::{self, Tally};

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Socket.IO endpoint, e.g. ws://127.0.0.1:8081/socket.io/?EIO=4&transport=websocket,
    /// or http://127.0.0.1:8081/socket.io/?EIO=4&transport=polling for long-polling
    #[arg(long)]
    url: String,
    /// The server's JWT_SECRET (HS256).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// The first user id; socket i authenticates as first_user + i.
    #[arg(long, default_value_t = 1)]
    first_user: u64,
    /// Sockets to open (this process's file limit applies: keep it well under 20,000).
    #[arg(long)]
    sockets: u64,
    /// Loopback source address to bind before connecting (127.0.0.x).
    #[arg(long)]
    local_addr: Option<String>,
    /// Seconds to hold the sockets once all are connected.
    #[arg(long, default_value_t = 30)]
    hold_secs: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Give up on one socket's connect + handshake after this many seconds.
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
}

struct Shared {
    target: Target,
    local: Option<Ipv4Addr>,
    tokens: Tokens,
    permits: Semaphore,
    timeout: Duration,
    open: AtomicU64,
    pings: AtomicU64,
}

type Outcome = Result<Instant, Error>;

/// A connected socket, on its transport.
enum Held {
    Ws(Box<Ws>),
    Poll(Opened),
}

pub async fn run(args: IdleArgs) -> Result<(), Error> {
    if args.sockets == 0 || args.connect_concurrency == 0 {
        return Err(Error::Config(
            "--sockets and --connect-concurrency must be positive".into(),
        ));
    }
    let shared = Arc::new(Shared {
        target: Target::parse(&args.url)?,
        local: args.local_addr.as_deref().map(proto::parse_local).transpose()?,
        tokens: Tokens::new(&args.secret, Duration::from_secs(args.hold_secs + 3600)),
        permits: Semaphore::new(args.connect_concurrency),
        timeout: Duration::from_secs(args.timeout_secs),
        open: AtomicU64::new(0),
        pings: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();

    let started = Instant::now();
    let start_ms = proto::unix_ms();
    for i in 0..args.sockets {
        tokio::spawn(socket(
            shared.clone(),
            args.first_user + i,
            done_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(done_tx);

    let mut established = 0u64;
    let mut failures = Tally::default();
    let mut first_error = None;
    let mut last = started;
    while let Some(outcome) = done_rx.recv().await {
        match outcome {
            Ok(at) => {
                established += 1;
                last = last.max(at);
            }
            Err(error) => {
                failures.add(error.kind(), 1);
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let secs = last.duration_since(started).as_secs_f64();
    let end_ms = start_ms + (secs * 1000.0) as u64;
    stats::emit(&json!({
        "phase": "established",
        "sockets": args.sockets,
        "established": established,
        "failed": failures.total(),
        "failures": failures.to_json(),
        "first_error": first_error,
        "secs": secs,
        "established_per_sec": if secs > 0.0 { established as f64 / secs } else { 0.0 },
        "start_unix_ms": start_ms,
        "end_unix_ms": end_ms,
        "local_addr": args.local_addr,
    }));

    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let open = shared.open.load(Ordering::Relaxed);
    stats::emit(&json!({
        "phase": "held",
        "hold_secs": args.hold_secs,
        "established": established,
        "open_at_end": open,
        "closed_during_hold": established.saturating_sub(open),
        "pings_answered": shared.pings.load(Ordering::Relaxed),
    }));
    let _ = stop_tx.send(true);
    Ok(())
}

async fn socket(
    shared: Arc<Shared>,
    user: u64,
    done: mpsc::UnboundedSender<Outcome>,
    stop: watch::Receiver<bool>,
) {
    let connected = {
        let Ok(_permit) = shared.permits.acquire().await else {
            return;
        };
        let attempt = async {
            let token = shared.tokens.issue(user)?;
            match shared.target.transport {
                Transport::WebSocket => proto::connect(&shared.target, shared.local, &token)
                    .await
                    .map(|ws| Held::Ws(Box::new(ws))),
                Transport::Polling => poll::connect(
                    &shared.target,
                    shared.local,
                    &format!("{{\"token\":\"{token}\"}}"),
                )
                .await
                .map(Held::Poll),
            }
        };
        match tokio::time::timeout(shared.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    };
    match connected {
        Ok(held) => {
            shared.open.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(Ok(Instant::now()));
            drop(done);
            match held {
                Held::Ws(ws) => hold(&shared, *ws, stop).await,
                Held::Poll(opened) => {
                    let pongs = || {
                        shared.pings.fetch_add(1, Ordering::Relaxed);
                    };
                    poll::hold_idle(&shared.target, opened, stop, pongs).await;
                }
            }
            shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        Err(error) => {
            let _ = done.send(Err(error));
        }
    }
}

/// Answers pings until the server closes the socket or the run stops.
async fn hold(shared: &Shared, mut ws: Ws, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    if ws.send(Message::text("3")).await.is_err() {
                        return;
                    }
                    shared.pings.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
