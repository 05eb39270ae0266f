//! The session's side of HTTP long-polling and of the upgrade to WebSocket.
//!
//! A polling session has no socket of its own: the listener's HTTP
//! connections bring it requests as messages. A long-poll GET leaves a
//! one-shot reply here until there is something to send (the outbound
//! queue, as on WebSocket, joined into one payload); a POST's packets take
//! the same paths as WebSocket frames. Between requests the session holds
//! no buffer: the queue is empty and unallocated, and a waiting GET is one
//! small channel.
//!
//! The upgrade, as engine.io 6 does it: the client opens a WebSocket with
//! the sid (the listener hands its stream over in [`Attach`]), sends
//! `2probe` and gets `3probe` on it, the GET waiting meanwhile is answered
//! with a NOOP so the client stops polling, and the client's `5` (UPGRADE)
//! moves the session onto the WebSocket. Until then every packet goes out
//! on polling; from then on on the WebSocket; each once, from the one queue.

use std::collections::VecDeque;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::Session;
use crate::codec::PayloadPacket;
use crate::codec::engine::{CLOSE_PACKET, NOOP_PACKET, push_payload_binary, push_payload_text};
use crate::session::DisconnectReason;
use crate::sids::Registration;
use crate::ws::{Incoming, ReadError, WsReader, WsWriter};

const PROBE_PING: &str = "2probe";
const PROBE_PONG: &str = "3probe";
const UPGRADE_PACKET: &str = "5";

/// A long-poll GET: answered, once there is something to send, with the
/// payload of every packet queued.
#[derive(Message)]
#[rtype(result = "Result<(), PollRefusal>")]
pub(crate) struct Poll {
    pub(crate) reply: oneshot::Sender<String>,
}

/// The packets of a POST.
#[derive(Message)]
#[rtype(result = "Result<(), PollRefusal>")]
pub(crate) struct Push {
    pub(crate) packets: Vec<PayloadPacket>,
}

/// The client closed the connection its GET was waiting on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PollAbandoned;

/// An upgraded WebSocket for this session (`sid` in its request), on its
/// way to becoming the session's transport; handed back if the session
/// takes none now (it is closing, probing another one, or upgraded).
#[derive(Message)]
#[rtype(result = "Result<(), std::net::TcpStream>")]
pub(crate) struct Attach {
    pub(crate) stream: std::net::TcpStream,
    /// Frames the client sent right behind its upgrade request.
    pub(crate) early: Vec<u8>,
}

/// Why a polling request was not served: the client gets 400, Engine.IO's
/// "Bad request" (a second GET at once, a request after the upgrade, a
/// payload that broke the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollRefusal;

/// What a polling session keeps: boxed in the session, so a WebSocket
/// session carries one pointer for it.
pub(super) struct Polling {
    /// The session's entry in the listener's sid map, removed with this.
    pub(super) registration: Registration,
    /// The GET waiting for packets.
    waiting: Option<oneshot::Sender<String>>,
    probe: Probe,
}

enum Probe {
    /// No WebSocket yet.
    None,
    /// The client is probing a WebSocket.
    Attached {
        /// `None` while `3probe` is being written.
        writer: Option<WsWriter>,
        /// Whether `3probe` went out, after which `5` completes the upgrade.
        probed: bool,
        stream: SpawnHandle,
        /// Gives up on a client that does not complete the upgrade.
        timer: SpawnHandle,
    },
    /// The session runs on the WebSocket; polling requests are refused.
    Upgraded,
}

impl Polling {
    pub(super) fn new(registration: Registration, first: oneshot::Sender<String>) -> Self {
        Self {
            registration,
            waiting: Some(first),
            probe: Probe::None,
        }
    }

    /// Answers a GET still waiting when the session ends: NOOP when the
    /// client closed (as engine.io answers it), else CLOSE, so the client
    /// starts over.
    pub(super) fn end(mut self, reason: DisconnectReason) {
        let by_client = reason == DisconnectReason::TransportClose;
        self.answer(if by_client { NOOP_PACKET } else { CLOSE_PACKET });
        if by_client {
            self.registration.closed_by_client();
        }
    }

    /// Answers the waiting GET, if any, with `text`.
    fn answer(&mut self, text: &str) {
        if let Some(waiting) = self.waiting.take() {
            let _ = waiting.send(text.to_owned());
        }
    }
}

