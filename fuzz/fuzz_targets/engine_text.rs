//! Engine.IO frames as the WebSocket transport receives them: any text
//! frame either decodes or is an error, and a decoded packet encodes to a
//! frame that decodes back to it; a binary frame is its bytes, unchanged.
#![no_main]

use aurum_actors::codec::Frame;
use aurum_actors::codec::engine::{self, EnginePacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let binary = engine::decode_binary(data);
    assert_eq!(engine::encode(&binary), Frame::Binary(data));

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = engine::decode_text(text) else {
        return;
    };
    // The decoder yields None, never Some(""), for an empty ping or pong.
    assert!(!matches!(
        packet,
        EnginePacket::Ping(Some("")) | EnginePacket::Pong(Some(""))
    ));
    let Frame::Text(encoded) = engine::encode(&packet) else {
        panic!("a text packet encoded as a binary frame: {packet:?}");
    };
    let again = engine::decode_text(&encoded);
    assert_eq!(again.as_ref().ok(), Some(&packet), "{text:?} -> {encoded:?}");
    // Only an OPEN's JSON may be rewritten (spacing, escapes); every
    // other packet goes out as it came in.
    if !matches!(packet, EnginePacket::Open(_)) {
        assert_eq!(encoded, text);
    }
});
