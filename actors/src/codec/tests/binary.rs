//! Binary attachments: assembling incoming ones and framing outgoing ones.

use serde_json::json;

use crate::codec::binary::{self, DEFAULT_MAX_ATTACHMENTS};
use crate::codec::engine::{self, EnginePacket};
use crate::codec::socket::{self, PacketKind, SocketPacket};
use crate::codec::{Assembly, BinaryAssembler, BinaryPacket, CodecError};

fn start(wire: &str) -> Result<Assembly, CodecError> {
    BinaryAssembler::start(socket::decode(wire).unwrap(), DEFAULT_MAX_ATTACHMENTS)
}

fn pending(assembly: Assembly) -> BinaryAssembler {
    match assembly {
        Assembly::Pending(assembler) => assembler,
        Assembly::Complete(packet) => panic!("completed early: {packet:?}"),
    }
}

fn complete(assembly: Assembly) -> BinaryPacket {
    match assembly {
        Assembly::Complete(packet) => packet,
        Assembly::Pending(assembler) => panic!("still pending: {assembler:?}"),
    }
}

#[test]
fn assembles_the_spec_example() {
    let wire = r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let assembler = pending(start(wire).unwrap());
    assert_eq!(assembler.remaining(), 2);
    let assembler = pending(assembler.push(vec![1, 2]));
    assert_eq!(assembler.remaining(), 1);
    let packet = complete(assembler.push(vec![3, 4]));

    assert_eq!(packet.attachments(), [vec![1, 2], vec![3, 4]]);
    let inner = packet.packet();
    assert_eq!(inner.nsp, "/admin");
    assert_eq!(inner.event_name(), Some("baz"));
    let args = inner.args();
    assert_eq!(packet.attachment_for(&args[0]), Some(&[1_u8, 2][..]));
    assert_eq!(packet.attachment_for(&args[1]), Some(&[3_u8, 4][..]));
    assert_eq!(packet.attachment_for(&json!("baz")), None);
}

#[test]
fn attachments_are_matched_by_number_not_position() {
    let wire = r#"52-["a",{"x":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]"#;
    let assembler = pending(start(wire).unwrap());
    let assembler = pending(assembler.push(b"zero".to_vec()));
    let packet = complete(assembler.push(b"one".to_vec()));
    let args = packet.packet().args();
    assert_eq!(packet.attachment_for(&args[0]["x"][0]), Some(&b"one"[..]));
    assert_eq!(packet.attachment_for(&args[1]), Some(&b"zero"[..]));
}