/// The frames of the outbound queue as one long-polling payload.
fn encode_payload(frames: VecDeque<Message>) -> String {
    let size: usize = frames.iter().map(|frame| frame.len() * 4 / 3 + 4).sum();
    let mut out = String::with_capacity(size);
    for frame in &frames {
        match frame {
            Message::Text(text) => push_payload_text(&mut out, text),
            Message::Binary(bytes) => push_payload_binary(&mut out, bytes),
            // The session's farewell: on polling, Engine.IO's CLOSE.
            Message::Close(_) => push_payload_text(&mut out, CLOSE_PACKET),
            // WebSocket control frames have no meaning on polling.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    out
}

impl Session {
    /// Whether packets go out on long-polling (not upgraded, or not yet).
    pub(super) fn polls(&self) -> bool {
        self.polling
            .as_deref()
            .is_some_and(|polling| !matches!(polling.probe, Probe::Upgraded))
    }

    /// Whether a WebSocket is being probed (its frames are the probe's).
    pub(super) fn probing(&self) -> bool {
        self.polling
            .as_deref()
            .is_some_and(|polling| matches!(polling.probe, Probe::Attached { .. }))
    }

    /// Whether a GET is waiting to take packets.
    pub(super) fn poll_waiting(&self) -> bool {
        self.polling
            .as_deref()
            .is_some_and(|polling| polling.waiting.is_some())
    }

    /// Answers the waiting GET with everything queued.
    pub(super) fn flush_poll(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() {
            return;
        }
        let Some(polling) = self.polling.as_deref_mut() else {
            return;
        };
        let Some(waiting) = polling.waiting.take() else {
            return;
        };
        let payload = encode_payload(std::mem::take(&mut self.queue));
        if waiting.send(payload).is_err() {
            // The client left its GET: what it carried is lost, and the
            // client, if it comes back, starts over (and catches up with `since`).
            tracing::debug!(session = %self.id, "long-poll abandoned");
            self.close(DisconnectReason::TransportError, ctx);
            return;
        }
        self.grant_room();
        if self.exit.is_some() {
            ctx.stop();
        }
    }

    fn discard_probe(&mut self, ctx: &mut Context<Self>) {
        let Some(polling) = self.polling.as_deref_mut() else {
            return;
        };
        if let Probe::Attached { stream, timer, .. } = std::mem::replace(&mut polling.probe, Probe::None) {
            tracing::debug!(session = %self.id, "WebSocket probe given up; staying on polling");
            ctx.cancel_future(stream);
            ctx.cancel_future(timer);
        }
    }

    /// A frame from the WebSocket being probed.
    pub(super) fn on_probe(&mut self, item: Result<Incoming, ReadError>, ctx: &mut Context<Self>) {
        let probed = match self.polling.as_deref() {
            Some(Polling {
                probe: Probe::Attached { probed, .. },
                ..
            }) => *probed,
            _ => return,
        };
        match item {
            Ok(Incoming::Text(text)) if text == PROBE_PING => self.answer_probe(ctx),
            Ok(Incoming::Text(text)) if text == UPGRADE_PACKET && probed => self.upgrade(ctx),
            Ok(Incoming::Ping(_) | Incoming::Pong) => {}
            // As engine.io: anything else, or the probe's end, and the
            // client stays on polling.
            _ => self.discard_probe(ctx),
        }
    }

    /// Sends `3probe` on the WebSocket, and releases the waiting GET so the
    /// client can pause polling.
    fn answer_probe(&mut self, ctx: &mut Context<Self>) {
        let Some(polling) = self.polling.as_deref_mut() else {
            return;
        };
        let Probe::Attached { writer, probed, .. } = &mut polling.probe else {
            return;
        };
        *probed = true;
        let Some(mut writer) = writer.take() else {
            return;
        };
        if self.queue.is_empty() {
            polling.answer(NOOP_PACKET);
        }
        let write = async move {
            let sent = writer
                .send(VecDeque::from([Message::Text(PROBE_PONG.into())]))
                .await;
            (sent, writer)
        };
        ctx.spawn(write.into_actor(self).map(|(sent, writer), act, ctx| {
            let upgraded = act
                .polling
                .as_deref()
                .is_some_and(|polling| matches!(polling.probe, Probe::Upgraded));
            if let Err(error) = sent {
                tracing::debug!(session = %act.id, %error, "WebSocket probe write failed");
                if upgraded {
                    act.close(DisconnectReason::TransportError, ctx);
                } else {
                    act.discard_probe(ctx);
                }
                return;
            }
            if upgraded {
                // UPGRADE came while `3probe` was being written.
                act.sink = Some(writer);
                act.flush(ctx);
            } else if let Some(Polling {
                probe: Probe::Attached { writer: slot, .. },
                ..
            }) = act.polling.as_deref_mut()
            {
                *slot = Some(writer);
            }
        }));
    }

    /// The client's `5`: the WebSocket is the session's transport from now on.
    fn upgrade(&mut self, ctx: &mut Context<Self>) {
        let Some(polling) = self.polling.as_deref_mut() else {
            return;
        };
        let Probe::Attached { writer, timer, .. } = std::mem::replace(&mut polling.probe, Probe::Upgraded)
        else {
            return;
        };
        ctx.cancel_future(timer);
        // A client that upgrades has paused polling; a GET still waiting
        // is released empty, and what is queued goes out on the WebSocket.
        polling.answer(NOOP_PACKET);
        self.sink = writer;
        tracing::debug!(session = %self.id, "upgraded to WebSocket");
        self.flush(ctx);
    }
}

impl Handler<Poll> for Session {
    type Result = Result<(), PollRefusal>;

    fn handle(&mut self, Poll { reply }: Poll, ctx: &mut Self::Context) -> Self::Result {
        let (exit, queued) = (self.exit, !self.queue.is_empty());
        let id = self.id;
        let Some(polling) = self.polling.as_deref_mut() else {
            return Err(PollRefusal);
        };
        let probed = match polling.probe {
            Probe::Upgraded => return Err(PollRefusal),
            Probe::Attached { probed, .. } => probed,
            Probe::None => false,
        };
        if let Some(reason) = exit
            && !queued
        {
            // A GET that raced the client's own close ends as one that was
            // waiting for it: NOOP (see `Polling::end`).
            let answer = if reason == DisconnectReason::TransportClose {
                NOOP_PACKET
            } else {
                CLOSE_PACKET
            };
            let _ = reply.send(answer.to_owned());
            return Ok(());
        }
        if polling
            .waiting
            .as_ref()
            .is_some_and(|waiting| !waiting.is_closed())
        {
            // As engine.io: two GETs at once end the session.
            tracing::warn!(session = %id, "closing socket: two long-polls at once");
            self.close(DisconnectReason::TransportError, ctx);
            return Err(PollRefusal);
        }
        polling.waiting = Some(reply);
        if probed && !queued {
            // The client is upgrading: let it pause polling now.
            polling.answer(NOOP_PACKET);
        }
        self.flush(ctx);
        Ok(())
    }
}

impl Handler<Push> for Session {
    type Result = Result<(), PollRefusal>;

    fn handle(&mut self, Push { packets }: Push, ctx: &mut Self::Context) -> Self::Result {
        if !self.polls() {
            return Err(PollRefusal);
        }
        for packet in packets {
            if self.exit.is_some() {
                break;
            }
            match packet {
                PayloadPacket::Text(text) => self.on_text(&text, ctx),
                PayloadPacket::Binary(bytes) => self.on_binary(bytes, ctx),
            }
        }
        match self.exit {
            Some(DisconnectReason::ProtocolError) => Err(PollRefusal),
            _ => Ok(()),
        }
    }
}

impl Handler<PollAbandoned> for Session {
    type Result = ();

    fn handle(&mut self, _: PollAbandoned, ctx: &mut Self::Context) {
        let abandoned = self
            .polling
            .as_deref()
            .and_then(|polling| polling.waiting.as_ref())
            .is_some_and(oneshot::Sender::is_closed);
        if abandoned && self.exit.is_none() {
            // As engine.io: a poll connection closed early ends the session.
            tracing::debug!(session = %self.id, "closing socket: long-poll connection closed");
            self.close(DisconnectReason::TransportError, ctx);
        }
    }
}

impl Handler<Attach> for Session {
    type Result = Result<(), std::net::TcpStream>;

    fn handle(&mut self, Attach { stream, early }: Attach, ctx: &mut Self::Context) -> Self::Result {
        let free = self
            .polling
            .as_deref()
            .is_some_and(|polling| matches!(polling.probe, Probe::None));
        if self.exit.is_some() || !free {
            return Err(stream);
        }
        // Registered with this arbiter's reactor, where the session polls it.
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(session = %self.id, %error, "could not take over a WebSocket");
                return Ok(());
            }
        };
        let (read, write) = stream.into_split();
        let reader = WsReader::new(
            read,
            early,
            self.config.read_buffer_size,
            self.config.max_payload,
            self.config.message_timeout(),
        );
        let stream = ctx.add_stream(reader.into_stream());
        let timer = ctx.run_later(self.config.handshake_timeout, |act, ctx| {
            tracing::debug!(session = %act.id, "the client did not complete its upgrade");
            act.discard_probe(ctx);
        });
        if let Some(polling) = self.polling.as_deref_mut() {
            polling.probe = Probe::Attached {
                writer: Some(WsWriter::new(write)),
                probed: false,
                stream,
                timer,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_frames_make_one_payload() {
        let frames = VecDeque::from([
            Message::Text("2".into()),
            Message::Text("451-[\"x\",{\"_placeholder\":true,\"num\":0}]".into()),
            Message::Binary(vec![1, 2, 3].into()),
            Message::Pong(Vec::new().into()),
            Message::Close(None),
        ]);
        assert_eq!(
            encode_payload(frames),
            "2\x1e451-[\"x\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID\x1e1"
        );
    }
}
