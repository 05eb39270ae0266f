//! Engine.IO v4 frames, including the sample session of the Socket.IO spec.

use crate::codec::CodecError;
use crate::codec::engine::{self, EnginePacket, Frame, OpenPayload};

fn text(frame: Frame<'_>) -> String {
    match frame {
        Frame::Text(text) => text,
        Frame::Binary(bytes) => panic!("expected a text frame, got {bytes:?}"),
    }
}

/// Decodes `wire`, checks it equals `packet`, and that `packet` encodes back to `wire`.
fn assert_wire(wire: &str, packet: &EnginePacket<'_>) {
    assert_eq!(&engine::decode_text(wire).unwrap(), packet, "decoding {wire:?}");
    assert_eq!(text(engine::encode(packet)), wire, "encoding {packet:?}");
}

#[test]
fn open_handshake_from_the_spec() {
    let wire = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#;
    let open = OpenPayload {
        sid: "lv_VI97HAXpY6yYWAAAC".to_owned(),
        upgrades: vec!["websocket".to_owned()],
        ping_interval: 25_000,
        ping_timeout: 5_000,
        max_payload: 1_000_000,
    };
    assert_eq!(
        engine::decode_text(wire).unwrap(),
        EnginePacket::Open(open.clone())
    );
    // Key order is the JSON map's business; compare as JSON.
    let encoded = text(engine::encode(&EnginePacket::Open(open)));
    let (kind, json) = encoded.split_at(1);
    assert_eq!(kind, "0");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json).unwrap(),
        serde_json::from_str::<serde_json::Value>(&wire[1..]).unwrap()
    );
}

#[test]
fn open_ignores_unknown_keys() {
    let wire = r#"0{"sid":"a","upgrades":[],"pingInterval":1,"pingTimeout":2,"maxPayload":3,"x":true}"#;
    assert!(matches!(
        engine::decode_text(wire).unwrap(),
        EnginePacket::Open(OpenPayload { ping_timeout: 2, .. })
    ));
}

#[test]
fn bare_packets() {
    assert_wire("1", &EnginePacket::Close);
    assert_wire("2", &EnginePacket::Ping(None));
    assert_wire("3", &EnginePacket::Pong(None));
    assert_wire("5", &EnginePacket::Upgrade);
    assert_wire("6", &EnginePacket::Noop);
}

#[test]
fn upgrade_probe() {
    assert_wire("2probe", &EnginePacket::Ping(Some("probe")));
    assert_wire("3probe", &EnginePacket::Pong(Some("probe")));
}

#[test]
fn messages() {
    assert_wire("4", &EnginePacket::Message(""));
    assert_wire("4HelloWorld", &EnginePacket::Message("HelloWorld"));
    assert_wire(r#"42["hello"]"#, &EnginePacket::Message(r#"2["hello"]"#));
    assert_wire("4€€€😀", &EnginePacket::Message("€€€😀"));
}

#[test]
fn empty_ping_data_encodes_like_none() {
    assert_eq!(text(engine::encode(&EnginePacket::Ping(Some("")))), "2");
}

#[test]
fn binary_frames_are_raw_messages() {
    let bytes = [1_u8, 2, 3, 4];
    let packet = engine::decode_binary(&bytes);
    assert_eq!(packet, EnginePacket::BinaryMessage(&bytes));
    assert_eq!(engine::encode(&packet), Frame::Binary(&bytes));
    assert_eq!(engine::decode_binary(&[]), EnginePacket::BinaryMessage(&[]));
}

#[test]
fn rejects_empty_frame() {
    assert!(matches!(engine::decode_text(""), Err(CodecError::Empty)));
}

#[test]
fn rejects_unknown_types() {
    for (wire, found) in [("7", '7'), ("a4", 'a'), ("é", 'é'), ("😀2", '😀'), (" 4", ' ')] {
        assert!(
            matches!(engine::decode_text(wire), Err(CodecError::UnknownEngineType(c)) if c == found),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_data_on_bare_packets() {
    for wire in ["1x", "5probe", "6 "] {
        assert!(
            matches!(engine::decode_text(wire), Err(CodecError::TrailingData(_))),
            "{wire:?}"
        );
    }
}

#[test]
fn rejects_bad_handshakes() {
    for wire in [
        "0",
        "0{}",
        r#"0{"sid":"a"}"#,
        r#"0{"sid":1,"upgrades":[],"pingInterval":1,"pingTimeout":2,"maxPayload":3}"#,
        r#"0{"sid":"a","upgrades":[],"pingInterval":-1,"pingTimeout":2,"maxPayload":3}"#,
        r#"0{"sid":"a","upgrades":[],"pingInterval":1,"pingTimeout":2,"maxPayload":3}x"#,
    ] {
        assert!(
            matches!(engine::decode_text(wire), Err(CodecError::InvalidJson(_))),
            "{wire:?}"
        );
    }
}
