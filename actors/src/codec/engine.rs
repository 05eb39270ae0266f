//! Engine.IO v4 packets as they travel over the WebSocket transport, and
//! the payloads of HTTP long-polling.
//!
//! Over WebSocket every frame holds exactly one packet, so there is no payload
//! framing (no `\x1e` separators, no base64): a text frame is a type digit
//! followed by the packet data, and a binary frame is the raw bytes of a
//! MESSAGE. A long-polling body carries several packets, the same texts
//! joined by `\x1e`, binary ones as `b` and base64 ([`decode_payload`]).
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

/// A whole CLOSE packet: on long-polling, the server's last word.
pub const CLOSE_PACKET: &str = "1";

/// A whole NOOP packet: answers a long-poll with nothing to say.
pub const NOOP_PACKET: &str = "6";

/// Separates the packets of one HTTP long-polling payload.
pub const RECORD_SEPARATOR: char = '\x1e';

/// Prefix of a binary packet in a long-polling payload, its bytes in base64.
const BASE64_PREFIX: char = 'b';

/// One packet of a long-polling payload: the text of a packet (type digit
/// and data, as in a WebSocket text frame) or the bytes of a binary MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadPacket {
    Text(String),
    Binary(Vec<u8>),
}

/// Splits an HTTP long-polling body into its packets: `\x1e` between
/// packets, binary ones as `b` and standard base64.
///
/// # Errors
///
/// If the body or one of its packets is empty, or a binary packet is not
/// valid base64.
pub fn decode_payload(body: &str) -> Result<Vec<PayloadPacket>, CodecError> {
    use base64::Engine as _;
    body.split(RECORD_SEPARATOR)
        .map(|packet| match packet.strip_prefix(BASE64_PREFIX) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(PayloadPacket::Binary)
                .map_err(|_| CodecError::BadBase64),
            None if packet.is_empty() => Err(CodecError::Empty),
            None => Ok(PayloadPacket::Text(packet.to_owned())),
        })
        .collect()
}

/// Appends one packet to a long-polling payload being built in `out`.
pub fn push_payload_text(out: &mut String, text: &str) {
    if !out.is_empty() {
        out.push(RECORD_SEPARATOR);
    }
    out.push_str(text);
}

/// Appends one binary MESSAGE to a long-polling payload being built in `out`.
pub fn push_payload_binary(out: &mut String, bytes: &[u8]) {
    use base64::Engine as _;
    if !out.is_empty() {
        out.push(RECORD_SEPARATOR);
    }
    out.push(BASE64_PREFIX);
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
}

#[cfg(test)]
mod payload_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn payloads_split_on_the_record_separator_and_decode_base64() {
        let packets = decode_payload("42[\"a\"]\x1e3\x1ebAQID").unwrap();
        assert_eq!(
            packets,
            vec![
                PayloadPacket::Text("42[\"a\"]".to_owned()),
                PayloadPacket::Text("3".to_owned()),
                PayloadPacket::Binary(vec![1, 2, 3]),
            ]
        );
        assert_eq!(decode_payload("b").unwrap(), vec![PayloadPacket::Binary(vec![])]);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for body in ["", "4\x1e", "\x1e4", "b!!!", "4\x1e\x1e3"] {
            assert!(decode_payload(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn built_payloads_decode_back() {
        let mut out = String::new();
        push_payload_text(&mut out, "2");
        push_payload_binary(&mut out, &[0xff, 0, 7]);
        push_payload_text(&mut out, "451-[\"x\",{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(out, "2\x1eb/wAH\x1e451-[\"x\",{\"_placeholder\":true,\"num\":0}]");
        let back = decode_payload(&out).unwrap();
        assert_eq!(back.get(1), Some(&PayloadPacket::Binary(vec![0xff, 0, 7])));
    }
}
