//! Draining on SIGTERM (DESIGN.md, "Operations"): the node reports not
//! ready at once and refuses new sockets, keeps serving the ones it holds
//! for DRAIN_DELAY, then closes their transports without a Socket.IO
//! DISCONNECT, so clients reconnect by themselves, to another node, and
//! every acknowledged message stays committed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::helpers::node::ChildNode;
use crate::helpers::proxy::Balancer;
use crate::helpers::redis::TestRedis;
use crate::helpers::ws::{RawClient, upgrade_answer};
use crate::helpers::{TestApp, db::query_i64};

/// The HTTP status line answering a WebSocket upgrade on `ws_base`, or
/// "refused" when the listener is closed.
async fn upgrade_status(ws_base: &str) -> String {
    upgrade_answer(ws_base).await.map_or_else(
        || "refused".to_owned(),
        |answer| answer.lines().next().unwrap_or("closed").to_owned(),
    )
}

async fn ready_status(node: &ChildNode) -> (u16, Value) {
    let client = awc::Client::default();
    let mut response = client
        .get(format!("{}/health/ready", node.base))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[actix_rt::test]
async fn sigterm_turns_not_ready_keeps_serving_then_closes_transports_for_a_reconnect() {
    let app = TestApp::spawn().await;
    app.seed(1, 4, 5).await;
    let mut node = ChildNode::start(
        &app.db.url,
        &[
            ("DRAIN_DELAY", "1.5".to_owned()),
            ("SHUTDOWN_TIMEOUT", "10".to_owned()),
        ],
    )
    .await;
    assert_eq!(ready_status(&node).await.0, 200);
    let (mut alice, answer) = RawClient::connect(&node.ws_base, json!({ "token": app.token(1) })).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let (mut bob, answer) = RawClient::connect(&node.ws_base, json!({ "token": app.token(2) })).await;
    assert!(answer.starts_with("40{"), "{answer}");

    let signalled = Instant::now();
    node.terminate();
    // Not ready at once, so the load balancer stops sending; new sockets
    // are refused with 503 meanwhile.
    let mut ready = (200, Value::Null);
    for _ in 0..50 {
        ready = ready_status(&node).await;
        if ready.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert_eq!(ready.1["status"], "draining", "{}", ready.1);
    assert_eq!(node.get_json("/health").await["draining"], true);
    assert_eq!(
        upgrade_status(&node.ws_base).await,
        "HTTP/1.1 503 Service Unavailable"
    );

    // The sockets it holds are still served during the drain delay.
    let ack = alice
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "during the drain", "client_id": "d-1" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(bob.expect_event("new_message").await["id"], ack["id"]);
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "the test was too slow to show the delay"
    );

    // Then the transports close: WebSocket close 1001 ("going away"), and
    // no DISCONNECT packet ("41"), which would stop socket.io-client from
    // reconnecting.
    for client in [&mut alice, &mut bob] {
        let (texts, close) = client.until_closed(Duration::from_secs(5)).await;
        assert!(
            signalled.elapsed() >= Duration::from_millis(1500),
            "closed before DRAIN_DELAY"
        );
        assert!(!texts.iter().any(|text| text.starts_with("41")), "{texts:?}");
        let close = close.expect("a close frame");
        assert_eq!(u16::from(close.code), 1001, "{close:?}");
    }
    let status = node
        .exited_within(Duration::from_secs(8))
        .await
        .expect("the node exits within SHUTDOWN_TIMEOUT");
    assert!(status.success(), "{status}");
    assert_eq!(upgrade_status(&node.ws_base).await, "refused");
}

#[actix_rt::test]
async fn a_node_past_shutdown_timeout_exits_anyway() {
    let app = TestApp::spawn().await;
    // A drain delay longer than the whole timeout: the timeout wins.
    let mut node = ChildNode::start(
        &app.db.url,
        &[
            ("DRAIN_DELAY", "30".to_owned()),
            ("SHUTDOWN_TIMEOUT", "1".to_owned()),
        ],
    )
    .await;
    let signalled = Instant::now();
    node.terminate();
    let status = node
        .exited_within(Duration::from_secs(5))
        .await
        .expect("exited within SHUTDOWN_TIMEOUT");
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
}

/// One member's figures from tests/e2e/drain_clients.mjs.
#[derive(serde::Deserialize, Debug)]
struct Member {
    user: i64,
    partner: i64,
    acked: Vec<i64>,
    received: Vec<i64>,
    connects: u32,
    reasons: Vec<String>,
    connected: bool,
}

#[actix_rt::test]
async fn a_draining_node_sends_official_clients_elsewhere_and_keeps_every_acked_message() {
    let transports = std::env::var("AURUM_E2E_TRANSPORTS").unwrap_or_else(|_| "websocket".to_owned());
    official_clients_across_a_drain(&transports).await;
}

/// Long-polling sessions open when the node drains: their waiting GETs are
/// answered with Engine.IO's CLOSE (later requests with "Session ID
/// unknown"), so the official client reconnects, to the other node.
#[actix_rt::test]
async fn a_draining_node_sends_polling_clients_elsewhere_and_keeps_every_acked_message() {
    official_clients_across_a_drain("polling").await;
}

/// The official client's defaults: polling, then the upgrade, both of
/// which must reach the node that holds the session.
#[actix_rt::test]
async fn a_draining_node_sends_upgraded_clients_elsewhere_and_keeps_every_acked_message() {
    official_clients_across_a_drain("polling,websocket").await;
}

/// Members chat through a balancer while node a drains; on WebSocket alone
/// the balancer goes round robin (each pair's members on different nodes,
/// their messages crossing the bus); with polling every request of a
/// session must reach the node that holds it, so it is sticky: all on a,
/// then all on b once a stops accepting.
async fn official_clients_across_a_drain(transports: &str) {
    let app = TestApp::spawn().await;
    let pairs = 6_i64;
    app.seed(1, usize::try_from(pairs * 2).unwrap(), 9).await;
    let redis = TestRedis::start().await;
    let node_env = |id: &str| {
        vec![
            ("REDIS_URL", redis.url()),
            ("REDIS_PREFIX", "drain:".to_owned()),
            ("NODE_ID", id.to_owned()),
            ("DRAIN_DELAY", "1".to_owned()),
            ("SHUTDOWN_TIMEOUT", "10".to_owned()),
        ]
    };
    let mut a = ChildNode::start(&app.db.url, &node_env("a")).await;
    let b = ChildNode::start(&app.db.url, &node_env("b")).await;
    let backends = [&a, &b].map(|node| node.ws_base.trim_start_matches("ws://").to_owned());
    let balancer = if transports == "websocket" {
        Balancer::start(backends.to_vec()).await
    } else {
        Balancer::failover(backends.to_vec()).await
    };

    // Pairs (1, 2), (3, 4), ...: round robin puts each pair's members on
    // different nodes, so their messages cross the bus until a drains
    // (failover puts them all on a, and on b as they move).
    let members: Vec<Value> = (1..=pairs * 2)
        .map(|user| {
            let partner = if user % 2 == 1 { user + 1 } else { user - 1 };
            json!({ "user": user, "partner": partner, "token": app.token(user) })
        })
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let mut script = tokio::process::Command::new("node")
        .arg("drain_clients.mjs")
        .current_dir(&dir)
        .env("AURUM_WS_URL", format!("http://{}", balancer.address))
        .env("AURUM_MEMBERS", Value::from(members).to_string())
        .env("AURUM_TRANSPORTS", transports)
        .env("AURUM_CHAT_MS", "5000")
        .env("AURUM_SETTLE_MS", "4000")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    let mut lines = tokio::io::BufReader::new(script.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the clients connected")
        .unwrap();
    assert_eq!(first.as_deref(), Some("READY"));
    let on_a = a.get_json("/health").await["sockets"].as_u64().unwrap();
    assert!(on_a > 0, "the balancer put members on a");
    if transports != "websocket" {
        assert_eq!(
            on_a,
            u64::try_from(pairs * 2).unwrap(),
            "failover puts every member on a"
        );
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    a.terminate();
    let status = a
        .exited_within(Duration::from_secs(12))
        .await
        .expect("a exits within SHUTDOWN_TIMEOUT");
    assert!(status.success(), "{status}");

    let report = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the clients finished")
        .unwrap()
        .expect("a report line");
    let members: Vec<Member> = serde_json::from_str(&report).unwrap();

    let moved = members.iter().filter(|m| m.connects >= 2).count();
    assert!(
        u64::try_from(moved).unwrap() >= on_a,
        "the members on a reconnected: {members:?}"
    );
    let db = app.db.client().await;
    let mut acked_to: HashMap<i64, HashSet<i64>> = HashMap::new();
    for member in &members {
        assert!(
            member.connected,
            "member {} ended connected: {member:?}",
            member.user
        );
        assert!(
            !member
                .reasons
                .iter()
                .any(|reason| reason == "io server disconnect"),
            "a Socket.IO DISCONNECT would have stopped reconnection: {member:?}"
        );
        assert!(
            !member.acked.is_empty(),
            "member {} sent nothing: {member:?}",
            member.user
        );
        acked_to.entry(member.partner).or_default().extend(&member.acked);
    }
    // Every acknowledged message is committed once and reached its
    // recipient (live, or through `since` after the move).
    let all: Vec<i64> = acked_to.values().flatten().copied().collect();
    let list = all.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let stored = query_i64(
        &db,
        &format!("SELECT count(*) FROM messages WHERE id IN ({list})"),
    )
    .await;
    assert_eq!(stored, i64::try_from(all.len()).unwrap());
    for member in &members {
        let received: HashSet<i64> = member.received.iter().copied().collect();
        let missing: Vec<&i64> = acked_to[&member.user].difference(&received).collect();
        assert!(missing.is_empty(), "member {} missed {missing:?}", member.user);
    }
    drop(balancer);
}
