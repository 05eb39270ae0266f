//! `replay`: a reconnect storm with a backlog. Sockets for users
//! first_user..first_user+sockets connect at once with auth `{ token, since }`
//! and each counts `new_message` events until it holds `messages` distinct
//! ids, checking that they arrive in increasing id order, none twice, and
//! all addressed to its user.
//!
//! Prints one JSON report (`{"phase":"done",...}`) once every socket is
//! complete, closed or failed (and a short settle has passed, to catch what
//! arrives after the last expected message), or at the deadline.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::{self, Message, error::ProtocolError};

use crate::proto::{self, Error, Target, Tokens, Ws};
use crate::stats::{self, Tally};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Socket.IO endpoint, e.g. ws://127.0.0.1:8081/socket.io/?EIO=4&transport=websocket
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
    /// Missed messages each user has after `since`: a socket is complete
    /// when it holds this many distinct ids.
    #[arg(long)]
    messages: u64,
    /// The `since` every socket sends in its CONNECT auth.
    #[arg(long)]
    since: i64,
    /// Loopback source address to bind before connecting (127.0.0.x).
    #[arg(long)]
    local_addr: Option<String>,
    /// Handshakes in flight at once (default: every socket at once, as a
    /// reconnect storm after a deploy or a network blip would be).
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Give up on one socket's connect + handshake after this many seconds.
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
    /// Stop waiting for replays this many seconds after the first connect.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// Milliseconds to keep reading once every socket is done, so that a
    /// duplicate or extra message sent after the last expected one counts.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
}

struct Shared {
    target: Target,
    local: Option<Ipv4Addr>,
    tokens: Tokens,
    permits: Semaphore,
    timeout: Duration,
    expected: u64,
    since: i64,
    /// Where the process's clock starts: the first connect attempt.
    started: Instant,
}

/// What one socket saw. Times are microseconds since [`Shared::started`].
#[derive(Default)]
struct SocketReport {
    connect_error: Option<Error>,
    connected_us: Option<u64>,
    /// Distinct ids received.
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    /// `new_message` events for another recipient, or without an id.
    foreign: u64,
    resync_required: u64,
    error_events: u64,
    /// From this socket's connect attempt to its last expected message.
    complete_us: Option<u64>,
    first_message_us: Option<u64>,
    last_message_us: Option<u64>,
    /// How the server ended the socket, if it did, and whether the socket
    /// was complete by then.
    closed: Option<String>,
    closed_us: Option<u64>,
    closed_when_complete: bool,
}

impl SocketReport {
    fn complete(&self) -> bool {
        self.complete_us.is_some()
    }
}

