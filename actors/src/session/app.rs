//! The seam between the protocol side of a socket (the [`Session`] actor) and
//! the application that serves it (chat, the conformance example, tests).
//!
//! The application sees namespaces, events and acks; it never sees frames,
//! pings or the actor's address. Everything it may do to a socket goes
//! through a [`SessionHandle`] or an [`AckReply`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use actix::Addr;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

use super::Session;
use crate::codec::{BinaryPacket, CodecError, SocketPacket, socket};

/// What the application's asynchronous hooks return.
///
/// Not `Send`: a session and the futures it runs stay on the arbiter thread
/// that polls its socket, so the application may hold `Rc`s across awaits.
pub type AppFuture<T> = LocalBoxFuture<'static, T>;

/// The application behind the socket listener.
///
/// One value serves every socket on every arbiter, hence `Send + Sync`; the
/// per-connection part lives in the [`ConnState`] that [`SocketApp::connect`]
/// returns and the session keeps.
pub trait SocketApp: Send + Sync + 'static {
    /// Whether clients may connect to `nsp`; others get CONNECT_ERROR
    /// `{"message":"Invalid namespace"}` and keep their connection.
    fn accepts_namespace(&self, nsp: &str) -> bool;

    /// Decides a CONNECT to an accepted namespace, typically by checking
    /// `request.auth`.
    ///
    /// The session answers CONNECT `{"sid":…}` on `Ok` and CONNECT_ERROR on
    /// `Err`. The future may be dropped unfinished when the socket goes away
    /// or the connect timeout runs out first, so it should register nothing
    /// that only [`SocketApp::disconnect`] would undo: do that in
    /// [`SocketApp::connected`], which always gets its `disconnect`.
    fn connect(&self, request: ConnectRequest) -> AppFuture<Result<ConnState, ConnectRefusal>>;

    /// Runs right after the session has queued its CONNECT answer, so that
    /// anything emitted from here reaches the client after it.
    ///
    /// Every call is followed, exactly once, by [`SocketApp::disconnect`] for
    /// the same session and namespace.
    fn connected(&self, session: &SessionHandle, nsp: &str, state: &mut ConnState) {
        let _ = (session, nsp, state);
    }

    /// The client answered a heartbeat ping; called for each namespace it is
    /// connected to. A cheap place for periodic per-socket upkeep, with no
    /// timer or task of the application's own per socket.
    fn heartbeat(&self, session: &SessionHandle, nsp: &str, state: &mut ConnState) {
        let _ = (session, nsp, state);
    }

    /// An EVENT or BINARY_EVENT from a client connected to `event.nsp`.
    ///
    /// The returned future runs on the session's arbiter and is dropped if
    /// the socket goes away first. A session runs a bounded number of them
    /// at once; past that it stops reading the socket until one finishes.
    fn event(&self, session: &SessionHandle, state: &mut ConnState, event: Event) -> AppFuture<()>;

    /// The client left `nsp`, or the socket is gone. Called exactly once for
    /// every [`SocketApp::connected`], whatever ended the connection.
    fn disconnect(&self, session: &SessionHandle, nsp: &str, state: ConnState, reason: DisconnectReason);
}

/// A client's CONNECT to a namespace the application accepts.
#[derive(Debug)]
pub struct ConnectRequest {
    /// The socket asking.
    pub session: SessionHandle,
    /// The namespace asked for.
    pub nsp: String,
    /// The CONNECT payload (Socket.IO's `auth` option), if any.
    pub auth: Option<Value>,
}

/// Why a CONNECT is refused: sent to the client as CONNECT_ERROR
/// `{"message":…,"data":…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRefusal {
    /// Human-readable reason.
    pub message: String,
    /// Machine-readable details, e.g. `{"code":"unauthorized"}`.
    pub data: Option<Value>,
}

