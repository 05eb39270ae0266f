//! The `Session` actor: one per socket, on the arbiter that polls its I/O.
//!
//! It owns everything protocol-shaped about a connection: the Engine.IO
//! handshake and heartbeat, Socket.IO namespaces, events and acks, binary
//! reassembly, and a bounded outbound queue. The application behind it sees
//! only the [`SocketApp`] seam.
//!
//! Every way out (client close, ping timeout, protocol error, oversize frame,
//! slow consumer, server close or shutdown) goes through [`Session::close`]
//! and ends in `Actor::stopped`, the one place that tells the application,
//! once per connected namespace.

mod app;
mod config;
mod polling;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use self::app::CloseRequest;
pub use self::app::{
    AckReply, AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, EncodedPacket, Event,
    PreparedAck, SendError, SessionHandle, SessionId, SocketApp,
};
pub use self::config::SocketConfig;
use self::polling::Polling;
pub(crate) use self::polling::{Attach, Poll, PollAbandoned, Push};
use crate::codec::engine::{self, EnginePacket, Frame, OpenPayload};
use crate::codec::socket::{self, PacketKind, SocketPacket};
use crate::codec::{Assembly, BinaryAssembler};
use crate::limits::{Admitted, HeldSlot};
use crate::live::LiveGuard;
use crate::sids::PollingSessions;
use crate::ws::{Incoming, ReadError, WsReader, WsWriter};

/// How long a closing session may spend flushing its last frames to a
/// client that does not read them.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An Engine.IO PING, the one frame every idle socket sends.
const PING_FRAME: &str = "2";

/// Queues an encoded packet for the client (sent by [`SessionHandle`] and [`AckReply`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver(pub(crate) EncodedPacket);

/// Closes the session for the given reason.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close(pub(crate) DisconnectReason);

/// See [`SessionHandle::begin_replay`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct BeginReplay;

/// See [`SessionHandle::begin_catch_up`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct BeginCatchUp {
    pub(crate) reply: oneshot::Sender<Option<i64>>,
}

/// See [`SessionHandle::mark_catch_up`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct MarkCatchUp;

/// See [`SessionHandle::replay_page`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReplayPage {
    pub(crate) packets: Vec<EncodedPacket>,
    pub(crate) reply: oneshot::Sender<usize>,
}

/// See [`SessionHandle::finish_replay`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FinishReplay {
    pub(crate) last: i64,
    pub(crate) reply: oneshot::Sender<bool>,
}

/// Where the client stands in its message stream: what becomes of live
/// packets that carry a position.
enum Stream {
    /// Sent, unless at or below `floor` (a replay already sent it).
    Live { floor: i64 },
    /// A replay is under way. Boxed: few sockets replay at any time, and
    /// every idle socket would otherwise carry its fields.
    Replaying(Box<Replay>),
}

/// A replay's state in its session.
#[derive(Default)]
struct Replay {
    /// The newest live packet held back (the replay reads it from the
    /// database), so the replay knows how far to read.
    newest_held: i64,
    /// The replay, waiting for room in the outbound queue.
    room_waiter: Option<oneshot::Sender<usize>>,
    /// Acks held back until the replay is through (see `Stream`).
    held_answers: Vec<EncodedPacket>,
}

/// Closes the session at `deadline`, after queuing `farewell` (sent by
/// [`SessionHandle::expire_at`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ExpireAt {
    pub(crate) deadline: std::time::Instant,
    pub(crate) farewell: Arc<EncodedPacket>,
}

enum NamespaceState {
    /// The application is deciding the CONNECT.
    Connecting,
    Connected(ConnState),
}

struct Namespace {
    name: String,
    /// Tells a late connect answer from the answer to a newer CONNECT to the
    /// same namespace, after the client gave up on the first.
    attempt: u32,
    state: NamespaceState,
}

