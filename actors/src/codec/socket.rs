//! Socket.IO v5 packets, as carried in the text of an Engine.IO MESSAGE.
//!
//! Wire format: `<type>[<#attachments>-][<namespace>,][<ack id>][JSON data]`
//!
//! * `type` is one digit, see [`PacketKind`].
//! * `#attachments-` is present exactly for BINARY_EVENT and BINARY_ACK.
//! * `namespace,` is present unless the namespace is the main one, `/`.
//! * `ack id` is a decimal `u64`, present when the sender wants an ACK and in
//!   the ACK itself.
//! * the JSON data's shape depends on the type, see [`PacketKind`].
//!
//! The decoder is strict: a client sending anything else is broken or
//! hostile, and both protocol specs tell the receiver to close the connection.

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

use super::{CodecError, engine};

/// The namespace every client may connect to, left out of encoded packets.
pub const MAIN_NAMESPACE: &str = "/";

/// Socket.IO packet types, with the payload each one requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// `0`: joins a namespace. Payload: none, or an object (the client's auth
    /// data; the server's answer carries `{"sid":…}`).
    Connect,
    /// `1`: leaves a namespace. Payload: none.
    Disconnect,
    /// `2`: an event. Payload: a non-empty array, the event name then its arguments.
    Event,
    /// `3`: answers the event with the same ack id. Payload: an array of arguments.
    Ack,
    /// `4`: refuses a CONNECT. Payload: `{"message":…,"data":…}` (`data` optional).
    ConnectError,
    /// `5`: an EVENT whose arguments contain binary attachments.
    BinaryEvent,
    /// `6`: an ACK whose arguments contain binary attachments.
    BinaryAck,
}

impl PacketKind {
    /// The type digit that starts an encoded packet.
    pub const fn as_char(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }

    /// The packet type for a type digit, if there is one.
    pub const fn from_char(digit: char) -> Option<Self> {
        Some(match digit {
            '0' => Self::Connect,
            '1' => Self::Disconnect,
            '2' => Self::Event,
            '3' => Self::Ack,
            '4' => Self::ConnectError,
            '5' => Self::BinaryEvent,
            '6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// Whether packets of this type are followed by binary attachments.
    pub const fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }

    /// Whether packets of this type may carry an ack id.
    const fn takes_ack_id(self) -> bool {
        matches!(
            self,
            Self::Event | Self::Ack | Self::BinaryEvent | Self::BinaryAck
        )
    }

    /// Whether packets of this type must carry an ack id.
    const fn needs_ack_id(self) -> bool {
        matches!(self, Self::Ack | Self::BinaryAck)
    }

    /// The protocol's name for the type, as used in the spec.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Disconnect => "DISCONNECT",
            Self::Event => "EVENT",
            Self::Ack => "ACK",
            Self::ConnectError => "CONNECT_ERROR",
            Self::BinaryEvent => "BINARY_EVENT",
            Self::BinaryAck => "BINARY_ACK",
        }
    }
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One Socket.IO packet.
///
/// Packets returned by [`decode`] and built by the constructors below satisfy
/// these invariants, which [`encode`] relies on to write a packet that
/// [`decode`] reads back unchanged:
///
/// * `nsp` starts with `/` and contains no `,`;
/// * `id` is only set for EVENT, ACK and their binary variants, and always for ACKs;
/// * `data` has the shape [`PacketKind`] documents for `kind`;
/// * `attachments` is 0 unless `kind` is binary.
///
/// For binary packets `data` still holds the `{"_placeholder":true,"num":N}`
/// markers; see [`super::binary`] for pairing them with the attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPacket {
    /// Packet type.
    pub kind: PacketKind,
    /// Namespace, [`MAIN_NAMESPACE`] unless the packet names another one.
    pub nsp: String,
    /// Acknowledgement id.
    pub id: Option<u64>,
    /// JSON payload.
    pub data: Option<Value>,
    /// Number of binary frames that follow a BINARY_EVENT / BINARY_ACK.
    pub attachments: usize,
}

impl SocketPacket {
    fn new(kind: PacketKind, nsp: impl Into<String>, id: Option<u64>, data: Option<Value>) -> Self {
        Self {
            kind,
            nsp: nsp.into(),
            id,
            data,
            attachments: 0,
        }
    }

    /// A CONNECT request, as a client sends it, with optional auth data.
    pub fn connect(nsp: impl Into<String>, auth: Option<Map<String, Value>>) -> Self {
        Self::new(PacketKind::Connect, nsp, None, auth.map(Value::Object))
    }

    /// The server's acceptance of a CONNECT: `{"sid":…}` names the new socket.
    pub fn connect_ok(nsp: impl Into<String>, sid: impl Into<String>) -> Self {
        let mut data = Map::with_capacity(1);
        data.insert("sid".to_owned(), Value::String(sid.into()));
        Self::new(PacketKind::Connect, nsp, None, Some(Value::Object(data)))
    }

