//! `chat`: sender/recipient pairs, open-loop at a fixed aggregate rate.
//!
//! Message k (0-based, over the whole run) is due at `t0 + k / rate` and is
//! sent by sender `k % pairs` to its own recipient, with ack id k, whatever
//! acks are outstanding. Its body carries `lg:<run>:<k>:<send time in ns>`
//! on this process's monotonic clock, so the recipient's arrival time minus
//! the send time is the delivery latency; the ack's arrival minus the send
//! time is the ack latency. `run` tells this process's messages from those
//! of an earlier run that a server sends again (a replay): those are
//! counted as `foreign`, not as deliveries. Prints `{"phase":"sending"}` when sending starts and one
//! JSON report at the end.
//!
//! Senders connect to `--url`, recipients to `--recipient-url` (another node
//! of a cluster; default `--url`), so both ends of a cross-node message are
//! timed on this one clock. The pairs are contiguous user ids from
//! `--first-user`, or any users, listed in `--pairs-file`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;

use crate::proto::{self, Error, Target, Tokens};
use crate::socket::Socket;
use crate::stats::{self, Tally};

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Socket.IO endpoint of the senders, e.g. ws://127.0.0.1:8081/socket.io/?EIO=4&transport=websocket,
    /// or http://127.0.0.1:8081/socket.io/?EIO=4&transport=polling for long-polling
    #[arg(long)]
    url: String,
    /// Endpoint of the recipients (default: `--url`). Given more than once,
    /// pair i's recipient connects to the (i mod count)-th.
    #[arg(long)]
    recipient_url: Vec<String>,
    /// The server's JWT_SECRET (HS256).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Sender/recipient pairs: senders are users first_user..first_user+pairs,
    /// recipients the next `pairs` ids (all must have profiles).
    #[arg(long, required_unless_present = "pairs_file", conflicts_with = "pairs_file")]
    pairs: Option<u64>,
    #[arg(long, default_value_t = 1, conflicts_with = "pairs_file")]
    first_user: u64,
    /// The pairs instead, one `<sender id> <recipient id>` per line, every
    /// user at most once in the file.
    #[arg(long)]
    pairs_file: Option<PathBuf>,
    /// Aggregate offered rate, messages per second over all senders.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Extra characters in each message body (after the sequence marker).
    #[arg(long, default_value_t = 40)]
    pad: usize,
    /// Seconds to wait after the last send for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// Loopback source address to bind before connecting (127.0.0.x).
    #[arg(long)]
    local_addr: Option<String>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Give up on one socket's connect + handshake after this many seconds.
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    acked_ok: AtomicU64,
    delivered: AtomicU64,
}

struct Plan {
    clock: Instant,
    t0: TokioInstant,
    rate: f64,
    pairs: u64,
    total: u64,
    /// This process's tag in every body.
    run: u64,
    /// Pair i's recipient is `recipients[i]`.
    recipients: Vec<u64>,
    pad: String,
}

impl Plan {
    fn due(&self, k: u64) -> TokioInstant {
        self.t0 + Duration::from_secs_f64(k as f64 / self.rate)
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }
}

#[derive(Default)]
struct SenderReport {
    sent: u64,
    ok: u64,
    errors: Tally,
    unacked: u64,
    ack_us: Vec<u64>,
    lag_us: Vec<u64>,
    first_send: Option<TokioInstant>,
    last_send: Option<TokioInstant>,
    last_ack: Option<TokioInstant>,
    closed_early: bool,
    server_errors: u64,
}

#[derive(Default)]
struct RecipientReport {
    deliveries: Vec<(u64, u64)>,
    foreign: u64,
    unexpected: u64,
    closed_early: bool,
}

enum Report {
    Sender(SenderReport),
    Recipient(RecipientReport),
}

/// Sender and recipient user ids, pair by pair.
type Pairs = Vec<(u64, u64)>;