impl ConnectRefusal {
    /// A refusal with a message and optional details.
    pub fn new(message: impl Into<String>, data: Option<Value>) -> Self {
        Self {
            message: message.into(),
            data,
        }
    }
}

/// Whatever the application keeps for one namespace connection of one socket
/// (a user id, a rate limiter, …), owned by the session and lent back to the
/// application with each event.
#[derive(Default)]
pub struct ConnState(Option<Box<dyn Any>>);

impl ConnState {
    /// No state.
    pub fn empty() -> Self {
        Self(None)
    }

    /// State holding `value`.
    pub fn new<T: 'static>(value: T) -> Self {
        Self(Some(Box::new(value)))
    }

    /// The value, if it is a `T`.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_deref().and_then(|value| value.downcast_ref())
    }

    /// The value, mutably, if it is a `T`.
    pub fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut().and_then(|value| value.downcast_mut())
    }

    /// The value itself, if it is a `T`.
    pub fn into_inner<T: 'static>(self) -> Option<T> {
        self.0.and_then(|value| value.downcast().ok()).map(|value| *value)
    }
}

impl fmt::Debug for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ConnState(..)"
        } else {
            "ConnState(empty)"
        })
    }
}

/// An event received from a client.
#[derive(Debug)]
pub struct Event {
    /// Namespace the event was sent on.
    pub nsp: String,
    /// Event name, the first item of the packet's array.
    pub name: String,
    /// The arguments after the name. For a BINARY_EVENT they still hold the
    /// `{"_placeholder":true,"num":N}` markers that stand for `attachments[N]`.
    pub args: Vec<Value>,
    /// Binary attachments, empty for a plain EVENT.
    pub attachments: Vec<Vec<u8>>,
    /// Attachments the packet announced beyond `SocketConfig::max_attachments`:
    /// discarded as they arrive, never held, so an application that takes
    /// none (a limit of 0) refuses the event without it being assembled.
    pub refused_attachments: u64,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<AckReply>,
}

/// Why a namespace connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT for this namespace.
    ClientNamespaceDisconnect,
    /// The client closed the connection (Engine.IO CLOSE, WebSocket close, EOF).
    TransportClose,
    /// The connection failed (I/O error).
    TransportError,
    /// The client did not answer a ping within the ping timeout.
    PingTimeout,
    /// The client connected to no namespace within the connect timeout.
    ConnectTimeout,
    /// The client sent something the protocols do not allow.
    ProtocolError,
    /// The client sent a frame larger than the maximum payload.
    PayloadTooLarge,
    /// Frames for the client piled up past the outbound queue's bound.
    SlowConsumer,
    /// The application closed the session ([`SessionHandle::close`]).
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
    /// The server closed the transport so that the client connects again
    /// (its replay could not be served); no DISCONNECT, so clients do.
    Reconnect,
    /// The credentials the socket connected with expired
    /// ([`SessionHandle::expire_at`]).
    TokenExpired,
}

