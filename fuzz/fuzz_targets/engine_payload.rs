//! HTTP long-polling bodies: any body splits into packets or is an error;
//! what it decodes to is never more bytes than the body; the packets built
//! back into a body with the server's own writers decode to the same.
#![no_main]

use aurum_actors::codec::engine::{self, PayloadPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packets) = engine::decode_payload(body) else {
        return;
    };
    let decoded: usize = packets
        .iter()
        .map(|packet| match packet {
            PayloadPacket::Text(text) => text.len(),
            PayloadPacket::Binary(bytes) => bytes.len(),
        })
        .sum();
    assert!(
        decoded <= body.len(),
        "{decoded} bytes from a {}-byte body",
        body.len()
    );

    let mut rebuilt = String::new();
    for packet in &packets {
        match packet {
            PayloadPacket::Text(text) => {
                // As the polling transport does with each text packet.
                let _ = engine::decode_text(text);
                engine::push_payload_text(&mut rebuilt, text);
            }
            PayloadPacket::Binary(bytes) => engine::push_payload_binary(&mut rebuilt, bytes),
        }
    }
    let again = engine::decode_payload(&rebuilt);
    assert_eq!(again.as_ref().ok(), Some(&packets), "{body:?} -> {rebuilt:?}");
});
