//! Start-up of the realtime side: the long-lived actors, once per node.

use std::time::Duration;

use std::sync::Arc;

use aurum_actors::bridge::{BridgeHandle, BridgeSettings, Recovered, StartError};
use aurum_actors::limits::ConnectionLimits;
use aurum_actors::registry::RegistryHandle;
use aurum_actors::supervisor::TaskCensus;
use aurum_actors::writer::WriterHandle;

use super::replay::{ReplaySettings, Replayer};
use super::{ChatApp, ChatLimits};

/// The realtime side of a node: registry shards and the message writer,
/// each started once, before any socket or HTTP worker exists, each under a
/// supervisor that restarts it if it panics.
pub struct Realtime {
    pub app: Arc<ChatApp>,
    pub registry: RegistryHandle,
    pub writer: WriterHandle,
    /// The bus between nodes, when `REDIS_URL` is set.
    pub bridge: Option<BridgeHandle>,
    pub replayer: Arc<Replayer>,
    /// Whether the socket listener takes new sockets.
    pub admission: Arc<aurum_actors::supervisor::Admission>,
    /// The ResourceSupervisor, unless `ENABLE_RESOURCE_MONITOR=false`.
    pub supervisor: Option<aurum_actors::supervisor::SupervisorHandle>,
    /// The node's live tasks, for `/health`.
    pub tasks: Arc<aurum_actors::supervisor::TaskCensus>,
    /// The arbiters the long-lived actors and the sessions run on.
    arbiters: Vec<actix::Arbiter>,
    /// The bridge's own thread, with `REDIS_URL`.
    _bus_arbiter: Option<actix::Arbiter>,
}

impl Realtime {
    /// Starts the actors; call inside the actix system.
    ///
    /// # Errors
    ///
    /// When the Redis bridge's settings are unusable (`REDIS_URL`, `NODE_ID`).
    pub fn start(state: &crate::state::AppState) -> Result<Self, StartError> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let arbiters: Vec<actix::Arbiter> = (0..cores).map(|_| actix::Arbiter::new()).collect();
        let limits = ChatLimits::from_config(&state.config);
        let shards = state.config.registry_shards.unwrap_or(2 * cores);
        let registry = RegistryHandle::start(shards, limits.max_sockets_per_user, &arbiters);
        // The writer's own pool: replay, read receipts and REST cannot take
        // the connections persistence needs.
        let writer = WriterHandle::start(
            state.writer_db.clone(),
            aurum_actors::writer::WriterSettings {
                max_in_flight: state.config.writer_in_flight.max(1),
                linger: Duration::from_micros(state.config.writer_linger_us),
                ..Default::default()
            },
            arbiters.first(),
        );
        let replayer = Arc::new(Replayer::new(
            state.db.clone(),
            &ReplaySettings {
                concurrency: state.config.replay_concurrency,
                max_backlog: state.config.replay_max_backlog,
                overlap: if state.config.redis_url.is_some() {
                    state.config.replay_overlap_ids
                } else {
                    0
                },
            },
        ));
        let tasks = Arc::new(aurum_actors::supervisor::TaskCensus::default());
        // The presence worker comes with the app, after the bridge: the
        // bridge reaches it through this slot.
        let presence: Arc<std::sync::OnceLock<super::presence::Presence>> = Arc::default();
        let bridge = state.config.redis_url.as_ref().map(|url| {
            let mut settings = BridgeSettings::new(url, &state.config.redis_prefix, state.config.node());
            settings.cluster = state.config.redis_cluster;
            settings.lease_ttl = Duration::from_secs(state.config.presence_ttl.max(1));
            settings.ping_interval = Duration::from_millis(state.config.bus_ping_interval.max(10));
            settings.on_recovered = Some(catch_up(
                registry.clone(),
                Arc::clone(&replayer),
                Arc::clone(&tasks),
            ));
            let presence = Arc::clone(&presence);
            settings.on_departed = Some(Arc::new(move |users: Vec<i64>| {
                if let Some(presence) = presence.get() {
                    presence.departed(users);
                }
            }));
            // A thread of its own: the bus's bursts (a connect storm's
            // subscribes and leases, a Redis reconnect's resubscription)
            // neither wait behind the sessions' work on a shared arbiter nor
            // leave their short-lived buffers among the sessions' long-lived
            // state in that thread's heap.
            let bus_arbiter = actix::Arbiter::new();
            BridgeHandle::start(settings, registry.clone(), Some(&bus_arbiter))
                .map(|bridge| (bridge, bus_arbiter))
        });
        let (bridge, bus_arbiter) = bridge.transpose()?.unzip();
        let app = ChatApp::new(
            state.jwt.clone(),
            registry.clone(),
            writer.clone(),
            bridge.clone(),
            state.db.clone(),
            Arc::clone(&replayer),
            limits,
            Arc::clone(&tasks),
        );
        let _ = presence.set(app.presence().clone());
        let admission = Arc::new(aurum_actors::supervisor::Admission::default());