impl DisconnectReason {
    /// Stable snake_case name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientNamespaceDisconnect => "client_namespace_disconnect",
            Self::TransportClose => "transport_close",
            Self::TransportError => "transport_error",
            Self::PingTimeout => "ping_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::ProtocolError => "protocol_error",
            Self::PayloadTooLarge => "payload_too_large",
            Self::SlowConsumer => "slow_consumer",
            Self::ServerClose => "server_close",
            Self::ServerShutdown => "server_shutdown",
            Self::Reconnect => "reconnect",
            Self::TokenExpired => "token_expired",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Process-wide unique number of a session, for registries and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

impl SessionId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The number itself.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a packet could not be handed to a session.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The session's mailbox is full: it cannot keep up, and is being closed.
    #[error("session cannot keep up and is being closed")]
    Full,
    /// The session has ended.
    #[error("session is closed")]
    Closed,
    /// The packet could not be built (binary placeholders not matching the attachments).
    #[error("invalid packet: {0}")]
    Invalid(#[from] CodecError),
}

/// A packet encoded once, ready to be queued on any number of sockets:
/// cloning it copies reference counts, not bytes.
#[derive(Debug, Clone)]
pub struct EncodedPacket {
    pub(crate) text: Utf8Bytes,
    pub(crate) attachments: Vec<Bytes>,
    /// Where the packet stands in its user's message stream (the message
    /// id), for packets a replay may also send: see [`SessionHandle::begin_replay`].
    pub(crate) position: Option<i64>,
    /// An ack at `position`: the client waits for it, so it is never
    /// dropped, only held until a replay has sent every older position.
    pub(crate) answer: bool,
    /// Worth sending only if the socket keeps up (presence, typing): a
    /// session whose queues are filling drops it instead of closing.
    pub(crate) droppable: bool,
}

impl EncodedPacket {
    /// An EVENT named `name` with `args` on namespace `nsp`.
    pub fn event(nsp: &str, name: &str, args: Vec<Value>) -> Self {
        Self::from_packet(&SocketPacket::event(nsp, name, args, None))
    }

    /// An EVENT named `name` with the one argument `arg`, serialized from
    /// its type with no `Value` in between (the chat path's encoding).
    ///
    /// # Errors
    ///
    /// When `arg` fails to serialize.
    pub fn event_of<T: serde::Serialize + ?Sized>(
        nsp: &str,
        name: &str,
        arg: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::from_text(socket::encode_event_frame(nsp, name, arg)?))
    }

    /// An Engine.IO text frame encoded elsewhere (by another node, for
    /// one), queued as it is.
    pub fn from_frame(text: String) -> Self {
        Self::from_text(text)
    }

    fn from_text(text: String) -> Self {
        Self {
            text: text.into(),
            attachments: Vec::new(),
            position: None,
            answer: false,
            droppable: false,
        }
    }

    /// Any plain (non-binary) packet.
    pub fn from_packet(packet: &SocketPacket) -> Self {
        Self::from_text(socket::encode_frame(packet))
    }

    /// A binary packet and its attachments, which move without a copy.
    pub fn from_binary(packet: BinaryPacket) -> Self {
        let text = packet.encode_frame().into();
        let (_, attachments) = packet.into_parts();
        Self {
            text,
            attachments: attachments.into_iter().map(Bytes::from).collect(),
            position: None,
            answer: false,
            droppable: false,
        }
    }

    /// The packet as the one at `position` (a message id) of its user's
    /// stream: a session that is replaying holds such live packets back,
    /// and one that has replayed up to `position` drops it as a duplicate.
    #[must_use]
    pub fn at_position(mut self, position: i64) -> Self {
        self.position = Some(position);
        self
    }

    /// The packet as one the client can do without when it falls behind
    /// (see [`SessionHandle::offer`]).
    #[must_use]
    pub fn droppable(mut self) -> Self {
        self.droppable = true;
        self
    }

    /// Whether it is one the client can do without.
    pub fn is_droppable(&self) -> bool {
        self.droppable
    }

    /// The stream position, if the packet has one.
    pub fn position(&self) -> Option<i64> {
        self.position
    }

    /// The text frame, an Engine.IO MESSAGE holding the Socket.IO packet.
    pub fn text(&self) -> &str {
        self.text.as_str()
    }

    /// Number of binary frames that follow the text frame.
    pub fn attachment_count(&self) -> usize {
        self.attachments.len()
    }
}

/// A cheap, clonable handle on one socket's session.
///
/// Every send is bounded: when the session's mailbox is full, the send fails
/// with [`SendError::Full`] and the session is closed as a slow consumer,
/// rather than buffering without end.
#[derive(Clone)]
pub struct SessionHandle {
    id: SessionId,
    addr: Addr<Session>,
    close: Arc<CloseRequest>,
}

