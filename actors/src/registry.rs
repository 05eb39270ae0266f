//! Which sockets each user holds on this node: N shard actors, user id
//! modulo N, each owning its part of the map. Shards start once, before the
//! HTTP server, each under an actix `Supervisor`: a shard whose handler
//! panics stops, is restarted with an empty map, and the map fills again as
//! sessions re-register (they do on every heartbeat).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::SendError as MailboxError;
use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message, Supervised, Supervisor};

use crate::session::{EncodedPacket, PreparedAck, SendError, SessionHandle, SessionId};

/// How often a shard drops sessions that ended without their unregister
/// reaching it (sent when the shard's mailbox was full).
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Why a delivery was not handed to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The user's shard has a full mailbox: the node is overloaded. The
    /// recipient recovers the message through `since` or the history.
    #[error("the session registry is overloaded")]
    Busy,
    /// The shard is gone (the node is stopping).
    #[error("the session registry is unavailable")]
    Unavailable,
}

impl<M> From<MailboxError<M>> for DeliverError {
    fn from(error: MailboxError<M>) -> Self {
        match error {
            MailboxError::Full(_) => Self::Busy,
            MailboxError::Closed(_) => Self::Unavailable,
        }
    }
}

/// How long a caller waits for a shard's answer. A shard answers in
/// microseconds; one that takes this long is stuck, and waiting longer
/// would only hold the socket that asked.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("too many sockets for this user on this node")]
    TooManySockets,
    /// Also what a handler that panicked answers.
    #[error("the session registry is unavailable")]
    Unavailable,
}

/// A typed handle on the registry's shards; cheap to clone (no
/// allocation: every socket's connect task holds one).
#[derive(Clone)]
pub struct RegistryHandle {
    shards: Arc<[Addr<RegistryShard>]>,
}

impl RegistryHandle {
    /// Starts `shards` supervised shard actors, spread over `arbiters`.
    pub fn start(shards: usize, max_per_user: usize, arbiters: &[Arbiter]) -> Self {
        let shards = (0..shards.max(1))
            .map(|index| {
                let make = move |_: &mut Context<RegistryShard>| RegistryShard::new(max_per_user);
                match arbiters.get(index % arbiters.len().max(1)) {
                    Some(arbiter) => Supervisor::start_in_arbiter(&arbiter.handle(), make),
                    None => Supervisor::start(make),
                }
            })
            .collect::<Vec<_>>()
            .into();
        Self { shards }
    }

    fn shard(&self, user: i64) -> &Addr<RegistryShard> {
        // `shards` is never empty (see `start`).
        &self.shards[user.rem_euclid(self.shards.len() as i64) as usize]
    }

    /// Adds (or refreshes) `session` as one of `user`'s sockets; how many
    /// the user holds here now, this one included.
    pub async fn register(&self, user: i64, session: SessionHandle) -> Result<usize, RegisterError> {
        self.shard(user)
            .send(Register { user, session })
            .await
            .map_err(|_| RegisterError::Unavailable)?
    }

    /// Registers `session` again without waiting for an answer: the
    /// heartbeat's refresh, which rebuilds a restarted shard's map. A full
    /// shard skips it; the next heartbeat tries again.
    pub fn refresh(&self, user: i64, session: SessionHandle) {
        if let Err(error) = self.shard(user).try_send(Register { user, session }) {
            tracing::debug!(user, error = %DeliverError::from(error), "registry refresh skipped");
        }
    }

    /// Removes one socket; a no-op if it was not registered. If the shard
    /// cannot take it now, the shard's sweep drops the ended session later.
    pub fn unregister(&self, user: i64, session: SessionId) {
        if let Err(error) = self.shard(user).try_send(Unregister { user, session }) {
            tracing::debug!(user, error = %DeliverError::from(error), "unregister left to the sweep");
        }
    }

    /// Sends `packet` to every socket `user` holds on this node, except
    /// `except` (the sender's own socket). Best-effort: a socket that cannot
    /// keep up is closed by its session.
    ///
    /// # Errors
    ///
    /// [`DeliverError`] when the user's shard cannot take it.
    pub fn deliver(
        &self,
        user: i64,
        packet: EncodedPacket,
        except: Option<SessionId>,
    ) -> Result<(), DeliverError> {
        self.shard(user)
            .try_send(Deliver {
                user,
                packet,
                except,
                ack: None,
            })
            .map_err(DeliverError::from)
    }