    /// The server's refusal of a CONNECT, with a reason and optional details.
    pub fn connect_error(nsp: impl Into<String>, message: impl Into<String>, data: Option<Value>) -> Self {
        let mut payload = Map::with_capacity(2);
        payload.insert("message".to_owned(), Value::String(message.into()));
        if let Some(data) = data {
            payload.insert("data".to_owned(), data);
        }
        Self::new(PacketKind::ConnectError, nsp, None, Some(Value::Object(payload)))
    }

    /// Leaving (or being removed from) a namespace.
    pub fn disconnect(nsp: impl Into<String>) -> Self {
        Self::new(PacketKind::Disconnect, nsp, None, None)
    }

    /// An event named `name` with `args`; `ack_id` asks the receiver for an ACK.
    pub fn event(
        nsp: impl Into<String>,
        name: impl Into<String>,
        args: Vec<Value>,
        ack_id: Option<u64>,
    ) -> Self {
        let mut data = Vec::with_capacity(1 + args.len());
        data.push(Value::String(name.into()));
        data.extend(args);
        Self::new(PacketKind::Event, nsp, ack_id, Some(Value::Array(data)))
    }

    /// The answer to the event that carried ack id `id`.
    pub fn ack(nsp: impl Into<String>, id: u64, args: Vec<Value>) -> Self {
        Self::new(PacketKind::Ack, nsp, Some(id), Some(Value::Array(args)))
    }

    /// The event name of an EVENT / BINARY_EVENT, `None` for other types.
    pub fn event_name(&self) -> Option<&str> {
        match (self.kind, &self.data) {
            (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(items))) => {
                items.first().and_then(Value::as_str)
            }
            _ => None,
        }
    }

    /// The arguments of an event (after its name) or of an ACK; empty for other types.
    pub fn args(&self) -> &[Value] {
        let items = match &self.data {
            Some(Value::Array(items)) => items.as_slice(),
            _ => return &[],
        };
        match self.kind {
            PacketKind::Event | PacketKind::BinaryEvent => items.get(1..).unwrap_or_default(),
            PacketKind::Ack | PacketKind::BinaryAck => items,
            _ => &[],
        }
    }

    /// A guess of the encoded length, close enough that encoding usually
    /// allocates once: the header exactly, the JSON by its top-level items.
    fn encoded_len_hint(&self) -> usize {
        /// Type digit, up to 20 digits of attachment count and '-', namespace
        /// and ',', up to 20 digits of ack id.
        const MAX_HEADER_OVERHEAD: usize = 1 + 21 + 1 + 20;
        MAX_HEADER_OVERHEAD + self.nsp.len() + self.data.as_ref().map_or(0, json_len_hint)
    }
}

/// Approximate compact JSON length of `value`, looking one level deep.
fn json_len_hint(value: &Value) -> usize {
    /// Bytes assumed for a value that is not looked into.
    const NESTED_GUESS: usize = 16;
    let leaf = |value: &Value| match value {
        Value::String(text) => text.len() + 2,
        Value::Array(_) | Value::Object(_) => NESTED_GUESS,
        _ => 8,
    };
    match value {
        Value::Array(items) => 2 + items.iter().map(|item| leaf(item) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(key, item)| key.len() + 4 + leaf(item))
                .sum::<usize>()
        }
        other => leaf(other),
    }
}

/// Decodes one Socket.IO packet from the text of an Engine.IO MESSAGE.
///
/// Binary packets come back with their placeholders untouched; their
/// attachments arrive in the following frames, see
/// [`super::binary::BinaryAssembler`], which also checks the placeholders.
///
/// # Errors
///
/// If any part of the packet breaks the format described in the module
/// documentation; the [`CodecError`] variant names the part.
pub fn decode(text: &str) -> Result<SocketPacket, CodecError> {
    let mut chars = text.chars();
    let digit = chars.next().ok_or(CodecError::Empty)?;
    let kind = PacketKind::from_char(digit).ok_or(CodecError::UnknownPacketType(digit))?;
    let rest = chars.as_str();

    let (count, after_count) = split_digits(rest);
    let (attachments, rest) = match after_count.strip_prefix('-') {
        Some(after_dash) if !count.is_empty() => {
            if !kind.is_binary() {
                return Err(CodecError::AttachmentsNotAllowed(kind));
            }
            let count = count.parse().map_err(|_| CodecError::BadAttachmentCount)?;
            (count, after_dash)
        }
        _ if kind.is_binary() => return Err(CodecError::MissingAttachmentCount(kind)),
        _ => (0, rest),
    };

    let (nsp, rest) = if rest.starts_with('/') {
        rest.split_once(',').ok_or(CodecError::UnterminatedNamespace)?
    } else {
        (MAIN_NAMESPACE, rest)
    };

    let (digits, rest) = split_digits(rest);
    let id = if digits.is_empty() {
        None
    } else {
        Some(digits.parse().map_err(|_| CodecError::AckIdOverflow)?)
    };
    check_ack_id(kind, id)?;

    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest)?)
    };
    check_payload(kind, data.as_ref())?;

    Ok(SocketPacket {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments,
    })
}

/// Splits `text` after its leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let len = text.bytes().take_while(u8::is_ascii_digit).count();
    // ASCII digits are one byte each, so `len` is on a char boundary.
    text.split_at(len)
}

