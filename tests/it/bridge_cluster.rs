//! The bus on a Redis Cluster (`REDIS_CLUSTER=true`): a private cluster of
//! three masters and three replicas per test, sharded pub/sub, and the
//! failovers a cluster goes through: a master killed and its replica
//! promoted, and a graceful hand-over that drops a slot's channels from the
//! subscriber without closing its connection.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::bridge::{member, newer_than, nodes_on, pair_across, reachable, send, wait_until};
use crate::helpers::TestApp;
use crate::helpers::redis::TestRedisCluster;

async fn cluster_nodes(cluster: &TestRedisCluster, count: usize) -> Vec<TestApp> {
    nodes_on(
        &cluster.url(),
        count,
        &["--redis-cluster=true", "--presence-ttl=3"],
    )
    .await
}

fn channel(node: &TestApp, user: i64) -> String {
    format!("{}u:{user}", node.state.config.redis_prefix)
}

#[actix_rt::test]
async fn chat_crosses_nodes_on_sharded_channels() {
    let cluster = TestRedisCluster::start().await;
    let nodes = cluster_nodes(&cluster, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, _) = pair_across(a, b).await;
    // Users 3 and 4 on a, in other slots: the two are local to a, so
    // nothing about them crosses.
    let mut three = member(a, 3, None).await;
    let mut four = member(a, 4, None).await;
    reachable(a, 3).await;
    reachable(a, 4).await;
    send(&mut three, 1, 4, "local").await;
    four.expect_event("new_message").await;

    bob.send(&format!("42{}", json!(["typing", { "recipient_id": 1 }])))
        .await;
    assert_eq!(alice.expect_event("typing").await["sender_id"], 2);
    let reply = send(&mut bob, 2, 1, "and back").await;
    assert_eq!(alice.expect_event("new_message").await["id"], reply["id"]);

    let mut channels = cluster.shard_channels().await;
    channels.sort();
    let mut expected: Vec<String> = [1, 2, 3, 4].iter().map(|user| channel(a, *user)).collect();
    expected.sort();
    assert_eq!(
        channels, expected,
        "one sharded channel per user held, spread over the masters"
    );
    // b heard what was sent to 2 (the first message); a the typing and the
    // reply; nobody anything for 3 and 4: what a node receives for a user
    // it does not hold, it discards and counts, and nothing was.
    for (node, expected) in [(a, 2), (b, 1)] {
        let stats = node.bus().stats();
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let seen = format!(
            "node {}: received {}, discarded {}, dropped {}, outages {}",
            node.bus().node(),
            count(&stats.received),
            count(&stats.discarded),
            count(&stats.dropped),
            count(&stats.outages)
        );
        // At least: a presence notice may cross as well (alice's arrival
        // can be told once the first message made the two partners).
        assert!(count(&stats.received) >= expected, "{seen}");
        assert_eq!(count(&stats.discarded), 0, "{seen}");
        assert_eq!(count(&stats.dropped), 0, "{seen}");
        assert_eq!(count(&stats.outages), 0, "{seen}");
    }
}

