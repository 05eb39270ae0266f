//! Several real nodes sharing one PostgreSQL database and a private
//! redis-server: cross-node chat, typing and read receipts, a node that
//! hears nothing for users it does not hold, and Redis dying mid-chat.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::node::ChildNode;
use crate::helpers::redis::TestRedis;
use crate::helpers::ws::RawClient;
use crate::helpers::{TestApp, TestDb};

/// Nodes named `a`, `b`, ... on one database and `redis`, each with a
/// short presence lease so the tests see leases lapse quickly.
async fn nodes(redis: &TestRedis, count: usize) -> Vec<TestApp> {
    nodes_with(redis, count, &["--presence-ttl=3"]).await
}

/// As [`nodes`], each node started with `extra` flags too.
async fn nodes_with(redis: &TestRedis, count: usize, extra: &[&str]) -> Vec<TestApp> {
    nodes_on(&redis.url(), count, extra).await
}

/// Nodes `a`, `b`, ... on one fresh database and the bus at `url`, with
/// `extra` flags; seeded, and returned once every node's bus is up.
pub(crate) async fn nodes_on(url: &str, count: usize, extra: &[&str]) -> Vec<TestApp> {
    let db = Arc::new(TestDb::migrated());
    let prefix = format!("t{:08x}:", rand::random::<u32>());
    let mut nodes = Vec::new();
    for index in 0..count {
        let name = char::from(b'a' + u8::try_from(index).unwrap()).to_string();
        let mut args = vec![
            format!("--redis-url={url}"),
            format!("--redis-prefix={prefix}"),
            format!("--node-id={name}"),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = TestApp::spawn_sharing(Arc::clone(&db), &args).await;
        nodes.push(node);
    }
    nodes[0].seed(1, 10, 3).await;
    for node in &nodes {
        wait_until("the bus is up", || node.bus().stats().is_up()).await;
    }
    nodes
}

pub(crate) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

pub(crate) async fn member(node: &TestApp, user: i64, since: Option<i64>) -> RawClient {
    let mut auth = json!({ "token": node.token(user) });
    if let Some(since) = since {
        auth["since"] = json!(since);
    }
    let (client, answer) = RawClient::connect(&node.ws_base, auth).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    client
}

/// Waits until `node`'s bus has `user`'s channel (the socket's CONNECT
/// subscribes it before anything else happens on the socket).
pub(crate) async fn reachable(node: &TestApp, user: i64) {
    node.bus().reach(user).await;
}

/// The ids of the next `count` messages above `since`, skipping the
/// replay's overlap (ids the client holds already).
pub(crate) async fn newer_than(client: &mut RawClient, since: i64, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let id = client.expect_event("new_message").await["id"].clone();
        if id.as_i64().unwrap() > since {
            got.push(id);
        }
    }
    got
}

