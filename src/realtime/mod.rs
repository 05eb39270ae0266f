//! Chat over Socket.IO: the application behind the socket listener.
//!
//! A socket authenticates on CONNECT with its JWT, registers with the
//! session registry, gets what it missed (`since`), and then sends
//! `chat_message`, `typing` and `mark_read`. Messages are committed by the
//! MessageWriter before they are acknowledged, then delivered through
//! [`Router`], the one seam between this node's registry and other nodes.

mod chat_message;
mod mark_read;
pub mod rate;
mod typing;

use std::time::Duration;

use aurum_actors::registry::{RegisterError, RegistryHandle};
use aurum_actors::session::{
    AckReply, AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, EncodedPacket, Event,
    SessionHandle, SessionId, SocketApp,
};
use aurum_actors::writer::WriterHandle;
use aurum_schema::models::messages;
use aurum_schema::pool::DbPool;
use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::auth::JwtKeys;
use rate::TokenBucket;

/// The only namespace chat serves.
pub const CHAT_NAMESPACE: &str = "/";
/// Messages replayed per database round trip on reconnect.
const REPLAY_PAGE: i64 = 500;

#[derive(Debug, Clone)]
pub struct ChatLimits {
    pub messages_per_second: f64,
    pub burst: f64,
    pub max_message_chars: usize,
    pub max_client_id_chars: usize,
    pub max_sockets_per_user: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            messages_per_second: 20.0,
            burst: 40.0,
            max_message_chars: 4000,
            max_client_id_chars: 64,
            max_sockets_per_user: aurum_actors::registry::DEFAULT_MAX_SOCKETS_PER_USER,
        }
    }
}

/// Where events for a user go: this node's sessions now; the Redis bridge
/// plugs in here to reach other nodes.
#[derive(Clone)]
pub struct Router {
    registry: RegistryHandle,
}

impl Router {
    pub fn new(registry: RegistryHandle) -> Self {
        Self { registry }
    }

    /// Sends `name(payload)` to every socket of `user`, but `except`.
    pub fn emit_to_user(&self, user: i64, name: &str, payload: Value, except: Option<SessionId>) {
        self.deliver(
            user,
            EncodedPacket::event(CHAT_NAMESPACE, name, vec![payload]),
            except,
        );
    }

    /// Sends `name(payload)` to every socket of `other` and to `user`'s
    /// other sockets (all but `except`, the one that acted), encoded once.
    pub fn emit_to_pair(&self, name: &str, payload: Value, other: i64, user: i64, except: SessionId) {
        let packet = EncodedPacket::event(CHAT_NAMESPACE, name, vec![payload]);
        self.deliver(other, packet.clone(), None);
        self.deliver(user, packet, Some(except));
    }

    /// The one place events leave for a user's sockets: the cross-node
    /// bridge will publish here too.
    fn deliver(&self, user: i64, packet: EncodedPacket, except: Option<SessionId>) {
        self.registry.deliver(user, packet, except);
    }
}

pub struct ChatApp {
    jwt: JwtKeys,
    registry: RegistryHandle,
    router: Router,
    writer: WriterHandle,
    db: DbPool,
    limits: ChatLimits,
}

impl ChatApp {
    pub fn new(
        jwt: JwtKeys,
        registry: RegistryHandle,
        writer: WriterHandle,
        db: DbPool,
        limits: ChatLimits,
    ) -> Self {
        let router = Router::new(registry.clone());
        Self {
            jwt,
            registry,
            router,
            writer,
            db,
            limits,
        }
    }
}

/// One authenticated socket's state, kept by its session.
struct Member {
    user: i64,
    since: Option<i64>,
    limiter: TokenBucket,
}

/// The answer to an event: through its ack when it has one, else as an
/// `error` event (DESIGN.md: `error` is for what has no ack).
pub(crate) fn answer(session: &SessionHandle, ack: Option<AckReply>, result: Result<Value, ChatError>) {
    let outcome = match (ack, result) {
        (Some(ack), Ok(value)) => ack.send(vec![value]),
        (Some(ack), Err(error)) => ack.send(vec![json!({ "ok": false, "error": error.body() })]),
        (None, Ok(_)) => Ok(()),
        (None, Err(error)) => session.emit(CHAT_NAMESPACE, "error", vec![error.body()]),
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, session = %session.id(), "answer not delivered");
    }
}

