//! The RedisBridge: how events reach a user's sockets on other nodes.
//!
//! Every user has a channel, `{prefix}u:{user}`. A node is subscribed to
//! the channels of the users it holds sockets of, and to no other: it
//! receives only its own users' traffic. (A broadcast adapter, like
//! Socket.IO's Redis adapter, sends everything to every node, which then
//! throws most of it away.) Never a pattern subscription: each pattern adds
//! to the cost of every PUBLISH on the server.
//!
//! - **Subscriptions** follow the registry: the bridge subscribes a user's
//!   channel when the user's first socket connects here ([`BridgeHandle::reach`],
//!   awaited before the socket's replay reads the database, so nothing
//!   committed in between is missed), and unsubscribes once the user has
//!   had no socket here for [`BridgeSettings::linger`] (a phone that
//!   reconnects does not churn). Subscribes and unsubscribes go in batches
//!   of up to [`BridgeSettings::batch`] channels a command.
//! - **Leases**: while subscribed, the node holds a lease on the user in the
//!   hash `{prefix}presence:{user}` (field: node id, value: expiry in Unix
//!   ms), renewed by the node's heartbeat. A publish runs a small script
//!   that publishes only if a node other than the origin holds a live lease,
//!   so a user whose sockets are all on the sending node costs one script
//!   call and no bus traffic, and no node receives its own messages back.
//! - **Publishing** goes through one shared connection: events queue in a
//!   bounded channel and leave in pipelines of up to a few hundred.
//! - **Receiving** is one subscriber connection per process. Its stream is
//!   drained as fast as it arrives: each envelope is handed to the registry
//!   without waiting (a shard that cannot take it drops it, and the user
//!   catches up), so a slow node sheds instead of letting Redis buffer for
//!   it until Redis cuts the connection.
//! - **Failures**: Redis is a bus, never the truth. When the subscriber's
//!   connection fails, or stops answering the periodic PING, it is rebuilt
//!   with backoff; every wanted channel is subscribed again, and then every
//!   local user is told to catch up from PostgreSQL (see
//!   [`BridgeSettings::on_recovered`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::{mpsc, oneshot};

use crate::registry::RegistryHandle;
use crate::session::{EncodedPacket, SessionId};

/// The envelope's version tag, first on its header line.
const ENVELOPE_TAG: &str = "a1";

/// Publishes `ARGV[3]` on channel `ARGV[1]` if a node other than `ARGV[2]`
/// holds a live lease in the hash `KEYS[1]`; answers the number of
/// receivers, or -1 when nobody else holds the user.
const PUBLISH_SCRIPT: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local leases = redis.call('HGETALL', KEYS[1])
for i = 1, #leases, 2 do
  if leases[i] ~= ARGV[2] and tonumber(leases[i + 1]) > ms then
    return redis.call('PUBLISH', ARGV[1], ARGV[3])
  end
end
return -1
";

/// Called with the users whose deliveries may have been lost (after the
/// bus was down): the application replays their messages from PostgreSQL.
pub type Recovered = Arc<dyn Fn(Vec<i64>) + Send + Sync>;

#[derive(Clone)]
pub struct BridgeSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Of every key and channel (tests isolate by it).
    pub prefix: String,
    /// This node's id on the bus.
    pub node: String,
    /// How long a user's channel stays subscribed after their last socket
    /// here has gone.
    pub linger: Duration,
    /// How long a lease lives without being renewed: a crashed node's users
    /// are offline after this. Renewed every third of it.
    pub lease_ttl: Duration,
    /// Between PINGs on the subscriber connection; one unanswered for this
    /// long rebuilds it.
    pub ping_interval: Duration,
    /// Most channels in one SUBSCRIBE / UNSUBSCRIBE.
    pub batch: usize,
    /// Most events waiting to be published; past it they are dropped (and
    /// counted) and recipients catch up through `since`.
    pub publish_queue: usize,
    pub on_recovered: Option<Recovered>,
}

impl std::fmt::Debug for BridgeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeSettings")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("linger", &self.linger)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl BridgeSettings {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            node: node.into(),
            linger: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
            ping_interval: Duration::from_secs(5),
            batch: 256,
            publish_queue: 65_536,
            on_recovered: None,
        }
    }
}