pub(crate) async fn send(client: &mut RawClient, ack: u64, to: i64, text: &str) -> Value {
    let answer = client
        .emit_ack(
            ack,
            "chat_message",
            json!({ "recipient_id": to, "message": text }),
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    answer
}

#[actix_rt::test]
async fn chat_typing_and_receipts_cross_nodes() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = member(a, 1, None).await;
    let mut alice_phone = member(b, 1, None).await;
    let mut bob = member(b, 2, None).await;
    reachable(a, 1).await;
    reachable(b, 1).await;
    reachable(b, 2).await;

    let sent = send(&mut alice, 1, 2, "hello across nodes").await;
    let got = bob.expect_event("new_message").await;
    assert_eq!(got["id"], sent["id"]);
    assert_eq!(got["message"], "hello across nodes");
    assert_eq!(got["sender_id"], 1);
    // The sender's other device, on the other node, gets its copy too.
    let copy = alice_phone.expect_event("new_message").await;
    assert_eq!(copy["id"], sent["id"]);

    bob.send(&format!("42{}", json!(["typing", { "recipient_id": 1 }])))
        .await;
    assert_eq!(alice.expect_event("typing").await["sender_id"], 2);

    let read = bob
        .emit_ack(
            2,
            "mark_read",
            json!({ "conversation_id": sent["conversation_id"], "message_id": sent["id"] }),
        )
        .await;
    assert_eq!(read["ok"], true, "{read}");
    let receipt = alice.expect_event("message_read").await;
    assert_eq!(receipt["reader_id"], 2);
    assert_eq!(receipt["message_id"], sent["id"]);

    let reply = send(&mut bob, 3, 1, "and back").await;
    assert_eq!(alice.expect_event("new_message").await["id"], reply["id"]);
    assert_eq!(alice_phone.expect_event("typing").await["sender_id"], 2);
    // A user's channel reaches every node holding the user, the origin
    // too when it is one of them: alice is on both, so what is published
    // for her comes back to its origin, which ignores it. a published one
    // such event (the copy of alice's message for her phone), b three
    // (bob's typing, receipt and reply, for alice). On a loaded machine a
    // presence notice may come back too (a member's arrival is told by a
    // worker, which may run after the first message made the two partners:
    // one per member at most). Nothing else is thrown away and nothing is
    // dropped.
    for (node, echoes) in [(a, 1), (b, 3)] {
        let stats = node.bus().stats();
        // The last echo may still be on its way back from Redis.
        wait_until("the echoes are back", || {
            stats.discarded.load(Ordering::Relaxed) >= echoes
        })
        .await;
        let discarded = stats.discarded.load(Ordering::Relaxed);
        assert!(
            (echoes..=echoes + 2).contains(&discarded),
            "{}: discarded {discarded}",
            node.bus().node()
        );
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0, "{}", node.bus().node());
    }
}

#[actix_rt::test]
async fn a_node_hears_nothing_for_users_it_does_not_hold() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // 3 and 4 both on a: nothing should reach the bus at all; 5 on b, 6
    // on c: only c hears what 5 sends 6, only b what 6 answers.
    let mut three = member(a, 3, None).await;
    let mut four = member(a, 4, None).await;
    let mut five = member(b, 5, None).await;
    let mut six = member(c, 6, None).await;
    for (node, user) in [(a, 3), (a, 4), (b, 5), (c, 6)] {
        reachable(node, user).await;
    }
    for round in 0..20 {
        send(&mut three, 100 + round, 4, "local").await;
        four.expect_event("new_message").await;
    }
    for round in 0..10 {
        send(&mut five, 200 + round, 6, "to c").await;
        six.expect_event("new_message").await;
        send(&mut six, 300 + round, 5, "to b").await;
        five.expect_event("new_message").await;
    }
    let received = |node: &TestApp| node.bus().stats().received.load(Ordering::Relaxed);
    assert_eq!(received(a), 0, "a holds 3 and 4 only: the bus has nothing for it");
    assert_eq!(received(b), 10, "b hears only what is sent to 5");
    assert_eq!(received(c), 10, "c hears only what is sent to 6");
    for node in &nodes {
        assert_eq!(node.bus().stats().discarded.load(Ordering::Relaxed), 0);
    }
    let mut redis_conn = redis.connection().await;
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert_eq!(
        channels.len(),
        4,
        "one channel per user held, no patterns: {channels:?}"
    );
    let patterns: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert_eq!(patterns, 0);
}

/// User 1 on `a` and 2 on `b`, their channels subscribed, and the id of a
/// first message from 1 that 2 has received.
pub(crate) async fn pair_across(a: &TestApp, b: &TestApp) -> (RawClient, RawClient, i64) {
    let mut alice = member(a, 1, None).await;
    let mut bob = member(b, 2, None).await;
    reachable(a, 1).await;
    reachable(b, 2).await;
    let first = send(&mut alice, 1, 2, "before").await;
    assert_eq!(bob.expect_event("new_message").await["id"], first["id"]);
    (alice, bob, first["id"].as_i64().unwrap())
}

