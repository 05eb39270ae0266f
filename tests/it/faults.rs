//! Faults under chat load (issue 14): PostgreSQL stopped and started,
//! Redis stopped and started between two nodes, a node SIGKILLed, and the
//! network between a node and PostgreSQL and Redis cut for 30 s. Real
//! processes, real sockets; each test keeps members chatting through the
//! fault and then checks what every sender heard against the database and
//! against what every recipient holds.
//!
//! The promises checked, every time: an ack is `ok` with an id that is
//! committed, or a refusal (`unavailable`, `busy`) that the sender retries
//! with the same `client_id`, or the socket ends (its node died); never a
//! false ok, never an ack that does not come. Every acked message is in
//! the database exactly once and reaches its recipient, live or through
//! `since` on a reconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::node::ChildNode;
use crate::helpers::postgres::TestPostgres;
use crate::helpers::redis::TestRedis;
use crate::helpers::relay::Relay;
use crate::helpers::report;
use crate::helpers::ws::RawClient;
use crate::helpers::{TestApp, TestDb};

/// How long a test waits for one ack before calling it a hang.
const ACK_PATIENCE: Duration = Duration::from_secs(20);

/// Between one member's messages: under the per-sender rate (20/s).
const PACE: Duration = Duration::from_millis(70);

/// Before a refused message is sent again (with its client_id).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Where a member's socket goes: its node, and the node it reconnects to
/// when that one's socket ends.
#[derive(Clone)]
struct Target {
    ws_base: String,
    fallback: String,
    token: String,
}

impl Target {
    fn on(node: &TestApp, user: i64) -> Self {
        Self {
            ws_base: node.ws_base.clone(),
            fallback: node.ws_base.clone(),
            token: node.token(user),
        }
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok(i64),
    Refused(String),
    /// The socket ended before the answer (its node died).
    Cut,
    /// Nothing within [`ACK_PATIENCE`].
    NoAnswer,
}

#[derive(Debug, Clone)]
struct Attempt {
    sender: i64,
    recipient: i64,
    client_id: String,
    outcome: Outcome,
    latency: Duration,
    /// When the answer came.
    at: Instant,
}

type Log = Arc<Mutex<Vec<Attempt>>>;

/// What one recipient holds: every message id with how many times it
/// came, and how many times it reconnected.
#[derive(Default)]
struct Held {
    ids: BTreeMap<i64, u32>,
    reconnects: u32,
    /// Set once its first socket is connected.
    connected: bool,
}

/// A member's socket, or `None` when the node is not there (it died).
async fn connect(ws_base: &str, token: &str, since: Option<i64>) -> Option<RawClient> {
    let mut auth = json!({ "token": token });
    if let Some(since) = since {
        auth["since"] = json!(since);
    }
    let (client, answer) = RawClient::try_connect(ws_base, auth).await?;
    answer.starts_with("40{\"sid\":").then_some(client)
}

/// Emits a chat_message with ack `id` and waits for its answer.
async fn chat(client: &mut RawClient, id: u64, to: i64, client_id: &str) -> Outcome {
    let payload = json!({ "recipient_id": to, "message": client_id, "client_id": client_id });
    let frame = format!("42{id}{}", json!(["chat_message", payload]));
    client.send_raw(Message::text(frame)).await;
    let prefix = format!("43{id}");
    let started = Instant::now();
    loop {
        let left = ACK_PATIENCE.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Outcome::NoAnswer;
        }
        let polled = Instant::now();
        let Some(text) = client.next_text_within(left).await else {
            // A closed socket answers at once; a silent one after `left`.
            return if polled.elapsed() + Duration::from_millis(50) < left {
                Outcome::Cut
            } else {
                Outcome::NoAnswer
            };
        };
        let Some(rest) = text.strip_prefix(&prefix) else {
            continue;
        };
        if !rest.starts_with('[') {
            continue;
        }
        let args: Vec<Value> = serde_json::from_str(rest).unwrap();
        let ack = &args[0];
        return match (ack["ok"].as_bool(), ack["id"].as_i64()) {
            (Some(true), Some(id)) => Outcome::Ok(id),
            (Some(true), None) => panic!("an ok without an id: {ack}"),
            _ => Outcome::Refused(ack["error"]["code"].as_str().unwrap_or("?").to_owned()),
        };
    }
}