    /// Sends `ack`, then sends `packet` to `user`'s sockets
    /// but the one that asked, all through `user`'s shard: the ack then
    /// keeps its place among the deliveries to `user`, so a client never
    /// holds the id of its own message before an older one sent to it.
    ///
    /// # Errors
    ///
    /// [`DeliverError`] when the shard cannot take it; the ack has then
    /// been answered directly, and only the delivery is lost.
    pub fn deliver_with_ack(
        &self,
        user: i64,
        packet: EncodedPacket,
        asker: SessionId,
        ack: PreparedAck,
    ) -> Result<(), DeliverError> {
        let message = Deliver {
            user,
            packet,
            except: Some(asker),
            ack: Some(ack),
        };
        self.shard(user).try_send(message).map_err(|error| {
            let failure = match &error {
                MailboxError::Full(_) => DeliverError::Busy,
                MailboxError::Closed(_) => DeliverError::Unavailable,
            };
            let (MailboxError::Full(message) | MailboxError::Closed(message)) = error;
            if let Some(ack) = message.ack
                && let Err(error) = ack.send()
            {
                tracing::debug!(%error, user, "ack not delivered");
            }
            failure
        })
    }

    /// Every user with a socket on this node, shard by shard, and whether
    /// every shard answered: one that does not within [`ANSWER_TIMEOUT`]
    /// is left out, so a caller must not take a missing user for one
    /// without sockets unless the list is complete.
    pub async fn users(&self) -> (Vec<i64>, bool) {
        let asks = self
            .shards
            .iter()
            .map(|shard| shard.send(Users).timeout(ANSWER_TIMEOUT));
        let answers = futures_util::future::join_all(asks).await;
        let complete = answers.iter().all(Result::is_ok);
        (
            answers.into_iter().filter_map(Result::ok).flatten().collect(),
            complete,
        )
    }

    /// Every open socket on this node, for a drain to close in batches
    /// (a shard that does not answer within [`ANSWER_TIMEOUT`] gives none:
    /// its sockets close with the listener's last sweep).
    pub async fn all_sessions(&self) -> Vec<SessionHandle> {
        let asks = self
            .shards
            .iter()
            .map(|shard| shard.send(AllSessions).timeout(ANSWER_TIMEOUT));
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .flatten()
            .collect()
    }

    /// Marks every socket on this node for a catch-up (see
    /// [`SessionHandle::mark_catch_up`]).
    pub fn mark_catch_up_all(&self) {
        for shard in self.shards.iter() {
            if let Err(error) = shard.try_send(MarkAll) {
                tracing::warn!(error = %DeliverError::from(error), "catch-up marks not set on a shard");
            }
        }
    }

    /// Marks `user`'s sockets on this node for a catch-up (see
    /// [`SessionHandle::mark_catch_up`]).
    pub fn mark_catch_up(&self, user: i64) {
        if let Err(error) = self.shard(user).try_send(MarkUser { user }) {
            tracing::warn!(error = %DeliverError::from(error), user, "catch-up marks not set");
        }
    }

    /// `user`'s open sockets on this node (none when the shard does not
    /// answer within [`ANSWER_TIMEOUT`]).
    pub async fn sessions_of(&self, user: i64) -> Vec<SessionHandle> {
        self.shard(user)
            .send(SessionsOf { user })
            .timeout(ANSWER_TIMEOUT)
            .await
            .unwrap_or_default()
    }

    /// How many sockets `user` holds on this node.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Unavailable`] when the shard does not answer within
    /// [`ANSWER_TIMEOUT`] (or failed while answering): callers that enforce
    /// the socket cap with it must then refuse, not guess.
    pub async fn sockets_of(&self, user: i64) -> Result<usize, RegisterError> {
        self.shard(user)
            .send(Count { user })
            .timeout(ANSWER_TIMEOUT)
            .await
            .map_err(|_| RegisterError::Unavailable)?
    }