#[actix_rt::test]
async fn redis_dying_mid_chat_loses_nothing() {
    let mut redis = TestRedis::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, first) = pair_across(a, b).await;
    let mut bob_phone = member(b, 2, Some(first)).await;

    redis.stop();
    wait_until("a sees the bus down", || !a.bus().stats().is_up()).await;
    let (status, health) = a.get("/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["bus"]["state"], "down", "{health}");
    let (status, _) = a.get("/health/ready", None).await;
    assert_eq!(status, 200, "a bus outage keeps the node ready");

    // Writes go on: PostgreSQL is the truth.
    let mut during = Vec::new();
    for round in 0..5 {
        during.push(send(&mut alice, 10 + round, 2, &format!("during {round}")).await["id"].clone());
    }

    let (pages_before, catch_ups_before) = (b.replayer().pages_read(), b.replayer().catch_ups());
    redis.resume().await;
    for node in &nodes {
        wait_until("the bus is back", || node.bus().stats().is_up()).await;
    }
    // Bob's sockets never closed: the catch-up brings what the bus missed
    // (after the overlap's copy of what he had), to both of his devices
    // from one read of the database.
    let got = newer_than(&mut bob, first, during.len()).await;
    assert_eq!(got, during, "every message sent while Redis was down, in order");
    let got = newer_than(&mut bob_phone, first, during.len()).await;
    assert_eq!(got, during, "and on bob's other device");
    // One read per catch-up of the user, not one per socket (a second
    // catch-up may follow, e.g. once a lease the fresh Redis refused is
    // written).
    let catch_ups = b.replayer().catch_ups() - catch_ups_before;
    assert!(catch_ups >= 1);
    assert_eq!(
        b.replayer().pages_read() - pages_before,
        catch_ups,
        "one read for both of bob's sockets per catch-up"
    );

    // And the bus carries live traffic again (after any copies a second
    // catch-up may resend, e.g. once a lease that failed on the fresh Redis
    // is written: clients dedupe by id).
    let after = send(&mut alice, 30, 2, "after").await;
    let last = during.last().unwrap().as_i64().unwrap();
    assert_eq!(newer_than(&mut bob, last, 1).await, vec![after["id"].clone()]);
    assert_eq!(
        newer_than(&mut bob_phone, last, 1).await,
        vec![after["id"].clone()]
    );
    let (_, health) = a.get("/health", None).await;
    assert_eq!(health["status"], "healthy", "{health}");
}

#[actix_rt::test]
async fn a_reconnect_on_another_node_gets_what_it_missed() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = member(a, 1, None).await;
    let mut bob = member(a, 2, None).await;
    let first = send(&mut alice, 1, 2, "one").await;
    assert_eq!(bob.expect_event("new_message").await["id"], first["id"]);
    drop(bob);
    let mut missed = Vec::new();
    for round in 0..3 {
        missed.push(send(&mut alice, 2 + round, 2, "missed").await["id"].clone());
    }
    let since = first["id"].as_i64().unwrap();
    let mut bob = member(b, 2, Some(since)).await;
    assert_eq!(newer_than(&mut bob, since, missed.len()).await, missed);
    let live = send(&mut alice, 9, 2, "live").await;
    assert_eq!(bob.expect_event("new_message").await["id"], live["id"]);
}

/// The profile's presence fields, as `/profiles/{id}` shows them on
/// `node` (to an admin, who sees every profile, approved or not).
async fn presence_of(node: &TestApp, viewer: i64, user: i64) -> (bool, String) {
    let (status, profile) = node
        .get(
            &format!("/api/v1/profiles/{user}"),
            Some(&node.admin_token(viewer)),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    (
        profile["online"]
            .as_bool()
            .unwrap_or_else(|| panic!("no presence in {profile}")),
        profile["last_seen_at"]
            .as_str()
            .expect("last_seen_at is shown")
            .to_owned(),
    )
}

#[actix_rt::test]
async fn presence_follows_the_last_socket_on_any_node() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // 1 and 2 have a conversation, so 1 is told of 2's presence.
    let mut alice = member(a, 1, None).await;
    let mut bob = member(a, 2, None).await;
    reachable(a, 1).await;
    send(&mut alice, 1, 2, "hi").await;
    bob.expect_event("new_message").await;
    assert!(presence_of(b, 1, 2).await.0, "b sees 2 online through a's lease");

    let mut bob_phone = member(b, 2, None).await;
    reachable(b, 2).await;
    drop(bob);
    // Still on b: no offline, and both nodes show 2 online.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(presence_of(a, 1, 2).await.0);
    assert!(presence_of(b, 1, 2).await.0);

    drop(bob_phone);
    let offline = alice.expect_offline(2).await;
    // b released its lease with the last socket (its channel lingers).
    for node in [a, b] {
        let (online, seen) = presence_of(node, 1, 2).await;
        assert!(!online, "{}", node.bus().node());
        assert_eq!(seen, offline["last_seen_at"].as_str().unwrap());
    }

    // Back online on b: alice (on a) is told over the bus.
    bob_phone = member(b, 2, None).await;
    let online = alice.expect_event("presence").await;
    assert_eq!(online["online"], true, "{online}");
    drop(bob_phone);
}