/// Counters, read by `/health` and the tests.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// The subscriber connection is up and its channels are subscribed.
    pub up: AtomicBool,
    /// Envelopes read from the subscriber connection.
    pub received: AtomicU64,
    /// Of those, thrown away: this node's own, for users it no longer
    /// holds, or unreadable. The design's target is zero.
    pub discarded: AtomicU64,
    /// Events that left in a publish (whether or not anybody held the user).
    pub published: AtomicU64,
    /// Events that could not be published (queue full, Redis down).
    pub dropped: AtomicU64,
    /// Channels subscribed now.
    pub subscriptions: AtomicU64,
    /// Times the subscriber connection was lost (closed, or silent).
    pub outages: AtomicU64,
}

impl BridgeStats {
    /// Whether the subscriber is up with its channels subscribed.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Why a node id was refused.
#[derive(Debug, thiserror::Error)]
#[error("a node id is 1 to 64 of A-Z a-z 0-9 . _ - : (got {0:?})")]
pub struct InvalidNodeId(pub String);

/// Checks a node id: it goes in every envelope's header and lease.
///
/// # Errors
///
/// [`InvalidNodeId`] for anything else than 1 to 64 of `A-Za-z0-9._-:`.
pub fn check_node_id(node: &str) -> Result<(), InvalidNodeId> {
    let valid = (1..=64).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if valid {
        Ok(())
    } else {
        Err(InvalidNodeId(node.to_owned()))
    }
}

/// A typed handle on the bridge; cheap to clone.
#[derive(Clone)]
pub struct BridgeHandle {
    addr: Addr<RedisBridge>,
    outbound: mpsc::Sender<Outbound>,
    stats: Arc<BridgeStats>,
    node: Arc<str>,
    commands: Commands,
    prefix: Arc<str>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Commands other than publishes and subscriptions (leases, reads): one
/// shared multiplexed connection, made on first use and again after a
/// failure.
#[derive(Clone)]
struct Commands {
    client: redis::Client,
    slot: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
}

/// How long any command to Redis may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A user's channel: `{prefix}u:{user}`.
fn channel_key(prefix: &str, user: i64) -> String {
    format!("{prefix}u:{user}")
}

/// The hash of the nodes' leases on a user: `{prefix}presence:{user}`.
fn presence_key(prefix: &str, user: i64) -> String {
    format!("{prefix}presence:{user}")
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

impl Commands {
    fn new(client: redis::Client) -> Self {
        Self {
            client,
            slot: Arc::default(),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| timed_out())??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, redis::RedisError> {
        let mut conn = self.connection().await?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<T>(&mut conn))
            .await
            .map_err(|_| timed_out())
            .and_then(|answer| answer);
        if answer.is_err() {
            *self.slot.lock().await = None;
        }
        answer
    }
}

/// One event on its way to the bus.
struct Outbound {
    user: i64,
    payload: String,
}

impl BridgeHandle {
    /// Starts the bridge on `arbiter`, delivering what it receives through
    /// `registry`. Connects in the background: the node serves (locally)
    /// while Redis is away.
    ///
    /// # Errors
    ///
    /// When the URL cannot be parsed or the node id is invalid.
    pub fn start(
        settings: BridgeSettings,
        registry: RegistryHandle,
        arbiter: Option<&Arbiter>,
    ) -> Result<Self, StartError> {
        check_node_id(&settings.node)?;
        let client = redis::Client::open(settings.url.as_str())?;
        let stats = Arc::new(BridgeStats::default());
        let (outbound, queued) = mpsc::channel(settings.publish_queue.max(1));
        let node: Arc<str> = Arc::from(settings.node.as_str());
        let prefix: Arc<str> = Arc::from(settings.prefix.as_str());
        let commands = Commands::new(client.clone());
        let actor_commands = commands.clone();
        let publisher = Publisher {
            client: client.clone(),
            prefix: settings.prefix.clone(),
            node: settings.node.clone(),
            stats: Arc::clone(&stats),
        };
        let bridge_stats = Arc::clone(&stats);
        let make = move |_: &mut Context<RedisBridge>| RedisBridge {
            client,
            commands: actor_commands,
            settings,
            registry,
            stats: bridge_stats,
            sink: None,
            stream: None,
            channels: HashMap::new(),
            waiters: HashMap::new(),
            to_subscribe: HashSet::new(),
            to_unsubscribe: HashSet::new(),
            batch_timer: None,
            attempt: 0,
            connecting: false,
            ever_up: false,
        };
        let addr = match arbiter {
            Some(arbiter) => {
                let addr = RedisBridge::start_in_arbiter(&arbiter.handle(), make);
                arbiter.spawn(publisher.run(queued));
                addr
            }
            None => {
                actix::spawn(publisher.run(queued));
                RedisBridge::create(make)
            }
        };
        Ok(Self {
            addr,
            outbound,
            stats,
            node,
            commands,
            prefix,
        })
    }

    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Makes sure this node receives `user`'s events from other nodes:
    /// resolves once the user's channel is subscribed and the node's lease
    /// written, or at once while the bus is down (the user then catches up
    /// when it is back). Call before reading what a new socket missed.
    pub async fn reach(&self, user: i64) {
        let (reply, reached) = oneshot::channel();
        if self.addr.try_send(Reach { user, reply }).is_err() {
            return;
        }
        // A bound, in case Redis accepts the connection but never answers.
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, reached).await;
    }

    /// Which of `users` another node than this one holds a live lease on
    /// (sockets there).
    ///
    /// # Errors
    ///
    /// When Redis cannot be asked (within 2 s).
    pub async fn held_elsewhere(&self, users: &[i64]) -> Result<HashSet<i64>, redis::RedisError> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.hgetall(presence_key(&self.prefix, *user));
        }
        let leases: Vec<HashMap<String, u64>> = self.commands.query(&pipe).await?;
        let now = now_ms();
        Ok(users
            .iter()
            .zip(leases)
            .filter(|(_, leases)| {
                leases
                    .iter()
                    .any(|(node, expiry)| **node != *self.node && *expiry > now)
            })
            .map(|(user, _)| *user)
            .collect())
    }