/// A close asked for when the session's mailbox had no room for the
/// request: the session reads it before the next message it handles (a
/// full mailbox means there is one), so the request is bounded and never lost.
#[derive(Debug, Default)]
pub(crate) struct CloseRequest(AtomicU8);

impl CloseRequest {
    fn ask(&self, reason: DisconnectReason) {
        let code = match reason {
            DisconnectReason::SlowConsumer => 1,
            DisconnectReason::Reconnect => 2,
            _ => 3,
        };
        // The first request wins, as the first `close` does in the session.
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The reason asked for, if any.
    pub(crate) fn asked(&self) -> Option<DisconnectReason> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            1 => Some(DisconnectReason::SlowConsumer),
            2 => Some(DisconnectReason::Reconnect),
            _ => Some(DisconnectReason::ServerClose),
        }
    }
}

/// Asks `addr` to close for `reason`: through its mailbox when there is
/// room, else through `close`, which it reads before its next message.
fn request_close(addr: &Addr<Session>, close: &CloseRequest, reason: DisconnectReason) {
    use actix::prelude::SendError as MailboxError;
    match addr.try_send(super::Close(reason)) {
        Ok(()) | Err(MailboxError::Closed(_)) => {}
        Err(MailboxError::Full(_)) => close.ask(reason),
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle").field("id", &self.id).finish()
    }
}

impl SessionHandle {
    pub(crate) fn new(id: SessionId, addr: Addr<Session>, close: Arc<CloseRequest>) -> Self {
        Self { id, addr, close }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Whether the session is still running.
    pub fn is_connected(&self) -> bool {
        self.addr.connected()
    }

    /// Sends event `name` with `args` to the client on namespace `nsp`.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] or [`SendError::Closed`], see [`SessionHandle`].
    pub fn emit(&self, nsp: &str, name: &str, args: Vec<Value>) -> Result<(), SendError> {
        self.send(EncodedPacket::event(nsp, name, args))
    }

    /// Sends event `name` whose `args` hold `{"_placeholder":true,"num":N}`
    /// markers (see [`crate::codec::binary::placeholder`]) standing for
    /// `attachments[N]`; without attachments, a plain EVENT.
    ///
    /// # Errors
    ///
    /// [`SendError::Invalid`] unless the markers number the attachments from
    /// 0, each once; otherwise as [`SessionHandle::emit`].
    pub fn emit_binary(
        &self,
        nsp: &str,
        name: &str,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
    ) -> Result<(), SendError> {
        if attachments.is_empty() {
            return self.emit(nsp, name, args);
        }
        let packet = BinaryPacket::new(SocketPacket::event(nsp, name, args, None), attachments)?;
        self.send(EncodedPacket::from_binary(packet))
    }

    /// Sends an already encoded packet (the cheap way to send one event to
    /// many sockets).
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit`].
    pub fn send(&self, packet: EncodedPacket) -> Result<(), SendError> {
        deliver(&self.addr, &self.close, packet)
    }

    /// Sends `packet` if the session has room for it now; `Ok(false)` when
    /// its mailbox is full, which, unlike [`SessionHandle::send`], does not
    /// close it: for packets the client can do without.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the session is gone.
    pub fn offer(&self, packet: EncodedPacket) -> Result<bool, SendError> {
        use actix::prelude::SendError as MailboxError;
        match self.addr.try_send(super::Deliver(packet)) {
            Ok(()) => Ok(true),
            Err(MailboxError::Full(_)) => Ok(false),
            Err(MailboxError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Disconnects the client from every namespace and closes the socket.
    pub fn close(&self) {
        request_close(&self.addr, &self.close, DisconnectReason::ServerClose);
    }

    /// Closes the transport without a DISCONNECT, so that the client
    /// connects again by itself (and replays from its own `since`).
    pub fn reconnect(&self) {
        request_close(&self.addr, &self.close, DisconnectReason::Reconnect);
    }

    /// Closes the transport as a node that is going away does (WebSocket
    /// close 1001, no DISCONNECT): the client reconnects by itself, to
    /// another node, and replays from its own `since`.
    pub fn shut_down(&self) {
        request_close(&self.addr, &self.close, DisconnectReason::ServerShutdown);
    }

    // ---- replay: a backlog streamed at the pace the client reads it ----

    /// Starts a replay: from now until [`SessionHandle::finish_replay`],
    /// live packets with a position are not sent but remembered (the
    /// replay reads them from the database, where they are committed before
    /// anyone delivers them), so the client gets the backlog and the live
    /// traffic as one stream in position order, each position once.
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit`]; the session is then closing.
    pub fn begin_replay(&self) -> Result<(), SendError> {
        use actix::prelude::SendError as MailboxError;
        self.addr
            .try_send(super::BeginReplay)
            .map_err(|error| match error {
                MailboxError::Full(_) => {
                    request_close(&self.addr, &self.close, DisconnectReason::SlowConsumer);
                    SendError::Full
                }
                MailboxError::Closed(_) => SendError::Closed,
            })
    }