#[actix_rt::test]
async fn a_crashed_nodes_members_go_offline_when_its_leases_lapse() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 1).await;
    let a = &nodes[0];
    // A node that died without a word leaves its lease behind.
    let prefix = a.state.config.redis_prefix.clone();
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 600;
    let mut conn = redis.connection().await;
    let () = redis::cmd("HSET")
        .arg(format!("{prefix}presence:5"))
        .arg("dead-node")
        .arg(expiry)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(presence_of(a, 1, 5).await.0, "online while the lease lives");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!presence_of(a, 1, 5).await.0, "offline once it lapsed");
}

/// The bridge runs under a supervisor: a panic restarts it with its
/// channel set, so it subscribes every channel again and its users catch up,
/// as after a Redis outage.
#[actix_rt::test]
async fn a_crashed_bridge_is_restarted_and_subscribes_again() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, first) = pair_across(a, b).await;

    b.bus().crash();
    wait_until("b's bridge restarts and is up again", || {
        let stats = b.bus().stats();
        stats.outages.load(Ordering::Relaxed) >= 1 && stats.is_up()
    })
    .await;
    let metrics = b.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("actor_restarts_total{actor=\"bridge\"}")),
        "{metrics}"
    );
    assert!(b.bus().stats().subscriptions.load(Ordering::Relaxed) >= 1);
    let after = send(&mut alice, 2, 2, "after the restart").await;
    assert_eq!(newer_than(&mut bob, first, 1).await, vec![after["id"].clone()]);
    // And the other way: b publishes as before.
    let reply = send(&mut bob, 3, 1, "a reply").await;
    assert_eq!(
        newer_than(&mut alice, after["id"].as_i64().unwrap(), 1).await,
        vec![reply["id"].clone()]
    );
}

