//! The shared publisher: one connection, batches of queued events.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::bus::{Bus, COMMAND_TIMEOUT, Connection, timed_out};
use super::{BridgeStats, channel_key, lease_reads, leased_elsewhere, now_ms, presence_key};

/// Publishes a batch of events, each to the users another node holds.
///
/// `KEYS[i]` is event i's presence hash (node id -> lease expiry in Unix
/// ms), `ARGV[1]` this node, `ARGV[2i]` and `ARGV[2i + 1]` event i's
/// channel and envelope. An event is published when a node other than this
/// one holds a live lease on its user; the answer is how many were. One
/// script a batch, not one an event: a script call's own cost (its
/// arguments, the clock, the reply) was about 40 % of what an event cost
/// Redis in batches of 40 (INFO commandstats: 5.0 µs an event, 3.0).
/// A user's leases are read once a batch: a sender's events often share
/// one.
const PUBLISH_SCRIPT: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local node = ARGV[1]
local elsewhere = {}
local published = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local held = elsewhere[key]
  if held == nil then
    held = false
    local leases = redis.call('HGETALL', key)
    for j = 1, #leases, 2 do
      if leases[j] ~= node and tonumber(leases[j + 1]) > ms then
        held = true
        break
      end
    end
    elsewhere[key] = held
  end
  if held then
    redis.call('PUBLISH', ARGV[2 * i], ARGV[2 * i + 1])
    published = published + 1
  end
end
return published
";

/// Most events in one script call.
const PUBLISH_BATCH: usize = 256;

/// One event on its way to the bus.
pub(super) struct Outbound {
    pub user: i64,
    pub payload: String,
}

pub(super) struct Publisher {
    pub bus: Bus,
    pub prefix: String,
    pub node: String,
    pub stats: Arc<BridgeStats>,
}

impl Publisher {
    pub(super) async fn run(self, mut queued: mpsc::Receiver<Outbound>) {
        let script = redis::Script::new(PUBLISH_SCRIPT);
        let mut conn: Option<Connection> = None;
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while queued.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            if conn.is_none() {
                conn = self.connect().await;
            }
            let Some(connection) = conn.as_mut() else {
                self.stats
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                continue;
            };
            let sent =
                tokio::time::timeout(COMMAND_TIMEOUT, self.send(connection, script.get_hash(), &batch))
                    .await
                    .map_err(|_| timed_out())
                    .and_then(|sent| sent);
            match sent {
                Ok(()) => {
                    self.stats
                        .published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    // NOSCRIPT after a Redis restart, or the connection
                    // failed: reconnect (which loads the script) next time.
                    tracing::warn!(%error, events = batch.len(), "publish to the bus failed");
                    self.stats
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    conn = None;
                }
            }
            batch.clear();
        }
    }

    /// Publishes `batch` to the users held on other nodes.
    ///
    /// On one Redis that is one script for the whole batch, which checks
    /// the leases and publishes in one step. In a cluster a script may not
    /// touch two slots (the lease and the channel are in different ones),
    /// so the leases are read first, per slot, and SPUBLISH goes to the
    /// users another node holds. Both answer the same question at the same
    /// point: a node that takes a lease after the check replays from the
    /// database what was committed before it (see `BridgeHandle::reach`).
    async fn send(
        &self,
        connection: &mut Connection,
        script: &str,
        batch: &[Outbound],
    ) -> redis::RedisResult<()> {
        if let Connection::Single(_) = connection {
            let mut call = redis::cmd("EVALSHA");
            call.arg(script).arg(batch.len());
            for event in batch {
                call.arg(presence_key(&self.prefix, event.user));
            }
            call.arg(&self.node);
            for event in batch {
                call.arg(channel_key(&self.prefix, event.user))
                    .arg(&event.payload);
            }
            return call.query_async::<i64>(connection).await.map(drop);
        }
        let reads = lease_reads(&self.prefix, batch.iter().map(|event| event.user));
        let leases = connection.each(reads).await?;
        let now = now_ms();
        let publishes = batch
            .iter()
            .zip(leases)
            .filter_map(|(event, leases)| {
                leased_elsewhere(leases, &self.node, now)
                    .unwrap_or(false)
                    .then_some(event)
            })
            .map(|event| {
                let mut publish = redis::cmd("SPUBLISH");
                publish
                    .arg(channel_key(&self.prefix, event.user))
                    .arg(&event.payload);
                publish
            })
            .collect();
        connection.each(publishes).await.map(drop)
    }

    /// A fresh connection, with the publish script loaded on one Redis (a
    /// restarted Redis has forgotten it: EVALSHA then fails, and the next
    /// batch comes here).
    async fn connect(&self) -> Option<Connection> {
        let connected = async {
            let mut conn = self.bus.connect().await?;
            if let Connection::Single(_) = conn {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(PUBLISH_SCRIPT)
                    .query_async::<String>(&mut conn)
                    .await?;
            }
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, connected).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(error)) => {
                tracing::warn!(%error, "bus publisher cannot connect");
                None
            }
            Err(_) => {
                tracing::warn!("bus publisher: connecting timed out");
                None
            }
        }
    }
}