fn check_ack_id(kind: PacketKind, id: Option<u64>) -> Result<(), CodecError> {
    match id {
        Some(_) if !kind.takes_ack_id() => Err(CodecError::UnexpectedAckId(kind)),
        None if kind.needs_ack_id() => Err(CodecError::MissingAckId(kind)),
        _ => Ok(()),
    }
}

fn check_payload(kind: PacketKind, data: Option<&Value>) -> Result<(), CodecError> {
    let (valid, expected) = match kind {
        PacketKind::Connect => (
            matches!(data, None | Some(Value::Object(_))),
            "no payload or an object",
        ),
        PacketKind::Disconnect => (data.is_none(), "no payload"),
        PacketKind::Event | PacketKind::BinaryEvent => (
            matches!(data, Some(Value::Array(items)) if matches!(items.first(), Some(Value::String(_)))),
            "an array starting with the event name",
        ),
        PacketKind::Ack | PacketKind::BinaryAck => (matches!(data, Some(Value::Array(_))), "an array"),
        PacketKind::ConnectError => (
            matches!(data, Some(Value::Object(map)) if matches!(map.get("message"), Some(Value::String(_)))),
            "an object with a string \"message\"",
        ),
    };
    if valid {
        Ok(())
    } else {
        Err(CodecError::BadPayload { kind, expected })
    }
}

/// Encodes a packet as the text of an Engine.IO MESSAGE.
pub fn encode(packet: &SocketPacket) -> String {
    let mut text = String::with_capacity(packet.encoded_len_hint());
    encode_into(packet, &mut text);
    text
}

/// Encodes a packet wrapped in an Engine.IO MESSAGE, ready to be sent as a
/// WebSocket text frame.
///
/// Same as `engine::encode(&EnginePacket::Message(&encode(packet)))`, minus
/// the intermediate string.
pub fn encode_frame(packet: &SocketPacket) -> String {
    let mut text = String::with_capacity(1 + packet.encoded_len_hint());
    text.push(engine::MESSAGE);
    encode_into(packet, &mut text);
    text
}

/// The frame of an EVENT `name` with the one argument `arg`, serialized
/// straight from its type: what [`encode_frame`] writes for the same event
/// built from a `Value`, without building the `Value` (a map and a string
/// per field) first.
///
/// # Errors
///
/// When `arg`'s `Serialize` implementation fails.
pub fn encode_event_frame<T: serde::Serialize + ?Sized>(
    nsp: &str,
    name: &str,
    arg: &T,
) -> Result<String, serde_json::Error> {
    let mut frame = frame_header(PacketKind::Event, nsp, None);
    frame.push(b'[');
    serde_json::to_writer(&mut frame, name)?;
    frame.push(b',');
    serde_json::to_writer(&mut frame, arg)?;
    frame.push(b']');
    Ok(into_text(frame))
}

/// The frame of an ACK for ack id `id` answering the one argument `arg`,
/// serialized straight from its type (see [`encode_event_frame`]).
///
/// # Errors
///
/// When `arg`'s `Serialize` implementation fails.
pub fn encode_ack_frame<T: serde::Serialize + ?Sized>(
    nsp: &str,
    id: u64,
    arg: &T,
) -> Result<String, serde_json::Error> {
    let mut frame = frame_header(PacketKind::Ack, nsp, Some(id));
    frame.push(b'[');
    serde_json::to_writer(&mut frame, arg)?;
    frame.push(b']');
    Ok(into_text(frame))
}

/// `<MESSAGE><type>[<namespace>,][<ack id>]` of a non-binary packet.
fn frame_header(kind: PacketKind, nsp: &str, id: Option<u64>) -> Vec<u8> {
    /// Room for a short payload, so most frames never reallocate.
    const TYPICAL_FRAME: usize = 256;
    let mut header = String::with_capacity(TYPICAL_FRAME);
    header.push(engine::MESSAGE);
    header.push(kind.as_char());
    if nsp != MAIN_NAMESPACE {
        header.push_str(nsp);
        header.push(',');
    }
    if let Some(id) = id {
        let _ = write!(header, "{id}");
    }
    header.into_bytes()
}

/// serde_json writes UTF-8 only, so the check cannot fail; it is kept
/// rather than skipped (the crate forbids `unsafe`) and costs one pass.
fn into_text(frame: Vec<u8>) -> String {
    String::from_utf8(frame).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

fn encode_into(packet: &SocketPacket, text: &mut String) {
    text.push(packet.kind.as_char());
    // Writing into a String cannot fail, hence the ignored results.
    if packet.kind.is_binary() {
        let _ = write!(text, "{}-", packet.attachments);
    }
    if packet.nsp != MAIN_NAMESPACE {
        text.push_str(&packet.nsp);
        text.push(',');
    }
    if let Some(id) = packet.id {
        let _ = write!(text, "{id}");
    }
    if let Some(data) = &packet.data {
        // `Value`'s Display writes compact JSON straight into the buffer.
        let _ = write!(text, "{data}");
    }
}