    /// Drops this node's lease on `user` now: the user's last socket here
    /// has gone (the channel itself lingers). Other nodes then see the
    /// member offline unless they hold sockets themselves.
    pub fn release(&self, user: i64) {
        let _ = self.addr.try_send(Release { user });
    }

    /// Publishes `packet` for `user`'s sockets on other nodes (all of them
    /// but `except` on the origin, which is this node's own). Never waits:
    /// when the queue is full the event is dropped and counted.
    pub fn publish(&self, user: i64, packet: &EncodedPacket, except: Option<SessionId>) {
        if packet.attachment_count() > 0 {
            // Chat events are JSON only; binary ones stay on their node.
            tracing::warn!(user, "a packet with attachments is not sent between nodes");
            return;
        }
        let payload = Envelope {
            node: &self.node,
            user,
            except: except.map(SessionId::get),
            position: packet.position(),
            droppable: packet.is_droppable(),
            traceparent: None,
            text: packet.text(),
        }
        .encode();
        if self.outbound.try_send(Outbound { user, payload }).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    NodeId(#[from] InvalidNodeId),
    #[error("REDIS_URL: {0}")]
    Url(#[from] redis::RedisError),
}

/// What crosses between nodes: a header line, then the encoded packet.
///
/// `a1 <origin node> <user> <except session or -> <position or -> <flags> <traceparent or ->`,
/// flags `d` for a droppable notice (typing, presence), else `-`.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub node: &'a str,
    pub user: i64,
    /// The origin's socket to skip: an id of the origin node's, which
    /// means nothing on any other node.
    pub except: Option<u64>,
    pub position: Option<i64>,
    /// A notice a socket that falls behind goes without.
    pub droppable: bool,
    pub traceparent: Option<&'a str>,
    /// The Engine.IO frame, encoded once at the origin.
    pub text: &'a str,
}

impl<'a> Envelope<'a> {
    pub fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.text.len() + 96);
        let _ = write!(out, "{ENVELOPE_TAG} {} {} ", self.node, self.user);
        match self.except {
            Some(except) => {
                let _ = write!(out, "{except} ");
            }
            None => out.push_str("- "),
        }
        match self.position {
            Some(position) => {
                let _ = write!(out, "{position} ");
            }
            None => out.push_str("- "),
        }
        out.push_str(if self.droppable { "d " } else { "- " });
        out.push_str(self.traceparent.unwrap_or("-"));
        out.push('\n');
        out.push_str(self.text);
        out
    }