/// Sends `sender`'s messages to `recipient` until `stop`, each with a
/// client_id of its own, retrying a refused one (with the same client_id)
/// until it is acked, and moving to the fallback node when the socket ends.
async fn keep_sending(target: Target, sender: i64, recipient: i64, stop: Arc<AtomicBool>, log: Log) {
    let mut client = connect(&target.ws_base, &target.token, None)
        .await
        .expect("the sender connects");
    let mut ack_id = 0_u64;
    let mut n = 0_u64;
    // Bounded: at most a few hundred messages a member in any test.
    while !stop.load(Ordering::SeqCst) && n < 2_000 {
        n += 1;
        let client_id = format!("{sender}-{n}");
        // Once stopped, a message already refused is still retried until
        // acked: every client_id ends up stored (exactly once).
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            ack_id += 1;
            let started = Instant::now();
            let outcome = chat(&mut client, ack_id, recipient, &client_id).await;
            log.lock().unwrap().push(Attempt {
                sender,
                recipient,
                client_id: client_id.clone(),
                outcome: outcome.clone(),
                latency: started.elapsed(),
                at: Instant::now(),
            });
            match outcome {
                Outcome::Ok(_) => break,
                Outcome::NoAnswer => return, // the test fails on it
                Outcome::Refused(_) => tokio::time::sleep(RETRY_PAUSE).await,
                Outcome::Cut => {
                    client = loop {
                        if let Some(client) = connect(&target.fallback, &target.token, None).await {
                            break client;
                        }
                        assert!(Instant::now() < give_up, "{sender} cannot reconnect");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    };
                }
            }
            assert!(Instant::now() < give_up, "{client_id} never acked");
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Holds every `new_message` its member receives until `done`, reconnecting
/// with `since` = the largest id held (to the fallback node) whenever the
/// socket ends.
async fn keep_receiving(target: Target, done: Arc<AtomicBool>, held: Arc<Mutex<Held>>) {
    let mut ws_base = target.ws_base.clone();
    let mut since = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let Some(mut client) = connect(&ws_base, &target.token, since).await else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        held.lock().unwrap().connected = true;
        loop {
            if done.load(Ordering::SeqCst) {
                return;
            }
            let polled = Instant::now();
            let Some(text) = client.next_text_within(Duration::from_millis(200)).await else {
                if polled.elapsed() < Duration::from_millis(150) {
                    break; // closed
                }
                continue;
            };
            let Some(json) = text.strip_prefix("42") else {
                continue;
            };
            let args: Vec<Value> = serde_json::from_str(json).unwrap();
            if args[0] == "new_message" {
                let id = args[1]["id"].as_i64().unwrap();
                *held.lock().unwrap().ids.entry(id).or_default() += 1;
            }
        }
        let mut held = held.lock().unwrap();
        held.reconnects += 1;
        since = held.ids.keys().next_back().copied();
        ws_base = target.fallback.clone();
    }
}

/// A recipient's task and what it holds.
struct Recipient {
    user: i64,
    target: Target,
    held: Arc<Mutex<Held>>,
    task: tokio::task::JoinHandle<()>,
}

/// Members chatting in pairs, each sender and each recipient on a socket
/// of its own.
struct Load {
    log: Log,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    recipients: Vec<Recipient>,
    started: Instant,
}

impl Load {
    /// `pairs`: (sender, its socket's target, recipient, its target);
    /// `reach`: the nodes whose bus must carry a recipient's channel before
    /// anything is sent (the recipient's node, across nodes).
    async fn start(pairs: Vec<(i64, Target, i64, Target)>, reach: &[(&TestApp, i64)]) -> Self {
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let mut recipients = Vec::new();
        for (_, _, recipient, target) in &pairs {
            let held = Arc::new(Mutex::new(Held::default()));
            let task = actix_rt::spawn(keep_receiving(
                target.clone(),
                Arc::clone(&done),
                Arc::clone(&held),
            ));
            recipients.push(Recipient {
                user: *recipient,
                target: target.clone(),
                held,
                task,
            });
        }
        // The recipients' sockets are up before anything is sent to them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while recipients.iter().any(|r| !r.held.lock().unwrap().connected) {
            assert!(Instant::now() < deadline, "a recipient cannot connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (node, user) in reach {
            crate::bridge::reachable(node, *user).await;
        }
        let senders = pairs
            .into_iter()
            .map(|(sender, target, recipient, _)| {
                actix_rt::spawn(keep_sending(
                    target,
                    sender,
                    recipient,
                    Arc::clone(&stop),
                    Arc::clone(&log),
                ))
            })
            .collect();
        Self {
            log,
            stop,
            done,
            senders,
            recipients,
            started: Instant::now(),
        }
    }

    /// Acks `ok` heard after `since`.
    fn oks_after(&self, since: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.at > since && matches!(a.outcome, Outcome::Ok(_)))
            .count()
    }

    /// Waits (up to `within`) until `count` acks `ok` came after `since`;
    /// when the last of them came.
    async fn wait_for_oks(&self, since: Instant, count: usize, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            let oks: Vec<Instant> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.at > since && matches!(a.outcome, Outcome::Ok(_)))
                .map(|a| a.at)
                .collect();
            if oks.len() >= count {
                return oks[count - 1];
            }
            assert!(
                Instant::now() < deadline,
                "only {} acks ok within {within:?}",
                self.oks_after(since)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every recipient holds at least one message.
    async fn wait_until_flowing(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .recipients
            .iter()
            .any(|r| r.held.lock().unwrap().ids.is_empty())
        {
            assert!(Instant::now() < deadline, "messages do not reach every recipient");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending (refused messages are still retried until acked),
    /// lets the recipients catch up, and checks everything against the
    /// database.
    async fn finish(self, db: &tokio_postgres::Client) -> Summary {
        self.stop.store(true, Ordering::SeqCst);
        for sender in self.senders {
            sender.await.unwrap();
        }
        let attempts = self.log.lock().unwrap().clone();
        let hangs: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::NoAnswer))
            .collect();
        assert!(hangs.is_empty(), "acks that never came: {hangs:?}");
        let odd: Vec<&Attempt> = attempts
            .iter()
            .filter(
                |a| matches!(&a.outcome, Outcome::Refused(code) if code != "unavailable" && code != "busy"),
            )
            .collect();
        assert!(odd.is_empty(), "refused with another code: {odd:?}");

        // Acked: client_id -> id; one id per client_id, whatever the retries.
        let mut acked: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for attempt in &attempts {
            if let Outcome::Ok(id) = attempt.outcome {
                let previous = acked.insert(attempt.client_id.clone(), (id, attempt.recipient));
                if let Some((first, _)) = previous {
                    assert_eq!(first, id, "{}: acked as {first} and {id}", attempt.client_id);
                }
            }
        }
        // Every acked id committed, with its own body (no false ok), once.
        let ids: Vec<i64> = acked.values().map(|(id, _)| *id).collect();
        let rows = db
            .query(
                "SELECT id, body, client_id FROM messages WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap();
        let stored: BTreeMap<i64, (String, Option<String>)> = rows
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let mut acked_lost = 0;
        for (client_id, (id, _)) in &acked {
            match stored.get(id) {
                Some((body, stored_id)) => {
                    assert_eq!(body, client_id, "ack {id} names another message");
                    assert_eq!(stored_id.as_deref(), Some(client_id.as_str()));
                }
                None => acked_lost += 1,
            }
        }
        // One row per client_id: retries of refused messages stored nothing twice.
        let client_ids: Vec<String> = acked.keys().cloned().collect();
        let duplicates: i64 = db
            .query_one(
                "SELECT coalesce(sum(n - 1), 0)::int8 FROM \
                 (SELECT count(*) AS n FROM messages WHERE client_id = ANY($1) \
                  GROUP BY sender_id, client_id) per_id",
                &[&client_ids],
            )
            .await
            .unwrap()
            .get(0);
        let retried: BTreeSet<&str> = attempts
            .iter()
            .filter(|a| !matches!(a.outcome, Outcome::Ok(_)))
            .map(|a| a.client_id.as_str())
            .collect();
        let unacked_retried = retried.iter().filter(|c| !acked.contains_key(**c)).count();
        assert_eq!(unacked_retried, 0, "every refused message was acked in the end");

        // Every acked message reaches its recipient: live, or through the
        // bus's catch-up, on the socket held all along...
        let mut expected: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for (id, recipient) in acked.values() {
            expected.entry(*recipient).or_default().insert(*id);
        }
        let missing = |recipients: &[Recipient]| {
            recipients
                .iter()
                .map(|Recipient { user, held, .. }| {
                    let held = held.lock().unwrap();
                    expected.get(user).map_or(0, |ids| {
                        ids.iter().filter(|id| !held.ids.contains_key(id)).count()
                    })
                })
                .sum::<usize>()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while missing(&self.recipients) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let missing_live = missing(&self.recipients);
        self.done.store(true, Ordering::SeqCst);
        let mut delivered_twice = 0;
        let mut reconnects = 0;
        let mut missing_after_since = Vec::new();
        for Recipient {
            user,
            target,
            held,
            task,
        } in self.recipients
        {
            task.await.unwrap();
            let mut held = Arc::try_unwrap(held).ok().unwrap().into_inner().unwrap();
            reconnects += held.reconnects;
            // ...or else through `since` on a reconnect, as a client whose
            // socket missed something does.
            let wanted = expected.remove(&user).unwrap_or_default();
            if wanted.iter().any(|id| !held.ids.contains_key(id)) {
                let since = held.ids.keys().next_back().copied().unwrap_or(0);
                let mut client = connect(&target.fallback, &target.token, Some(since))
                    .await
                    .expect("the recipient reconnects");
                while let Some(text) = client.next_text_within(Duration::from_millis(1_000)).await {
                    if let Some(json) = text.strip_prefix("42") {
                        let args: Vec<Value> = serde_json::from_str(json).unwrap();
                        if args[0] == "new_message" {
                            *held.ids.entry(args[1]["id"].as_i64().unwrap()).or_default() += 1;
                        }
                    }
                }
            }
            delivered_twice += held.ids.values().filter(|&&n| n > 1).count();
            missing_after_since.extend(
                wanted
                    .iter()
                    .filter(|id| !held.ids.contains_key(id))
                    .map(|id| (user, *id)),
            );
        }
        let summary = Summary {
            sent: attempts.len(),
            acked: acked.len(),
            unavailable: attempts
                .iter()
                .filter(|a| matches!(&a.outcome, Outcome::Refused(code) if code == "unavailable"))
                .count(),
            busy: attempts
                .iter()
                .filter(|a| matches!(&a.outcome, Outcome::Refused(code) if code == "busy"))
                .count(),
            cut: attempts
                .iter()
                .filter(|a| matches!(a.outcome, Outcome::Cut))
                .count(),
            acked_lost: acked_lost + missing_after_since.len(),
            duplicates: duplicates as usize,
            delivered_twice,
            via_since: missing_live - missing_after_since.len(),
            reconnects,
            max_latency: attempts.iter().map(|a| a.latency).max().unwrap_or_default(),
            ran_for: self.started.elapsed(),
        };
        assert_eq!(acked_lost, 0, "acked but not in the database: {summary:?}");
        assert!(
            missing_after_since.is_empty(),
            "acked, in the database, and never received: {missing_after_since:?} ({summary:?})"
        );
        assert_eq!(duplicates, 0, "a client_id stored twice");
        assert!(summary.acked > 0);
        summary
    }
}

#[derive(Debug)]
struct Summary {
    sent: usize,
    acked: usize,
    unavailable: usize,
    busy: usize,
    cut: usize,
    acked_lost: usize,
    duplicates: usize,
    delivered_twice: usize,
    via_since: usize,
    reconnects: u32,
    max_latency: Duration,
    ran_for: Duration,
}

impl Summary {
    fn figures(&self, recovery: Duration) -> Vec<(&'static str, String)> {
        vec![
            ("messages sent", self.sent.to_string()),
            ("acked", self.acked.to_string()),
            ("refused unavailable", self.unavailable.to_string()),
            ("refused busy", self.busy.to_string()),
            ("cut by the node's death", self.cut.to_string()),
            ("acked lost", self.acked_lost.to_string()),
            ("duplicates", self.duplicates.to_string()),
            (
                "delivered twice (deduped by id)",
                self.delivered_twice.to_string(),
            ),
            ("recovered through since", self.via_since.to_string()),
            ("max ack latency", format!("{} ms", self.max_latency.as_millis())),
            ("recovery time", format!("{} ms", recovery.as_millis())),
            ("run", format!("{:.1} s", self.ran_for.as_secs_f64())),
        ]
    }
}

/// Polls `path` until it answers `status` (up to `within`); how long that took.
async fn until_status(node: &TestApp, path: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (got, body) = node.get(path, None).await;
        if got.as_u16() == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{path} still {got} after {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn seed(url: &str, count: usize) {
    use diesel_async::AsyncConnection;
    let mut conn = diesel_async::AsyncPgConnection::establish(url).await.unwrap();
    aurum::cli::seed::insert_generated(&mut conn, 1, count, 3, chrono::Utc::now())
        .await
        .unwrap();
}

/// The `host:port` of a `postgres://user@host:port/db` URL.
fn server_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    host_and_db.split('/').next().unwrap().to_owned()
}

#[actix_rt::test]
async fn postgres_stopped_and_started_under_chat_load() {
    let mut postgres = TestPostgres::start().await;
    seed(&postgres.url(), 10).await;
    let database = format!("--database-url={}", postgres.url());
    // POOL_TIMEOUT keeps its default (30 s): no sender may wait that long.
    let args = [
        database.as_str(),
        "--statement-timeout=1000",
        "--resource-interval=0.2",
    ];
    // The node's own TestDb goes unused: the private cluster is its database.
    let node = TestApp::spawn_on(TestDb::migrated(), &args).await;
    let pairs = (1..=4)
        .map(|sender| {
            (
                sender,
                Target::on(&node, sender),
                sender + 4,
                Target::on(&node, sender + 4),
            )
        })
        .collect();
    let load = Load::start(pairs, &[]).await;
    load.wait_for_oks(load.started, 20, Duration::from_secs(10)).await;
    load.wait_until_flowing().await;

    postgres.stop();
    let stopped = Instant::now();
    until_status(&node, "/health/ready", 503, Duration::from_secs(5)).await;
    let (_, health) = node.get("/health", None).await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;
    let refused_while_down = load
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.at > stopped + Duration::from_millis(500))
        .filter(|a| matches!(&a.outcome, Outcome::Refused(code) if code == "unavailable"))
        .count();
    assert!(
        refused_while_down > 0,
        "nothing was refused while PostgreSQL was down"
    );

    postgres.start_again().await;
    let restarted = Instant::now();
    // The pools reconnect by themselves: no restart of the node.
    let first_ok = load.wait_for_oks(restarted, 1, Duration::from_secs(15)).await;
    let recovery = first_ok.duration_since(restarted);
    until_status(&node, "/health/ready", 200, Duration::from_secs(10)).await;
    load.wait_for_oks(restarted, 20, Duration::from_secs(10)).await;

    let db = postgres.client().await;
    let summary = load.finish(&db).await;
    // A refusal comes within the pool's and the statement's timeouts.
    assert!(
        summary.max_latency < Duration::from_secs(5),
        "an ack took {:?}",
        summary.max_latency
    );
    report::record(
        "faults",
        "PostgreSQL stopped (pg_ctl -m fast) for 3 s and started again under chat load (4 pairs)",
        "refused `unavailable` while down, never a false ok; /health/ready 503 then 200; pools \
         reconnected without a restart; every acked message stored once and received",
        &summary.figures(recovery),
    );
}

#[actix_rt::test]
async fn redis_stopped_and_started_under_cross_node_chat_load() {
    let mut redis = TestRedis::start().await;
    let nodes = crate::bridge::nodes_on(&redis.url(), 2, &["--presence-ttl=3"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Three pairs from a to b, two from b to a.
    let mut pairs = Vec::new();
    for sender in [1, 3, 5] {
        pairs.push((
            sender,
            Target::on(a, sender),
            sender + 1,
            Target::on(b, sender + 1),
        ));
    }
    for sender in [7, 9] {
        pairs.push((
            sender,
            Target::on(b, sender),
            sender + 1,
            Target::on(a, sender + 1),
        ));
    }
    let reach = [(b, 2), (b, 4), (b, 6), (a, 8), (a, 10)];
    let load = Load::start(pairs, &reach).await;
    load.wait_until_flowing().await;
    load.wait_for_oks(load.started, 20, Duration::from_secs(10)).await;

    redis.stop();
    let stopped = Instant::now();
    crate::bridge::wait_until("a sees the bus down", || !a.bus().stats().is_up()).await;
    let (_, health) = a.get("/health", None).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["bus"]["state"], "down", "{health}");
    let (status, _) = a.get("/health/ready", None).await;
    assert_eq!(status, 200, "a bus outage keeps the node ready");
    // Chat goes on while the bus is down: PostgreSQL is the truth.
    load.wait_for_oks(stopped, 20, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;

    redis.resume().await;
    let resumed = Instant::now();
    for node in &nodes {
        crate::bridge::wait_until("the bus is back", || node.bus().stats().is_up()).await;
    }
    let recovery = resumed.elapsed();
    load.wait_for_oks(resumed, 20, Duration::from_secs(10)).await;
    let (_, health) = a.get("/health", None).await;
    assert_eq!(health["status"], "healthy", "{health}");

    let db = a.db.client().await;
    let summary = load.finish(&db).await;
    assert_eq!(
        summary.unavailable + summary.busy,
        0,
        "a bus outage refuses nothing"
    );
    report::record(
        "faults",
        "Redis killed for 3 s and started again under cross-node chat load (2 nodes, 5 pairs)",
        "acks went on (nothing refused); /health degraded and bus down while ready stayed 200; \
         every acked message reached its recipient's open socket (live or the bridge's catch-up)",
        &summary.figures(recovery),
    );
}

#[actix_rt::test]
async fn a_node_killed_mid_load_loses_nothing_acked() {
    let a = TestApp::spawn().await;
    a.seed(1, 10, 3).await;
    let mut b = ChildNode::start(&a.db.url, &[]).await;
    // Every member on b; a is where they go when b dies.
    let on_b = |user: i64| Target {
        ws_base: b.ws_base.clone(),
        fallback: a.ws_base.clone(),
        token: a.token(user),
    };
    let pairs = (1..=4).map(|s| (s, on_b(s), s + 4, on_b(s + 4))).collect();
    let load = Load::start(pairs, &[]).await;
    load.wait_until_flowing().await;
    load.wait_for_oks(load.started, 30, Duration::from_secs(10)).await;

    b.kill().await;
    let killed = Instant::now();
    // The members reconnect to a (recipients with `since`) and chat on.
    let first_ok = load.wait_for_oks(killed, 1, Duration::from_secs(10)).await;
    load.wait_for_oks(killed, 20, Duration::from_secs(10)).await;

    let db = a.db.client().await;
    let summary = load.finish(&db).await;
    assert!(
        summary.reconnects >= 4,
        "every recipient reconnected: {summary:?}"
    );
    report::record(
        "faults",
        "a node SIGKILLed mid-load, holding 4 chatting pairs",
        "senders retried on another node with their client_ids, recipients reconnected there with \
         `since`: every acked message in the database once and received",
        &summary.figures(first_ok.duration_since(killed)),
    );
}

#[actix_rt::test]
async fn the_network_to_postgres_and_redis_cut_for_30_s_under_chat_load() {
    const STATEMENT_TIMEOUT: Duration = Duration::from_millis(1_000);
    const CUT: Duration = Duration::from_secs(30);
    let db = Arc::new(TestDb::migrated());
    let redis = TestRedis::start().await;
    let db_relay = Relay::start(server_addr(&db.url)).await;
    let redis_relay = Relay::start(format!("127.0.0.1:{}", redis.port)).await;
    let prefix = format!("--redis-prefix=t{:08x}:", rand::random::<u32>());
    let statement_timeout = format!("--statement-timeout={}", STATEMENT_TIMEOUT.as_millis());
    // Node a reaches both through the relays; b directly. POOL_TIMEOUT
    // keeps its default (30 s): nothing may wait that long for an ack.
    let a_database = format!(
        "--database-url={}",
        db.url.replacen(&server_addr(&db.url), &db_relay.addr, 1)
    );
    let a_redis = format!("--redis-url=redis://{}/", redis_relay.addr);
    let common = [
        prefix.as_str(),
        statement_timeout.as_str(),
        "--resource-interval=0.5",
        "--bus-ping-interval=500",
        "--presence-ttl=3",
    ];
    let mut a_args = vec![a_database.as_str(), a_redis.as_str(), "--node-id=a"];
    a_args.extend(common);
    let b_redis = format!("--redis-url={}", redis.url());
    let mut b_args = vec![b_redis.as_str(), "--node-id=b"];
    b_args.extend(common);
    let a = TestApp::spawn_sharing(Arc::clone(&db), &a_args).await;
    let b = TestApp::spawn_sharing(Arc::clone(&db), &b_args).await;
    b.seed(1, 10, 3).await;
    for node in [&a, &b] {
        crate::bridge::wait_until("the bus is up", || node.bus().stats().is_up()).await;
    }
    let mut pairs = Vec::new();
    for sender in [1, 3] {
        pairs.push((
            sender,
            Target::on(&a, sender),
            sender + 1,
            Target::on(&b, sender + 1),
        ));
    }
    for sender in [5, 7] {
        pairs.push((
            sender,
            Target::on(&b, sender),
            sender + 1,
            Target::on(&a, sender + 1),
        ));
    }
    let reach = [(&b, 2), (&b, 4), (&a, 6), (&a, 8)];
    let load = Load::start(pairs, &reach).await;
    load.wait_until_flowing().await;
    load.wait_for_oks(load.started, 20, Duration::from_secs(10)).await;

    db_relay.freeze();
    redis_relay.freeze();
    let cut = Instant::now();
    until_status(&a, "/health/ready", 503, Duration::from_secs(10)).await;
    // b chats on; a's senders hear `unavailable`, each within the timeouts.
    load.wait_for_oks(cut, 20, Duration::from_secs(10)).await;
    tokio::time::sleep(CUT.saturating_sub(cut.elapsed())).await;
    let (refused_on_a, slowest_on_a) = {
        let log = load.log.lock().unwrap();
        let during: Vec<&Attempt> = log
            .iter()
            .filter(|x| x.at > cut && [1, 3].contains(&x.sender))
            .collect();
        let refused = during
            .iter()
            .filter(|x| matches!(&x.outcome, Outcome::Refused(_)))
            .count();
        (
            refused,
            during.iter().map(|x| x.latency).max().unwrap_or_default(),
        )
    };
    assert!(refused_on_a > 0, "a refused nothing while cut off");
    let health = a.get("/health", None).await.1;
    assert_eq!(health["bus"]["state"], "down", "{health}");

    db_relay.thaw();
    redis_relay.thaw();
    let thawed = Instant::now();
    // a recovers without a restart: acks ok again, ready, the bus back.
    until_status(&a, "/health/ready", 200, Duration::from_secs(15)).await;
    crate::bridge::wait_until("a's bus is back", || a.bus().stats().is_up()).await;
    let recovery = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let first = load
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|x| x.at > thawed && [1, 3].contains(&x.sender) && matches!(x.outcome, Outcome::Ok(_)))
                .map(|x| x.at);
            if let Some(first) = first {
                break first.duration_since(thawed);
            }
            assert!(Instant::now() < deadline, "a acks nothing after the cut");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    load.wait_for_oks(thawed, 30, Duration::from_secs(10)).await;
    let metrics = a.metrics().await;
    let rebuilt = crate::metrics::sample(&metrics, "resource_actions_total", &["action=\"rebuild_pool\""]);

    let client = b.db.client().await;
    let summary = load.finish(&client).await;
    // Nothing hangs: an ack on the cut node comes within the statement
    // timeout (plus a margin), twice over for a message that waited for
    // the batch before its own, and never within POOL_TIMEOUT's 30 s.
    let bound = STATEMENT_TIMEOUT * 4 + Duration::from_secs(2);
    assert!(
        slowest_on_a < bound,
        "an ack on the cut node took {slowest_on_a:?} (bound {bound:?})"
    );
    let mut figures = summary.figures(recovery);
    figures.push((
        "max ack latency during the cut",
        format!("{} ms", slowest_on_a.as_millis()),
    ));
    figures.push(("pools rebuilt", format!("{}", rebuilt.unwrap_or(0.0))));
    report::record(
        "faults",
        "the network between a node and PostgreSQL and Redis cut for 30 s (frozen TCP relays) under \
         cross-node chat load (2 nodes, 4 pairs), STATEMENT_TIMEOUT=1 s",
        "the cut node refused `unavailable` within the timeouts (no hang), went not ready and \
         bus-down, and recovered after the cut without a restart; every acked message stored once \
         and received",
        &figures,
    );
}

/// A message whose batch committed after its sender heard `unavailable`
/// (the writer restarted while the batch was in the database, as it stops
/// waiting for one whose answer a cut network holds back) was delivered to
/// nobody. Its sender's retry finds it stored: the retry's ack names it,
/// and it is delivered then, or the recipient would never get it live, and
/// its `since` may already be past it.
#[actix_rt::test]
async fn a_retry_of_a_message_committed_unseen_delivers_it() {
    let app = TestApp::spawn().await;
    app.seed(1, 2, 1).await;
    let mut alice = crate::bridge::member(&app, 1, None).await;
    let mut bob = crate::bridge::member(&app, 2, None).await;
    let message = json!({ "recipient_id": 2, "message": "unseen", "client_id": "unseen-1" });

    // The batch waits in the database while the writer restarts: its
    // sender hears `unavailable`; then it commits, answered to nobody.
    let lock = crate::writer::OrderLock::take(&app).await;
    alice
        .send(&format!("421{}", json!(["chat_message", message])))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.writer().crash();
    let refused = loop {
        let text = alice.next_text().await.expect("an ack");
        if let Some(rest) = text.strip_prefix("431") {
            break serde_json::from_str::<Vec<Value>>(rest).unwrap()[0].clone();
        }
    };
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    lock.release().await;
    let client = app.db.client().await;
    let mut stored = 0;
    for _ in 0..100 {
        stored = crate::helpers::db::query_i64(&client, "SELECT count(*) FROM messages").await;
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, 1, "the batch committed after the restart");
    while let Some(text) = bob.next_text_within(Duration::from_millis(300)).await {
        assert!(
            !text.contains("new_message"),
            "delivered although its answer went nowhere: {text}"
        );
    }

    let ack = alice.emit_ack(2, "chat_message", message).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(bob.expect_event("new_message").await["id"], ack["id"]);
    assert_eq!(
        crate::helpers::db::query_i64(&client, "SELECT count(*) FROM messages").await,
        1
    );
    report::record(
        "faults",
        "a message committed after its sender heard `unavailable`, then retried with its client_id",
        "the retry's ack names the stored copy and the recipient receives it (once in the database)",
        &[("acked lost", "0".to_owned()), ("duplicates", "0".to_owned())],
    );
}