/// A refusal with a stable code, sent in an ack or an `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatError {
    pub code: &'static str,
    pub message: String,
}

impl ChatError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

fn unauthorized(message: &str) -> ConnectRefusal {
    ConnectRefusal::new(message, Some(json!({ "code": "unauthorized" })))
}

/// `{ token, since? }` -> (user, since).
fn parse_auth(jwt: &JwtKeys, auth: Option<&Value>) -> Result<(i64, Option<i64>), ConnectRefusal> {
    let token = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .ok_or_else(|| unauthorized("a token is required: io(url, { auth: { token } })"))?;
    let user = jwt.verify(token).map_err(|e| unauthorized(&e.message))?;
    let since = match auth.and_then(|a| a.get("since")) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                .filter(|since| *since >= 0)
                .ok_or_else(|| {
                    ConnectRefusal::new(
                        "`since` must be a message id",
                        Some(json!({ "code": "invalid_since" })),
                    )
                })?,
        ),
    };
    Ok((user.id.0, since))
}

impl SocketApp for ChatApp {
    fn accepts_namespace(&self, nsp: &str) -> bool {
        nsp == CHAT_NAMESPACE
    }

    fn connect(&self, request: ConnectRequest) -> AppFuture<Result<ConnState, ConnectRefusal>> {
        let parsed = parse_auth(&self.jwt, request.auth.as_ref());
        let registry = self.registry.clone();
        let max = self.limits.max_sockets_per_user;
        let limiter = TokenBucket::new(self.limits.messages_per_second, self.limits.burst);
        async move {
            let (user, since) = parsed?;
            if registry.sockets_of(user).await >= max {
                return Err(ConnectRefusal::new(
                    format!("at most {max} sockets per user"),
                    Some(json!({ "code": "too_many_sockets" })),
                ));
            }
            Ok(ConnState::new(Member { user, since, limiter }))
        }
        .boxed_local()
    }

    fn connected(&self, session: &SessionHandle, _nsp: &str, state: &mut ConnState) {
        let Some(member) = state.get::<Member>() else {
            return;
        };
        let (user, since) = (member.user, member.since);
        let registry = self.registry.clone();
        let db = self.db.clone();
        let session = session.clone();
        // A short task: register, then replay. Nothing per socket outlives
        // it; later upkeep rides on the session's heartbeat.
        actix::spawn(async move {
            match registry.register(user, session.clone()).await {
                Ok(()) => {}
                Err(RegisterError::TooManySockets) => {
                    let _ = session.emit(
                        CHAT_NAMESPACE,
                        "error",
                        vec![json!({
                        "code": "too_many_sockets", "message": "too many sockets for this user" })],
                    );
                    session.close();
                    return;
                }
                Err(RegisterError::Unavailable) => {
                    tracing::warn!(user, "registry unavailable; the next heartbeat registers again");
                }
            }
            if let Some(since) = since {
                replay(&db, &session, user, since).await;
            }
        });
    }

    /// Re-registers on every answered ping: cheap, and it rebuilds the map
    /// of a registry shard that was restarted.
    fn heartbeat(&self, session: &SessionHandle, _nsp: &str, state: &mut ConnState) {
        if let Some(member) = state.get::<Member>() {
            self.registry.refresh(member.user, session.clone());
        }
    }

    fn event(&self, session: &SessionHandle, state: &mut ConnState, event: Event) -> AppFuture<()> {
        let Some(member) = state.get_mut::<Member>() else {
            return async {}.boxed_local();
        };
        let user = member.user;
        let session = session.clone();
        if !event.attachments.is_empty() {
            let error = ChatError::new(
                "binary_not_supported",
                "chat events take JSON only, not binary attachments",
            );
            answer(&session, event.ack, Err(error));
            return async {}.boxed_local();
        }
        if matches!(event.name.as_str(), "chat_message" | "typing") && !member.limiter.try_take() {
            let error = ChatError::new("rate_limited", "too many messages; slow down");
            answer(&session, event.ack, Err(error));
            return async {}.boxed_local();
        }
        let payload = event.args.into_iter().next().unwrap_or(Value::Null);
        let ack = event.ack;
        match event.name.as_str() {
            "chat_message" => chat_message::handle(
                self.writer.clone(),
                self.router.clone(),
                self.limits.clone(),
                session,
                user,
                payload,
                ack,
            )
            .boxed_local(),
            "typing" => {
                typing::handle(&self.router, &session, user, &payload, ack);
                async {}.boxed_local()
            }
            "mark_read" => {
                mark_read::handle(self.db.clone(), self.router.clone(), session, user, payload, ack)
                    .boxed_local()
            }
            other => {
                let error = ChatError::new("unknown_event", format!("unknown event {other:?}"));
                answer(&session, ack, Err(error));
                async {}.boxed_local()
            }
        }
    }