    /// Reads an envelope; `None` for anything malformed.
    pub fn decode(payload: &'a str) -> Option<Self> {
        let (header, text) = payload.split_once('\n')?;
        let mut fields = header.split(' ');
        if fields.next()? != ENVELOPE_TAG {
            return None;
        }
        let node = fields.next()?;
        let user = fields.next()?.parse().ok()?;
        let except = match fields.next()? {
            "-" => None,
            raw => Some(raw.parse().ok()?),
        };
        let position = match fields.next()? {
            "-" => None,
            raw => Some(raw.parse().ok()?),
        };
        let droppable = match fields.next()? {
            "d" => true,
            "-" => false,
            _ => return None,
        };
        let traceparent = match fields.next()? {
            "-" => None,
            value => Some(value),
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Self {
            node,
            user,
            except,
            position,
            droppable,
            traceparent,
            text,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The shared publisher: one connection, pipelines of queued events.
struct Publisher {
    client: redis::Client,
    prefix: String,
    node: String,
    stats: Arc<BridgeStats>,
}

/// Most events in one pipeline.
const PUBLISH_PIPELINE: usize = 256;

impl Publisher {
    async fn run(self, mut queued: mpsc::Receiver<Outbound>) {
        let script = redis::Script::new(PUBLISH_SCRIPT);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut batch = Vec::with_capacity(PUBLISH_PIPELINE);
        while queued.recv_many(&mut batch, PUBLISH_PIPELINE).await > 0 {
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
            let mut pipe = redis::pipe();
            for event in &batch {
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(1)
                    .arg(presence_key(&self.prefix, event.user))
                    .arg(channel_key(&self.prefix, event.user))
                    .arg(&self.node)
                    .arg(&event.payload)
                    .ignore();
            }
            let sent = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(connection))
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

    /// A fresh connection with the publish script loaded (a restarted
    /// Redis has forgotten it: EVALSHA then fails, and the next batch
    /// comes here).
    async fn connect(&self) -> Option<MultiplexedConnection> {
        let connected = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(PUBLISH_SCRIPT)
                .query_async::<String>(&mut conn)
                .await?;
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

/// A channel's state on this node.
#[derive(Debug, Clone, Copy)]
struct Channel {
    subscribed: bool,
    /// When the registry last showed a socket of the user here.
    seen: Instant,
}

pub struct RedisBridge {
    client: redis::Client,
    commands: Commands,
    settings: BridgeSettings,
    registry: RegistryHandle,
    stats: Arc<BridgeStats>,
    sink: Option<PubSubSink>,
    stream: Option<SpawnHandle>,
    /// Users this node wants to hear about, with their state.
    channels: HashMap<i64, Channel>,
    /// Callers of `reach` waiting for a user's subscription.
    waiters: HashMap<i64, Vec<oneshot::Sender<()>>>,
    to_subscribe: HashSet<i64>,
    to_unsubscribe: HashSet<i64>,
    batch_timer: Option<SpawnHandle>,
    /// Failed connection attempts in a row (the backoff's exponent).
    attempt: u32,
    connecting: bool,
    /// Whether the subscriber was ever up: the first connection has
    /// nothing to catch up on.
    ever_up: bool,
}

/// How long subscribes gather before they go.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

impl Actor for RedisBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
        self.connect(ctx);
        let renew = (self.settings.lease_ttl / 3).max(Duration::from_millis(100));
        ctx.run_interval(renew, |bridge, ctx| bridge.reconcile(ctx));
        ctx.run_interval(self.settings.ping_interval, |bridge, ctx| bridge.ping(ctx));
    }
}

impl RedisBridge {
    fn channel(&self, user: i64) -> String {
        channel_key(&self.settings.prefix, user)
    }

    fn presence(&self, user: i64) -> String {
        presence_key(&self.settings.prefix, user)
    }

    fn user_of(&self, channel: &str) -> Option<i64> {
        channel
            .strip_prefix(&self.settings.prefix)?
            .strip_prefix("u:")?
            .parse()
            .ok()
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let client = self.client.clone();
        let connect = async move {
            tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| None)?
                .map_err(Some)
        };
        ctx.spawn(connect.into_actor(self).map(|result, bridge, ctx| {
            bridge.connecting = false;
            match result {
                Ok(pubsub) => bridge.connected(pubsub, ctx),
                Err(error) => {
                    if let Some(error) = error {
                        tracing::warn!(%error, attempt = bridge.attempt, "bus subscriber cannot connect");
                    } else {
                        tracing::warn!(attempt = bridge.attempt, "bus subscriber: connecting timed out");
                    }
                    bridge.retry_later(ctx);
                }
            }
        }));
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        self.attempt = self.attempt.saturating_add(1);
        let backoff = Duration::from_millis(100u64.saturating_mul(1 << self.attempt.min(6)))
            .min(Duration::from_secs(5));
        ctx.run_later(backoff, |bridge, ctx| bridge.connect(ctx));
    }

    fn connected(&mut self, pubsub: redis::aio::PubSub, ctx: &mut Context<Self>) {
        let (sink, stream) = pubsub.split();
        self.sink = Some(sink);
        self.stream = Some(ctx.add_stream(stream.map(Incoming)));
        self.attempt = 0;
        // Every wanted channel again, in batches.
        for (user, channel) in &mut self.channels {
            channel.subscribed = false;
            self.to_subscribe.insert(*user);
        }
        self.to_unsubscribe.clear();
        let recovering = self.ever_up;
        self.ever_up = true;
        let users: Vec<i64> = self.channels.keys().copied().collect();
        let done = self.flush_subscriptions(ctx);
        ctx.spawn(done.into_actor(self).map(move |ok, bridge, _| {
            if !ok {
                return; // the next connection tries again
            }
            bridge.stats.up.store(true, Ordering::Relaxed);
            tracing::info!(channels = users.len(), "bus subscriber up");
            if recovering
                && !users.is_empty()
                && let Some(recovered) = &bridge.settings.on_recovered
            {
                recovered(users);
            }
        }));
    }

    /// The subscriber connection is gone: everything it had subscribed is
    /// lost, so deliveries from other nodes may be missing until it is back.
    fn disconnected(&mut self, ctx: &mut Context<Self>) {
        if let Some(stream) = self.stream.take() {
            ctx.cancel_future(stream);
        }
        self.sink = None;
        if self.stats.up.swap(false, Ordering::Relaxed) {
            self.stats.outages.fetch_add(1, Ordering::Relaxed);
            // From here deliveries from other nodes are lost until the bus
            // is back; the catch-up then starts from what each socket had.
            self.registry.mark_catch_up_all();
        }
        self.stats.subscriptions.store(0, Ordering::Relaxed);
        for channel in self.channels.values_mut() {
            channel.subscribed = false;
        }
        // Nobody waits on a bus that is down.
        for (_, waiters) in self.waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
        self.retry_later(ctx);
    }

    /// Sends the gathered subscribes and unsubscribes; resolves `true` once
    /// Redis has confirmed them (and the leases of the new ones are
    /// written).
    fn flush_subscriptions(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = bool> + 'static {
        if let Some(timer) = self.batch_timer.take() {
            ctx.cancel_future(timer);
        }
        let subscribe: Vec<i64> = self.to_subscribe.drain().collect();
        let unsubscribe: Vec<i64> = self.to_unsubscribe.drain().collect();
        let sink = self.sink.clone();
        let commands = self.commands.clone();
        let batch = self.settings.batch.max(1);
        let sub_channels: Vec<Vec<String>> = subscribe
            .chunks(batch)
            .map(|c| c.iter().map(|u| self.channel(*u)).collect())
            .collect();
        let unsub_channels: Vec<Vec<String>> = unsubscribe
            .chunks(batch)
            .map(|c| c.iter().map(|u| self.channel(*u)).collect())
            .collect();
        let leases = self.lease_command(&subscribe);
        let releases: Vec<String> = unsubscribe.iter().map(|u| self.presence(*u)).collect();
        let node = self.settings.node.clone();
        let work = async move {
            let Some(mut sink) = sink else {
                return false;
            };
            for channels in &sub_channels {
                if let Err(error) = sink.subscribe(channels).await {
                    tracing::warn!(%error, "bus subscribe failed");
                    return false;
                }
            }
            for channels in &unsub_channels {
                if let Err(error) = sink.unsubscribe(channels).await {
                    tracing::warn!(%error, "bus unsubscribe failed");
                    return false;
                }
            }
            if leases.is_some() || !releases.is_empty() {
                let mut pipe = leases.unwrap_or_else(redis::pipe);
                for key in &releases {
                    pipe.hdel(key, &node).ignore();
                }
                if let Err(error) = commands.query::<()>(&pipe).await {
                    tracing::warn!(%error, "bus leases not written");
                    return false;
                }
            }
            true
        };
        let subscribed = subscribe.clone();
        let (tx, rx) = oneshot::channel();
        ctx.spawn(work.into_actor(self).map(move |ok, bridge, ctx| {
            if ok {
                for user in &subscribed {
                    if let Some(channel) = bridge.channels.get_mut(user) {
                        channel.subscribed = true;
                    }
                    for waiter in bridge.waiters.remove(user).unwrap_or_default() {
                        let _ = waiter.send(());
                    }
                }
                let count = bridge.channels.values().filter(|c| c.subscribed).count();
                bridge.stats.subscriptions.store(count as u64, Ordering::Relaxed);
            } else if bridge.sink.is_some() {
                bridge.disconnected(ctx);
            }
            let _ = tx.send(ok);
        }));
        async move { rx.await.unwrap_or(false) }
    }

    /// `HSET presence:{user} node expiry` and `PEXPIRE` for each user, as
    /// one pipeline; `None` for no users.
    fn lease_command(&self, users: &[i64]) -> Option<redis::Pipeline> {
        if users.is_empty() {
            return None;
        }
        let ttl = self.settings.lease_ttl;
        let expiry = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for user in users {
            let key = self.presence(*user);
            pipe.hset(&key, &self.settings.node, expiry).ignore();
            pipe.pexpire(&key, ttl_ms).ignore();
        }
        Some(pipe)
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.batch_timer.is_some() || self.sink.is_none() {
            return;
        }
        self.batch_timer = Some(ctx.run_later(BATCH_WINDOW, |bridge, ctx| {
            bridge.batch_timer = None;
            let done = bridge.flush_subscriptions(ctx);
            ctx.spawn(fut::wrap_future(done).map(|_, _, _| ()));
        }));
    }

    /// Brings the channel set in line with the registry: users who gained
    /// a socket here are subscribed, users gone for longer than the linger
    /// unsubscribed; leases of the rest are renewed.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        ctx.spawn(
            async move { registry.users().await }
                .into_actor(self)
                .map(|users, bridge, ctx| {
                    let now = Instant::now();
                    for user in users {
                        bridge.want(user, now);
                    }
                    let linger = bridge.settings.linger;
                    let gone: Vec<i64> = bridge
                        .channels
                        .iter()
                        .filter(|(_, channel)| now.duration_since(channel.seen) > linger)
                        .map(|(user, _)| *user)
                        .collect();
                    for user in gone {
                        if let Some(channel) = bridge.channels.remove(&user)
                            && channel.subscribed
                        {
                            bridge.to_unsubscribe.insert(user);
                        }
                        bridge.to_subscribe.remove(&user);
                    }
                    // Leases of the users with sockets here now; a
                    // lingering channel has released its lease already.
                    let renew: Vec<i64> = bridge
                        .channels
                        .iter()
                        .filter(|(_, c)| c.subscribed && c.seen == now)
                        .map(|(user, _)| *user)
                        .collect();
                    if let (Some(pipe), true) = (bridge.lease_command(&renew), bridge.sink.is_some()) {
                        let commands = bridge.commands.clone();
                        actix::spawn(async move {
                            if let Err(error) = commands.query::<()>(&pipe).await {
                                tracing::warn!(%error, "bus leases not renewed");
                            }
                        });
                    }
                    if !bridge.to_subscribe.is_empty() || !bridge.to_unsubscribe.is_empty() {
                        bridge.schedule_flush(ctx);
                    }
                }),
        );
    }

    fn want(&mut self, user: i64, now: Instant) {
        let channel = self.channels.entry(user).or_insert(Channel {
            subscribed: false,
            seen: now,
        });
        channel.seen = now;
        if !channel.subscribed {
            self.to_subscribe.insert(user);
        }
        self.to_unsubscribe.remove(&user);
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        let Some(mut sink) = self.sink.clone() else {
            return;
        };
        let timeout = self.settings.ping_interval;
        let ping = async move { tokio::time::timeout(timeout, sink.ping::<String>()).await };
        ctx.spawn(ping.into_actor(self).map(|answer, bridge, ctx| match answer {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "bus subscriber failed its PING; rebuilding it");
                bridge.disconnected(ctx);
            }
            Err(_) => {
                tracing::warn!("bus subscriber did not answer its PING; rebuilding it");
                bridge.disconnected(ctx);
            }
        }));
    }
}

