//! [`ChatApp`]: the [`SocketApp`] behind the socket listener. It decides
//! CONNECTs (JWT, socket cap), registers sockets, starts their replay, has
//! them closed when their token expires, and dispatches their events within
//! their user's rate budgets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use aurum_actors::bridge::BridgeHandle;
use aurum_actors::registry::{RegisterError, RegistryHandle};
use aurum_actors::session::{
    AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, EncodedPacket, Event,
    SessionHandle, SocketApp,
};
use aurum_actors::supervisor::TaskCensus;
use aurum_actors::writer::WriterHandle;
use aurum_schema::pool::DbPool;
use futures_util::FutureExt;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::presence::Presence;
use super::rate::{Budget, BudgetTable, UserBudgets};
use super::replay::Replayer;
use super::{CHAT_NAMESPACE, ChatError, ChatLimits, Router, answer, chat_message, mark_read, typing};
use crate::auth::JwtKeys;

pub struct ChatApp {
    jwt: JwtKeys,
    registry: RegistryHandle,
    router: Router,
    presence: Presence,
    writer: WriterHandle,
    db: DbPool,
    replayer: std::sync::Arc<Replayer>,
    limits: ChatLimits,
    budgets: Arc<BudgetTable>,
    /// What a socket is told when its token expires, encoded once for all.
    token_expired: Arc<EncodedPacket>,
    /// Sockets connected to the chat namespace, for `/health`.
    connected: Arc<AtomicUsize>,
    /// Where the work spawned per socket is counted (`active_tasks`).
    tasks: Arc<TaskCensus>,
}

impl ChatApp {
    // Each is a long-lived part started once in `Realtime::start`, the one caller.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        jwt: JwtKeys,
        registry: RegistryHandle,
        writer: WriterHandle,
        bridge: Option<BridgeHandle>,
        db: DbPool,
        replayer: Arc<Replayer>,
        limits: ChatLimits,
        tasks: Arc<TaskCensus>,
    ) -> Self {
        let router = Router::new(registry.clone(), bridge.clone());
        let presence = Presence::new(registry.clone(), bridge, db.clone(), router.clone());
        let budgets = BudgetTable::new(limits.chat_message, limits.typing, limits.mark_read);
        let token_expired = Arc::new(EncodedPacket::event(
            CHAT_NAMESPACE,
            "error",
            vec![token_expired().body()],
        ));
        Self {
            jwt,
            registry,
            router,
            presence,
            writer,
            db,
            replayer,
            limits,
            budgets,
            token_expired,
            connected: Arc::default(),
            tasks,
        }
    }
}

impl ChatApp {
    /// How many sockets are connected now (read by `/health`).
    pub fn connected(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.connected)
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }
}

/// One authenticated socket's state, kept by its session.
struct Member {
    user: i64,
    since: Option<i64>,
    /// When the socket's token expires.
    expires_at: Instant,
    /// Shared with the user's other sockets on this node; taken on the
    /// first event that spends from them, so an idle socket holds none.
    budgets: Option<Arc<UserBudgets>>,
}

/// A CONNECT's parsed `auth`.
struct Auth {
    user: i64,
    since: Option<i64>,
    expires_at: Instant,
}

fn unauthorized(message: &str) -> ConnectRefusal {
    ConnectRefusal::new(message, Some(json!({ "code": "unauthorized" })))
}

fn token_expired() -> ChatError {
    ChatError::new("token_expired", "your token expired; reconnect with a fresh one")
}

/// `{ token, since? }` -> who, from when, until when.
fn parse_auth(jwt: &JwtKeys, auth: Option<&Value>) -> Result<Auth, ConnectRefusal> {
    let token = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .ok_or_else(|| unauthorized("a token is required: io(url, { auth: { token } })"))?;
    let user = jwt.verify(token).map_err(|e| unauthorized(&e.message))?;
    // `verify` grants a few seconds of leeway past `exp` for clock skew; a
    // socket would be closed as soon as it opened, so it is refused instead.
    let expires_at = user
        .expires_at
        .duration_since(SystemTime::now())
        .ok()
        .filter(|left| !left.is_zero())
        .ok_or_else(|| unauthorized("token expired"))
        .and_then(|left| {
            Instant::now()
                .checked_add(left)
                .ok_or_else(|| unauthorized("invalid token"))
        })?;
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
    Ok(Auth {
        user: user.id.0,
        since,
        expires_at,
    })
}

/// The budget an event spends, and what to call it in a refusal.
fn budget_of(event: &str) -> Option<(Budget, &'static str)> {
    match event {
        "chat_message" => Some((Budget::ChatMessage, "messages")),
        "typing" => Some((Budget::Typing, "typing events")),
        "mark_read" => Some((Budget::MarkRead, "read marks")),
        _ => None,
    }
}

/// Has the session say `token_expired` and close its transport when the
/// member's token expires.
fn expire_with_token(session: &SessionHandle, member: &Member, farewell: &Arc<EncodedPacket>) {
    if let Err(error) = session.expire_at(member.expires_at, Arc::clone(farewell)) {
        // The session is closing already (see `expire_at`).
        tracing::debug!(%error, session = %session.id(), "token expiry not scheduled");
    }
}

