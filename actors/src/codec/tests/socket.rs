//! Socket.IO v5 packets: the spec's encoding examples and rejected inputs.

use serde_json::{Value, json};

use crate::codec::engine::{self, EnginePacket};
use crate::codec::socket::{self, PacketKind, SocketPacket};
use crate::codec::{CodecError, binary};

fn packet(
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    data: Option<Value>,
    attachments: usize,
) -> SocketPacket {
    SocketPacket {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments,
    }
}

/// Decodes `wire`, checks it equals `expected`, and that `expected` encodes back to `wire`.
fn assert_wire(wire: &str, expected: &SocketPacket) {
    assert_eq!(&socket::decode(wire).unwrap(), expected, "decoding {wire:?}");
    assert_eq!(socket::encode(expected), wire, "encoding {expected:?}");
}

fn decode_err(wire: &str) -> CodecError {
    match socket::decode(wire) {
        Ok(packet) => panic!("{wire:?} decoded to {packet:?}"),
        Err(err) => err,
    }
}

#[test]
fn spec_connection_examples() {
    use PacketKind::{Connect, ConnectError};
    assert_wire("0", &packet(Connect, "/", None, None, 0));
    assert_wire(
        r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#,
        &packet(
            Connect,
            "/",
            None,
            Some(json!({"sid": "wZX3oN0bSVIhsaknAAAI"})),
            0,
        ),
    );
    assert_wire("0/admin,", &packet(Connect, "/admin", None, None, 0));
    assert_wire(
        r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
        &packet(
            Connect,
            "/admin",
            None,
            Some(json!({"sid": "oSO0OpakMV_3jnilAAAA"})),
            0,
        ),
    );
    assert_wire(
        r#"0/admin,{"token":"123"}"#,
        &packet(Connect, "/admin", None, Some(json!({"token": "123"})), 0),
    );
    assert_wire(
        r#"4{"message":"Not authorized"}"#,
        &packet(
            ConnectError,
            "/",
            None,
            Some(json!({"message": "Not authorized"})),
            0,
        ),
    );
}