/// A message read from the subscriber connection.
struct Incoming(redis::Msg);

impl Message for Incoming {
    type Result = ();
}

impl StreamHandler<Incoming> for RedisBridge {
    fn handle(&mut self, Incoming(msg): Incoming, _: &mut Context<Self>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let delivered = self.deliver(&msg);
        if !delivered {
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.stream.is_some() {
            tracing::warn!("bus subscriber connection closed; reconnecting");
            self.stream = None;
            self.disconnected(ctx);
        }
    }
}

impl RedisBridge {
    /// Hands an envelope to the registry; `false` when it is discarded.
    fn deliver(&self, msg: &redis::Msg) -> bool {
        let Ok(payload) = std::str::from_utf8(msg.get_payload_bytes()) else {
            return false;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(channel = msg.get_channel_name(), "unreadable envelope on the bus");
            return false;
        };
        if envelope.node == self.settings.node {
            return false;
        }
        if self.user_of(msg.get_channel_name()) != Some(envelope.user)
            || !self.channels.contains_key(&envelope.user)
        {
            return false;
        }
        let mut packet = EncodedPacket::from_frame(envelope.text.to_owned());
        if let Some(position) = envelope.position {
            packet = packet.at_position(position);
        }
        if envelope.droppable {
            packet = packet.droppable();
        }
        // Session ids are the origin's: none of this node's sockets match.
        if let Err(error) = self.registry.deliver(envelope.user, packet, None) {
            tracing::warn!(%error, user = envelope.user, "bus delivery dropped");
            if let Some(recovered) = &self.settings.on_recovered {
                recovered(vec![envelope.user]);
            }
        }
        true
    }
}

/// See [`BridgeHandle::reach`].
#[derive(Message)]
#[rtype(result = "()")]
struct Reach {
    user: i64,
    reply: oneshot::Sender<()>,
}

impl Handler<Reach> for RedisBridge {
    type Result = ();

