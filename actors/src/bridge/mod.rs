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

mod bus;
mod envelope;
mod publisher;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::StreamExt;
use redis::FromRedisValue;
use tokio::sync::{mpsc, oneshot};

use self::bus::{Bus, COMMAND_TIMEOUT, Commands, Push, Subscriber};
pub use self::envelope::Envelope;
use self::publisher::{Outbound, Publisher};
use crate::registry::RegistryHandle;
use crate::session::{EncodedPacket, SessionId};
use crate::supervisor::{RestartPacing, pause_after_restart, stop_on_panic};

/// Called with the users whose deliveries may have been lost (after the
/// bus was down): the application replays their messages from PostgreSQL.
pub type Recovered = Arc<dyn Fn(Vec<i64>) + Send + Sync>;

#[derive(Clone)]
pub struct BridgeSettings {
    /// `redis://host:port/db`; with [`BridgeSettings::cluster`], seed
    /// nodes' URLs separated by commas.
    pub url: String,
    /// A Redis Cluster: sharded pub/sub (SSUBSCRIBE / SPUBLISH), commands
    /// grouped by hash slot.
    pub cluster: bool,
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
    /// Called with the users a dead node held and nobody holds now (its
    /// heartbeat expired, and this node swept its leases): their partners
    /// are told they went offline.
    pub on_departed: Option<Recovered>,
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
            cluster: false,
            prefix: prefix.into(),
            node: node.into(),
            linger: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
            ping_interval: Duration::from_secs(5),
            batch: 256,
            publish_queue: 65_536,
            on_recovered: None,
            on_departed: None,
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

/// A user's channel: `{prefix}u:{user}`.
fn channel_key(prefix: &str, user: i64) -> String {
    format!("{prefix}u:{user}")
}

/// The hash of the nodes' leases on a user: `{prefix}presence:{user}`.
fn presence_key(prefix: &str, user: i64) -> String {
    format!("{prefix}presence:{user}")
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
        let bus = Bus::open(&settings.url, settings.cluster)?;
        let stats = Arc::new(BridgeStats::default());
        let (outbound, queued) = mpsc::channel(settings.publish_queue.max(1));
        let node: Arc<str> = Arc::from(settings.node.as_str());
        let prefix: Arc<str> = Arc::from(settings.prefix.as_str());
        let commands = Commands::new(bus.clone());
        let actor_commands = commands.clone();
        let publisher = Publisher {
            bus: bus.clone(),
            prefix: settings.prefix.clone(),
            node: settings.node.clone(),
            stats: Arc::clone(&stats),
        };
        let bridge_stats = Arc::clone(&stats);
        let make = move |ctx: &mut Context<RedisBridge>| {
            // Here, the first thing the arbiter runs for the bridge, not in
            // `started`: a message sent in between would meet actix's
            // default bound of 16.
            ctx.set_mailbox_capacity(65_536);
            RedisBridge::new(bus, actor_commands, settings, registry, bridge_stats)
        };
        let addr = match arbiter {
            Some(arbiter) => {
                let addr = Supervisor::start_in_arbiter(&arbiter.handle(), make);
                arbiter.spawn(publisher.run(queued));
                addr
            }
            None => {
                actix::spawn(publisher.run(queued));
                Supervisor::start(make)
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
}

impl RedisBridge {
    fn new(
        bus: Bus,
        commands: Commands,
        settings: BridgeSettings,
        registry: RegistryHandle,
        stats: Arc<BridgeStats>,
    ) -> Self {
        Self {
            bus,
            commands,
            settings,
            registry,
            stats,
            sink: None,
            stream: None,
            channels: HashMap::new(),
            waiters: HashMap::new(),
            rebuild: None,
            unleased: HashSet::new(),
            lease_attempt: 0,
            to_subscribe: HashSet::new(),
            to_unsubscribe: HashSet::new(),
            batch_timer: None,
            unsubscribing: false,
            subscriber_generation: 0,
            attempt: 0,
            connecting: false,
            ever_up: false,
            departed: false,
            pacing: RestartPacing::default(),
            restart_pause: Duration::ZERO,
        }
    }
}

impl BridgeHandle {
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
        let leases = self
            .commands
            .each(lease_reads(&self.prefix, users.iter().copied()))
            .await?;
        let now = now_ms();
        let mut held = HashSet::new();
        for (user, leases) in users.iter().zip(leases) {
            if leased_elsewhere(leases, &self.node, now)? {
                held.insert(*user);
            }
        }
        Ok(held)
    }

    /// Drops this node's lease on `user` now: the user's last socket here
    /// has gone (the channel itself lingers). Other nodes then see the
    /// member offline unless they hold sockets themselves.
    pub fn release(&self, user: i64) {
        let _ = self.addr.try_send(Release { user });
    }

    /// Leaves the bus at the end of a drain: the bridge stops (no more
    /// heartbeats) and this node's heartbeat is deleted, so the next node to
    /// renew sweeps its leases at once and tells the partners of members who
    /// did not reconnect elsewhere that they are offline, instead of after
    /// the lease TTL.
    pub async fn depart(&self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.addr.send(Depart)).await;
    }

    /// Makes the bridge panic inside a handler, to exercise its supervisor
    /// (tests only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn crash(&self) {
        self.addr.do_send(Crash);
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
        // A child of the event that caused it (the chat message's span, on
        // the writer's thread); its context rides in the envelope, so the
        // receiving node's span joins the same trace.
        let span = tracing::info_span!(
            target: crate::trace::TARGET,
            "bus.publish",
            otel.kind = "producer",
            user,
            message.id = packet.position(),
        );
        let traceparent = crate::trace::traceparent(&span);
        let payload = Envelope {
            node: &self.node,
            user,
            except: except.map(SessionId::get),
            position: packet.position(),
            droppable: packet.is_droppable(),
            traceparent: traceparent.as_deref(),
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

/// `HGETALL presence:{user}` for each of `users`: their leases.
fn lease_reads(prefix: &str, users: impl IntoIterator<Item = i64>) -> Vec<redis::Cmd> {
    users
        .into_iter()
        .map(|user| {
            let mut read = redis::cmd("HGETALL");
            read.arg(presence_key(prefix, user));
            read
        })
        .collect()
}

/// Whether a node other than `node` holds a lease, in one user's
/// `HGETALL` answer (node id → expiry in Unix ms), still live at `now`.
/// `node` "" asks whether anybody does.
fn leased_elsewhere(leases: redis::Value, node: &str, now: u64) -> redis::RedisResult<bool> {
    let leases = HashMap::<String, u64>::from_redis_value(leases)?;
    Ok(leases
        .iter()
        .any(|(holder, expiry)| holder != node && *expiry > now))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Writes this node's presence leases (see the module's documentation).
struct Leases {
    prefix: String,
    node: String,
    ttl: Duration,
}

/// Users whose leases go in one pipeline: an `HSET` and a `PEXPIRE` each,
/// and the `SADD` of them all to the node's set.
const LEASES_PER_PIPELINE: usize = 255;

impl Leases {
    /// Writes `users`' leases a pipeline at a time, building each only as
    /// it goes: a renewal covers every user on the node, and its commands
    /// built at once (two per user) were a transient peak of several MiB
    /// every renewal at 16,000 sockets, which the allocator then kept.
    async fn write(&self, commands: &Commands, users: &[i64]) -> redis::RedisResult<()> {
        for chunk in users.chunks(LEASES_PER_PIPELINE) {
            commands.each(self.commands(chunk)).await?;
        }
        Ok(())
    }

    /// `SADD` of `users` to the node's set, and `HSET presence:{user} node
    /// expiry` and `PEXPIRE` for each.
    fn commands(&self, users: &[i64]) -> Vec<redis::Cmd> {
        let expiry = now_ms().saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut commands = Vec::with_capacity(users.len() * 2 + 1);
        if !users.is_empty() {
            let mut held = redis::cmd("SADD");
            held.arg(sweep::node_users_key(&self.prefix, &self.node))
                .arg(users);
            commands.push(held);
        }
        for user in users {
            let key = presence_key(&self.prefix, *user);
            let mut lease = redis::cmd("HSET");
            lease.arg(&key).arg(&self.node).arg(expiry);
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&key).arg(ttl_ms);
            commands.push(lease);
            commands.push(expire);
        }
        commands
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
    bus: Bus,
    commands: Commands,
    settings: BridgeSettings,
    registry: RegistryHandle,
    stats: Arc<BridgeStats>,
    sink: Option<Subscriber>,
    stream: Option<SpawnHandle>,
    /// Users this node wants to hear about, with their state.
    channels: HashMap<i64, Channel>,
    /// Callers of `reach` waiting for a user's subscription.
    waiters: HashMap<i64, Vec<oneshot::Sender<()>>>,
    /// A rebuild of the subscriber, due once the cluster has settled after
    /// dropping some of its channels.
    rebuild: Option<SpawnHandle>,
    /// Users subscribed whose lease could not be written yet.
    unleased: HashSet<i64>,
    lease_attempt: u32,
    to_subscribe: HashSet<i64>,
    to_unsubscribe: HashSet<i64>,
    batch_timer: Option<SpawnHandle>,
    /// A flush that unsubscribes is out: the next flush waits for it.
    /// Otherwise a user's subscribe and lease (a socket back) could land
    /// before the earlier flush's unsubscribe and release of the same user
    /// (its lingering channel let go): the channel then stayed unsubscribed
    /// while the node took it for subscribed, or the lease was gone until
    /// the next renewal, and either way other nodes' events for the socket
    /// were lost. Flushes that only subscribe (a connect storm's) overlap:
    /// none of their users can be let go meanwhile, having just arrived.
    unsubscribing: bool,
    /// Counts subscriber connections: a flush that answers for an earlier
    /// one only lets the next flush go.
    subscriber_generation: u64,
    /// Failed connection attempts in a row (the backoff's exponent).
    attempt: u32,
    connecting: bool,
    /// Whether the subscriber was ever up: the first connection has
    /// nothing to catch up on.
    ever_up: bool,
    /// Left the bus at the end of a drain: restarted by its supervisor (an
    /// actor stopped while handles to it live is), it stays idle.
    departed: bool,
    pacing: RestartPacing,
    /// Set by `restarting`, taken by `started`.
    restart_pause: Duration,
}

/// How long subscribes gather before they go.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

impl Actor for RedisBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.departed {
            return;
        }
        pause_after_restart(std::mem::take(&mut self.restart_pause), ctx);
        self.connect(ctx);
        let renew = (self.settings.lease_ttl / 3).max(Duration::from_millis(100));
        ctx.run_interval(renew, |bridge, ctx| bridge.guarded(ctx, Self::reconcile));
        ctx.run_interval(self.settings.ping_interval, |bridge, ctx| {
            bridge.guarded(ctx, Self::ping);
        });
    }
}

impl Supervised for RedisBridge {
    /// By now actix has dropped the context's futures: the subscriber's
    /// stream, timers and commands in flight. The channel set survives, so
    /// `started` connects a new subscriber, subscribes every channel again
    /// and has every local user catch up, as after a Redis outage.
    fn restarting(&mut self, _: &mut Context<Self>) {
        if self.departed {
            return;
        }
        metrics::counter!("actor_restarts_total", "actor" => "bridge").increment(1);
        self.restart_pause = self.pacing.next_pause(Instant::now());
        self.stream = None;
        self.rebuild = None;
        self.batch_timer = None;
        self.connecting = false;
        self.to_unsubscribe.clear();
        self.forget_subscriber();
    }
}

impl RedisBridge {
    /// Runs an entry point's body; a panic stops the bridge so that its
    /// supervisor restarts it (see `restarting`) instead of the arbiter's
    /// task dying with it and the node off the bus for good.
    fn guarded(&mut self, ctx: &mut Context<Self>, body: impl FnOnce(&mut Self, &mut Context<Self>)) {
        stop_on_panic(self, ctx, "bus bridge", body);
    }
}

impl RedisBridge {
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
        let bus = self.bus.clone();
        let connect = async move { bus.subscriber().await };
        ctx.spawn(connect.into_actor(self).map(|result, bridge, ctx| {
            bridge.connecting = false;
            match result {
                Ok((sink, stream)) => bridge.connected(sink, stream, ctx),
                Err(error) => {
                    tracing::warn!(%error, attempt = bridge.attempt, "bus subscriber cannot connect");
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

    fn connected(
        &mut self,
        sink: Subscriber,
        stream: futures_util::stream::BoxStream<'static, Push>,
        ctx: &mut Context<Self>,
    ) {
        self.sink = Some(sink);
        self.stream = Some(ctx.add_stream(stream.map(Incoming)));
        self.attempt = 0;
        // A flush still out went to the old subscriber: this one's first
        // flush does not wait for it.
        self.subscriber_generation += 1;
        self.unsubscribing = false;
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
            bridge.heartbeat();
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
        if let Some(rebuild) = self.rebuild.take() {
            ctx.cancel_future(rebuild);
        }
        self.forget_subscriber();
        self.retry_later(ctx);
    }

    /// What a lost subscriber leaves: nothing subscribed, every local user
    /// to catch up once it is back, nobody waiting.
    fn forget_subscriber(&mut self) {
        // The rebuild writes every lease and catches every socket up.
        self.unleased.clear();
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
        // Each batch's channel names are made as it goes: one flush after a
        // connect storm can hold every user of the node.
        let prefix = self.settings.prefix.clone();
        let channels_of = move |users: &[i64]| -> Vec<String> {
            users.iter().map(|user| channel_key(&prefix, *user)).collect()
        };
        let leases = self.leases();
        let releases = self.release_commands(&unsubscribe);
        let subscribed = subscribe.clone();
        let unsubscribes = !unsubscribe.is_empty();
        self.unsubscribing |= unsubscribes;
        let generation = self.subscriber_generation;
        let work = async move {
            let mut sink = sink?;
            for users in subscribe.chunks(batch) {
                if let Err(error) = sink.subscribe(&channels_of(users)).await {
                    tracing::warn!(%error, "bus subscribe failed");
                    return None;
                }
            }
            for users in unsubscribe.chunks(batch) {
                if let Err(error) = sink.unsubscribe(&channels_of(users)).await {
                    tracing::warn!(%error, "bus unsubscribe failed");
                    return None;
                }
            }
            let written = match leases.write(&commands, &subscribe).await {
                Ok(()) => commands.each(releases).await.map(drop),
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                // The channels are subscribed: nothing to rebuild, the
                // leases go again shortly (see `retry_leases`).
                tracing::warn!(%error, "bus leases not written; trying again");
                return Some(false);
            }
            Some(true)
        };
        let (tx, rx) = oneshot::channel();
        ctx.spawn(work.into_actor(self).map(move |outcome, bridge, ctx| {
            if generation != bridge.subscriber_generation {
                // Its subscriber is gone and a new one has taken over,
                // with a flush of its own.
                let _ = tx.send(false);
                return;
            }
            if unsubscribes {
                bridge.unsubscribing = false;
            }
            let ok = outcome.is_some();
            if outcome == Some(false) {
                bridge.unleased(&subscribed, ctx);
            }
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
            if !bridge.to_subscribe.is_empty() || !bridge.to_unsubscribe.is_empty() {
                bridge.schedule_flush(ctx);
            }
            let _ = tx.send(ok);
        }));
        async move { rx.await.unwrap_or(false) }
    }

    /// `users`' channels are subscribed but their leases were not written
    /// (Redis too slow, as in a connect storm): until they are, other nodes
    /// see nobody here and publish nothing for them. Their sockets are
    /// marked for a catch-up now, and once the leases are written they
    /// catch up on what was committed in between.
    fn unleased(&mut self, users: &[i64], ctx: &mut Context<Self>) {
        for user in users {
            self.registry.mark_catch_up(*user);
        }
        let first = self.unleased.is_empty();
        self.unleased.extend(users.iter().copied());
        if first {
            self.lease_attempt = 0;
            self.retry_leases(ctx);
        }
    }

    fn retry_leases(&mut self, ctx: &mut Context<Self>) {
        self.lease_attempt = self.lease_attempt.saturating_add(1);
        let wait = Duration::from_millis(100u64.saturating_mul(1 << self.lease_attempt.min(5)))
            .min(Duration::from_secs(1));
        ctx.run_later(wait, |bridge, ctx| {
            // Users gone meanwhile need no lease.
            let users: Vec<i64> = bridge
                .unleased
                .iter()
                .copied()
                .filter(|user| bridge.channels.get(user).is_some_and(|c| c.subscribed))
                .collect();
            if users.is_empty() || bridge.sink.is_none() {
                // Nothing left, or the subscriber is being rebuilt (which
                // writes every lease and catches everyone up).
                bridge.unleased.clear();
                return;
            }
            let leases = bridge.leases();
            let commands = bridge.commands.clone();
            let written = async move { leases.write(&commands, &users).await.map(|()| users) };
            ctx.spawn(
                written
                    .into_actor(bridge)
                    .map(move |written, bridge, ctx| match written {
                        Ok(users) => {
                            for user in &users {
                                bridge.unleased.remove(user);
                            }
                            tracing::info!(
                                users = users.len(),
                                "bus leases written after a retry; catching up"
                            );
                            if let Some(recovered) = &bridge.settings.on_recovered {
                                recovered(users);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "bus leases still not written");
                            bridge.retry_leases(ctx);
                        }
                    }),
            );
        });
    }

    fn leases(&self) -> Leases {
        Leases {
            prefix: self.settings.prefix.clone(),
            node: self.settings.node.clone(),
            ttl: self.settings.lease_ttl,
        }
    }

    /// `HDEL presence:{user} node` for each user, and the users out of
    /// this node's set.
    fn release_commands(&self, users: &[i64]) -> Vec<redis::Cmd> {
        let mut commands: Vec<redis::Cmd> = users
            .iter()
            .map(|user| {
                let mut release = redis::cmd("HDEL");
                release.arg(self.presence(*user)).arg(&self.settings.node);
                release
            })
            .collect();
        if !users.is_empty() {
            let mut forget = redis::cmd("SREM");
            forget
                .arg(sweep::node_users_key(&self.settings.prefix, &self.settings.node))
                .arg(users);
            commands.push(forget);
        }
        commands
    }

    /// The node's heartbeat, and a sweep of nodes whose heartbeat has
    /// expired (see the `sweep` module).
    fn heartbeat(&self) {
        let commands = self.commands.clone();
        let prefix = self.settings.prefix.clone();
        let node = self.settings.node.clone();
        let ttl = self.settings.lease_ttl;
        let departed = self.settings.on_departed.clone();
        actix::spawn(async move {
            if let Err(error) = commands.each(sweep::heartbeat(&prefix, &node, ttl)).await {
                tracing::warn!(%error, "bus heartbeat not written");
                return;
            }
            match sweep::sweep(&commands, &prefix, &node, ttl).await {
                Ok(users) if !users.is_empty() => {
                    if let Some(departed) = departed {
                        departed(users);
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sweep of dead nodes failed"),
            }
        });
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        // While an unsubscribing flush is out, what gathers goes when it
        // is done.
        if self.batch_timer.is_some() || self.sink.is_none() || self.unsubscribing {
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
        ctx.spawn(async move { registry.users().await }.into_actor(self).map(
            |(users, complete), bridge, ctx| {
                let now = Instant::now();
                for user in users {
                    bridge.want(user, now);
                }
                let linger = bridge.settings.linger;
                // A shard that did not answer may hold any of the
                // others: nobody is let go on a partial list.
                let gone: Vec<i64> = bridge
                    .channels
                    .iter()
                    .filter(|(_, channel)| complete && now.duration_since(channel.seen) > linger)
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
                if !renew.is_empty() && bridge.sink.is_some() {
                    let leases = bridge.leases();
                    let commands = bridge.commands.clone();
                    actix::spawn(async move {
                        if let Err(error) = leases.write(&commands, &renew).await {
                            tracing::warn!(%error, "bus leases not renewed");
                        }
                    });
                }
                if bridge.sink.is_some() {
                    bridge.heartbeat();
                }
                if !bridge.to_subscribe.is_empty() || !bridge.to_unsubscribe.is_empty() {
                    bridge.schedule_flush(ctx);
                }
            },
        ));
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
        let ping = async move { tokio::time::timeout(timeout, sink.ping()).await };
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

/// What the subscriber connection brought.
struct Incoming(Push);

impl Message for Incoming {
    type Result = ();
}

impl StreamHandler<Incoming> for RedisBridge {
    fn handle(&mut self, Incoming(push): Incoming, ctx: &mut Context<Self>) {
        self.guarded(ctx, move |bridge, ctx| bridge.incoming(push, ctx));
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
    fn incoming(&mut self, push: Push, ctx: &mut Context<Self>) {
        match push {
            Push::Message { channel, payload } => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                if !self.deliver(&channel, &payload) {
                    self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Push::Unsubscribed(channel) => self.unsubscribed(&channel, ctx),
            Push::Lost => {
                if self.stream.is_some() {
                    tracing::warn!("a bus connection closed; rebuilding the subscriber");
                    self.disconnected(ctx);
                }
            }
        }
    }
}

impl RedisBridge {
    /// Hands an envelope to the registry; `false` when it is discarded.
    fn deliver(&self, channel: &str, payload: &[u8]) -> bool {
        let Ok(payload) = std::str::from_utf8(payload) else {
            return false;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(channel, "unreadable envelope on the bus");
            return false;
        };
        if envelope.node == self.settings.node {
            return false;
        }
        if self.user_of(channel) != Some(envelope.user) || !self.channels.contains_key(&envelope.user) {
            return false;
        }
        let span = tracing::info_span!(
            target: crate::trace::TARGET,
            "bus.receive",
            otel.kind = "consumer",
            user = envelope.user,
            message.id = envelope.position,
            origin = envelope.node,
        );
        crate::trace::continue_from(&span, envelope.traceparent);
        let _entered = span.enter();
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

/// How long the cluster gets to agree on its new masters after it
/// dropped channels, before the subscriber is rebuilt.
const CLUSTER_SETTLE: Duration = Duration::from_secs(1);

impl RedisBridge {
    /// A channel left the subscriber's set. Either this node's own
    /// SUNSUBSCRIBE is confirmed (the user is no longer in the channel
    /// set), or the cluster dropped it: its slot failed over or migrated,
    /// and whatever is published until it is subscribed again is lost.
    ///
    /// Then the subscriber is rebuilt, once the cluster has had a moment
    /// to settle, with the channels of the bridge's own set (not by the
    /// client library's resubscription, which can group channels of
    /// several slots in one command and lose them to CROSSSLOT), and every
    /// socket catches up. Subscribing the one channel again at once was
    /// tried: while the cluster still disagrees on the slot's master, the
    /// new subscription can land where the new master's messages do not
    /// arrive, silently. A rebuild starts from a fresh slot map.
    fn unsubscribed(&mut self, channel: &str, ctx: &mut Context<Self>) {
        let Some(user) = self.user_of(channel) else {
            return;
        };
        let Some(state) = self.channels.get_mut(&user) else {
            return;
        };
        if !state.subscribed {
            return; // a subscribe is on its way or queued
        }
        state.subscribed = false;
        // What the user was sent until now is where their catch-up starts.
        self.registry.mark_catch_up(user);
        if self.rebuild.is_some() {
            return;
        }
        tracing::warn!(
            user,
            "the cluster dropped a channel; rebuilding the subscriber once it settles"
        );
        self.rebuild = Some(ctx.run_later(CLUSTER_SETTLE, |bridge, ctx| {
            bridge.rebuild = None;
            if bridge.stream.is_some() {
                bridge.disconnected(ctx);
            }
        }));
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

    fn handle(&mut self, msg: Reach, ctx: &mut Context<Self>) {
        self.guarded(ctx, move |bridge, ctx| bridge.reach(msg, ctx));
    }
}

impl RedisBridge {
    fn reach(&mut self, Reach { user, reply }: Reach, ctx: &mut Context<Self>) {
        self.want(user, Instant::now());
        if self.sink.is_none() {
            let _ = reply.send(());
            return;
        }
        if self.channels.get(&user).is_some_and(|c| c.subscribed) {
            // Subscribed still (lingering, or another socket's): the lease
            // may have been released; write it again before answering.
            let leases = self.leases();
            let commands = self.commands.clone();
            actix::spawn(async move {
                if let Err(error) = leases.write(&commands, &[user]).await {
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

/// See [`BridgeHandle::depart`].
#[derive(Message)]
#[rtype(result = "()")]
struct Depart;

impl Handler<Depart> for RedisBridge {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Depart, ctx: &mut Context<Self>) -> Self::Result {
        self.departed = true;
        ctx.stop();
        let commands = self.commands.clone();
        let mut forget = redis::cmd("DEL");
        forget.arg(sweep::heartbeat_key(&self.settings.prefix, &self.settings.node));
        Box::pin(async move {
            if let Err(error) = commands.each(vec![forget]).await {
                tracing::warn!(%error, "heartbeat not deleted; the node's leases lapse by themselves");
            }
        })
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

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        self.guarded(ctx, move |bridge, ctx| bridge.release(msg, ctx));
    }
}

impl RedisBridge {
    fn release(&mut self, Release { user }: Release, ctx: &mut Context<Self>) {
        if self.sink.is_none() {
            return; // the lease lapses by itself
        }
        // A reconnecting client's new socket can register before this
        // arrives (its lease then written again by `reach`): releasing
        // after that would hide the member from every other node until the
        // next renewal. So the shard is asked again, after anything it was
        // sent before, and the lease stays if a socket is back or a `reach`
        // came meanwhile.
        let seen = self.channels.get(&user).map(|channel| channel.seen);
        let registry = self.registry.clone();
        ctx.spawn(
            async move { registry.sockets_of(user).await }
                .into_actor(self)
                .map(move |sockets, bridge, _| {
                    let reached = bridge.channels.get(&user).map(|channel| channel.seen) != seen;
                    if sockets != Ok(0) || reached || bridge.sink.is_none() {
                        return;
                    }
                    let release = bridge.release_commands(&[user]);
                    let commands = bridge.commands.clone();
                    actix::spawn(async move {
                        if let Err(error) = commands.each(release).await {
                            tracing::warn!(%error, user, "bus lease not released; it lapses by itself");
                        }
                    });
                }),
        );
    }
}

#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[cfg(feature = "test-hooks")]
impl Handler<Crash> for RedisBridge {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.guarded(ctx, |_, _| panic!("bus bridge crash requested"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert!(check_node_id("node-1.example:8080").is_ok());
        for bad in ["", "has space", "new\nline", &"x".repeat(65)] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }
}
