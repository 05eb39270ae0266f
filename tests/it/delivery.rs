//! The delivery guarantee (DESIGN.md, "Delivery"), tried at random: many
//! senders on several sockets and threads, recipients that drop their
//! socket at random moments and reconnect with the largest id they hold.
//! At the end every recipient holds every committed message of its
//! conversations, and within one connection no message arrives twice or
//! after a newer one.
//!
//! `make test` runs a few seeds for a few seconds each; `make soak-delivery`
//! runs more for longer (`DELIVERY_SEEDS`, `DELIVERY_SECS`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::redis::TestRedis;
use crate::helpers::ws::RawClient;

const SENDERS: i64 = 8;
const RECIPIENTS: i64 = 8;
/// Sender threads, each with its own runtime and sockets.
const SENDER_THREADS: i64 = 2;

fn seeds() -> Vec<u64> {
    match std::env::var("DELIVERY_SEEDS") {
        Ok(count) => (1..=count.parse::<u64>().expect("DELIVERY_SEEDS is a count")).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

fn run_for() -> Duration {
    let secs =
        std::env::var("DELIVERY_SECS").map_or(2.0, |s| s.parse::<f64>().expect("DELIVERY_SECS is seconds"));
    Duration::from_secs_f64(secs)
}

#[actix_rt::test]
async fn no_message_is_skipped_across_random_reconnects() {
    for seed in seeds() {
        let started = Instant::now();
        let (sent, reconnects) = one_run(seed, run_for(), 1).await;
        eprintln!(
            "seed {seed}: {sent} messages, {reconnects} reconnects, checked in {:?}",
            started.elapsed()
        );
    }
}

/// The same across three nodes sharing the database and a Redis: every
/// connection, senders' and recipients', goes to a node picked at random.
#[actix_rt::test]
async fn no_message_is_skipped_across_three_nodes() {
    for seed in seeds() {
        let started = Instant::now();
        let (sent, reconnects) = one_run(seed, run_for(), 3).await;
        eprintln!(
            "seed {seed}, 3 nodes: {sent} messages, {reconnects} reconnects, checked in {:?}",
            started.elapsed()
        );
    }
}

/// What one recipient saw.
struct Held {
    user: i64,
    ids: BTreeSet<i64>,
    reconnects: usize,
}

async fn one_run(seed: u64, run_for: Duration, node_count: usize) -> (usize, usize) {
    let redis = if node_count > 1 {
        Some(TestRedis::start().await)
    } else {
        None
    };
    let db = std::sync::Arc::new(crate::helpers::TestDb::migrated());
    let prefix = format!("d{:08x}:", rand::random::<u32>());
    let mut nodes = Vec::new();
    for index in 0..node_count {
        let mut args = Vec::new();
        if let Some(redis) = &redis {
            args.push(format!("--redis-url={}", redis.url()));
            args.push(format!("--redis-prefix={prefix}"));
            args.push(format!("--node-id=n{index}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(TestApp::spawn_sharing(std::sync::Arc::clone(&db), &args).await);
    }
    for node in nodes.iter().filter(|_| redis.is_some()) {
        for _ in 0..400 {
            if node.bus().stats().is_up() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let app = &nodes[0];
    let ws_bases: Vec<String> = nodes.iter().map(|node| node.ws_base.clone()).collect();
    // One node keeps the order of its commits on every connection; across
    // nodes the bus does not, and the replay's overlap resends ids.
    let ordered = node_count == 1;
    app.seed(1, (SENDERS + RECIPIENTS) as usize, seed).await;
    let deadline = Instant::now() + run_for;
    let recipients: Vec<i64> = (SENDERS + 1..=SENDERS + RECIPIENTS).collect();

    // Senders: each thread drives its share of the sender users, one or
    // two sockets each, sending to random recipients.
    let threads: Vec<_> = (0..SENDER_THREADS)
        .map(|thread| {
            let ws_bases = ws_bases.clone();
            let users: Vec<(i64, String)> = (1..=SENDERS)
                .filter(|user| user % SENDER_THREADS == thread)
                .map(|user| (user, app.token(user)))
                .collect();
            let recipients = recipients.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let local = tokio::task::LocalSet::new();
                    local
                        .run_until(async move {
                            let mut tasks = Vec::new();
                            for (user, token) in users {
                                let sockets = if user % 3 == 0 { 2 } else { 1 };
                                for socket in 0..sockets {
                                    let rng =
                                        SmallRng::seed_from_u64(seed * 1_000 + user as u64 * 10 + socket);
                                    let ws_base =
                                        ws_bases[(user as usize + socket as usize) % ws_bases.len()].clone();
                                    tasks.push(tokio::task::spawn_local(send_until(
                                        ws_base,
                                        token.clone(),
                                        recipients.clone(),
                                        rng,
                                        deadline,
                                        // Two sockets share their user's rate.
                                        Duration::from_millis(if sockets == 2 { 140 } else { 70 }),
                                    )));
                                }
                            }
                            let mut sent = 0;
                            for task in tasks {
                                sent += task.await.unwrap();
                            }
                            sent
                        })
                        .await
                })
            })
        })
        .collect();

    let readers: Vec<_> = recipients
        .iter()
        .map(|&user| {
            let token = app.token(user);
            let senders: Vec<i64> = (1..=SENDERS).collect();
            let rng = SmallRng::seed_from_u64(seed * 7_919 + user as u64);
            actix_rt::spawn(receive_until(
                ws_bases.clone(),
                ordered,
                token,
                user,
                senders,
                rng,
                deadline,
            ))
        })
        .collect();

    let mut sent = 0;
    for thread in threads {
        // Not joined on this thread: it runs the server's accept loop.
        sent += tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
    let mut reconnects = 0;
    let client = app.db.client().await;
    for reader in readers {
        let held = reader.await.unwrap();
        reconnects += held.reconnects;
        let rows = client
            .query(
                "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                 WHERE $1 IN (c.user_a, c.user_b) ORDER BY m.id",
                &[&held.user],
            )
            .await
            .unwrap();
        let committed: BTreeSet<i64> = rows.iter().map(|row| row.get(0)).collect();
        let missing: Vec<_> = committed.difference(&held.ids).collect();
        let unknown: Vec<_> = held.ids.difference(&committed).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "seed {seed}, user {}: missing {missing:?}, not committed {unknown:?}",
            held.user
        );
    }
    assert!(sent > 0, "seed {seed}: nothing was sent");
    (sent, reconnects)
}

/// Sends to random recipients until `deadline`; the number acked.
async fn send_until(
    ws_base: String,
    token: String,
    recipients: Vec<i64>,
    mut rng: SmallRng,
    deadline: Instant,
    pace: Duration,
) -> usize {
    let (mut client, answer) = RawClient::connect(&ws_base, json!({ "token": token })).await;
    assert!(answer.starts_with("40"), "{answer}");
    let mut acked = 0;
    let mut ack_id = 0_u64;
    while Instant::now() < deadline {
        let recipient = recipients[rng.random_range(0..recipients.len())];
        ack_id += 1;
        let ack = client
            .emit_ack(
                ack_id,
                "chat_message",
                json!({ "recipient_id": recipient, "message": "hi" }),
            )
            .await;
        match ack["ok"].as_bool() {
            Some(true) => acked += 1,
            _ => assert_eq!(ack["error"]["code"], "rate_limited", "{ack}"),
        }
        let jitter = rng.random_range(0..pace.as_millis() as u64 / 2);
        tokio::time::sleep(pace / 2 + Duration::from_millis(jitter)).await;
    }
    acked
}

/// Connects, reads for a random while (sometimes sending a message of its
/// own), drops the socket without a goodbye, and reconnects with the
/// largest id it holds, until `deadline`; then catches up once more.
async fn receive_until(
    ws_bases: Vec<String>,
    ordered: bool,
    token: String,
    user: i64,
    senders: Vec<i64>,
    mut rng: SmallRng,
    deadline: Instant,
) -> Held {
    let mut held = Held {
        user,
        ids: BTreeSet::new(),
        reconnects: 0,
    };
    let mut ack_id = 0_u64;
    loop {
        let last_round = Instant::now() >= deadline;
        let since = held.ids.last().copied().unwrap_or(0);
        let ws_base = &ws_bases[rng.random_range(0..ws_bases.len())];
        let (mut client, answer) =
            RawClient::connect(ws_base, json!({ "token": token, "since": since })).await;
        assert!(answer.starts_with("40"), "{answer}");
        let until = if last_round {
            None
        } else {
            Some(Instant::now() + Duration::from_millis(rng.random_range(10..300)))
        };
        let mut newest_here = since;
        loop {
            let wait = match until {
                Some(until) => until.saturating_duration_since(Instant::now()),
                // The last round reads until all is quiet.
                None => Duration::from_millis(700),
            };
            let wait = match until {
                Some(_) => wait.min(Duration::from_millis(50)),
                None => wait,
            };
            if wait.is_zero() {
                break;
            }
            if until.is_some() && rng.random_ratio(1, 40) {
                // A message of its own: its ack's id is one it holds.
                ack_id += 1;
                let to = senders[rng.random_range(0..senders.len())];
                client
                    .send(&format!(
                        "42{ack_id}{}",
                        json!(["chat_message", { "recipient_id": to, "message": "back" }])
                    ))
                    .await;
            }
            let polled = Instant::now();
            let Some(text) = client.next_text_within(wait).await else {
                // Quiet for the whole last round's window, or closed (a
                // closed socket answers at once): this connection is done.
                if last_round || polled.elapsed() < Duration::from_millis(5) {
                    break;
                }
                continue;
            };
            if let Some(json) = text.strip_prefix("42") {
                let args: Vec<Value> = serde_json::from_str(json).unwrap();
                if args[0] == "new_message" {
                    let id = args[1]["id"].as_i64().unwrap();
                    assert!(
                        !ordered || id > newest_here,
                        "user {user}: message {id} after {newest_here} on one connection"
                    );
                    newest_here = newest_here.max(id);
                    held.ids.insert(id);
                }
            } else if let Some(rest) = text.strip_prefix("43") {
                let start = rest.find('[').unwrap();
                let args: Vec<Value> = serde_json::from_str(&rest[start..]).unwrap();
                if let Some(id) = args[0]["id"].as_i64() {
                    held.ids.insert(id);
                }
            }
        }
        if last_round {
            return held;
        }
        held.reconnects += 1;
        drop(client); // abrupt: no DISCONNECT, no close handshake
    }
}