    fn handle(&mut self, Reach { user, reply }: Reach, ctx: &mut Context<Self>) {
        self.want(user, Instant::now());
        if self.sink.is_none() {
            let _ = reply.send(());
            return;
        }
        if self.channels.get(&user).is_some_and(|c| c.subscribed) {
            // Subscribed still (lingering, or another socket's): the lease
            // may have been released; write it again before answering.
            let Some(pipe) = self.lease_command(&[user]) else {
                let _ = reply.send(());
                return;
            };
            let commands = self.commands.clone();
            actix::spawn(async move {
                if let Err(error) = commands.query::<()>(&pipe).await {
                    tracing::warn!(%error, user, "bus lease not written");
                }
                let _ = reply.send(());
            });
            return;
        }
        self.waiters.entry(user).or_default().push(reply);
        self.schedule_flush(ctx);
    }
}

/// See [`BridgeHandle::release`].
#[derive(Message)]
#[rtype(result = "()")]
struct Release {
    user: i64,
}

impl Handler<Release> for RedisBridge {
    type Result = ();

    fn handle(&mut self, Release { user }: Release, _: &mut Context<Self>) {
        if self.sink.is_none() {
            return; // the lease lapses by itself
        }
        let mut pipe = redis::pipe();
        pipe.hdel(self.presence(user), &self.settings.node).ignore();
        let commands = self.commands.clone();
        actix::spawn(async move {
            if let Err(error) = commands.query::<()>(&pipe).await {
                tracing::warn!(%error, user, "bus lease not released; it lapses by itself");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let text = "42/chat,[\"new_message\",{\"message\":\"a b\\nc\"}]";
        for (except, position, droppable, traceparent) in [
            (None, None, false, None),
            (Some(7), Some(99), true, Some("00-abc-def-01")),
        ] {
            let envelope = Envelope {
                node: "node-1",
                user: 12,
                except,
                position,
                droppable,
                traceparent,
                text,
            };
            let encoded = envelope.encode();
            assert_eq!(Envelope::decode(&encoded), Some(envelope));
        }
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        for payload in [
            "",
            "a1 n 1 - - -",
            "b1 n 1 - - - -\nx",
            "a1 n x - - - -\nx",
            "a1 n 1 - - x -\nx",
            "a1 n 1 - - - - extra\nx",
        ] {
            assert_eq!(Envelope::decode(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(check_node_id("node-1.example:8080").is_ok());
        for bad in ["", "has space", "new\nline", &"x".repeat(65)] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }
}
