//! Engine.IO v4 packets as they travel over the WebSocket transport.
//!
//! Over WebSocket every frame holds exactly one packet, so there is no payload
//! framing (no `\x1e` separators, no base64): a text frame is a type digit
//! followed by the packet data, and a binary frame is the raw bytes of a
//! MESSAGE.
//!
//! Decoded packets borrow from the frame, so looking at a MESSAGE costs no
//! copy; the Socket.IO layer then decodes the borrowed text.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::CodecError;

/// Packet type digits, the first character of every text frame.
const OPEN: char = '0';
const CLOSE: char = '1';
const PING: char = '2';
const PONG: char = '3';
pub(super) const MESSAGE: char = '4';
const UPGRADE: char = '5';
const NOOP: char = '6';

/// One Engine.IO packet, borrowing its text or bytes from the frame it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// Handshake data, sent by the server when the session opens.
    Open(OpenPayload),
    /// Request to close the session.
    Close,
    /// Heartbeat (sent by the server in v4) or, with data `"probe"`, the
    /// client's probe on a transport being upgraded to.
    ///
    /// The decoder yields `None` for an empty payload, never `Some("")`.
    Ping(Option<&'a str>),
    /// Answer to a ping, echoing its data (`"probe"` for an upgrade probe).
    ///
    /// The decoder yields `None` for an empty payload, never `Some("")`.
    Pong(Option<&'a str>),
    /// Application text, in practice an encoded Socket.IO packet.
    Message(&'a str),
    /// Application bytes from a binary frame: a Socket.IO attachment.
    BinaryMessage(&'a [u8]),
    /// The client switches to this transport for good.
    Upgrade,
    /// Placeholder packet used to release a pending long-polling request.
    Noop,
}

/// The handshake data of an OPEN packet.
///
/// On the wire it is a JSON object with camelCase keys:
/// `{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPayload {
    /// Engine.IO session id.
    pub sid: String,
    /// Transports the client may upgrade to (empty when already on WebSocket).
    pub upgrades: Vec<String>,
    /// Milliseconds between two server pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for a pong before closing the session.
    pub ping_timeout: u64,
    /// Largest payload, in bytes, the server accepts in one frame.
    pub max_payload: u64,
}

impl OpenPayload {
    /// The handshake as a JSON object.
    ///
    /// Built by hand rather than through `serde_json::to_string`, whose
    /// `Result` could only ever be `Ok` for these plain fields.
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("sid".to_owned(), Value::from(self.sid.as_str()));
        map.insert(
            "upgrades".to_owned(),
            self.upgrades.iter().map(String::as_str).collect(),
        );
        map.insert("pingInterval".to_owned(), Value::from(self.ping_interval));
        map.insert("pingTimeout".to_owned(), Value::from(self.ping_timeout));
        map.insert("maxPayload".to_owned(), Value::from(self.max_payload));
        Value::Object(map)
    }
}

/// An encoded WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Send as a text frame.
    Text(String),
    /// Send as a binary frame; borrowed from the packet, as it needs no framing.
    Binary(&'a [u8]),
}

/// Decodes the text of one WebSocket text frame.
///
/// # Errors
///
/// If the frame is empty, starts with an unknown type, carries data on a
/// packet type that has none, or (OPEN only) holds an invalid handshake.
pub fn decode_text(frame: &str) -> Result<EnginePacket<'_>, CodecError> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let data = chars.as_str();
    let non_empty = (!data.is_empty()).then_some(data);
    let without_data = |packet: EnginePacket<'static>, name: &'static str| {
        if data.is_empty() {
            Ok(packet)
        } else {
            Err(CodecError::TrailingData(name))
        }
    };
    match kind {
        OPEN => Ok(EnginePacket::Open(serde_json::from_str(data)?)),
        CLOSE => without_data(EnginePacket::Close, "CLOSE"),
        PING => Ok(EnginePacket::Ping(non_empty)),
        PONG => Ok(EnginePacket::Pong(non_empty)),
        MESSAGE => Ok(EnginePacket::Message(data)),
        UPGRADE => without_data(EnginePacket::Upgrade, "UPGRADE"),
        NOOP => without_data(EnginePacket::Noop, "NOOP"),
        other => Err(CodecError::UnknownEngineType(other)),
    }
}

/// Decodes one WebSocket binary frame.
///
/// In Engine.IO v4 a binary frame has no type prefix: it is always a MESSAGE.
pub fn decode_binary(frame: &[u8]) -> EnginePacket<'_> {
    EnginePacket::BinaryMessage(frame)
}

/// Encodes a packet as the WebSocket frame that carries it.
pub fn encode<'a>(packet: &EnginePacket<'a>) -> Frame<'a> {
    let (kind, data) = match *packet {
        EnginePacket::Open(ref open) => {
            // A handshake with a 20-character sid takes about 120 bytes.
            let mut text = String::with_capacity(128);
            text.push(OPEN);
            // Writing into a String cannot fail.
            let _ = write!(text, "{}", open.to_json());
            return Frame::Text(text);
        }
        EnginePacket::BinaryMessage(bytes) => return Frame::Binary(bytes),
        EnginePacket::Close => (CLOSE, ""),
        EnginePacket::Ping(data) => (PING, data.unwrap_or_default()),
        EnginePacket::Pong(data) => (PONG, data.unwrap_or_default()),
        EnginePacket::Message(text) => (MESSAGE, text),
        EnginePacket::Upgrade => (UPGRADE, ""),
        EnginePacket::Noop => (NOOP, ""),
    };
    let mut text = String::with_capacity(1 + data.len());
    text.push(kind);
    text.push_str(data);
    Frame::Text(text)
}