    /// Queues a page of replayed packets (none, to ask how much fits), then
    /// waits until the client has read enough of what it was sent: the
    /// answer is how many packets the next page may hold. A page must be no
    /// larger than the last answer. Waiting here, not in the mailbox, is the
    /// backpressure: the socket's own write completions free the room.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the session is gone.
    pub async fn replay_page(&self, packets: Vec<EncodedPacket>) -> Result<usize, SendError> {
        self.ask(|reply| super::ReplayPage { packets, reply }).await
    }

    /// Starts a replay from where the client stands: the session holds
    /// live positioned packets back from now on (as after
    /// [`SessionHandle::begin_replay`]) and answers the largest position it
    /// had queued when [`SessionHandle::mark_catch_up`] was called (or now,
    /// without a mark), from which the caller replays; `None` also when the
    /// socket has no position at all. `None` when a replay is
    /// already under way (it reads on until it has passed every held
    /// packet). For when deliveries may have been lost, e.g. while the bus
    /// between nodes was down.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the session is gone.
    pub async fn begin_catch_up(&self) -> Result<Option<i64>, SendError> {
        self.ask(|reply| super::BeginCatchUp { reply }).await
    }

    /// Notes that deliveries may be lost from now on (the bus between nodes
    /// went down): the next [`SessionHandle::begin_catch_up`] starts from
    /// the newest position sent before this, not from what was sent since.
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit`].
    pub fn mark_catch_up(&self) -> Result<(), SendError> {
        send_bounded(&self.addr, &self.close, super::MarkCatchUp)
    }

    /// Ends a replay that has sent every position up to `last`: `true` when
    /// the session is live again (it drops live packets at or below `last`
    /// from now on), `false` when a newer live packet was held back
    /// meanwhile, so the replay must read on from `last`.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the session is gone.
    pub async fn finish_replay(&self, last: i64) -> Result<bool, SendError> {
        self.ask(|reply| super::FinishReplay { last, reply }).await
    }

    /// Sends the message `make` builds around a reply channel, waiting for
    /// room in the mailbox (a replay can wait), then for the answer, which
    /// the session may give later (when the client has read enough).
    async fn ask<M, T>(&self, make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> M) -> Result<T, SendError>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        Session: actix::Handler<M>,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.addr.send(make(reply)).await.map_err(|_| SendError::Closed)?;
        answer.await.map_err(|_| SendError::Closed)
    }

    /// At `deadline`, sends `farewell` and closes the transport
    /// ([`DisconnectReason::TokenExpired`]) without a Socket.IO DISCONNECT,
    /// so that the client reconnects, with fresh credentials.
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit`]: on [`SendError::Full`] the session is
    /// closed now, so it never outlives its deadline.
    ///
    /// `farewell` is shared: every socket of a node holds one until its
    /// deadline, and most sockets say the same thing.
    pub fn expire_at(&self, deadline: Instant, farewell: Arc<EncodedPacket>) -> Result<(), SendError> {
        send_bounded(&self.addr, &self.close, super::ExpireAt { deadline, farewell })
    }
}