    fn disconnect(&self, session: &SessionHandle, _nsp: &str, state: ConnState, reason: DisconnectReason) {
        if let Some(member) = state.into_inner::<Member>() {
            self.registry.unregister(member.user, session.id());
            tracing::debug!(user = member.user, %reason, "socket left");
        }
    }
}

/// Sends every message after `since`, page by page, in id order.
async fn replay(db: &DbPool, session: &SessionHandle, user: i64, mut since: i64) {
    loop {
        let page = match replay_page(db, user, since).await {
            Ok(page) => page,
            Err(()) => {
                let _ = session.emit(
                    CHAT_NAMESPACE,
                    "error",
                    vec![json!({
                    "code": "replay_failed",
                    "message": "missed messages could not be loaded; reconnect with the same since" })],
                );
                return;
            }
        };
        let done = (page.len() as i64) < REPLAY_PAGE;
        for message in page {
            since = message.id;
            let payload = serde_json::to_value(&message).unwrap_or(Value::Null);
            if session
                .emit(CHAT_NAMESPACE, "new_message", vec![payload])
                .is_err()
            {
                return; // the session is gone or too slow; it reconnects with its own since
            }
        }
        if done {
            return;
        }
    }
}

/// One page of the replay; failures are logged here and reported by the caller.
async fn replay_page(db: &DbPool, user: i64, since: i64) -> Result<Vec<messages::ChatMessage>, ()> {
    let mut conn = db.get().await.map_err(|error| {
        tracing::warn!(%error, user, "replay: no database connection");
    })?;
    messages::since(&mut conn, aurum_schema::ids::UserId(user), since, REPLAY_PAGE)
        .await
        .map_err(|error| tracing::error!(%error, user, "replay query failed"))
}

/// A positive id from a JSON number (or a numeric string, as some clients send).
pub(crate) fn id_field(payload: &Value, name: &str) -> Result<i64, ChatError> {
    let value = payload
        .get(name)
        .ok_or_else(|| ChatError::new("invalid_payload", format!("`{name}` is required")))?;
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .filter(|id| *id > 0)
        .ok_or_else(|| ChatError::new("invalid_payload", format!("`{name}` must be a positive id")))
}

/// The realtime side of a node: registry shards and the message writer,
/// each started once, before any socket or HTTP worker exists.
pub struct Realtime {
    pub app: std::sync::Arc<ChatApp>,
    pub registry: RegistryHandle,
    /// The arbiters the long-lived actors and the sessions run on.
    arbiters: Vec<actix::Arbiter>,
}

impl Realtime {
    /// Starts the actors; call inside the actix system.
    pub fn start(state: &crate::state::AppState) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let arbiters: Vec<actix::Arbiter> = (0..cores).map(|_| actix::Arbiter::new()).collect();
        let limits = ChatLimits::default();
        let shards = state.config.registry_shards.unwrap_or(2 * cores);
        let registry = RegistryHandle::start(shards, limits.max_sockets_per_user, &arbiters);
        let writer = WriterHandle::start(
            state.db.clone(),
            aurum_actors::writer::WriterSettings {
                max_in_flight: state.config.writer_in_flight.max(1),
                linger: Duration::from_micros(state.config.writer_linger_us),
                ..Default::default()
            },
            arbiters.first(),
        );
        let app = ChatApp::new(
            state.jwt.clone(),
            registry.clone(),
            writer,
            state.db.clone(),
            limits,
        );
        Self {
            app: std::sync::Arc::new(app),
            registry,
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
