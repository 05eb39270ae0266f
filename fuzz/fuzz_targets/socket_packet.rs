//! Socket.IO packets, the text of an Engine.IO MESSAGE: any text decodes
//! or is an error; a decoded packet encodes to a text that decodes back to
//! it (alone and inside its frame); a binary one starts an assembly that
//! takes exactly the attachments it announced, within the limit.
#![no_main]

use aurum_actors::codec::binary::{Assembly, BinaryAssembler, DEFAULT_MAX_ATTACHMENTS};
use aurum_actors::codec::engine::{self, EnginePacket};
use aurum_actors::codec::socket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = socket::decode(text) else {
        return;
    };
    let encoded = socket::encode(&packet);
    let again = socket::decode(&encoded);
    assert_eq!(again.as_ref().ok(), Some(&packet), "{text:?} -> {encoded:?}");

    let frame = socket::encode_frame(&packet);
    assert_eq!(
        engine::decode_text(&frame).ok(),
        Some(EnginePacket::Message(encoded.as_str()))
    );

    // What the session reads off a packet.
    let _ = (packet.event_name(), packet.args());

    if !packet.kind.is_binary() {
        assert_eq!(packet.attachments, 0);
        return;
    }
    let announced = packet.attachments;
    let mut assembly = match BinaryAssembler::start(packet, DEFAULT_MAX_ATTACHMENTS) {
        Ok(assembly) => assembly,
        Err(_) => return,
    };
    assert!(announced <= DEFAULT_MAX_ATTACHMENTS);
    let mut pushed = 0;
    loop {
        match assembly {
            Assembly::Pending(assembler) => {
                assert_eq!(assembler.remaining(), announced - pushed);
                assembly = assembler.push(vec![pushed as u8]);
                pushed += 1;
            }
            Assembly::Complete(binary) => {
                assert_eq!(pushed, announced);
                assert_eq!(binary.attachments().len(), announced);
                for (num, bytes) in binary.attachments().iter().enumerate() {
                    let marker = aurum_actors::codec::binary::placeholder(num);
                    assert_eq!(binary.attachment_for(&marker), Some(bytes.as_slice()));
                }
                let frame = binary.encode_frame();
                assert!(frame.starts_with('4'));
                return;
            }
        }
    }
});