#[test]
fn no_attachments_complete_at_once() {
    let packet = complete(start(r#"50-["a"]"#).unwrap());
    assert!(packet.attachments().is_empty());
}

#[test]
fn binary_ack_from_the_sample_session() {
    let frame = r#"461-/admin,1[{"_placeholder":true,"num":0}]"#;
    let EnginePacket::Message(text) = engine::decode_text(frame).unwrap() else {
        panic!("not a MESSAGE");
    };
    let assembler = pending(start(text).unwrap());
    let EnginePacket::BinaryMessage(bytes) = engine::decode_binary(&[0xff, 0]) else {
        panic!("not a binary MESSAGE");
    };
    let packet = complete(assembler.push(bytes.to_vec()));
    assert_eq!(packet.packet().kind, PacketKind::BinaryAck);
    assert_eq!(packet.packet().id, Some(1));
    assert_eq!(packet.attachment_for(&packet.packet().args()[0]), Some(bytes));
}

#[test]
fn rejects_plain_packets() {
    let plain = SocketPacket::event("/", "a", vec![], None);
    assert!(matches!(
        BinaryAssembler::start(plain, DEFAULT_MAX_ATTACHMENTS),
        Err(CodecError::AttachmentsNotAllowed(PacketKind::Event))
    ));
}

#[test]
fn rejects_too_many_attachments() {
    let args: Vec<_> = (0..11).map(binary::placeholder).collect();
    let mut packet = SocketPacket::event("/", "many", args, None);
    packet.kind = PacketKind::BinaryEvent;
    packet.attachments = 11;
    let wire = socket::encode(&packet);
    assert!(matches!(
        start(&wire),
        Err(CodecError::TooManyAttachments { count: 11, max: 10 })
    ));
    assert!(matches!(
        BinaryAssembler::start(socket::decode(&wire).unwrap(), 11),
        Ok(Assembly::Pending(_))
    ));
}

#[test]
fn huge_announced_count_is_rejected_before_allocating() {
    let wire = format!(r#"5{}-["a"]"#, usize::MAX);
    assert!(matches!(
        BinaryAssembler::start(socket::decode(&wire).unwrap(), usize::MAX),
        Err(CodecError::BadPlaceholder(_))
    ));
}

#[test]
fn rejects_bad_placeholders() {
    for wire in [
        // Fewer placeholders than attachments.
        r#"52-["a",{"_placeholder":true,"num":0}]"#,
        r#"51-["a"]"#,
        // More placeholders than attachments.
        r#"51-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#,
        r#"50-["a",{"_placeholder":true,"num":0}]"#,
        // Out of range.
        r#"51-["a",{"_placeholder":true,"num":1}]"#,
        // Duplicated, leaving one attachment unused.
        r#"52-["a",{"_placeholder":true,"num":1},{"_placeholder":true,"num":1}]"#,
        // Malformed numbers.
        r#"51-["a",{"_placeholder":true}]"#,
        r#"51-["a",{"_placeholder":true,"num":-1}]"#,
        r#"51-["a",{"_placeholder":true,"num":0.5}]"#,
        r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
        r#"51-["a",{"_placeholder":true,"num":18446744073709551616}]"#,
    ] {
        assert!(
            matches!(start(wire), Err(CodecError::BadPlaceholder(_))),
            "{wire:?}"
        );
    }
}

#[test]
fn objects_that_are_not_placeholders_are_data() {
    let wire = r#"51-1["a",{"_placeholder":false,"num":5},{"_placeholder":true,"num":0,"extra":1}]"#;
    let packet = complete(pending(start(wire).unwrap()).push(vec![9]));
    let args = packet.packet().args();
    assert_eq!(packet.attachment_for(&args[0]), None);
    assert_eq!(packet.attachment_for(&args[1]), Some(&[9_u8][..]));
}

#[test]
fn outgoing_event_becomes_binary() {
    let event = SocketPacket::event(
        "/",
        "file",
        vec![json!("name.bin"), binary::placeholder(0)],
        Some(5),
    );
    let packet = BinaryPacket::new(event, vec![vec![1, 2, 3, 4]]).unwrap();
    assert_eq!(packet.packet().kind, PacketKind::BinaryEvent);
    assert_eq!(
        packet.encode_frame(),
        r#"451-5["file","name.bin",{"_placeholder":true,"num":0}]"#
    );
    let (header, attachments) = packet.into_parts();
    assert_eq!(header.attachments, 1);
    assert_eq!(attachments, [vec![1, 2, 3, 4]]);
}

#[test]
fn outgoing_ack_becomes_binary() {
    let ack = SocketPacket::ack("/admin", 1, vec![binary::placeholder(0)]);
    let packet = BinaryPacket::new(ack, vec![vec![0xff]]).unwrap();
    assert_eq!(
        packet.encode_frame(),
        r#"461-/admin,1[{"_placeholder":true,"num":0}]"#
    );
}

#[test]
fn echo_reuses_placeholders() {
    let wire = r#"51-3["echo",{"_placeholder":true,"num":0}]"#;
    let received = complete(pending(start(wire).unwrap()).push(vec![7, 7]));
    let (packet, attachments) = received.into_parts();
    let reply = SocketPacket::ack(&packet.nsp, 3, packet.args().to_vec());
    let reply = BinaryPacket::new(reply, attachments).unwrap();
    assert_eq!(reply.encode_frame(), r#"461-3[{"_placeholder":true,"num":0}]"#);
    assert_eq!(reply.attachments(), [vec![7, 7]]);
}

#[test]
fn outgoing_checks_placeholders() {
    let event = SocketPacket::event("/", "a", vec![binary::placeholder(1)], None);
    assert!(matches!(
        BinaryPacket::new(event, vec![vec![]]),
        Err(CodecError::BadPlaceholder(_))
    ));
    let event = SocketPacket::event("/", "a", vec![], None);
    assert!(matches!(
        BinaryPacket::new(event, vec![vec![]]),
        Err(CodecError::BadPlaceholder(_))
    ));
}

#[test]
fn outgoing_rejects_types_without_attachments() {
    assert!(matches!(
        BinaryPacket::new(SocketPacket::disconnect("/"), vec![]),
        Err(CodecError::AttachmentsNotAllowed(PacketKind::Disconnect))
    ));
}
