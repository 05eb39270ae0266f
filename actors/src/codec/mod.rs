//! Wire codec for Engine.IO v4 (WebSocket transport) and Socket.IO v5.
//!
//! The two protocols are layered:
//!
//! * [`engine`] reads and writes single WebSocket frames. A text frame is one
//!   Engine.IO packet (`<type digit><data>`); a binary frame is always a
//!   MESSAGE carrying raw bytes (Engine.IO v4 dropped the type byte there).
//! * [`socket`] reads and writes the Socket.IO packet found inside an
//!   Engine.IO MESSAGE text: `<type>[<#attachments>-][<namespace>,][<ack id>][JSON]`.
//! * [`binary`] joins a BINARY_EVENT / BINARY_ACK header with the binary
//!   frames that follow it, and splits outgoing binary packets into frames.
//!
//! Everything here is synchronous and allocation-light, because it runs once
//! per frame for every connected socket. Decoders never panic: every input
//! either decodes or yields a [`CodecError`].

pub mod binary;
pub mod engine;
pub mod socket;

#[cfg(test)]
mod tests;

pub use binary::{Assembly, BinaryAssembler, BinaryPacket};
pub use engine::{EnginePacket, Frame, OpenPayload, PayloadPacket};
pub use socket::{PacketKind, SocketPacket};

/// Why a frame could not be decoded (or a packet could not be built).
///
/// A server should treat any of these coming from a client as a protocol
/// violation and close the connection, as both protocol specs require.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame or packet had no content at all.
    #[error("empty packet")]
    Empty,

    /// A binary packet of a long-polling payload is not valid base64.
    #[error("a binary packet of the payload is not valid base64")]
    BadBase64,

    /// The first character of a text frame is not an Engine.IO packet type.
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),

    /// An Engine.IO packet that carries no data (CLOSE, UPGRADE, NOOP) had some.
    #[error("unexpected data after Engine.IO {0} packet")]
    TrailingData(&'static str),

    /// The first character of a Socket.IO packet is not a packet type.
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownPacketType(char),

    /// A BINARY_EVENT / BINARY_ACK packet lacks its `<count>-` prefix.
    #[error("{0} packet lacks the `<count>-` attachment prefix")]
    MissingAttachmentCount(PacketKind),

    /// An attachment count was given for a packet type that cannot carry binary data.
    #[error("{0} packets cannot carry binary attachments")]
    AttachmentsNotAllowed(PacketKind),

    /// The attachment count does not fit in a `usize`.
    #[error("attachment count is out of range")]
    BadAttachmentCount,

    /// More attachments were announced than the receiver accepts.
    #[error("{count} binary attachments announced, at most {max} allowed")]
    TooManyAttachments {
        /// Announced number of attachments.
        count: usize,
        /// Configured limit.
        max: usize,
    },

    /// The `{"_placeholder":true,"num":N}` markers do not match the attachments.
    #[error("bad binary placeholder: {0}")]
    BadPlaceholder(&'static str),

    /// A namespace (which starts with '/') is not terminated by ','.
    #[error("namespace is not terminated by ','")]
    UnterminatedNamespace,

    /// The acknowledgement id does not fit in a `u64`.
    #[error("ack id is out of range")]
    AckIdOverflow,

    /// An acknowledgement id was given for a packet type that cannot be acknowledged.
    #[error("{0} packets cannot carry an ack id")]
    UnexpectedAckId(PacketKind),

    /// An ACK / BINARY_ACK packet without the id of the event it answers.
    #[error("{0} packet lacks its ack id")]
    MissingAckId(PacketKind),

    /// The payload is not valid JSON (or, for OPEN, not a handshake object).
    #[error("invalid JSON payload: {0}")]
    InvalidJson(#[from] serde_json::Error),

    /// The payload is valid JSON but has the wrong shape for the packet type.
    #[error("bad {kind} payload: expected {expected}")]
    BadPayload {
        /// Type of the offending packet.
        kind: PacketKind,
        /// What that packet type requires.
        expected: &'static str,
    },
}