pub async fn run(args: ReplayArgs) -> Result<(), Error> {
    if args.sockets == 0 || args.connect_concurrency == Some(0) {
        return Err(Error::Config(
            "--sockets and --connect-concurrency must be positive".into(),
        ));
    }
    let concurrency = args
        .connect_concurrency
        .unwrap_or(usize::try_from(args.sockets).unwrap_or(usize::MAX));
    let target = Target::parse(&args.url)?;
    if target.transport != proto::Transport::WebSocket {
        return Err(Error::Config(
            "replay runs over WebSocket only (a ws:// --url)".into(),
        ));
    }
    let shared = Arc::new(Shared {
        target,
        local: args.local_addr.as_deref().map(proto::parse_local).transpose()?,
        tokens: Tokens::new(&args.secret, Duration::from_secs(args.deadline_secs + 3600)),
        permits: Semaphore::new(concurrency.min(Semaphore::MAX_PERMITS)),
        timeout: Duration::from_secs(args.timeout_secs),
        expected: args.messages,
        since: args.since,
        started: Instant::now(),
    });
    let start_ms = proto::unix_ms();
    let deadline = TokioInstant::now() + Duration::from_secs(args.deadline_secs);
    let (stop_tx, stop_rx) = watch::channel(false);
    // One () per socket once it is complete, closed, failed or told to resync.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();

    let mut tasks = JoinSet::new();
    for i in 0..args.sockets {
        tasks.spawn(socket(
            shared.clone(),
            args.first_user + i,
            done_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(done_tx);

    let mut finished = 0u64;
    let mut timed_out = false;
    while finished < args.sockets {
        tokio::select! {
            done = done_rx.recv() => match done {
                Some(()) => finished += 1,
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                break;
            }
        }
    }
    if !timed_out {
        let settle = TokioInstant::now() + Duration::from_millis(args.settle_ms);
        tokio::time::sleep_until(settle.min(deadline)).await;
    }
    let _ = stop_tx.send(true);

    let mut connect_failures = Tally::default();
    let mut first_error = None;
    let mut closed_by_server = Tally::default();
    let mut closed_after_complete = 0u64;
    let (mut connected, mut complete, mut incomplete_open) = (0u64, 0u64, 0u64);
    let (mut delivered, mut duplicates, mut out_of_order, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    let (mut resync, mut error_events, mut extra) = (0u64, 0u64, 0u64);
    let mut complete_us = Vec::new();
    let mut connect_us = Vec::new();
    let (mut first_message_us, mut last_message_us): (Option<u64>, Option<u64>) = (None, None);
    let mut last_close_us: Option<u64> = None;
    while let Some(joined) = tasks.join_next().await {
        let report = joined.map_err(|error| Error::Protocol(format!("a socket task failed: {error}")))?;
        if let Some(error) = report.connect_error {
            connect_failures.add(error.kind(), 1);
            first_error.get_or_insert_with(|| error.to_string());
            continue;
        }
        connected += 1;
        connect_us.extend(report.connected_us);
        delivered += report.delivered;
        duplicates += report.duplicates;
        out_of_order += report.out_of_order;
        foreign += report.foreign;
        resync += report.resync_required;
        error_events += report.error_events;
        extra += report.delivered.saturating_sub(args.messages);
        if report.complete() {
            complete += 1;
        }
        match (&report.closed, report.closed_when_complete) {
            (Some(_), true) => closed_after_complete += 1,
            (Some(how), false) => {
                closed_by_server.add(how.as_str(), 1);
                last_close_us = last_close_us.max(report.closed_us);
            }
            (None, _) if !report.complete() => incomplete_open += 1,
            (None, _) => {}
        }
        complete_us.extend(report.complete_us);
        first_message_us = match (first_message_us, report.first_message_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_message_us = last_message_us.max(report.last_message_us);
    }
    let unix = |us: Option<u64>| us.map(|us| start_ms + us / 1000);
    let mut complete_ms: Vec<f64> = complete_us.iter().map(|&us| (us / 100) as f64 / 10.0).collect();
    complete_ms.sort_by(f64::total_cmp);
    stats::emit(&json!({
        "phase": "done",
        "sockets": args.sockets,
        "messages_per_socket": args.messages,
        "since": args.since,
        "connected": connected,
        "connect_failed": connect_failures.total(),
        "connect_failures": connect_failures.to_json(),
        "first_error": first_error,
        "complete": complete,
        "delivered": delivered,
        "expected": args.sockets * args.messages,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "foreign": foreign,
        "extra": extra,
        "resync_required": resync,
        "error_events": error_events,
        "closed_by_server": closed_by_server.total(),
        "closed_by_server_how": closed_by_server.to_json(),
        "closed_after_complete": closed_after_complete,
        "incomplete_open": incomplete_open,
        "timed_out": timed_out,
        "start_unix_ms": start_ms,
        "first_message_unix_ms": unix(first_message_us),
        "last_message_unix_ms": unix(last_message_us),
        // When the last socket the server closed before it was complete ended.
        "last_close_unix_ms": unix(last_close_us),
        "connect_ms": stats::summary(&mut connect_us),
        "complete_ms_summary": stats::summary(&mut complete_us),
        // Every socket's figure, so that runs of several processes can be
        // put together into one distribution.
        "complete_ms": complete_ms,
        "local_addr": args.local_addr,
    }));
    Ok(())
}

async fn socket(
    shared: Arc<Shared>,
    user: u64,
    done: mpsc::UnboundedSender<()>,
    stop: watch::Receiver<bool>,
) -> SocketReport {
    let mut report = SocketReport::default();
    let (attempt_us, connected) = {
        let Ok(_permit) = shared.permits.acquire().await else {
            report.connect_error = Some(Error::Closed);
            let _ = done.send(());
            return report;
        };
        let attempt_us = micros(shared.started.elapsed());
        let attempt = async {
            let token = shared.tokens.issue(user)?;
            proto::connect_since(&shared.target, shared.local, &token, shared.since).await
        };
        let connected = match tokio::time::timeout(shared.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        };
        (attempt_us, connected)
    };
    match connected {
        Ok(ws) => {
            report.connected_us = Some(micros(shared.started.elapsed()) - attempt_us);
            if shared.expected == 0 {
                report.complete_us = report.connected_us;
                let _ = done.send(());
            }
            receive(&shared, user, attempt_us, ws, &mut report, &done, stop).await;
        }
        Err(error) => {
            report.connect_error = Some(error);
            let _ = done.send(());
        }
    }
    report
}

/// Reads the replay until the run stops or the server ends the socket,
/// telling `done` once when this socket has nothing more to wait for.
async fn receive(
    shared: &Shared,
    user: u64,
    attempt_us: u64,
    mut ws: Ws,
    report: &mut SocketReport,
    done: &mpsc::UnboundedSender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ids = IdCheck::new(user, shared.since, shared.expected);
    let mut told = shared.expected == 0;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = ws.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                report.closed = Some(match frame {
                    Some(frame) => format!("close:{}", u16::from(frame.code)),
                    None => "close".into(),
                });
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                report.closed = Some(close_label(error));
                break;
            }
            None => {
                report.closed = Some("eof".into());
                break;
            }
        };
        let text = text.as_str();
        if text == "2" {
            if let Err(error) = ws.send(Message::text("3")).await {
                report.closed = Some(close_label(error));
                break;
            }
        } else if text.starts_with("42[\"new_message\"") {
            let now_us = micros(shared.started.elapsed());
            report.first_message_us.get_or_insert(now_us);
            report.last_message_us = Some(now_us);
            if ids.record(text) && report.complete_us.is_none() {
                report.complete_us = Some(now_us - attempt_us);
            }
        } else if text.starts_with("42[\"resync_required\"") {
            report.resync_required += 1;
        } else if text.starts_with("42[\"error\"") {
            report.error_events += 1;
        }
        // A socket told to resync gets no replay: it would page the REST
        // history, which this benchmark does not measure.
        if !told && (report.complete() || report.resync_required > 0) {
            told = true;
            let _ = done.send(());
        }
    }
    if report.closed.is_some() {
        report.closed_us = Some(micros(shared.started.elapsed()));
    }
    report.closed_when_complete = report.complete();
    report.delivered = ids.delivered;
    report.duplicates = ids.duplicates;
    report.out_of_order = ids.out_of_order;
    report.foreign = ids.foreign;
    if !told {
        let _ = done.send(());
    }
}

/// The checks on one socket's `new_message` events: ids above `since`,
/// each once, in increasing order, all addressed to the socket's user.
struct IdCheck {
    recipient: i64,
    expected: u64,
    seen: HashSet<i64>,
    last: i64,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
}

impl IdCheck {
    fn new(user: u64, since: i64, expected: u64) -> Self {
        Self {
            recipient: i64::try_from(user).unwrap_or(i64::MAX),
            expected,
            seen: HashSet::with_capacity(usize::try_from(expected).unwrap_or(0)),
            last: since,
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
        }
    }

    /// Counts one `new_message` frame; true when it is the one that makes
    /// `expected` distinct ids.
    fn record(&mut self, frame: &str) -> bool {
        let Some((id, to)) = number_after(frame, "\"id\":").zip(number_after(frame, "\"recipient_id\":"))
        else {
            self.foreign += 1;
            return false;
        };
        if to != self.recipient {
            self.foreign += 1;
            return false;
        }
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return false;
        }
        // An id at or below `since` is out of order too: the client held it.
        if id <= self.last {
            self.out_of_order += 1;
        }
        self.last = self.last.max(id);
        self.delivered += 1;
        self.delivered == self.expected
    }
}

/// How a socket the server ended looks from here.
fn close_label(error: tungstenite::Error) -> String {
    match error {
        // The server dropped the connection without a close frame (as it
        // does for a slow consumer: nothing more is written to it).
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            "reset_without_close".into()
        }
        other => Error::from(other).kind(),
    }
}