    /// Makes the shard of `user` panic inside a handler, to exercise the
    /// supervisor (tests only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn crash_shard_of(&self, user: i64) {
        self.shard(user).do_send(Crash);
    }

    /// Makes the shard of `user` handle nothing for `duration`, as a shard
    /// stuck behind a flood would.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn stall_shard_of(&self, user: i64, duration: Duration) {
        self.shard(user).do_send(Stall(duration));
    }
}

/// One shard's part of the user -> sockets map.
pub struct RegistryShard {
    sessions: HashMap<i64, Vec<SessionHandle>>,
    max_per_user: usize,
    pacing: crate::supervisor::RestartPacing,
    /// Set by `restarting`, taken by `started`.
    restart_pause: Duration,
}

impl RegistryShard {
    fn new(max_per_user: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            max_per_user,
            pacing: crate::supervisor::RestartPacing::default(),
            restart_pause: Duration::ZERO,
        }
    }

    /// Runs a handler body; a panic stops the shard so its supervisor
    /// restarts it with a fresh map, instead of leaving a half-updated one.
    fn guarded<R>(ctx: &mut Context<Self>, fallback: R, body: impl FnOnce() -> R) -> R {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(result) => result,
            Err(_) => {
                tracing::error!("registry shard panicked; restarting it");
                actix::ActorContext::stop(ctx);
                fallback
            }
        }
    }
}

impl Actor for RegistryShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Deliveries fan in from every session and the writer; a generous
        // bound keeps them from failing while still bounding memory.
        ctx.set_mailbox_capacity(4096);
        crate::supervisor::pause_after_restart(std::mem::take(&mut self.restart_pause), ctx);
        ctx.run_interval(SWEEP_INTERVAL, |shard, _| {
            shard.sessions.retain(|_, list| {
                list.retain(SessionHandle::is_connected);
                !list.is_empty()
            });
        });
    }
}

impl Supervised for RegistryShard {
    fn restarting(&mut self, _: &mut Context<Self>) {
        metrics::counter!("actor_restarts_total", "actor" => "registry_shard").increment(1);
        self.restart_pause = self.pacing.next_pause(std::time::Instant::now());
        self.sessions.clear();
    }
}

#[derive(Message)]
#[rtype(result = "Result<usize, RegisterError>")]
struct Register {
    user: i64,
    session: SessionHandle,
}