impl SocketApp for ChatApp {
    fn accepts_namespace(&self, nsp: &str) -> bool {
        nsp == CHAT_NAMESPACE
    }

    fn connect(&self, request: ConnectRequest) -> AppFuture<Result<ConnState, ConnectRefusal>> {
        let parsed = parse_auth(&self.jwt, request.auth.as_ref());
        let registry = self.registry.clone();
        let max = self.limits.max_sockets_per_user;
        async move {
            let Auth {
                user,
                since,
                expires_at,
            } = parsed?;
            // Fails closed: a registry that cannot count cannot enforce the cap.
            let held = registry.sockets_of(user).await.map_err(|error| {
                tracing::warn!(%error, user, "CONNECT refused: the registry did not answer");
                ConnectRefusal::new(
                    "the server cannot take this socket right now; retry shortly",
                    Some(json!({ "code": "unavailable" })),
                )
            })?;
            if held >= max {
                return Err(ConnectRefusal::new(
                    format!("at most {max} sockets per user"),
                    Some(json!({ "code": "too_many_sockets" })),
                ));
            }
            Ok(ConnState::new(Member {
                user,
                since,
                expires_at,
                budgets: None,
            }))
        }
        .boxed_local()
    }

    fn connected(&self, session: &SessionHandle, _nsp: &str, state: &mut ConnState) {
        let Some(member) = state.get::<Member>() else {
            return;
        };
        // Down again in `disconnect`, which every connected socket reaches.
        metrics::gauge!("websocket_connections").increment(1.0);
        self.connected.fetch_add(1, Ordering::Relaxed);
        expire_with_token(session, member, &self.token_expired);
        let (user, since) = (member.user, member.since);
        // Before registering, so that no live message reaches the session
        // ahead of the replay: the session holds them back from here on.
        if since.is_some() && session.begin_replay().is_err() {
            return; // the session is closing
        }
        let registry = self.registry.clone();
        let bridge = self.router.bridge().cloned();
        let presence = self.presence.clone();
        let replayer = std::sync::Arc::clone(&self.replayer);
        let session = session.clone();
        // A short task: register, then replay. Nothing per socket outlives
        // it; later upkeep rides on the session's heartbeat.
        self.tasks.spawn(async move {
            let held = match registry.register(user, session.clone()).await {
                Ok(held) => held,
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
                    0
                }
            };
            // Subscribed to the user's channel before the replay reads:
            // whatever commits from then on comes over the bus, whatever
            // committed before is in what the replay reads.
            if let Some(bridge) = bridge {
                bridge.reach(user).await;
            }
            if held == 1 {
                presence.arrived(user);
            }
            // Boxed: the replay's state is large, and inline it would size
            // every socket's connect task by it, also while the task waits
            // for the bus, which in a connect storm is all of them at once.
            if let Some(since) = since {
                Box::pin(replayer.run(&session, user, since)).await;
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

    /// Each event runs in a `socket.event` span: a chat message's trace
    /// starts here and follows it through the writer and the bus.
    fn event(&self, session: &SessionHandle, state: &mut ConnState, event: Event) -> AppFuture<()> {
        let span = tracing::info_span!(
            target: aurum_actors::trace::TARGET,
            "socket.event",
            otel.kind = "server",
            socket.event = event.name.as_str(),
            user = state.get::<Member>().map(|member| member.user),
        );
        if span.is_disabled() {
            // Tracing off: no second box per event.
            return self.dispatch_event(session, state, event);
        }
        let work = span.in_scope(|| self.dispatch_event(session, state, event));
        work.instrument(span).boxed_local()
    }

    fn disconnect(&self, session: &SessionHandle, _nsp: &str, state: ConnState, reason: DisconnectReason) {
        if let Some(member) = state.into_inner::<Member>() {
            metrics::gauge!("websocket_connections").decrement(1.0);
            self.connected.fetch_sub(1, Ordering::Relaxed);
            self.registry.unregister(member.user, session.id());
            let presence = self.presence.clone();
            self.tasks.spawn(async move { presence.left(member.user).await });
            tracing::debug!(user = member.user, %reason, "socket left");
        }
    }
}

impl ChatApp {
    fn dispatch_event(&self, session: &SessionHandle, state: &mut ConnState, event: Event) -> AppFuture<()> {
        let Some(member) = state.get_mut::<Member>() else {
            return async {}.boxed_local();
        };
        let user = member.user;
        let session = session.clone();
        if !event.attachments.is_empty() || event.refused_attachments > 0 {
            let error = ChatError::new(
                "binary_not_supported",
                "chat events take JSON only, not binary attachments",
            );
            answer(&session, event.ack, Err(error));
            return async {}.boxed_local();
        }
        let now = Instant::now();
        // The session closes at the deadline; this covers events that
        // arrive before its timer has fired.
        if now >= member.expires_at {
            answer(&session, event.ack, Err(token_expired()));
            return async {}.boxed_local();
        }
        if let Some((budget, what)) = budget_of(&event.name)
            && !member
                .budgets
                .get_or_insert_with(|| self.budgets.of(user))
                .try_take(budget, now)
        {
            let error = ChatError::new("rate_limited", format!("too many {what}; slow down"));
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
}