#[actix_rt::test]
async fn a_silent_subscriber_is_found_by_its_ping_and_rebuilt() {
    let redis = TestRedis::start().await;
    let nodes = nodes_with(&redis, 2, &["--bus-ping-interval=200"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, first) = pair_across(a, b).await;

    // The connection stays open but nothing answers: only the PING can tell.
    redis.freeze();
    wait_until("b notices the silent subscriber", || !b.bus().stats().is_up()).await;
    assert!(b.bus().stats().outages.load(Ordering::Relaxed) >= 1);
    let during = send(&mut alice, 2, 2, "while Redis is frozen").await;
    redis.thaw();
    wait_until("b's subscriber is rebuilt", || b.bus().stats().is_up()).await;
    let got = newer_than(&mut bob, first, 1).await;
    assert_eq!(got, vec![during["id"].clone()]);
    let after = send(&mut alice, 3, 2, "after").await;
    assert_eq!(
        newer_than(&mut bob, during["id"].as_i64().unwrap(), 1).await,
        vec![after["id"].clone()]
    );
}

/// Node `b` as an `aurum serve` process of its own, on `a`'s database and
/// key prefix and the bus at `redis_url`, with `extra` variables.
async fn child_node_b(a: &TestApp, redis_url: String, extra: &[(&str, String)]) -> ChildNode {
    let mut env = vec![
        ("REDIS_URL", redis_url),
        ("REDIS_PREFIX", a.state.config.redis_prefix.clone()),
        ("NODE_ID", "b".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    ChildNode::start(&a.db.url, &env).await
}

/// Waits (up to 5 s) until `a` shows `user` online to `viewer`: a lease
/// of another node's is seen, so a message to the user crosses.
async fn wait_online(a: &TestApp, viewer: i64, user: i64) {
    for _ in 0..200 {
        if presence_of(a, viewer, user).await.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_rt::test]
async fn a_killed_nodes_clients_recover_on_another_node() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 1).await;
    let a = &nodes[0];
    let mut b = child_node_b(a, redis.url(), &[("PRESENCE_TTL", "1".to_owned())]).await;
    let mut alice = member(a, 1, None).await;
    let (mut bob, answer) = RawClient::connect(&b.ws_base, json!({ "token": a.token(2) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    reachable(a, 1).await;
    // b holds bob: wait until a sees b's lease, so the message crosses.
    wait_online(a, 1, 2).await;
    let first = send(&mut alice, 1, 2, "before the crash").await;
    assert_eq!(bob.expect_event("new_message").await["id"], first["id"]);

    b.kill().await;
    assert!(
        bob.closed_within(Duration::from_secs(5)).await,
        "the killed node's socket ends"
    );
    let mut missed = Vec::new();
    for round in 0..3 {
        missed.push(send(&mut alice, 2 + round, 2, "while b is dead").await["id"].clone());
    }
    // The client reconnects (to whichever node is left) with its `since`.
    let since = first["id"].as_i64().unwrap();
    let mut bob = member(a, 2, Some(since)).await;
    assert_eq!(newer_than(&mut bob, since, missed.len()).await, missed);
    drop(bob);
    // b's lease on bob lapses by itself (PRESENCE_TTL=1 there).
    let mut offline = false;
    for _ in 0..100 {
        if !presence_of(a, 1, 2).await.0 {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        offline,
        "the dead node's member goes offline once its lease lapses"
    );
}

/// Sets Redis's output-buffer limit for pub/sub clients (default: 32 MB
/// hard, 8 MB for 60 s) to `limit`, e.g. `pubsub 2mb 1mb 5`, so a test
/// reaches it quickly.
async fn pubsub_buffer_limit(redis: &TestRedis, limit: &str) {
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg(limit)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_socket_that_never_reads_does_not_slow_the_subscriber() {
    let redis = TestRedis::start().await;
    // Half of what the test sends: a bridge that waited for bob's socket
    // would be cut off long before the end.
    pubsub_buffer_limit(&redis, "pubsub 16mb 8mb 10").await;
    let nodes = nodes(&redis, 1).await;
    let b = &nodes[0];
    let bob = member(b, 2, None).await;
    reachable(b, 2).await;
    // 32 MB for bob, as another node ("x") would publish them, as fast as
    // Redis takes them; bob reads none of it.
    let channel = format!("{}u:2", b.state.config.redis_prefix);
    let body = "x".repeat(4_000);
    let count = 8_000_u64;
    let mut conn = redis.connection().await;
    for chunk in (1..=count).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            let frame = format!("42{}", json!(["new_message", { "id": id, "message": body }]));
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(format!("a1 x 2 - {id} - -\n{frame}"))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let stats = b.bus().stats();
    for _ in 0..400 {
        if stats.received.load(Ordering::Relaxed) == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        stats.received.load(Ordering::Relaxed),
        count,
        "b read every envelope (outages: {})",
        stats.outages.load(Ordering::Relaxed)
    );
    assert_eq!(
        stats.outages.load(Ordering::Relaxed),
        0,
        "Redis never had to cut the subscriber: it kept up while bob did not"
    );
    assert!(stats.is_up());
    // The socket that fell behind is the one that pays: closed as a slow
    // consumer, its client reconnects with `since`.
    for _ in 0..200 {
        if b.registry().sessions_of(2).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        b.registry().sessions_of(2).await.is_empty(),
        "bob was closed as a slow consumer"
    );
    drop(bob);
}

#[actix_rt::test]
async fn a_stalled_node_cut_off_by_redis_catches_up() {
    let redis = TestRedis::start().await;
    pubsub_buffer_limit(&redis, "pubsub 2mb 1mb 5").await;
    let nodes = nodes(&redis, 1).await;
    let a = &nodes[0];
    let b = child_node_b(a, redis.url(), &[]).await;
    let mut alice = member(a, 1, None).await;
    let (mut bob, answer) = RawClient::connect(&b.ws_base, json!({ "token": a.token(2) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    // User 3 on b as well: what others send 3 fills b's subscriber.
    let (carol, answer) = RawClient::connect(&b.ws_base, json!({ "token": a.token(3) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    wait_online(a, 1, 2).await;
    let first = send(&mut alice, 1, 2, "before the stall").await;
    assert_eq!(bob.expect_event("new_message").await["id"], first["id"]);

    // b stops reading anything. 20 MB for carol fill the kernel's socket
    // buffers and then Redis's output buffer for b's subscriber, past its
    // limit: Redis closes that connection, and what alice sends bob next
    // never reaches b over the bus.
    b.freeze();
    let channel = format!("{}u:3", a.state.config.redis_prefix);
    let padding = format!(
        "a1 x 3 - - - -\n42{}",
        json!(["new_message", { "message": "z".repeat(4_000) }])
    );
    let mut conn = redis.connection().await;
    for _ in 0..10 {
        let mut pipe = redis::pipe();
        for _ in 0..500 {
            pipe.cmd("PUBLISH").arg(&channel).arg(&padding).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let mut during = Vec::new();
    for round in 0..5 {
        during.push(send(&mut alice, 2 + round, 2, &format!("during the stall {round}")).await["id"].clone());
    }
    b.thaw();
    // The subscriber finds its connection closed, comes back, and bob's
    // socket (open all along) catches up from PostgreSQL.
    let since = first["id"].as_i64().unwrap();
    assert_eq!(newer_than(&mut bob, since, during.len()).await, during);
    let health = b.get_json("/health").await;
    assert!(health["bus"]["outages"].as_u64().unwrap() >= 1, "{health}");
    assert_eq!(health["bus"]["state"], "up", "{health}");
    drop(carol);
}

#[actix_rt::test]
async fn a_killed_nodes_members_are_told_offline_to_their_partners() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 1).await;
    let a = &nodes[0];
    let mut b = child_node_b(a, redis.url(), &[("PRESENCE_TTL", "1".to_owned())]).await;
    let mut alice = member(a, 1, None).await;
    let (mut bob, answer) = RawClient::connect(&b.ws_base, json!({ "token": a.token(2) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
    wait_online(a, 1, 2).await;
    let first = send(&mut alice, 1, 2, "partners now").await;
    assert_eq!(bob.expect_event("new_message").await["id"], first["id"]);

    // b dies holding bob: nobody releases his lease or says goodbye. Its
    // heartbeat expires, a sweeps its leases and tells bob's partners.
    b.kill().await;
    let offline = alice.expect_offline(2).await;
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    assert!(!presence_of(a, 1, 2).await.0);
    let mut conn = redis.connection().await;
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}nodes", a.state.config.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(nodes, vec!["a".to_owned()], "the dead node is forgotten");
}

#[actix_rt::test]
async fn a_member_reconnecting_at_once_keeps_their_lease() {
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, _) = pair_across(a, b).await;
    let lease = format!("{}presence:2", a.state.config.redis_prefix);
    let mut conn = redis.connection().await;
    for round in 0..30 {
        // The old socket goes as the new one arrives, as a phone switching
        // networks does: its release must not undo the new socket's lease.
        drop(bob);
        bob = member(b, 2, None).await;
        reachable(b, 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held: bool = redis::cmd("HEXISTS")
            .arg(&lease)
            .arg("b")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(held, "b's lease on bob after reconnect {round}");
    }
    let sent = send(&mut alice, 1, 2, "still reachable").await;
    assert_eq!(bob.expect_event("new_message").await["id"], sent["id"]);
}

#[actix_rt::test]
async fn a_healthy_subscriber_survives_its_pings() {
    let redis = TestRedis::start().await;
    let nodes = nodes_with(&redis, 2, &["--bus-ping-interval=50"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, first) = pair_across(a, b).await;
    // Twenty PINGs on subscribed connections, answered each time.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for node in &nodes {
        let outages = node.bus().stats().outages.load(Ordering::Relaxed);
        assert_eq!(
            outages,
            0,
            "{}: a PING's answer was taken for a failure",
            node.bus().node()
        );
    }
    let next = send(&mut alice, 2, 2, "still live").await;
    // Nothing replayed meanwhile: the next event is the new message.
    assert_eq!(bob.expect_event("new_message").await["id"], next["id"]);
    assert!(next["id"].as_i64().unwrap() > first);
}

/// A renewal goes out a pipeline of 255 users at a time: with more members
/// than that on a node, every one of their leases must still be renewed
/// (the first leases lapse after 3 s; the test looks after 4.5 s).
#[actix_rt::test]
async fn leases_of_more_members_than_one_pipeline_are_all_renewed() {
    const MEMBERS: i64 = 400;
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 1).await;
    let a = &nodes[0];
    a.seed(11, usize::try_from(MEMBERS).unwrap(), 4).await;
    let mut sockets = Vec::new();
    for user in 11..11 + MEMBERS {
        sockets.push(member(a, user, None).await);
        reachable(a, user).await;
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mut conn = redis.connection().await;
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg("*presence:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(leases.len(), usize::try_from(MEMBERS).unwrap(), "{leases:?}");
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    for key in &leases {
        let expiry: u64 = redis::cmd("HGET")
            .arg(key)
            .arg("a")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(expiry > now_ms, "{key}: lease lapsed at {expiry}, now {now_ms}");
    }
    let held: Vec<String> = redis::cmd("KEYS")
        .arg("*node:a:users")
        .query_async(&mut conn)
        .await
        .unwrap();
    let count: usize = redis::cmd("SCARD")
        .arg(&held[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, usize::try_from(MEMBERS).unwrap());
    drop(sockets);
}

/// Members who come back just as the bridge lets their lingering channels
/// go (their linger over, one flush unsubscribing and releasing them all
/// in several batches) stay reachable: subscribed, and their leases held.
/// Redis is frozen for most of the window, so the let-go's batches and the
/// comebacks' subscribes pile up behind each other, as on a loaded node.
/// Before the flushes went one at a time, a comeback's subscribe could land
/// before the let-go's unsubscribe of the same channel (here 13 and 23 of
/// 600 members, in two runs, were left unsubscribed while the node thought
/// them subscribed), and its lease before the let-go's release (in `make
/// bench-cluster`: 4 % of a step's messages never published).
#[actix_rt::test]
async fn members_back_while_their_channels_are_let_go_stay_reachable() {
    const MEMBERS: i64 = 600; // three subscribe batches of 256
    const LINGER: Duration = Duration::from_secs(10); // BridgeSettings' default
    let redis = TestRedis::start().await;
    let nodes = nodes(&redis, 1).await;
    let a = &nodes[0];
    a.seed(11, usize::try_from(MEMBERS).unwrap(), 4).await;
    let users: Vec<i64> = (11..11 + MEMBERS).collect();
    let mut sockets = Vec::new();
    for &user in &users {
        sockets.push(member(a, user, None).await);
        reachable(a, user).await;
    }
    // A renewal (every second here) sees them all, so all linger from one
    // instant and are let go by one flush, 9 to 11 s after they leave.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(sockets);
    let left = tokio::time::Instant::now();
    tokio::time::sleep_until(left + LINGER - Duration::from_millis(1200)).await;
    let window = LINGER + Duration::from_millis(1400);
    let freezer = async {
        while left.elapsed() < window {
            redis.freeze();
            tokio::time::sleep(Duration::from_millis(250)).await;
            redis.thaw();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    };
    let comebacks = async {
        let pace = (window - left.elapsed()) / u32::try_from(MEMBERS).unwrap();
        let mut back = Vec::new();
        for &user in &users {
            back.push(member(a, user, None).await);
            tokio::time::sleep(pace).await;
        }
        back
    };
    let ((), _back) = tokio::join!(freezer, comebacks);
    for &user in &users {
        reachable(a, user).await;
    }
    let prefix = &a.state.config.redis_prefix;
    let mut conn = redis.connection().await;
    let mut unleased = Vec::new();
    let mut unsubscribed = Vec::new();
    for &user in &users {
        let held: bool = redis::cmd("HEXISTS")
            .arg(format!("{prefix}presence:{user}"))
            .arg("a")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !held {
            unleased.push(user);
        }
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{prefix}u:{user}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if subscribers != 1 {
            unsubscribed.push(user);
        }
    }
    assert!(
        unleased.is_empty(),
        "members back on a without a lease: {unleased:?}"
    );
    assert!(
        unsubscribed.is_empty(),
        "members back on a, their channel not subscribed: {unsubscribed:?}"
    );
}