        let supervisor = state.config.enable_resource_monitor.then(|| {
            aurum_actors::supervisor::SupervisorHandle::start(
                aurum_actors::supervisor::SupervisorSettings {
                    interval: state.config.resource_interval,
                    high_watermark: state.config.memory_high_watermark,
                    arbiters: arbiters
                        .iter()
                        .chain(&bus_arbiter)
                        .map(actix::Arbiter::handle)
                        .collect(),
                    tasks: Arc::clone(&tasks),
                    pools: state.pools.clone(),
                },
                Arc::clone(&admission),
            )
        });
        Ok(Self {
            app: Arc::new(app),
            registry,
            writer,
            bridge,
            replayer,
            admission,
            supervisor,
            tasks,
            arbiters,
            _bus_arbiter: bus_arbiter,
        })
    }

    /// The socket settings from the service configuration. Sessions run on
    /// the same arbiters as the registry shards and the writer: most of a
    /// chat message's hops between actors then stay on one thread, where
    /// separate threads cost a wake-up and a context switch each (measured
    /// in docs/benchmarks.md).
    pub fn socket_config(&self, config: &crate::config::Config) -> aurum_actors::session::SocketConfig {
        aurum_actors::session::SocketConfig {
            ping_interval: Duration::from_millis(config.ws_ping_interval),
            ping_timeout: Duration::from_millis(config.ws_ping_timeout),
            max_payload: config.ws_max_payload,
            // Chat events are JSON only: attachments are refused unread.
            max_attachments: 0,
            cors_origins: config.socket_cors_origins(),
            arbiters: self.arbiters.iter().map(actix::Arbiter::handle).collect(),
            admission: Arc::clone(&self.admission),
            tasks: Some(Arc::clone(&self.tasks)),
            limits: Arc::new(ConnectionLimits::new(config.connection_limits())),
            send_buffer: config.ws_send_buffer,
            ..Default::default()
        }
    }
}

/// What the bridge calls once the bus is back (or dropped deliveries): the
/// users' sockets here catch up from the newest message each was sent, one
/// database read per user for all their sockets, through the replayer's
/// bounded slots, so whatever the bus lost while it was down comes from
/// PostgreSQL.
fn catch_up(registry: RegistryHandle, replayer: Arc<Replayer>, tasks: Arc<TaskCensus>) -> Recovered {
    Arc::new(move |users: Vec<i64>| {
        let registry = registry.clone();
        let replayer = Arc::clone(&replayer);
        let each = Arc::clone(&tasks);
        tasks.spawn(async move {
            tracing::info!(users = users.len(), "catching up after the bus was down");
            for user in users {
                let sessions = registry.sessions_of(user).await;
                if sessions.is_empty() {
                    continue;
                }
                let replayer = Arc::clone(&replayer);
                each.spawn(async move { replayer.catch_up(user, sessions).await });
            }
        });
    })
}