/// One socket's actor. Started by the listener; reached through [`SessionHandle`].
pub(crate) struct Session {
    id: SessionId,
    config: Arc<SocketConfig>,
    app: Arc<dyn SocketApp>,
    /// `None` while a write is in flight (the write owns it) and after a
    /// failed write, and on long-polling until the upgrade.
    sink: Option<WsWriter>,
    /// Long-polling's state, for a session started on it (see `polling`).
    polling: Option<Box<Polling>>,
    /// Frames not yet handed to the socket. Empty, and so unallocated, while idle.
    queue: VecDeque<Message>,
    /// Frames the write in flight still holds.
    in_flight: usize,
    namespaces: Vec<Namespace>,
    connect_attempts: u32,
    /// A BINARY_EVENT / BINARY_ACK waiting for its attachments.
    assembling: Option<BinaryAssembler>,
    /// Binary frames still to come for a packet whose attachments were
    /// refused (over `max_attachments`): each is dropped unread.
    discarding: u64,
    pong_deadline: Option<SpawnHandle>,
    pending_events: usize,
    stream: Stream,
    /// The largest stream position queued for the client: where a catch-up
    /// starts (see [`SessionHandle::begin_catch_up`]).
    newest_sent: i64,
    /// Where a coming catch-up starts, if something may have been lost
    /// since (see [`SessionHandle::mark_catch_up`]); 0 for none.
    catch_up_from: i64,
    /// When the socket's credentials expire, and what it is then told
    /// (see `arm_expiry`).
    expiry: Option<(std::time::Instant, Arc<EncodedPacket>)>,
    /// Closes asked for while the mailbox was full.
    close_request: Arc<CloseRequest>,
    /// Set once, by [`Session::close`]: the session is on its way out.
    exit: Option<DisconnectReason>,
    shutdown: Option<watch::Receiver<bool>>,
    _live: LiveGuard,
    /// The client address's slot, for the session's life.
    _slot: Option<HeldSlot>,
    /// Room among the handshakes in flight, given back once the first
    /// CONNECT is decided (or `handshake_timeout` after the session began).
    handshake: Option<OwnedSemaphorePermit>,
}

impl Session {
    /// Starts the actor for an upgraded socket, on the current arbiter.
    pub(crate) fn launch(
        reader: WsReader,
        writer: WsWriter,
        config: Arc<SocketConfig>,
        app: Arc<dyn SocketApp>,
        shutdown: watch::Receiver<bool>,
        live: LiveGuard,
        admitted: Admitted,
    ) -> SessionId {
        let id = SessionId::next();
        Session::create(move |ctx| {
            ctx.set_mailbox_capacity(config.mailbox_capacity);
            ctx.add_stream(reader.into_stream());
            Session::new(id, config, app, Some(writer), None, shutdown, live, admitted)
        });
        id
    }

