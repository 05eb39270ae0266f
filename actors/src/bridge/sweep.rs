//! Nodes that die without a word: their heartbeat, and the sweep that tells
//! their members' partners they are gone.
//!
//! A lease lapses by itself, so profiles show a crashed node's members
//! offline after `lease_ttl`; but nobody would tell their partners. So each
//! node keeps a heartbeat, `{prefix}node:{id}` (expiring after the lease
//! TTL), lists itself in `{prefix}nodes`, and keeps the set of users it
//! leases in `{prefix}node:{id}:users`. Every node, at each renewal, looks
//! for listed nodes whose heartbeat has expired; the first to claim one
//! (`SET NX` on `{prefix}sweep:{id}`) removes that node's leases and
//! reports the users no other node holds, whose partners then get
//! `presence { online: false }`.

use std::time::Duration;

use redis::{Cmd, FromRedisValue, Value};

use super::bus::Commands;
use super::{lease_reads, leased_elsewhere, now_ms, presence_key};

/// The set of every node's id.
pub(super) fn nodes_key(prefix: &str) -> String {
    format!("{prefix}nodes")
}

/// A node's heartbeat.
pub(super) fn heartbeat_key(prefix: &str, node: &str) -> String {
    format!("{prefix}node:{node}")
}

/// The users a node holds leases on.
pub(super) fn node_users_key(prefix: &str, node: &str) -> String {
    format!("{prefix}node:{node}:users")
}

fn claim_key(prefix: &str, node: &str) -> String {
    format!("{prefix}sweep:{node}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The heartbeat: alive for `ttl`, listed, its user set kept (long enough
/// to outlive the heartbeat, so a sweep finds it).
pub(super) fn heartbeat(prefix: &str, node: &str, ttl: Duration) -> Vec<Cmd> {
    let mut beat = redis::cmd("SET");
    beat.arg(heartbeat_key(prefix, node))
        .arg(now_ms())
        .arg("PX")
        .arg(millis(ttl));
    let mut listed = redis::cmd("SADD");
    listed.arg(nodes_key(prefix)).arg(node);
    let mut kept = redis::cmd("PEXPIRE");
    kept.arg(node_users_key(prefix, node)).arg(millis(ttl * 10));
    vec![beat, listed, kept]
}

/// Finds nodes other than `node` whose heartbeat has expired, sweeps the
/// ones this node claims, and answers the users who were online only
/// through them.
pub(super) async fn sweep(
    commands: &Commands,
    prefix: &str,
    node: &str,
    ttl: Duration,
) -> redis::RedisResult<Vec<i64>> {
    let mut list = redis::cmd("SMEMBERS");
    list.arg(nodes_key(prefix));
    let listed = commands.each(vec![list]).await?;
    let listed: Vec<String> = match listed.into_iter().next() {
        Some(value) => Vec::from_redis_value(value)?,
        None => Vec::new(),
    };
    let others: Vec<String> = listed.into_iter().filter(|other| other != node).collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let beats = others
        .iter()
        .map(|other| {
            let mut exists = redis::cmd("EXISTS");
            exists.arg(heartbeat_key(prefix, other));
            exists
        })
        .collect();
    let beats = commands.each(beats).await?;
    let mut departed = Vec::new();
    for (other, beat) in others.iter().zip(beats) {
        if i64::from_redis_value(beat)? == 0 {
            departed.extend(sweep_node(commands, prefix, node, other, ttl).await?);
        }
    }
    Ok(departed)
}

/// Sweeps dead node `dead` if this node claims it first.
async fn sweep_node(
    commands: &Commands,
    prefix: &str,
    node: &str,
    dead: &str,
    ttl: Duration,
) -> redis::RedisResult<Vec<i64>> {
    let mut claim = redis::cmd("SET");
    claim
        .arg(claim_key(prefix, dead))
        .arg(node)
        .arg("NX")
        .arg("PX")
        .arg(millis(ttl * 3));
    let claimed = commands.each(vec![claim]).await?;
    if !matches!(claimed.first(), Some(Value::Okay | Value::SimpleString(_))) {
        return Ok(Vec::new()); // another node sweeps it
    }
    let mut members = redis::cmd("SMEMBERS");
    members.arg(node_users_key(prefix, dead));
    let users: Vec<i64> = match commands.each(vec![members]).await?.into_iter().next() {
        Some(value) => Vec::from_redis_value(value)?,
        None => Vec::new(),
    };
    let mut removals: Vec<Cmd> = users
        .iter()
        .map(|user| {
            let mut removal = redis::cmd("HDEL");
            removal.arg(presence_key(prefix, *user)).arg(dead);
            removal
        })
        .collect();
    let mut reads = lease_reads(prefix, users.iter().copied());
    let count = removals.len();
    removals.append(&mut reads);
    let answers = commands.each(removals).await?;
    let now = now_ms();
    let mut departed = Vec::new();
    for (user, leases) in users.iter().zip(answers.into_iter().skip(count)) {
        // Held by nobody now, this node included (its own members it
        // tells about itself, when their sockets go).
        if !leased_elsewhere(leases, "", now)? {
            departed.push(*user);
        }
    }
    let mut forget = redis::cmd("DEL");
    forget.arg(node_users_key(prefix, dead));
    let mut unlist = redis::cmd("SREM");
    unlist.arg(nodes_key(prefix)).arg(dead);
    commands.each(vec![forget, unlist]).await?;
    tracing::info!(
        node = dead,
        users = users.len(),
        offline = departed.len(),
        "swept a dead node's leases"
    );
    Ok(departed)
}