impl Handler<Register> for RegistryShard {
    type Result = Result<usize, RegisterError>;

    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) -> Self::Result {
        let max = self.max_per_user;
        let sessions = &mut self.sessions;
        Self::guarded(ctx, Err(RegisterError::Unavailable), move || {
            let list = sessions.entry(msg.user).or_default();
            list.retain(SessionHandle::is_connected);
            if list.iter().any(|s| s.id() == msg.session.id()) {
                return Ok(list.len());
            }
            if list.len() >= max {
                return Err(RegisterError::TooManySockets);
            }
            list.push(msg.session);
            Ok(list.len())
        })
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Unregister {
    user: i64,
    session: SessionId,
}

impl Handler<Unregister> for RegistryShard {
    type Result = ();

    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        let sessions = &mut self.sessions;
        Self::guarded(ctx, (), move || {
            if let Some(list) = sessions.get_mut(&msg.user) {
                list.retain(|s| s.id() != msg.session);
                if list.is_empty() {
                    sessions.remove(&msg.user);
                }
            }
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Deliver {
    user: i64,
    packet: EncodedPacket,
    except: Option<SessionId>,
    /// Answered first (see `RegistryHandle::deliver_with_ack`).
    ack: Option<PreparedAck>,
}

impl Handler<Deliver> for RegistryShard {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let sessions = &mut self.sessions;
        Self::guarded(ctx, (), move || {
            if let Some(ack) = msg.ack
                && let Err(error) = ack.send()
            {
                tracing::debug!(%error, user = msg.user, "ack not delivered");
            }
            let Some(list) = sessions.get_mut(&msg.user) else {
                return;
            };
            list.retain(|session| {
                if Some(session.id()) == msg.except {
                    return true;
                }
                // A closed session leaves the map here even if its
                // unregister is still on the way.
                let sent = if msg.packet.droppable {
                    session.offer(msg.packet.clone()).map(|_| ())
                } else {
                    session.send(msg.packet.clone())
                };
                !matches!(sent, Err(SendError::Closed))
            });
            if list.is_empty() {
                sessions.remove(&msg.user);
            }
        });
    }
}

#[derive(Message)]
#[rtype(result = "Result<usize, RegisterError>")]
struct Count {
    user: i64,
}

impl Handler<Count> for RegistryShard {
    type Result = Result<usize, RegisterError>;

    fn handle(&mut self, msg: Count, ctx: &mut Context<Self>) -> Self::Result {
        let sessions = &self.sessions;
        Self::guarded(ctx, Err(RegisterError::Unavailable), || {
            Ok(sessions
                .get(&msg.user)
                .map_or(0, |list| list.iter().filter(|s| s.is_connected()).count()))
        })
    }
}

#[derive(Message)]
#[rtype(result = "Vec<i64>")]
struct Users;

impl Handler<Users> for RegistryShard {
    type Result = Vec<i64>;

    fn handle(&mut self, _: Users, ctx: &mut Context<Self>) -> Self::Result {
        let sessions = &self.sessions;
        Self::guarded(ctx, Vec::new(), || sessions.keys().copied().collect())
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct MarkAll;

#[derive(Message)]
#[rtype(result = "()")]
struct MarkUser {
    user: i64,
}

impl Handler<MarkUser> for RegistryShard {
    type Result = ();

    fn handle(&mut self, MarkUser { user }: MarkUser, ctx: &mut Context<Self>) {
        let sessions = &self.sessions;
        Self::guarded(ctx, (), || {
            for session in sessions.get(&user).into_iter().flatten() {
                let _ = session.mark_catch_up();
            }
        });
    }
}

impl Handler<MarkAll> for RegistryShard {
    type Result = ();

    fn handle(&mut self, _: MarkAll, ctx: &mut Context<Self>) {
        let sessions = &self.sessions;
        Self::guarded(ctx, (), || {
            for session in sessions.values().flatten() {
                // A full mailbox closes that socket: its client reconnects
                // with its own `since`, which is as good.
                let _ = session.mark_catch_up();
            }
        });
    }
}

#[derive(Message)]
#[rtype(result = "Vec<SessionHandle>")]
struct SessionsOf {
    user: i64,
}

impl Handler<SessionsOf> for RegistryShard {
    type Result = Vec<SessionHandle>;

    fn handle(&mut self, msg: SessionsOf, ctx: &mut Context<Self>) -> Self::Result {
        let sessions = &self.sessions;
        Self::guarded(ctx, Vec::new(), || {
            sessions
                .get(&msg.user)
                .map(|list| list.iter().filter(|s| s.is_connected()).cloned().collect())
                .unwrap_or_default()
        })
    }
}

#[derive(Message)]
#[rtype(result = "Vec<SessionHandle>")]
struct AllSessions;

impl Handler<AllSessions> for RegistryShard {
    type Result = Vec<SessionHandle>;

    fn handle(&mut self, _: AllSessions, ctx: &mut Context<Self>) -> Self::Result {
        let sessions = &self.sessions;
        Self::guarded(ctx, Vec::new(), || {
            sessions
                .values()
                .flatten()
                .filter(|s| s.is_connected())
                .cloned()
                .collect()
        })
    }
}

#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[cfg(feature = "test-hooks")]
impl Handler<Crash> for RegistryShard {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        Self::guarded(ctx, (), || -> () { panic!("registry shard crash requested") });
    }
}

#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
struct Stall(Duration);

#[cfg(feature = "test-hooks")]
impl Handler<Stall> for RegistryShard {
    type Result = ();

    fn handle(&mut self, Stall(duration): Stall, ctx: &mut Context<Self>) {
        // `wait` holds the mailbox, not the arbiter's thread.
        actix::AsyncContext::wait(ctx, actix::fut::wrap_future(tokio::time::sleep(duration)));
    }
}