pub async fn run(args: ChatArgs) -> Result<(), Error> {
    if args.pairs == Some(0) || args.connect_concurrency == 0 || !positive(args.rate) || !positive(args.secs)
    {
        return Err(Error::Config(
            "--pairs, --rate, --secs and --connect-concurrency must be positive".into(),
        ));
    }
    let pairs = match (&args.pairs_file, args.pairs) {
        (Some(path), _) => read_pairs(path)?,
        (None, Some(n)) => (0..n)
            .map(|i| (args.first_user + i, args.first_user + n + i))
            .collect(),
        (None, None) => return Err(Error::Config("--pairs or --pairs-file is required".into())),
    };
    let senders = Arc::new(Target::parse(&args.url)?);
    let recipients = if args.recipient_url.is_empty() {
        vec![senders.clone()]
    } else {
        args.recipient_url
            .iter()
            .map(|url| Target::parse(url).map(Arc::new))
            .collect::<Result<_, _>>()?
    };
    let local = args.local_addr.as_deref().map(proto::parse_local).transpose()?;
    let tokens = Arc::new(Tokens::new(&args.secret, Duration::from_secs(3600)));
    let clock = Instant::now();

    let connect_started = Instant::now();
    let sockets = connect_all(&args, &pairs, &senders, &recipients, local, tokens).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();

    let total = (args.rate * args.secs).floor() as u64;
    let pair_count = pairs.len() as u64;
    let plan = Arc::new(Plan {
        clock,
        t0: TokioInstant::now() + Duration::from_millis(200),
        rate: args.rate,
        pairs: pair_count,
        total,
        run: u64::from(std::process::id()) << 32 | (proto::unix_ms() & 0xffff_ffff),
        recipients: pairs.iter().map(|&(_, recipient)| recipient).collect(),
        pad: "x".repeat(args.pad),
    });
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    stats::emit(
        &json!({ "phase": "sending", "pairs": pair_count, "rate": args.rate, "secs": args.secs, "connect_secs": connect_secs }),
    );

    let mut tasks = JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let i = i as u64;
        let (plan, counters, stop) = (plan.clone(), counters.clone(), stop_rx.clone());
        if i < pair_count {
            tasks.spawn(async move { Report::Sender(sender(i, ws, &plan, &counters, stop).await) });
        } else {
            tasks.spawn(async move { Report::Recipient(recipient(ws, &plan, &counters, stop).await) });
        }
    }

    // Send for `secs`, then wait for what is outstanding, within `drain_secs`.
    tokio::time::sleep_until(plan.due(total)).await;
    let drain_deadline = TokioInstant::now() + Duration::from_secs(args.drain_secs);
    while TokioInstant::now() < drain_deadline {
        let sent = counters.sent.load(Ordering::Relaxed);
        let settled = counters.acked.load(Ordering::Relaxed) >= sent
            && counters.delivered.load(Ordering::Relaxed) >= counters.acked_ok.load(Ordering::Relaxed);
        if sent >= total && settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);

    let mut senders = SenderReport::default();
    let mut deliveries = Vec::new();
    let (mut unexpected, mut foreign, mut recipients_closed) = (0u64, 0u64, 0u64);
    let mut senders_closed = 0u64;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Report::Sender(report)) => {
                senders.sent += report.sent;
                senders.ok += report.ok;
                senders.errors.merge(report.errors);
                senders.unacked += report.unacked;
                senders.ack_us.extend(report.ack_us);
                senders.lag_us.extend(report.lag_us);
                senders.server_errors += report.server_errors;
                senders_closed += u64::from(report.closed_early);
                senders.first_send = match (senders.first_send, report.first_send) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                senders.last_send = senders.last_send.max(report.last_send);
                senders.last_ack = senders.last_ack.max(report.last_ack);
            }
            Ok(Report::Recipient(report)) => {
                deliveries.extend(report.deliveries);
                unexpected += report.unexpected;
                foreign += report.foreign;
                recipients_closed += u64::from(report.closed_early);
            }
            Err(error) => return Err(Error::Protocol(format!("a socket task failed: {error}"))),
        }
    }

    deliveries.sort_unstable();
    let received = deliveries.len() as u64;
    deliveries.dedup_by_key(|(seq, _)| *seq);
    let delivered = deliveries.len() as u64;
    let mut delivery_us: Vec<u64> = deliveries.iter().map(|(_, us)| *us).collect();
    let send_window = match (senders.first_send, senders.last_send) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    // Acks per second from the first send to the last ack: what the server
    // persisted, whatever was offered.
    let ack_window = match (senders.first_send, senders.last_ack) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let pct = |n: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            (n as f64 * 10000.0 / of as f64).round() / 100.0
        }
    };
    let report: Value = json!({
        "phase": "done",
        "pairs": pair_count,
        "offered_rate": args.rate,
        "secs": args.secs,
        "scheduled": total,
        "sent": senders.sent,
        "achieved_send_rate": if send_window > 0.0 { senders.sent as f64 / send_window } else { 0.0 },
        "acked_ok": senders.ok,
        "acked_ok_per_sec": if ack_window > 0.0 { senders.ok as f64 / ack_window } else { 0.0 },
        "ack_errors": senders.errors.to_json(),
        "ack_missing": senders.unacked,
        "delivered": delivered,
        "duplicates": received - delivered,
        "delivered_pct": pct(delivered, senders.sent),
        "delivered_pct_of_acked_ok": pct(delivered, senders.ok),
        "delivery_ms": stats::summary(&mut delivery_us),
        "ack_ms": stats::summary(&mut senders.ack_us),
        "send_lag_ms": stats::summary(&mut senders.lag_us),
        "server_error_events": senders.server_errors,
        "unexpected_frames": unexpected,
        "foreign_messages": foreign,
        "sockets_closed_early": senders_closed + recipients_closed,
        "connect_secs": connect_secs,
    });
    stats::emit(&report);
    Ok(())
}

fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// `<sender> <recipient>` per line; blank lines are skipped. A user listed
/// twice would hold two sockets and count deliveries twice, so it is refused.
fn read_pairs(path: &Path) -> Result<Pairs, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| Error::Config(format!("--pairs-file {}: {error}", path.display())))?;
    let mut pairs = Pairs::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let ids: Vec<&str> = line.split_whitespace().collect();
        if ids.is_empty() {
            continue;
        }
        let bad = || {
            Error::Config(format!(
                "--pairs-file {} line {}: want `<sender> <recipient>`",
                path.display(),
                n + 1
            ))
        };
        let [sender, recipient] = ids[..] else {
            return Err(bad());
        };
        let (sender, recipient) = (
            sender.parse().map_err(|_| bad())?,
            recipient.parse().map_err(|_| bad())?,
        );
        if !seen.insert(sender) || !seen.insert(recipient) {
            return Err(Error::Config(format!(
                "--pairs-file {} line {}: a user appears twice",
                path.display(),
                n + 1
            )));
        }
        pairs.push((sender, recipient));
    }
    if pairs.is_empty() {
        return Err(Error::Config(format!(
            "--pairs-file {}: no pairs",
            path.display()
        )));
    }
    Ok(pairs)
}

/// Connects the senders (to `senders`) then the recipients (pair i's to
/// `recipients[i % len]`), all of them or an error.
async fn connect_all(
    args: &ChatArgs,
    pairs: &Pairs,
    senders: &Arc<Target>,
    recipients: &[Arc<Target>],
    local: Option<Ipv4Addr>,
    tokens: Arc<Tokens>,
) -> Result<Vec<Socket>, Error> {
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let timeout = Duration::from_secs(args.timeout_secs);
    let count = pairs.len();
    let ends = pairs.iter().map(|&(sender, _)| (sender, senders)).chain(
        pairs
            .iter()
            .enumerate()
            .map(|(i, &(_, recipient))| (recipient, &recipients[i % recipients.len()])),
    );
    let mut tasks = JoinSet::new();
    for (i, (user, target)) in ends.enumerate() {
        let (target, tokens, permits) = (target.clone(), tokens.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|_| Error::Closed)?;
            let attempt = async {
                let token = tokens.issue(user)?;
                Socket::connect(&target, local, &token).await
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(result) => result.map(|ws| (i, ws)),
                Err(_) => Err(Error::Timeout),
            }
        });
    }
    let mut sockets: Vec<Option<Socket>> = (0..count * 2).map(|_| None).collect();
    let mut failures = Tally::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((i, ws))) => sockets[i] = Some(ws),
            Ok(Err(error)) => {
                failures.add(error.kind(), 1);
                first_error.get_or_insert_with(|| error.to_string());
            }
            Err(error) => return Err(Error::Protocol(format!("a connect task failed: {error}"))),
        }
    }
    if failures.total() > 0 {
        return Err(Error::Protocol(format!(
            "{} of {} sockets failed to connect ({}); first: {}",
            failures.total(),
            count * 2,
            failures.to_json(),
            first_error.unwrap_or_default()
        )));
    }
    Ok(sockets.into_iter().flatten().collect())
}

async fn sender(
    index: u64,
    mut ws: Socket,
    plan: &Plan,
    counters: &Counters,
    mut stop: watch::Receiver<bool>,
) -> SenderReport {
    let mut report = SenderReport::default();
    let recipient = plan.recipients[index as usize];
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut next = index;
    let timer = tokio::time::sleep_until(plan.due(next));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            () = &mut timer, if next < plan.total => {
                let due = plan.due(next);
                let now = TokioInstant::now();
                let sent_ns = plan.now_ns();
                let frame = format!(
                    "42{next}[\"chat_message\",{{\"recipient_id\":{recipient},\"message\":\"lg:{}:{next}:{sent_ns}:{}\"}}]",
                    plan.run, plan.pad
                );
                if ws.send(frame).await.is_err() {
                    report.closed_early = true;
                    break;
                }
                pending.insert(next, sent_ns);
                report.sent += 1;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                report.lag_us.push(now.saturating_duration_since(due).as_micros() as u64);
                report.first_send.get_or_insert(now);
                report.last_send = Some(now);
                next += plan.pairs;
                if next < plan.total {
                    timer.as_mut().reset(plan.due(next));
                }
            }
            frame = ws.next() => match frame {
                Some(text) => {
                    let text = text.as_str();
                    if text == "2" {
                        if ws.send("3".to_owned()).await.is_err() {
                            report.closed_early = true;
                            break;
                        }
                    } else if let Some(rest) = text.strip_prefix("43") {
                        on_ack(rest, plan, counters, &mut pending, &mut report);
                    } else if text.starts_with("42[\"error\"") {
                        report.server_errors += 1;
                    }
                }
                None => {
                    report.closed_early = true;
                    break;
                }
            },
        }
    }
    report.unacked = pending.len() as u64;
    report
}