fn deliver(addr: &Addr<Session>, close: &CloseRequest, packet: EncodedPacket) -> Result<(), SendError> {
    send_bounded(addr, close, super::Deliver(packet))
}

fn send_bounded<M>(addr: &Addr<Session>, close: &CloseRequest, message: M) -> Result<(), SendError>
where
    M: actix::Message<Result = ()> + Send + 'static,
    Session: actix::Handler<M>,
{
    use actix::prelude::SendError as MailboxError;
    match addr.try_send(message) {
        Ok(()) => Ok(()),
        Err(MailboxError::Full(_)) => {
            close.ask(DisconnectReason::SlowConsumer);
            Err(SendError::Full)
        }
        Err(MailboxError::Closed(_)) => Err(SendError::Closed),
    }
}

/// An ack answer already encoded (see [`AckReply::prepare_at_position`]).
#[derive(Debug)]
pub struct PreparedAck {
    reply: AckReply,
    packet: EncodedPacket,
}

impl PreparedAck {
    /// Sends it.
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit`].
    pub fn send(self) -> Result<(), SendError> {
        deliver(&self.reply.addr, &self.reply.close, self.packet)
    }
}

/// The acknowledgement a client asked for with its event.
///
/// Consumed by sending, so a client gets at most one ACK per ack id.
pub struct AckReply {
    nsp: String,
    id: u64,
    addr: Addr<Session>,
    close: Arc<CloseRequest>,
}

impl fmt::Debug for AckReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckReply")
            .field("nsp", &self.nsp)
            .field("id", &self.id)
            .finish()
    }
}

impl AckReply {
    pub(crate) fn new(nsp: String, id: u64, addr: Addr<Session>, close: Arc<CloseRequest>) -> Self {
        Self { nsp, id, addr, close }
    }

    /// The ack id the client chose.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The answer `[arg]`, serialized from its type now, to be sent later
    /// (possibly from another thread), naming the message at `position`
    /// of the client's stream (its own message's id): during a replay it
    /// waits until every older position has been sent, so the client never
    /// holds an id before the older ones it is owed.
    ///
    /// # Errors
    ///
    /// When `arg` fails to serialize: the reply comes back unspent, so the
    /// client can still be told.
    pub fn prepare_at_position<T: serde::Serialize + ?Sized>(
        self,
        arg: &T,
        position: i64,
    ) -> Result<PreparedAck, (Self, serde_json::Error)> {
        match socket::encode_ack_frame(&self.nsp, self.id, arg) {
            Ok(text) => {
                let mut packet = EncodedPacket::from_text(text).at_position(position);
                packet.answer = true;
                Ok(PreparedAck { reply: self, packet })
            }
            Err(error) => Err((self, error)),
        }
    }

    /// Answers with `args`.
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit`].
    pub fn send(self, args: Vec<Value>) -> Result<(), SendError> {
        let packet = SocketPacket::ack(self.nsp, self.id, args);
        deliver(&self.addr, &self.close, EncodedPacket::from_packet(&packet))
    }

    /// Answers with `args` holding placeholders for `attachments`, as a BINARY_ACK.
    ///
    /// # Errors
    ///
    /// As [`SessionHandle::emit_binary`].
    pub fn send_binary(self, args: Vec<Value>, attachments: Vec<Vec<u8>>) -> Result<(), SendError> {
        if attachments.is_empty() {
            return self.send(args);
        }
        let packet = BinaryPacket::new(SocketPacket::ack(self.nsp, self.id, args), attachments)?;
        deliver(&self.addr, &self.close, EncodedPacket::from_binary(packet))
    }
}
