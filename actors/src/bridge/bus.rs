//! The two shapes the bus comes in: one Redis, or a Redis Cluster with
//! sharded pub/sub (SSUBSCRIBE / SPUBLISH). The bridge speaks to a [`Bus`]
//! and its [`Connection`]s and [`Subscriber`], and only the publisher's
//! fast path cares which it is.
//!
//! In a cluster a command, a pipeline and an SSUBSCRIBE must each stay
//! within one hash slot (the server answers CROSSSLOT otherwise, and a
//! subscribe that fails that way loses its channels), so the work here is
//! grouped by slot and the groups go out at once, pipelined on the one
//! multiplexed connection each master has.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::try_join_all;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, PushKind, RedisError, RedisFuture, RedisResult, Value};

/// How long any command to Redis may take before it counts as failed.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// Where the bus is.
#[derive(Clone)]
pub(super) enum Bus {
    Single(redis::Client),
    /// Seed nodes; the client learns the rest from them.
    Cluster(Vec<String>),
}

impl Bus {
    /// `url` is one `redis://` URL, or for a cluster a comma-separated
    /// list of seed nodes' URLs.
    pub(super) fn open(url: &str, cluster: bool) -> RedisResult<Self> {
        if !cluster {
            return Ok(Self::Single(redis::Client::open(url)?));
        }
        let seeds: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(str::to_owned)
            .collect();
        // Parses every seed now, so a typo fails at start, not at first use.
        ClusterClientBuilder::new(seeds.iter().map(String::as_str)).build()?;
        Ok(Self::Cluster(seeds))
    }

    fn cluster_builder(seeds: &[String]) -> ClusterClientBuilder {
        ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            // RESP3 in both cluster connections: the subscriber's pushes
            // need it, and one protocol keeps the two alike.
            .use_protocol(redis::ProtocolVersion::RESP3)
    }

    /// A connection for commands and publishes, within [`COMMAND_TIMEOUT`].
    pub(super) async fn connect(&self) -> RedisResult<Connection> {
        let connect = async {
            match self {
                Self::Single(client) => client
                    .get_multiplexed_async_connection()
                    .await
                    .map(Connection::Single),
                Self::Cluster(seeds) => Self::cluster_builder(seeds)
                    .build()?
                    .get_async_connection()
                    .await
                    .map(Connection::Cluster),
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| timed_out())?
    }

    /// The subscriber, and the stream of what it receives, within
    /// [`COMMAND_TIMEOUT`]. The stream ends when the connection closes.
    pub(super) async fn subscriber(&self) -> RedisResult<(Subscriber, BoxStream<'static, Push>)> {
        let connect = async {
            match self {
                Self::Single(client) => {
                    let (sink, stream) = client.get_async_pubsub().await?.split();
                    let stream = stream
                        .map(|msg| Push::Message {
                            channel: msg.get_channel_name().to_owned(),
                            payload: msg.get_payload_bytes().to_vec(),
                        })
                        .boxed();
                    Ok((Subscriber::Single(sink), stream))
                }
                Self::Cluster(seeds) => {
                    // Unbounded, so the connection's reader never waits on
                    // the bridge; the bridge hands each message on at once.
                    let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
                    let conn = Self::cluster_builder(seeds)
                        .push_sender(pushes)
                        .build()?
                        .get_async_connection()
                        .await?;
                    let stream = futures_util::stream::unfold(received, |mut received| async move {
                        let push = received.recv().await?;
                        Some((push, received))
                    })
                    .flat_map(|push| futures_util::stream::iter(Push::from_cluster(push)))
                    .boxed();
                    Ok((Subscriber::Cluster(conn), stream))
                }
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| timed_out())?
    }
}

/// What the subscriber connection brings.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    Message {
        channel: String,
        payload: Vec<u8>,
    },
    /// The cluster dropped a channel this node did not ask to drop: its
    /// slot failed over or migrated. Also the confirmation of the node's own
    /// SUNSUBSCRIBEs, which the bridge tells apart by its channel set.
    Unsubscribed(String),
    /// A master's connection closed; what it carried is lost until the
    /// subscriber is rebuilt.
    Lost,
}

