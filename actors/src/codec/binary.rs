//! Binary attachments of BINARY_EVENT and BINARY_ACK packets.
//!
//! A binary packet travels as one text frame, whose JSON holds a
//! `{"_placeholder":true,"num":N}` marker where each binary value was, then N
//! binary frames, attachment 0 first.
//!
//! `serde_json::Value` cannot hold bytes, so the markers stay in the JSON and
//! the attachments travel next to it in a [`BinaryPacket`]. This keeps
//! forwarding cheap: relaying or echoing a binary packet needs no rewriting of
//! its JSON, and [`BinaryPacket::attachment_for`] resolves a marker when the
//! bytes themselves are wanted.

use serde_json::{Map, Value};

use super::CodecError;
use super::socket::{self, PacketKind, SocketPacket};

/// A sensible limit on attachments per packet, for [`BinaryAssembler::start`].
pub const DEFAULT_MAX_ATTACHMENTS: usize = 10;

const PLACEHOLDER_KEY: &str = "_placeholder";
const NUM_KEY: &str = "num";

/// The marker standing for attachment `num` in a packet's JSON.
pub fn placeholder(num: usize) -> Value {
    let mut map = Map::with_capacity(2);
    map.insert(PLACEHOLDER_KEY.to_owned(), Value::Bool(true));
    map.insert(NUM_KEY.to_owned(), Value::from(num));
    Value::Object(map)
}

/// Whether `map` is a placeholder marker. As in the reference implementation,
/// `"_placeholder": true` alone decides it; other keys are ignored.
fn is_placeholder(map: &Map<String, Value>) -> bool {
    matches!(map.get(PLACEHOLDER_KEY), Some(Value::Bool(true)))
}

/// The attachment number of a well-formed marker.
fn placeholder_num(map: &Map<String, Value>) -> Option<usize> {
    map.get(NUM_KEY)
        .and_then(Value::as_u64)
        .and_then(|num| usize::try_from(num).ok())
}

/// Checks that the markers in `data` number the attachments `0..count`, each
/// exactly once, so that every marker resolves and no attachment is unused.
fn check_placeholders(data: Option<&Value>, count: usize) -> Result<(), CodecError> {
    fn collect(value: &Value, nums: &mut Vec<usize>) -> Result<(), CodecError> {
        match value {
            Value::Object(map) if is_placeholder(map) => {
                let num = placeholder_num(map)
                    .ok_or(CodecError::BadPlaceholder("\"num\" is not an attachment index"))?;
                nums.push(num);
            }
            Value::Object(map) => map.values().try_for_each(|item| collect(item, nums))?,
            Value::Array(items) => items.iter().try_for_each(|item| collect(item, nums))?,
            _ => {}
        }
        Ok(())
    }

    // Sized by what the JSON holds, never by the announced count, which the
    // sender controls.
    let mut nums = Vec::new();
    if let Some(data) = data {
        collect(data, &mut nums)?;
    }
    if nums.len() != count {
        return Err(CodecError::BadPlaceholder(
            "number of placeholders differs from number of attachments",
        ));
    }
    nums.sort_unstable();
    if nums.iter().enumerate().any(|(index, &num)| index != num) {
        return Err(CodecError::BadPlaceholder(
            "placeholders must number the attachments from 0, each once",
        ));
    }
    Ok(())
}

/// A BINARY_EVENT / BINARY_ACK together with its attachments.
///
/// The packet's placeholders always match the attachments: each
/// attachment is referenced by exactly one placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryPacket {
    packet: SocketPacket,
    attachments: Vec<Vec<u8>>,
}

