//! Start-up of the realtime side: the long-lived actors, once per node.

use std::time::Duration;

use aurum_actors::registry::RegistryHandle;
use aurum_actors::writer::WriterHandle;

use super::replay::{ReplaySettings, Replayer};
use super::{ChatApp, ChatLimits};

/// The realtime side of a node: registry shards and the message writer,
/// each started once, before any socket or HTTP worker exists, each under a
/// supervisor that restarts it if it panics.
pub struct Realtime {
    pub app: std::sync::Arc<ChatApp>,
    pub registry: RegistryHandle,
    pub writer: WriterHandle,
    /// The arbiters the long-lived actors and the sessions run on.
    arbiters: Vec<actix::Arbiter>,
}

impl Realtime {
    /// Starts the actors; call inside the actix system.
    pub fn start(state: &crate::state::AppState) -> Self {
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
        let replayer = Replayer::new(
            state.db.clone(),
            &ReplaySettings {
                concurrency: state.config.replay_concurrency,
                max_backlog: state.config.replay_max_backlog,
            },
        );
        let app = ChatApp::new(
            state.jwt.clone(),
            registry.clone(),
            writer.clone(),
            state.db.clone(),
            replayer,
            limits,
        );
        Self {
            app: std::sync::Arc::new(app),
            registry,
            writer,
            arbiters,
        }
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
            arbiters: self.arbiters.iter().map(actix::Arbiter::handle).collect(),
            ..Default::default()
        }
    }
}