impl Push {
    fn from_cluster(push: redis::PushInfo) -> Vec<Self> {
        fn text(value: &Value) -> Option<String> {
            match value {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                Value::SimpleString(text) => Some(text.clone()),
                _ => None,
            }
        }
        match push.kind {
            PushKind::SMessage | PushKind::Message => match push.data.as_slice() {
                [channel, Value::BulkString(payload)] => text(channel)
                    .map(|channel| Self::Message {
                        channel,
                        payload: payload.clone(),
                    })
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            },
            PushKind::SUnsubscribe => push
                .data
                .first()
                .and_then(text)
                .map(Self::Unsubscribed)
                .into_iter()
                .collect(),
            PushKind::Disconnection => vec![Self::Lost],
            _ => Vec::new(),
        }
    }
}

/// The subscriber's command side.
#[derive(Clone)]
pub(super) enum Subscriber {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Subscriber {
    /// Subscribes `channels`: one SUBSCRIBE, or in a cluster one SSUBSCRIBE
    /// per hash slot, all sent at once.
    pub(super) async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(channels).await,
            Self::Cluster(conn) => {
                let groups = by_slot(channels).into_values().map(|group| {
                    let mut conn = conn.clone();
                    async move {
                        // A read of the slot first, so a slot that moved
                        // answers MOVED and the client learns its new
                        // master before the subscribe goes: the old master,
                        // now a replica, would accept the SSUBSCRIBE and
                        // then miss what the new master publishes.
                        redis::cmd("EXISTS")
                            .arg(group[0])
                            .query_async::<Value>(&mut conn)
                            .await?;
                        conn.ssubscribe(group).await
                    }
                });
                try_join_all(groups).await.map(drop)
            }
        }
    }

    /// As [`Subscriber::subscribe`], the other way.
    pub(super) async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(channels).await,
            Self::Cluster(conn) => {
                let groups = by_slot(channels).into_values().map(|group| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(group).await }
                });
                try_join_all(groups).await.map(drop)
            }
        }
    }

    /// A PING over the subscriber's connection (in a cluster, to every
    /// master, each over the connection carrying its subscriptions).
    pub(super) async fn ping(&mut self) -> RedisResult<()> {
        match self {
            // Any answer will do: a subscribed RESP2 connection answers
            // `["pong", ""]`, not `PONG` (read as a string, that failed
            // every PING and rebuilt a healthy subscriber every interval).
            Self::Single(sink) => sink.ping::<Value>().await.map(drop),
            Self::Cluster(conn) => conn
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                )
                .await
                .map(drop),
        }
    }
}

/// Most commands in one pipeline of [`Connection::each`] on one Redis.
const EACH_PIPELINE: usize = 512;