#[actix_rt::test]
async fn a_killed_master_fails_over_and_nothing_is_lost() {
    let mut cluster = TestRedisCluster::start().await;
    let nodes = cluster_nodes(&cluster, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, first) = pair_across(a, b).await;

    // The master that carries bob's channel dies; its replica takes over
    // after the cluster's node timeout.
    let master = cluster.master_of(&channel(b, 2)).await;
    cluster.kill(master);
    let mut during = Vec::new();
    for round in 0..5 {
        during.push(send(&mut alice, 10 + round, 2, &format!("during {round}")).await["id"].clone());
    }
    for _ in 0..400 {
        if cluster.master_of(&channel(b, 2)).await != master {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_ne!(
        cluster.master_of(&channel(b, 2)).await,
        master,
        "the replica was promoted: {}",
        cluster.describe().await
    );
    cluster.wait_until_ok().await;
    for node in &nodes {
        wait_until("the bus is back", || node.bus().stats().is_up()).await;
    }
    // What the dead master never passed on comes from PostgreSQL. Not
    // always in order: a publish that went to the dead master is dropped
    // while later ones may pass the new one, and the catch-up brings the
    // dropped one after them (the contract: every message, deduped by id).
    let mut got = std::collections::BTreeSet::new();
    while got.len() < during.len() {
        let id = bob.expect_event("new_message").await["id"].as_i64().unwrap();
        if id > first {
            got.insert(id);
        }
    }
    let got: Vec<_> = got.into_iter().map(serde_json::Value::from).collect();
    assert_eq!(got, during, "every message sent during the failover");
    let after = send(&mut alice, 30, 2, "after").await;
    let last = during.last().unwrap().as_i64().unwrap();
    assert_eq!(newer_than(&mut bob, last, 1).await, vec![after["id"].clone()]);
    assert!(
        cluster.shard_channels().await.contains(&channel(b, 2)),
        "bob's channel is subscribed on the new master"
    );
}

#[actix_rt::test]
async fn a_graceful_failover_resubscribes_the_dropped_channel() {
    let cluster = TestRedisCluster::start().await;
    let nodes = cluster_nodes(&cluster, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut alice, mut bob, first) = pair_across(a, b).await;

    // The old master stays up as a replica: it tells its subscribers the
    // slot's channels are gone (an unsolicited SUNSUBSCRIBE) and keeps
    // their connections open. What alice sends meanwhile has nobody
    // subscribed to carry it.
    let master = cluster.master_of(&channel(b, 2)).await;
    let replica = cluster.replica_of(master).await;
    cluster.fail_over_to(replica).await;
    let during = send(&mut alice, 2, 2, "during the hand-over").await;
    cluster.wait_until_ok().await;
    // b rebuilds its subscriber from its own channel set and catches bob
    // up from PostgreSQL.
    wait_until("b rebuilt its subscriber", || {
        b.bus().stats().outages.load(Ordering::Relaxed) >= 1 && b.bus().stats().is_up()
    })
    .await;
    assert_eq!(newer_than(&mut bob, first, 1).await, vec![during["id"].clone()]);
    assert!(
        cluster.shard_channels().await.contains(&channel(b, 2)),
        "bob's channel is subscribed again: {}",
        cluster.shard_channels_by_node().await
    );
    let after = send(&mut alice, 3, 2, "after the hand-over").await;
    let during = during["id"].as_i64().unwrap();
    assert_eq!(newer_than(&mut bob, during, 1).await, vec![after["id"].clone()]);
}

#[actix_rt::test]
async fn a_lease_that_cannot_be_written_is_written_later_and_caught_up() {
    let mut cluster = TestRedisCluster::start().await;
    let nodes = cluster_nodes(&cluster, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let prefix = a.state.config.redis_prefix.clone();
    // A member (of the seeded 2..=10) whose channel and lease live on
    // different masters.
    let mut user = None;
    for candidate in 2..=10 {
        let lease_master = cluster.master_of(&format!("{prefix}presence:{candidate}")).await;
        if cluster.master_of(&channel(b, candidate)).await != lease_master {
            user = Some(candidate);
            break;
        }
    }
    let user = user.unwrap_or_else(|| panic!("every seeded member's channel and lease share a master"));
    let mut alice = member(a, 1, None).await;
    reachable(a, 1).await;
    let first = send(&mut alice, 1, user, "before").await["id"].as_i64().unwrap();
    // The lease's master dies; the member connects to b before its replica
    // takes over: the channel subscribes, the lease cannot be written.
    let lease = format!("{prefix}presence:{user}");
    let dead = cluster.master_of(&lease).await;
    cluster.kill(dead);
    let mut member_b = member(b, user, Some(first)).await;
    let sent = send(&mut alice, 2, user, "while the lease is missing").await;
    for _ in 0..400 {
        if cluster.master_of(&lease).await != dead {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // Once the replica serves the slot, b writes the lease and the member
    // catches up on what nobody could publish meanwhile.
    let got = newer_than(&mut member_b, first, 1).await;
    assert_eq!(got, vec![sent["id"].clone()]);
    let after = send(&mut alice, 3, user, "and live again").await;
    let sent = sent["id"].as_i64().unwrap();
    assert_eq!(
        newer_than(&mut member_b, sent, 1).await,
        vec![after["id"].clone()]
    );
}