/// The integer after the first `key` in a frame. Keys inside a message body
/// cannot match: their quotes arrive escaped (`\"id\":`).
fn number_after(text: &str, key: &str) -> Option<i64> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_and_the_recipient_not_the_other_ids() {
        let frame = r#"42["new_message",{"id":9001,"conversation_id":3,"sender_id":1,"recipient_id":22,"message":"hi","sent_at":"2026-11-27T10:00:00.000Z"}]"#;
        assert_eq!(number_after(frame, "\"id\":"), Some(9001));
        assert_eq!(number_after(frame, "\"recipient_id\":"), Some(22));
    }

    fn frame(id: i64, recipient: i64) -> String {
        format!(
            r#"42["new_message",{{"id":{id},"conversation_id":3,"sender_id":7,"recipient_id":{recipient},"message":"m","sent_at":"2026-11-27T10:00:00.000Z"}}]"#
        )
    }

    #[test]
    fn complete_once_every_expected_id_has_come_in_order() {
        let mut check = IdCheck::new(5, 100, 3);
        assert!(!check.record(&frame(101, 5)));
        assert!(!check.record(&frame(150, 5)));
        assert!(check.record(&frame(151, 5)));
        assert_eq!(
            (
                check.delivered,
                check.duplicates,
                check.out_of_order,
                check.foreign
            ),
            (3, 0, 0, 0)
        );
    }

    #[test]
    fn counts_duplicates_late_ids_and_other_recipients() {
        let mut check = IdCheck::new(5, 100, 4);
        check.record(&frame(110, 5));
        check.record(&frame(110, 5)); // twice
        check.record(&frame(105, 5)); // after a larger id
        check.record(&frame(90, 5)); // at or below since
        check.record(&frame(120, 6)); // someone else's
        check.record(r#"42["new_message",{"message":"no id"}]"#);
        assert_eq!(
            (
                check.delivered,
                check.duplicates,
                check.out_of_order,
                check.foreign
            ),
            (3, 1, 2, 2)
        );
    }

    #[test]
    fn a_key_in_the_body_is_not_a_key() {
        let frame = r#"42["new_message",{"conversation_id":3,"message":"{\"id\":5}"}]"#;
        assert_eq!(number_after(frame, "\"id\":"), None);
    }
}