/// A connection for commands: multiplexed, cheap to clone.
#[derive(Clone)]
pub(super) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Connection {
    /// Runs `commands`, each naming its one key first, and answers their
    /// replies in order: one pipeline, or in a cluster one pipeline per
    /// hash slot, all sent at once.
    pub(super) async fn each(&mut self, commands: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let Self::Cluster(conn) = self else {
            // Pipelines of at most EACH_PIPELINE, one after another: the
            // connection's write buffer keeps the capacity of the largest
            // it ever sent, and one pipeline of every lease on a node
            // (16,000 after a connect storm) left it 3 MB for good.
            let mut replies = Vec::with_capacity(commands.len());
            let mut commands = commands.into_iter().peekable();
            while commands.peek().is_some() {
                let mut pipe = redis::pipe();
                for command in commands.by_ref().take(EACH_PIPELINE) {
                    pipe.add_command(command);
                }
                replies.extend(pipe.query_async::<Vec<Value>>(self).await?);
            }
            return Ok(replies);
        };
        let mut groups: HashMap<u16, (Vec<usize>, redis::Pipeline)> = HashMap::new();
        let count = commands.len();
        for (index, command) in commands.into_iter().enumerate() {
            let slot = match command.args_iter().nth(1) {
                Some(redis::Arg::Simple(key)) => hash_slot(key),
                _ => 0,
            };
            let (indices, pipe) = groups.entry(slot).or_insert_with(|| (Vec::new(), redis::pipe()));
            indices.push(index);
            pipe.add_command(command);
        }
        let sent = groups.into_values().map(|(indices, pipe)| {
            let mut conn = conn.clone();
            async move {
                let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                Ok::<_, RedisError>(indices.into_iter().zip(replies))
            }
        });
        let mut replies = vec![Value::Nil; count];
        for group in try_join_all(sent).await? {
            for (index, reply) in group {
                replies[index] = reply;
            }
        }
        Ok(replies)
    }
}

/// Commands other than publishes and subscriptions (leases, reads): one
/// shared connection, made on first use and again after a failure.
#[derive(Clone)]
pub(super) struct Commands {
    bus: Bus,
    slot: std::sync::Arc<tokio::sync::Mutex<Option<Connection>>>,
}

impl Commands {
    pub(super) fn new(bus: Bus) -> Self {
        Self {
            bus,
            slot: std::sync::Arc::default(),
        }
    }

    async fn connection(&self) -> RedisResult<Connection> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.bus.connect().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// [`Connection::each`] within [`COMMAND_TIMEOUT`]; a failure drops the
    /// connection, so the next call makes a new one.
    pub(super) async fn each(&self, commands: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        let mut conn = self.connection().await?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, conn.each(commands))
            .await
            .map_err(|_| timed_out())
            .and_then(|answer| answer);
        if answer.is_err() {
            *self.slot.lock().await = None;
        }
        answer
    }
}

/// `channels` grouped by the hash slot each belongs to.
fn by_slot(channels: &[String]) -> HashMap<u16, Vec<&str>> {
    let mut groups: HashMap<u16, Vec<&str>> = HashMap::new();
    for channel in channels {
        groups
            .entry(hash_slot(channel.as_bytes()))
            .or_default()
            .push(channel.as_str());
    }
    groups
}

/// The Redis Cluster hash slot of a key or sharded channel: CRC16 (XMODEM)
/// of the key, or of its hash tag (the part between the first `{` and the
/// next `}`, when not empty), modulo 16,384.
pub(super) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    crc16_xmodem(tagged.unwrap_or(key)) % 16_384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slots_match_redis() {
        // What `CLUSTER KEYSLOT` answers for these keys.
        assert_eq!(hash_slot(b"foo"), 12_182);
        assert_eq!(hash_slot(b"bar"), 5_061);
        // CRC16/XMODEM's check value, below 16,384 already.
        assert_eq!(hash_slot(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"x{bar}y"), hash_slot(b"bar"));
        // An empty tag is no tag: the whole key counts.
        assert_ne!(hash_slot(b"foo{}{bar}"), hash_slot(b"bar"));
    }

    #[test]
    fn cluster_pushes_are_read() {
        let message = redis::PushInfo {
            kind: PushKind::SMessage,
            data: vec![
                Value::BulkString(b"aurum:u:7".to_vec()),
                Value::BulkString(b"hi".to_vec()),
            ],
        };
        assert_eq!(
            Push::from_cluster(message),
            vec![Push::Message {
                channel: "aurum:u:7".into(),
                payload: b"hi".to_vec()
            }]
        );
        let dropped = redis::PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![Value::BulkString(b"aurum:u:7".to_vec()), Value::Int(0)],
        };
        assert_eq!(
            Push::from_cluster(dropped),
            vec![Push::Unsubscribed("aurum:u:7".into())]
        );
    }
}