impl BinaryPacket {
    /// Pairs an outgoing packet, whose data holds [`placeholder`]s, with the
    /// attachments they stand for.
    ///
    /// An EVENT or ACK becomes a BINARY_EVENT or BINARY_ACK, and the packet's
    /// attachment count is set from `attachments`.
    ///
    /// # Errors
    ///
    /// [`CodecError::AttachmentsNotAllowed`] for other packet types, and
    /// [`CodecError::BadPlaceholder`] unless the placeholders number the
    /// attachments from 0, each exactly once.
    pub fn new(mut packet: SocketPacket, attachments: Vec<Vec<u8>>) -> Result<Self, CodecError> {
        packet.kind = match packet.kind {
            PacketKind::Event | PacketKind::BinaryEvent => PacketKind::BinaryEvent,
            PacketKind::Ack | PacketKind::BinaryAck => PacketKind::BinaryAck,
            other => return Err(CodecError::AttachmentsNotAllowed(other)),
        };
        packet.attachments = attachments.len();
        check_placeholders(packet.data.as_ref(), attachments.len())?;
        Ok(Self { packet, attachments })
    }

    /// The packet, placeholders included.
    pub fn packet(&self) -> &SocketPacket {
        &self.packet
    }

    /// The attachments, in placeholder number order.
    pub fn attachments(&self) -> &[Vec<u8>] {
        &self.attachments
    }

    /// The bytes `value` stands for, if it is one of this packet's placeholders.
    pub fn attachment_for(&self, value: &Value) -> Option<&[u8]> {
        let map = value.as_object().filter(|map| is_placeholder(map))?;
        let num = placeholder_num(map)?;
        self.attachments.get(num).map(Vec::as_slice)
    }

    /// The text frame (an Engine.IO MESSAGE) that announces the attachments.
    ///
    /// Send it first, then each attachment, in order, as a binary frame:
    /// Engine.IO v4 sends binary MESSAGEs as raw frames.
    pub fn encode_frame(&self) -> String {
        socket::encode_frame(&self.packet)
    }

    /// The packet and its attachments, e.g. to hand the buffers to the
    /// transport without copying them.
    pub fn into_parts(self) -> (SocketPacket, Vec<Vec<u8>>) {
        (self.packet, self.attachments)
    }
}

/// Collects the binary frames that follow a decoded BINARY_EVENT / BINARY_ACK.
///
/// Consumed by each step, so a finished or failed assembly cannot be fed again.
#[derive(Debug)]
pub struct BinaryAssembler {
    packet: SocketPacket,
    attachments: Vec<Vec<u8>>,
}

/// Progress of a [`BinaryAssembler`].
#[derive(Debug)]
pub enum Assembly {
    /// More binary frames are expected.
    Pending(BinaryAssembler),
    /// All attachments have arrived.
    Complete(BinaryPacket),
}

impl BinaryAssembler {
    /// Starts collecting the attachments announced by `packet`, a binary
    /// packet returned by [`socket::decode`].
    ///
    /// A packet announcing no attachments is complete at once.
    ///
    /// # Errors
    ///
    /// [`CodecError::AttachmentsNotAllowed`] if the packet is not binary,
    /// [`CodecError::TooManyAttachments`] if it announces more than
    /// `max_attachments`, and [`CodecError::BadPlaceholder`] unless its
    /// placeholders number the announced attachments from 0, each exactly once.
    pub fn start(packet: SocketPacket, max_attachments: usize) -> Result<Assembly, CodecError> {
        if !packet.kind.is_binary() {
            return Err(CodecError::AttachmentsNotAllowed(packet.kind));
        }
        if packet.attachments > max_attachments {
            return Err(CodecError::TooManyAttachments {
                count: packet.attachments,
                max: max_attachments,
            });
        }
        check_placeholders(packet.data.as_ref(), packet.attachments)?;
        let attachments = Vec::with_capacity(packet.attachments);
        Ok(Self { packet, attachments }.progress())
    }

    /// Adds the next binary frame.
    pub fn push(mut self, attachment: Vec<u8>) -> Assembly {
        self.attachments.push(attachment);
        self.progress()
    }

    /// How many binary frames are still expected.
    pub fn remaining(&self) -> usize {
        self.packet.attachments - self.attachments.len()
    }

    fn progress(self) -> Assembly {
        if self.remaining() == 0 {
            Assembly::Complete(BinaryPacket {
                packet: self.packet,
                attachments: self.attachments,
            })
        } else {
            Assembly::Pending(self)
        }
    }
}