    /// Starts the actor for a long-polling handshake, on the current
    /// arbiter, listed in `sessions` under a new sid until it ends. `first`
    /// is the handshake GET, answered with the OPEN packet.
    pub(crate) fn launch_polling(
        first: oneshot::Sender<String>,
        sessions: &Arc<PollingSessions>,
        config: Arc<SocketConfig>,
        app: Arc<dyn SocketApp>,
        shutdown: watch::Receiver<bool>,
        live: LiveGuard,
        admitted: Admitted,
    ) -> SessionId {
        let id = SessionId::next();
        Session::create(move |ctx| {
            ctx.set_mailbox_capacity(config.mailbox_capacity);
            let registration = sessions.register(random_sid(), ctx.address());
            let polling = Box::new(Polling::new(registration, first));
            Session::new(id, config, app, None, Some(polling), shutdown, live, admitted)
        });
        id
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the two launchers' common part; each argument is one piece of the session"
    )]
    fn new(
        id: SessionId,
        config: Arc<SocketConfig>,
        app: Arc<dyn SocketApp>,
        sink: Option<WsWriter>,
        polling: Option<Box<Polling>>,
        shutdown: watch::Receiver<bool>,
        live: LiveGuard,
        admitted: Admitted,
    ) -> Self {
        Session {
            id,
            config,
            app,
            sink,
            polling,
            queue: VecDeque::new(),
            in_flight: 0,
            namespaces: Vec::new(),
            connect_attempts: 0,
            assembling: None,
            discarding: 0,
            pong_deadline: None,
            pending_events: 0,
            stream: Stream::Live { floor: 0 },
            newest_sent: 0,
            catch_up_from: 0,
            expiry: None,
            close_request: Arc::default(),
            exit: None,
            shutdown: Some(shutdown),
            _live: live,
            _slot: admitted.slot,
            handshake: admitted.handshake,
        }
    }

    fn session_handle(&self, ctx: &Context<Self>) -> SessionHandle {
        SessionHandle::new(self.id, ctx.address(), Arc::clone(&self.close_request))
    }

    /// Acts on a close that was asked for while the mailbox was full;
    /// `true` when the session is closing.
    fn closing(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.exit.is_none()
            && let Some(reason) = self.close_request.asked()
        {
            if reason == DisconnectReason::SlowConsumer {
                tracing::warn!(session = %self.id, "closing socket: mailbox full");
            }
            self.close(reason, ctx);
        }
        self.exit.is_some()
    }

    // ---- the one way out ----

    /// Starts closing the session: says goodbye where the client can still
    /// hear it, then stops the actor, whose `stopped` tells the application.
    fn close(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.close_with(reason, None, ctx);
    }

    /// As `close`, with `reply` as the last frame instead of the one the
    /// reason implies (a client's close frame is answered with its own).
    fn close_with(&mut self, reason: DisconnectReason, reply: Option<Message>, ctx: &mut Context<Self>) {
        if self.exit.is_some() {
            return;
        }
        self.exit = Some(reason);
        self.assembling = None;
        tracing::debug!(session = %self.id, %reason, "closing session");
        let farewell = reply.or_else(|| self.farewell(reason));
        let Some(farewell) = farewell else {
            ctx.stop();
            return;
        };
        // Past the queue bound on purpose: these are the last frames.
        self.queue.push_back(farewell);
        if self.polls() {
            if self.poll_waiting() {
                // Answered now; the session stops once it is.
                self.flush(ctx);
            } else if reason == DisconnectReason::PingTimeout {
                // A client that misses its pong is not polling either.
                ctx.stop();
            } else {
                // For the client's next poll, if it comes in time.
                ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
            }
            return;
        }
        if self.sink.is_none() && self.in_flight == 0 {
            // A write failed earlier; nobody will flush.
            ctx.stop();
            return;
        }
        self.flush(ctx);
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    /// What the client is told on its way out (queued DISCONNECTs included).
    fn farewell(&mut self, reason: DisconnectReason) -> Option<Message> {
        let close_frame = |code: CloseCode, reason: &'static str| {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        };
        match reason {
            // The client is gone, or does not read what it is sent: nothing to say.
            DisconnectReason::TransportClose
            | DisconnectReason::TransportError
            | DisconnectReason::SlowConsumer
            | DisconnectReason::ClientNamespaceDisconnect => None,
            DisconnectReason::ServerClose => {
                // DISCONNECT tells socket.io-client not to reconnect on its own.
                let names: Vec<String> = self
                    .namespaces
                    .iter()
                    .filter(|ns| matches!(ns.state, NamespaceState::Connected(_)))
                    .map(|ns| ns.name.clone())
                    .collect();
                for name in names {
                    self.queue
                        .push_back(text_message(socket::encode_frame(&SocketPacket::disconnect(
                            name,
                        ))));
                }
                Some(close_frame(CloseCode::Normal, "closed by server"))
            }
            // No DISCONNECT here: clients should reconnect, to another node.
            DisconnectReason::ServerShutdown => Some(close_frame(CloseCode::Away, "server shutting down")),
            DisconnectReason::Reconnect => Some(close_frame(CloseCode::Again, "connect again")),
            DisconnectReason::PingTimeout => Some(close_frame(CloseCode::Normal, "ping timeout")),
            DisconnectReason::ConnectTimeout => Some(close_frame(CloseCode::Normal, "connect timeout")),
            DisconnectReason::ProtocolError => Some(close_frame(CloseCode::Protocol, "protocol error")),
            DisconnectReason::PayloadTooLarge => Some(close_frame(CloseCode::Size, "payload too large")),
            // No DISCONNECT either: the client is to reconnect with a fresh token.
            DisconnectReason::TokenExpired => Some(close_frame(CloseCode::Policy, "token expired")),
        }
    }

    fn violation(&mut self, what: impl Display, ctx: &mut Context<Self>) {
        tracing::warn!(session = %self.id, reason = %what, "closing socket: protocol violation");
        self.close(DisconnectReason::ProtocolError, ctx);
    }

    // ---- outbound ----

    /// Queues frames for the client, or closes the session if they would
    /// take its queue past the bound.
    fn queue_frames(&mut self, frames: impl ExactSizeIterator<Item = Message>, ctx: &mut Context<Self>) {
        if self.exit.is_some() {
            return;
        }
        if self.queue.len() + self.in_flight + frames.len() > self.config.outbound_queue {
            tracing::warn!(session = %self.id, "closing socket: outbound queue full");
            self.close(DisconnectReason::SlowConsumer, ctx);
            return;
        }
        self.queue.extend(frames);
        self.flush(ctx);
    }

    fn queue_packet(&mut self, packet: &SocketPacket, ctx: &mut Context<Self>) {
        self.queue_frames(std::iter::once(text_message(socket::encode_frame(packet))), ctx);
    }

    fn queue_encoded(&mut self, packet: EncodedPacket, ctx: &mut Context<Self>) {
        self.queue_all(std::iter::once(packet), ctx);
    }

    /// Queues `packets` as one lot: all of their frames fit, or the session
    /// closes as a slow consumer.
    fn queue_all(&mut self, packets: impl IntoIterator<Item = EncodedPacket>, ctx: &mut Context<Self>) {
        // `FlatMap` is not `ExactSizeIterator`; collect the frames.
        let newest_sent = &mut self.newest_sent;
        let frames: Vec<Message> = packets
            .into_iter()
            .inspect(|packet| {
                if let Some(position) = packet.position {
                    *newest_sent = (*newest_sent).max(position);
                }
            })
            .flat_map(
                |EncodedPacket {
                     text, attachments, ..
                 }| {
                    std::iter::once(Message::Text(text)).chain(attachments.into_iter().map(Message::Binary))
                },
            )
            .collect();
        if !frames.is_empty() {
            self.queue_frames(frames.into_iter(), ctx);
        }
    }

    /// Hands the queued frames to the socket, unless a write is in flight
    /// (its completion calls this again).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() {
            return;
        }
        if self.polls() {
            return self.flush_poll(ctx);
        }
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        // The batch moves into the write, so the queue's buffer goes with it
        // and an idle session holds none.
        let batch = std::mem::take(&mut self.queue);
        self.in_flight = batch.len();
        let write = async move {
            sink.send(batch).await?;
            Ok::<_, std::io::Error>(sink)
        };
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            act.in_flight = 0;
            match written {
                Ok(sink) => {
                    act.sink = Some(sink);
                    act.grant_room();
                    if !act.queue.is_empty() {
                        act.flush(ctx);
                    } else if act.exit.is_some() {
                        ctx.stop();
                    }
                }
                Err(error) => {
                    tracing::debug!(session = %act.id, %error, "socket write failed");
                    act.close(DisconnectReason::TransportError, ctx);
                    ctx.stop();
                }
            }
        }));
    }

    /// Frames the outbound queue can still take.
    fn room(&self) -> usize {
        self.config
            .outbound_queue
            .saturating_sub(self.queue.len() + self.in_flight)
    }

    /// Answers a waiting replay once the client has read enough: a page
    /// may take the room there is but a quarter of the queue, which stays
    /// free for acks, pings and the client's other traffic.
    fn grant_room(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let reserve = (self.config.outbound_queue / 4).max(1);
        let grant = self.room().saturating_sub(reserve);
        if grant >= reserve
            && let Stream::Replaying(replay) = &mut self.stream
            && let Some(waiter) = replay.room_waiter.take()
        {
            // A replay that stopped waiting has nothing to be told.
            let _ = waiter.send(grant);
        }
    }

    // ---- handshake deadlines ----

    /// The two deadlines of a session's start, on one timer at a time: the
    /// handshake's room in flight is given back after `handshake_timeout`
    /// (a client that never sends CONNECT does not keep it), and a session
    /// with no namespace joined after `connect_timeout` is closed. Each
    /// item an actor's context holds at once widens its item list for the
    /// actor's life (it never shrinks), so a second timer alongside would
    /// cost every idle socket its room.
    fn arm_handshake_deadlines(&mut self, ctx: &mut Context<Self>) {
        let connect = self.config.connect_timeout;
        let handshake = self.config.handshake_timeout;
        if self.handshake.is_none() || handshake >= connect {
            ctx.run_later(connect, |act, ctx| {
                act.handshake = None;
                act.check_connected(ctx);
            });
            return;
        }
        ctx.run_later(handshake, move |act, ctx| {
            act.handshake = None;
            ctx.run_later(connect - handshake, |act, ctx| act.check_connected(ctx));
        });
    }

    fn check_connected(&mut self, ctx: &mut Context<Self>) {
        let connected = self
            .namespaces
            .iter()
            .any(|ns| matches!(ns.state, NamespaceState::Connected(_)));
        if !connected {
            tracing::debug!(session = %self.id, "no namespace joined within the connect timeout");
            self.close(DisconnectReason::ConnectTimeout, ctx);
        }
    }

    // ---- heartbeat ----

    fn schedule_ping(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.config.ping_interval, |act, ctx| act.ping(ctx));
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        if self.exit.is_some() {
            return;
        }
        self.arm_expiry(ctx);
        self.queue_frames(
            std::iter::once(Message::Text(Utf8Bytes::from_static(PING_FRAME))),
            ctx,
        );
        let deadline = ctx.run_later(self.config.ping_timeout, |act, ctx| {
            tracing::debug!(session = %act.id, "no pong within the ping timeout");
            act.close(DisconnectReason::PingTimeout, ctx);
        });
        self.pong_deadline = Some(deadline);
    }

    fn on_pong(&mut self, ctx: &mut Context<Self>) {
        // A pong nobody asked for changes nothing.
        if let Some(deadline) = self.pong_deadline.take() {
            ctx.cancel_future(deadline);
            self.schedule_ping(ctx);
            let handle = self.session_handle(ctx);
            for ns in &mut self.namespaces {
                if let NamespaceState::Connected(state) = &mut ns.state {
                    self.app.heartbeat(&handle, &ns.name, state);
                }
            }
        }
    }

    // ---- inbound ----

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if self.assembling.is_some() || self.discarding > 0 {
            return self.violation("text frame while binary attachments were expected", ctx);
        }
        match engine::decode_text(text) {
            Err(error) => self.violation(error, ctx),
            Ok(EnginePacket::Message(packet)) => self.on_socket_text(packet, ctx),
            Ok(EnginePacket::Pong(_)) => self.on_pong(ctx),
            // v4 clients ping only to probe a transport; answer as the reference server does.
            Ok(EnginePacket::Ping(data)) => {
                let pong = frame_message(engine::encode(&EnginePacket::Pong(data)));
                self.queue_frames(std::iter::once(pong), ctx);
            }
            Ok(EnginePacket::Close) => self.close(DisconnectReason::TransportClose, ctx),
            Ok(EnginePacket::Noop | EnginePacket::Upgrade) => {}
            Ok(EnginePacket::Open(_) | EnginePacket::BinaryMessage(_)) => {
                self.violation("OPEN sent by the client", ctx);
            }
        }
    }

    fn on_socket_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let text = terminate_namespace(text);
        let packet = match socket::decode(&text) {
            Ok(packet) => packet,
            Err(error) => return self.violation(error, ctx),
        };
        if !packet.kind.is_binary() {
            return self.on_packet(packet, Vec::new(), ctx);
        }
        if packet.kind == PacketKind::BinaryEvent && packet.attachments > self.config.max_attachments {
            // Refused before any of it is read: the event goes to the
            // application without them (it answers with its own error),
            // and the frames that follow are counted off and dropped.
            self.discarding = packet.attachments as u64;
            let mut packet = packet;
            packet.kind = PacketKind::Event;
            packet.attachments = 0;
            return self.on_packet(packet, Vec::new(), ctx);
        }
        match BinaryAssembler::start(packet, self.config.max_attachments) {
            Ok(Assembly::Pending(assembler)) => self.assembling = Some(assembler),
            Ok(Assembly::Complete(packet)) => {
                let (packet, attachments) = packet.into_parts();
                self.on_packet(packet, attachments, ctx);
            }
            Err(error) => self.violation(error, ctx),
        }
    }

    fn on_binary(&mut self, bytes: Vec<u8>, ctx: &mut Context<Self>) {
        if self.discarding > 0 {
            self.discarding -= 1;
            return;
        }
        let Some(assembler) = self.assembling.take() else {
            return self.violation("binary frame without a binary packet before it", ctx);
        };
        match assembler.push(bytes) {
            Assembly::Pending(assembler) => self.assembling = Some(assembler),
            Assembly::Complete(packet) => {
                let (packet, attachments) = packet.into_parts();
                self.on_packet(packet, attachments, ctx);
            }
        }
    }

    fn on_packet(&mut self, packet: SocketPacket, attachments: Vec<Vec<u8>>, ctx: &mut Context<Self>) {
        let index = self.namespaces.iter().position(|ns| ns.name == packet.nsp);
        let connected = index.filter(|&index| {
            matches!(
                self.namespaces.get(index).map(|ns| &ns.state),
                Some(NamespaceState::Connected(_))
            )
        });
        // As the reference server: a packet that does not fit the namespace's
        // state (an event before CONNECT, a second CONNECT, …) ends the socket.
        match (packet.kind, index, connected) {
            (PacketKind::Connect, None, _) => self.on_connect(packet, ctx),
            (PacketKind::Disconnect, Some(index), _) => {
                let ns = self.namespaces.swap_remove(index);
                if let NamespaceState::Connected(state) = ns.state {
                    let handle = self.session_handle(ctx);
                    self.app.disconnect(
                        &handle,
                        &ns.name,
                        state,
                        DisconnectReason::ClientNamespaceDisconnect,
                    );
                }
            }
            (PacketKind::Event | PacketKind::BinaryEvent, _, Some(index)) => {
                self.on_event(index, packet, attachments, ctx);
            }
            (PacketKind::Ack | PacketKind::BinaryAck, _, Some(_)) => {
                // The server sends no events that ask for an ack (yet).
                tracing::debug!(session = %self.id, id = ?packet.id, "ignoring unexpected ACK");
            }
            (kind, _, _) => {
                let nsp = packet.nsp;
                self.violation(
                    format_args!("{kind} for namespace {nsp:?} in the wrong state"),
                    ctx,
                );
            }
        }
    }

    fn on_connect(&mut self, packet: SocketPacket, ctx: &mut Context<Self>) {
        let SocketPacket { nsp, data: auth, .. } = packet;
        if !self.app.accepts_namespace(&nsp) {
            return self.queue_packet(&SocketPacket::connect_error(nsp, "Invalid namespace", None), ctx);
        }
        self.connect_attempts = self.connect_attempts.wrapping_add(1);
        let attempt = self.connect_attempts;
        self.namespaces.push(Namespace {
            name: nsp.clone(),
            attempt,
            state: NamespaceState::Connecting,
        });
        let request = ConnectRequest {
            session: self.session_handle(ctx),
            nsp,
            auth,
        };
        let decision = tokio::time::timeout(self.config.connect_timeout, self.app.connect(request));
        ctx.spawn(
            decision
                .into_actor(self)
                .map(move |decision, act, ctx| act.on_connect_decision(attempt, decision, ctx)),
        );
    }

    fn on_connect_decision(
        &mut self,
        attempt: u32,
        decision: Result<Result<ConnState, ConnectRefusal>, tokio::time::error::Elapsed>,
        ctx: &mut Context<Self>,
    ) {
        // The handshake is over, whatever was decided.
        self.handshake = None;
        if self.exit.is_some() {
            return;
        }
        // Gone if the client sent DISCONNECT meanwhile: the state is dropped
        // unseen, and `connected` (so `disconnect`) never runs for it.
        let Some(index) = self.namespaces.iter().position(|ns| ns.attempt == attempt) else {
            return;
        };
        match decision {
            Ok(Ok(mut state)) => {
                let name = self
                    .namespaces
                    .get(index)
                    .map(|ns| ns.name.clone())
                    .unwrap_or_default();
                self.queue_packet(&SocketPacket::connect_ok(name.as_str(), random_sid()), ctx);
                if self.exit.is_some() {
                    return;
                }
                let handle = self.session_handle(ctx);
                self.app.connected(&handle, &name, &mut state);
                if let Some(ns) = self.namespaces.get_mut(index) {
                    ns.state = NamespaceState::Connected(state);
                }
            }
            Ok(Err(refusal)) => {
                let ns = self.namespaces.swap_remove(index);
                let packet = SocketPacket::connect_error(ns.name, refusal.message, refusal.data);
                self.queue_packet(&packet, ctx);
            }
            Err(_elapsed) => {
                tracing::warn!(session = %self.id, "closing socket: the application did not decide a CONNECT in time");
                self.close(DisconnectReason::ConnectTimeout, ctx);
            }
        }
    }

    fn on_event(
        &mut self,
        index: usize,
        packet: SocketPacket,
        attachments: Vec<Vec<u8>>,
        ctx: &mut Context<Self>,
    ) {
        let SocketPacket { nsp, id, data, .. } = packet;
        // The codec guarantees an array starting with a string for events.
        let Some(Value::Array(mut args)) = data else {
            return self.violation("event without an array payload", ctx);
        };
        if args.is_empty() {
            return self.violation("event without a name", ctx);
        }
        let Value::String(name) = args.remove(0) else {
            return self.violation("event name is not a string", ctx);
        };
        let handle = self.session_handle(ctx);
        let ack = id.map(|id| AckReply::new(nsp.clone(), id, ctx.address(), Arc::clone(&self.close_request)));
        let event = Event {
            nsp,
            name,
            args,
            attachments,
            // Set just before for a BINARY_EVENT whose attachments are
            // refused; a text frame cannot come while it is non-zero.
            refused_attachments: self.discarding,
            ack,
        };
        let Some(Namespace {
            state: NamespaceState::Connected(state),
            ..
        }) = self.namespaces.get_mut(index)
        else {
            return;
        };
        let work = self.app.event(&handle, state, event);

        self.pending_events += 1;
        let work = work.into_actor(self).map(|(), act, _| act.pending_events -= 1);
        if self.pending_events > self.config.max_pending_events {
            // Backpressure: read nothing more from this socket until it is done.
            ctx.wait(work);
        } else {
            ctx.spawn(work);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (sid, upgrades) = match self.polling.as_deref() {
            Some(polling) => (
                polling.registration.sid().to_owned(),
                vec!["websocket".to_owned()],
            ),
            None => (random_sid(), Vec::new()),
        };
        let open = OpenPayload {
            sid,
            upgrades,
            ping_interval: millis(self.config.ping_interval),
            ping_timeout: millis(self.config.ping_timeout),
            max_payload: u64::try_from(self.config.max_payload).unwrap_or(u64::MAX),
        };
        let open = frame_message(engine::encode(&EnginePacket::Open(open)));
        self.queue_frames(std::iter::once(open), ctx);
        self.schedule_ping(ctx);

        self.arm_handshake_deadlines(ctx);

        if let Some(mut shutdown) = self.shutdown.take() {
            let signal = async move {
                // An error means the listener is gone: shut down all the same.
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            ctx.spawn(
                signal
                    .into_actor(self)
                    .map(|(), act, ctx| act.close(DisconnectReason::ServerShutdown, ctx)),
            );
        }
        tracing::debug!(session = %self.id, "session started");
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let reason = self.exit.unwrap_or(DisconnectReason::TransportClose);
        if let Some(polling) = self.polling.take() {
            // Unlisted from here on: a later request for the sid gets 400.
            polling.end(reason);
        }
        let handle = self.session_handle(ctx);
        for ns in self.namespaces.drain(..) {
            if let NamespaceState::Connected(state) = ns.state {
                self.app.disconnect(&handle, &ns.name, state, reason);
            }
        }
        tracing::debug!(session = %self.id, %reason, "session ended");
    }
}

impl StreamHandler<Result<Incoming, ReadError>> for Session {
    fn handle(&mut self, item: Result<Incoming, ReadError>, ctx: &mut Self::Context) {
        if self.exit.is_some() {
            return;
        }
        if self.probing() {
            return self.on_probe(item, ctx);
        }
        match item {
            Ok(Incoming::Text(text)) => self.on_text(&text, ctx),
            Ok(Incoming::Binary(bytes)) => self.on_binary(bytes, ctx),
            // WebSocket pings are answered in kind; Engine.IO has its own heartbeat.
            Ok(Incoming::Ping(payload)) => {
                self.queue_frames(std::iter::once(Message::Pong(payload.into())), ctx);
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(frame)) => {
                let code = frame.map_or(CloseCode::Normal, |frame| frame.code);
                let reply = Message::Close(Some(CloseFrame {
                    code,
                    reason: "".into(),
                }));
                self.close_with(DisconnectReason::TransportClose, Some(reply), ctx);
            }
            Err(ReadError::TooLarge { size, max }) => {
                tracing::warn!(session = %self.id, size, max, "closing socket: frame over maxPayload");
                self.close(DisconnectReason::PayloadTooLarge, ctx);
            }
            Err(error @ (ReadError::Protocol(_) | ReadError::Utf8)) => self.violation(error, ctx),
            Err(error @ ReadError::Timeout(_)) => {
                tracing::debug!(session = %self.id, %error, "closing socket: message too slow");
                self.close(DisconnectReason::TransportError, ctx);
            }
            Err(ReadError::Io(error)) => {
                // A peer that vanishes (process killed, network gone) is a
                // transport failure, not a protocol violation.
                tracing::debug!(session = %self.id, %error, "socket read failed");
                self.close(DisconnectReason::TransportError, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.probing() {
            // The WebSocket probed ended before the upgrade: polling goes on.
            return self.on_probe(Err(ReadError::Protocol("the probe ended")), ctx);
        }
        self.close(DisconnectReason::TransportClose, ctx);
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, Deliver(packet): Deliver, ctx: &mut Self::Context) {
        if self.closing(ctx) {
            return;
        }
        // Past half the outbound queue the client is behind: what it can
        // do without waits for nobody.
        if packet.droppable && self.queue.len() + self.in_flight > self.config.outbound_queue / 2 {
            return;
        }
        if let Some(position) = packet.position {
            match &mut self.stream {
                Stream::Replaying(replay) => {
                    replay.newest_held = replay.newest_held.max(position);
                    if packet.answer {
                        // At most one per event in progress, which the
                        // session bounds; past the queue's size, the
                        // client is not reading at all.
                        if replay.held_answers.len() >= self.config.outbound_queue {
                            tracing::warn!(session = %self.id, "closing socket: acks piled up during a replay");
                            self.close(DisconnectReason::SlowConsumer, ctx);
                            return;
                        }
                        replay.held_answers.push(packet);
                    }
                    return;
                }
                Stream::Live { floor } if position <= *floor && !packet.answer => return,
                Stream::Live { .. } => {}
            }
        }
        self.queue_encoded(packet, ctx);
    }
}

impl Handler<ExpireAt> for Session {
    type Result = ();

    fn handle(&mut self, ExpireAt { deadline, farewell }: ExpireAt, ctx: &mut Self::Context) {
        self.expiry = Some((deadline, farewell));
        self.arm_expiry(ctx);
    }
}

impl Session {
    /// Starts the expiry's timer once the deadline is within a ping
    /// interval; until then the ping timer, which every socket has anyway,
    /// looks at it. A timer of its own for every socket's whole life would
    /// cost each idle socket a couple of hundred bytes.
    fn arm_expiry(&mut self, ctx: &mut Context<Self>) {
        let Some((deadline, _)) = &self.expiry else {
            return;
        };
        let delay = deadline.saturating_duration_since(std::time::Instant::now());
        if delay > self.config.ping_interval {
            return;
        }
        let Some((_, farewell)) = self.expiry.take() else {
            return;
        };
        ctx.run_later(delay, move |act, ctx| {
            if act.exit.is_some() {
                return;
            }
            act.queue_encoded(Arc::unwrap_or_clone(farewell), ctx);
            act.close(DisconnectReason::TokenExpired, ctx);
        });
    }
}

impl Handler<Close> for Session {
    type Result = ();

    fn handle(&mut self, Close(reason): Close, ctx: &mut Self::Context) {
        if self.closing(ctx) {
            return;
        }
        if reason == DisconnectReason::SlowConsumer {
            tracing::warn!(session = %self.id, "closing socket: mailbox full");
        }
        self.close(reason, ctx);
    }
}

impl Handler<BeginReplay> for Session {
    type Result = ();

    fn handle(&mut self, _: BeginReplay, ctx: &mut Self::Context) {
        if self.closing(ctx) {
            return;
        }
        self.stream = Stream::Replaying(Box::default());
    }
}

impl Handler<BeginCatchUp> for Session {
    type Result = ();

    fn handle(&mut self, BeginCatchUp { reply }: BeginCatchUp, ctx: &mut Self::Context) {
        if self.closing(ctx) {
            return; // `reply` dropped: no catch-up
        }
        if matches!(self.stream, Stream::Replaying(_)) {
            let _ = reply.send(None);
            return;
        }
        let from = match std::mem::take(&mut self.catch_up_from) {
            0 => self.newest_sent,
            marked => marked,
        };
        // A socket that has no place in a stream (it connected without
        // `since` and was sent nothing) has nothing to catch up from.
        if from == 0 {
            let _ = reply.send(None);
            return;
        }
        self.stream = Stream::Replaying(Box::default());
        let _ = reply.send(Some(from));
    }
}

impl Handler<MarkCatchUp> for Session {
    type Result = ();

    fn handle(&mut self, _: MarkCatchUp, _: &mut Self::Context) {
        if self.catch_up_from == 0 {
            self.catch_up_from = self.newest_sent;
        }
    }
}

impl Handler<ReplayPage> for Session {
    type Result = ();

    fn handle(&mut self, ReplayPage { packets, reply }: ReplayPage, ctx: &mut Self::Context) {
        if self.closing(ctx) {
            return; // `reply` dropped: the replay stops
        }
        self.queue_all(packets, ctx);
        // A page outside a replay (no `begin_replay`) is sent, and `reply`
        // dropped: that replay ends here.
        if let Stream::Replaying(replay) = &mut self.stream {
            replay.room_waiter = Some(reply);
            self.grant_room();
        }
    }
}

impl Handler<FinishReplay> for Session {
    type Result = ();

    fn handle(&mut self, FinishReplay { last, reply }: FinishReplay, ctx: &mut Self::Context) {
        if self.closing(ctx) {
            return;
        }
        if let Stream::Replaying(replay) = &self.stream
            && replay.newest_held > last
        {
            let _ = reply.send(false);
            return;
        }
        let previous = std::mem::replace(&mut self.stream, Stream::Live { floor: last });
        if let Stream::Replaying(replay) = previous {
            for answer in replay.held_answers {
                self.queue_encoded(answer, ctx);
            }
        }
        let live = true;
        let _ = reply.send(live);
    }
}

fn text_message(text: String) -> Message {
    Message::Text(text.into())
}

fn frame_message(frame: Frame<'_>) -> Message {
    match frame {
        Frame::Text(text) => text_message(text),
        Frame::Binary(bytes) => Message::Binary(bytes.to_vec().into()),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A random 20-character id, as Engine.IO and Socket.IO sids look.
fn random_sid() -> String {
    let bytes: [u8; 15] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Adds the ',' our codec requires after a namespace that ends the packet.
///
/// The reference parser lets a namespace run to the end of the text when no
/// ',' follows ("0/admin"), and clients and the conformance suite send such
/// packets; the codec is strict, so the leniency lives here, at the edge.
fn terminate_namespace(text: &str) -> Cow<'_, str> {
    let after_type = text.get(1..).unwrap_or_default();
    let after_count = match after_type.split_once('-') {
        Some((count, rest)) if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => after_type,
    };
    if after_count.starts_with('/') && !after_count.contains(',') {
        Cow::Owned(format!("{text},"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::terminate_namespace;

    #[test]
    fn namespace_without_comma_is_terminated() {
        assert_eq!(terminate_namespace("0/admin"), "0/admin,");
        assert_eq!(terminate_namespace("1/admin"), "1/admin,");
        assert_eq!(terminate_namespace("51-/admin"), "51-/admin,");
    }

    #[test]
    fn other_packets_are_untouched() {
        for text in ["0", "0/admin,", "2[\"a\"]", "2/admin,[\"a,b\"]", "51-[{}]", ""] {
            assert_eq!(terminate_namespace(text), text);
        }
    }
}