/// `43<id>[{"ok":true,...}]` or `43<id>[{"ok":false,"error":{"code":..}}]`.
fn on_ack(
    rest: &str,
    plan: &Plan,
    counters: &Counters,
    pending: &mut HashMap<u64, u64>,
    report: &mut SenderReport,
) {
    let now_ns = plan.now_ns();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Some(sent_ns) = rest[..digits]
        .parse()
        .ok()
        .and_then(|id: u64| pending.remove(&id))
    else {
        report.errors.add("unmatched_ack", 1);
        return;
    };
    report.ack_us.push(now_ns.saturating_sub(sent_ns) / 1000);
    report.last_ack = Some(TokioInstant::now());
    counters.acked.fetch_add(1, Ordering::Relaxed);
    let body = &rest[digits..];
    if body.contains("\"ok\":true") {
        report.ok += 1;
        counters.acked_ok.fetch_add(1, Ordering::Relaxed);
    } else {
        let code = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|args| args[0]["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unparsed".into());
        report.errors.add(code, 1);
    }
}

async fn recipient(
    mut ws: Socket,
    plan: &Plan,
    counters: &Counters,
    mut stop: watch::Receiver<bool>,
) -> RecipientReport {
    let mut report = RecipientReport::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = ws.next() => match frame {
                Some(text) => {
                    let text = text.as_str();
                    if text == "2" {
                        if ws.send("3".to_owned()).await.is_err() {
                            report.closed_early = true;
                            break;
                        }
                    } else if text.starts_with("42[\"new_message\"")
                        && let Some((run, seq, sent_ns)) = marker(text)
                    {
                        if run == plan.run {
                            let latency_us = plan.now_ns().saturating_sub(sent_ns) / 1000;
                            report.deliveries.push((seq, latency_us));
                            counters.delivered.fetch_add(1, Ordering::Relaxed);
                        } else {
                            report.foreign += 1;
                        }
                    } else {
                        report.unexpected += 1;
                    }
                }
                None => {
                    report.closed_early = true;
                    break;
                }
            },
        }
    }
    report
}

/// `lg:<run>:<seq>:<ns>:` inside a `new_message` frame.
fn marker(text: &str) -> Option<(u64, u64, u64)> {
    let start = text.find("\"lg:")? + 4;
    let mut parts = text[start..].splitn(4, ':');
    let run = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let ns = parts.next()?.parse().ok()?;
    Some((run, seq, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_wherever_the_body_is() {
        let frame =
            r#"42["new_message",{"conversation_id":3,"id":9,"message":"lg:5:17:123456:xxxx","sender_id":1}]"#;
        assert_eq!(marker(frame), Some((5, 17, 123456)));
        assert_eq!(marker(r#"42["new_message",{"message":"hello"}]"#), None);
    }

    fn pairs_from(name: &str, text: &str) -> Result<Pairs, Error> {
        let path = std::env::temp_dir().join(format!("aurum-loadgen-{name}-{}", std::process::id()));
        std::fs::write(&path, text).map_err(Error::Io)?;
        let pairs = read_pairs(&path);
        let _ = std::fs::remove_file(&path);
        pairs
    }

    #[test]
    fn reads_a_pairs_file() {
        let pairs = pairs_from("ok", "17 4\n\n9 250\n").map_err(|e| e.to_string());
        assert_eq!(pairs, Ok(vec![(17, 4), (9, 250)]));
    }

    #[test]
    fn refuses_a_user_twice_or_a_bad_line() {
        assert!(pairs_from("twice", "1 2\n3 1\n").is_err());
        assert!(pairs_from("self", "5 5\n").is_err());
        assert!(pairs_from("three", "1 2 3\n").is_err());
        assert!(pairs_from("empty", "\n").is_err());
    }
}