#[test]
fn spec_data_examples() {
    use PacketKind::{BinaryEvent, Event};
    assert_wire(r#"2["foo"]"#, &packet(Event, "/", None, Some(json!(["foo"])), 0));
    assert_wire(
        r#"2["hello",1]"#,
        &packet(Event, "/", None, Some(json!(["hello", 1])), 0),
    );
    assert_wire(
        r#"2/admin,["bar"]"#,
        &packet(Event, "/admin", None, Some(json!(["bar"])), 0),
    );
    assert_wire(
        r#"51-["baz",{"_placeholder":true,"num":0}]"#,
        &packet(
            BinaryEvent,
            "/",
            None,
            Some(json!(["baz", {"_placeholder": true, "num": 0}])),
            1,
        ),
    );
    assert_wire(
        r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        &packet(
            BinaryEvent,
            "/admin",
            None,
            Some(json!(["baz", binary::placeholder(0), binary::placeholder(1)])),
            2,
        ),
    );
}

#[test]
fn spec_acknowledgement_examples() {
    use PacketKind::{Ack, BinaryAck, BinaryEvent, Event};
    assert_wire(
        r#"212["foo"]"#,
        &packet(Event, "/", Some(12), Some(json!(["foo"])), 0),
    );
    assert_wire("312[]", &packet(Ack, "/", Some(12), Some(json!([])), 0));
    assert_wire(
        r#"2/admin,13["foo"]"#,
        &packet(Event, "/admin", Some(13), Some(json!(["foo"])), 0),
    );
    assert_wire(
        r#"3/admin,13["bar"]"#,
        &packet(Ack, "/admin", Some(13), Some(json!(["bar"])), 0),
    );
    assert_wire(
        r#"2/admin,456["project:delete",123]"#,
        &packet(
            Event,
            "/admin",
            Some(456),
            Some(json!(["project:delete", 123])),
            0,
        ),
    );
    assert_wire(
        "3/admin,456[]",
        &packet(Ack, "/admin", Some(456), Some(json!([])), 0),
    );
    assert_wire(
        r#"51-14["foo",{"_placeholder":true,"num":0}]"#,
        &packet(
            BinaryEvent,
            "/",
            Some(14),
            Some(json!(["foo", binary::placeholder(0)])),
            1,
        ),
    );
    assert_wire(
        r#"314["bar"]"#,
        &packet(Ack, "/", Some(14), Some(json!(["bar"])), 0),
    );
    assert_wire(
        r#"215["foo"]"#,
        &packet(Event, "/", Some(15), Some(json!(["foo"])), 0),
    );
    assert_wire(
        r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
        &packet(
            BinaryAck,
            "/",
            Some(15),
            Some(json!(["bar", binary::placeholder(0)])),
            1,
        ),
    );
}

#[test]
fn spec_disconnection_examples() {
    assert_wire("1", &packet(PacketKind::Disconnect, "/", None, None, 0));
    assert_wire(
        "1/admin,",
        &packet(PacketKind::Disconnect, "/admin", None, None, 0),
    );
}

/// Frames of the spec's sample session, wrapped in Engine.IO MESSAGEs.
#[test]
fn spec_sample_session_frames() {
    let cases = [
        ("40", SocketPacket::connect("/", None)),
        ("40/admin,", SocketPacket::connect("/admin", None)),
        (
            r#"40/admin,{"sid":"-G5j-67EZFp-q59rADQM"}"#,
            SocketPacket::connect_ok("/admin", "-G5j-67EZFp-q59rADQM"),
        ),
        (
            r#"42["hey","Jude"]"#,
            SocketPacket::event("/", "hey", vec![json!("Jude")], None),
        ),
        (
            r#"42/admin,1["tellme"]"#,
            SocketPacket::event("/admin", "tellme", vec![], Some(1)),
        ),
        (
            r#"461-/admin,1[{"_placeholder":true,"num":0}]"#,
            packet(
                PacketKind::BinaryAck,
                "/admin",
                Some(1),
                Some(json!([binary::placeholder(0)])),
                1,
            ),
        ),
        (
            r#"451-["hello",{"_placeholder":true,"num":0}]"#,
            packet(
                PacketKind::BinaryEvent,
                "/",
                None,
                Some(json!(["hello", binary::placeholder(0)])),
                1,
            ),
        ),
    ];
    for (frame, expected) in cases {
        let EnginePacket::Message(text) = engine::decode_text(frame).unwrap() else {
            panic!("{frame:?} is not a MESSAGE");
        };
        assert_eq!(socket::decode(text).unwrap(), expected, "decoding {frame:?}");
        assert_eq!(socket::encode_frame(&expected), frame, "encoding {expected:?}");
    }
}

#[test]
fn constructors() {
    assert_eq!(
        SocketPacket::connect_ok("/", "abc"),
        packet(PacketKind::Connect, "/", None, Some(json!({"sid": "abc"})), 0)
    );
    assert_eq!(
        SocketPacket::connect_error("/chat", "Not authorized", Some(json!({"code": 4}))),
        packet(
            PacketKind::ConnectError,
            "/chat",
            None,
            Some(json!({"message": "Not authorized", "data": {"code": 4}})),
            0
        )
    );
    assert_eq!(
        socket::encode(&SocketPacket::connect_error("/", "nope", None)),
        r#"4{"message":"nope"}"#
    );
    assert_eq!(
        SocketPacket::disconnect("/chat"),
        packet(PacketKind::Disconnect, "/chat", None, None, 0)
    );
    assert_eq!(
        SocketPacket::event("/", "chat", vec![json!(1), json!({"a": null})], Some(7)),
        packet(
            PacketKind::Event,
            "/",
            Some(7),
            Some(json!(["chat", 1, {"a": null}])),
            0
        )
    );
    assert_eq!(
        SocketPacket::ack("/", 7, vec![json!("ok")]),
        packet(PacketKind::Ack, "/", Some(7), Some(json!(["ok"])), 0)
    );
    let auth = json!({"token": "123"}).as_object().cloned();
    assert_eq!(
        socket::encode(&SocketPacket::connect("/admin", auth)),
        r#"0/admin,{"token":"123"}"#
    );
}

#[test]
fn accessors() {
    let event = SocketPacket::event("/", "chat", vec![json!(1), json!("two")], None);
    assert_eq!(event.event_name(), Some("chat"));
    assert_eq!(event.args(), [json!(1), json!("two")]);

    let ack = SocketPacket::ack("/", 3, vec![json!(true)]);
    assert_eq!(ack.event_name(), None);
    assert_eq!(ack.args(), [json!(true)]);

    let connect = SocketPacket::connect_ok("/", "sid");
    assert_eq!(connect.event_name(), None);
    assert!(connect.args().is_empty());
}

#[test]
fn unicode_everywhere() {
    let event = SocketPacket::event(
        "/ünï€ode😀",
        "événement 😀",
        vec![json!("\u{0}\u{1f}\"\\\u{2028}"), json!({"clé": "値"})],
        Some(u64::MAX),
    );
    let wire = socket::encode(&event);
    assert_eq!(socket::decode(&wire).unwrap(), event);
}

#[test]
fn namespace_may_hold_digits_and_brackets() {
    let event = SocketPacket::event("/12[{-", "a", vec![], Some(3));
    assert_eq!(socket::encode(&event), r#"2/12[{-,3["a"]"#);
    assert_eq!(socket::decode(r#"2/12[{-,3["a"]"#).unwrap(), event);
}

#[test]
fn explicit_main_namespace_is_accepted() {
    assert_eq!(
        socket::decode(r#"2/,["a"]"#).unwrap(),
        SocketPacket::event("/", "a", vec![], None)
    );
}

#[test]
fn largest_ack_id() {
    let wire = format!(r#"2{}["a"]"#, u64::MAX);
    assert_eq!(socket::decode(&wire).unwrap().id, Some(u64::MAX));
}

#[test]
fn zero_attachments_are_accepted() {
    let decoded = socket::decode(r#"50-["a"]"#).unwrap();
    assert_eq!(decoded.kind, PacketKind::BinaryEvent);
    assert_eq!(decoded.attachments, 0);
}

#[test]
fn rejects_empty_packet() {
    assert!(matches!(decode_err(""), CodecError::Empty));
}

#[test]
fn rejects_unknown_types() {
    for (wire, found) in [("7", '7'), ("9[]", '9'), ("a", 'a'), ("é", 'é'), ("😀", '😀')] {
        assert!(
            matches!(decode_err(wire), CodecError::UnknownPacketType(c) if c == found),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_missing_attachment_count() {
    for wire in [r#"5["a"]"#, r#"5-["a"]"#, r#"51["a"]"#, "6", "6/admin,1[]", "61"] {
        assert!(
            matches!(decode_err(wire), CodecError::MissingAttachmentCount(_)),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_attachments_on_plain_packets() {
    for wire in [r#"21-["a"]"#, "31-1[]", "01-", "11-", r#"41-{"message":"x"}"#] {
        assert!(
            matches!(decode_err(wire), CodecError::AttachmentsNotAllowed(_)),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_huge_attachment_count() {
    assert!(matches!(
        decode_err(r#"5999999999999999999999999-["a"]"#),
        CodecError::BadAttachmentCount
    ));
}

#[test]
fn rejects_unterminated_namespace() {
    for wire in ["0/admin", "1/admin", r#"2/admin["a"]"#, "2/"] {
        assert!(
            matches!(decode_err(wire), CodecError::UnterminatedNamespace),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_ack_id_overflow() {
    let wire = format!(r#"2{}["a"]"#, u128::from(u64::MAX) + 1);
    assert!(matches!(decode_err(&wire), CodecError::AckIdOverflow));
}

#[test]
fn rejects_ack_id_where_not_allowed() {
    for wire in ["01", "0/admin,1{}", "11", "1/admin,12", r#"41{"message":"x"}"#] {
        assert!(
            matches!(decode_err(wire), CodecError::UnexpectedAckId(_)),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_ack_without_id() {
    for wire in ["3[]", "3/admin,[]", "61-[{\"_placeholder\":true,\"num\":0}]"] {
        assert!(
            matches!(decode_err(wire), CodecError::MissingAckId(_)),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_invalid_json() {
    for wire in [
        r#"2["a""#,
        r#"2["a"]]"#,
        r#"2["a"]x"#,
        r#"2["a"],"#,
        "2abc",
        "0{",
        r#"0{"a":1}{}"#,
        "3/admin,1[",
        r#"2["\ud800"]"#,
    ] {
        assert!(matches!(decode_err(wire), CodecError::InvalidJson(_)), "{wire:?}");
    }
}

#[test]
fn rejects_bad_payload_shapes() {
    let cases = [
        ("0[]", PacketKind::Connect),
        (r#"0"x""#, PacketKind::Connect),
        ("0null", PacketKind::Connect),
        ("1{}", PacketKind::Disconnect),
        ("1/admin,[]", PacketKind::Disconnect),
        ("2", PacketKind::Event),
        ("2[]", PacketKind::Event),
        ("2[1]", PacketKind::Event),
        (r#"2{"a":1}"#, PacketKind::Event),
        (r#"2"hello""#, PacketKind::Event),
        ("21", PacketKind::Event),
        ("31", PacketKind::Ack),
        ("31{}", PacketKind::Ack),
        ("4", PacketKind::ConnectError),
        (r#"4"Not authorized""#, PacketKind::ConnectError),
        ("4{}", PacketKind::ConnectError),
        (r#"4{"message":1}"#, PacketKind::ConnectError),
        ("50-[]", PacketKind::BinaryEvent),
        ("60-1{}", PacketKind::BinaryAck),
    ];
    for (wire, expected) in cases {
        assert!(
            matches!(decode_err(wire), CodecError::BadPayload { kind, .. } if kind == expected),
            "{wire:?}"
        );
    }
}

#[test]
fn error_messages_name_the_problem() {
    assert_eq!(
        decode_err("2[1]").to_string(),
        "bad EVENT payload: expected an array starting with the event name"
    );
    assert_eq!(
        decode_err("11").to_string(),
        "DISCONNECT packets cannot carry an ack id"
    );
}
