//! Property tests: whatever the encoders write, the decoders read back
//! unchanged, and no input whatsoever makes a decoder panic.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Map, Number, Value, json};

use crate::codec::binary::{self, DEFAULT_MAX_ATTACHMENTS};
use crate::codec::engine::{self, EnginePacket, Frame, OpenPayload};
use crate::codec::socket::{self, PacketKind, SocketPacket};
use crate::codec::{Assembly, BinaryAssembler, BinaryPacket};

fn config() -> ProptestConfig {
    // No regression files: they would land outside the codec's directory.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(2000)
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Any finite double: JSON has no NaN or infinities.
        any::<f64>().prop_filter_map("not finite", |x| Number::from_f64(x).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..5).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(any::<String>(), json_value(), 0..4).prop_map(|map| map.into_iter().collect())
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![Just(socket::MAIN_NAMESPACE.to_owned()), "/[^,]{0,12}"]
}

fn args() -> impl Strategy<Value = Vec<Value>> {
    vec(json_value(), 0..4)
}

fn into_binary(mut packet: SocketPacket, kind: PacketKind, attachments: usize) -> SocketPacket {
    packet.kind = kind;
    packet.attachments = attachments;
    packet
}

/// Any well-formed packet. Binary ones get arbitrary attachment counts: the
/// packet codec leaves placeholders to the assembler.
fn socket_packet() -> impl Strategy<Value = SocketPacket> {
    prop_oneof![
        (namespace(), option::of(json_object())).prop_map(|(nsp, auth)| SocketPacket::connect(nsp, auth)),
        (namespace(), any::<String>()).prop_map(|(nsp, sid)| SocketPacket::connect_ok(nsp, sid)),
        namespace().prop_map(SocketPacket::disconnect),
        (namespace(), any::<String>(), args(), option::of(any::<u64>()))
            .prop_map(|(nsp, name, args, id)| SocketPacket::event(nsp, name, args, id)),
        (namespace(), any::<u64>(), args()).prop_map(|(nsp, id, args)| SocketPacket::ack(nsp, id, args)),
        (namespace(), any::<String>(), option::of(json_value()))
            .prop_map(|(nsp, message, data)| SocketPacket::connect_error(nsp, message, data)),
        (
            namespace(),
            any::<String>(),
            args(),
            option::of(any::<u64>()),
            any::<usize>()
        )
            .prop_map(|(nsp, name, args, id, count)| into_binary(
                SocketPacket::event(nsp, name, args, id),
                PacketKind::BinaryEvent,
                count
            )),
        (namespace(), any::<u64>(), args(), any::<usize>()).prop_map(|(nsp, id, args, count)| {
            into_binary(SocketPacket::ack(nsp, id, args), PacketKind::BinaryAck, count)
        }),
    ]
}

/// An outgoing binary event or ack whose placeholders sit at random places,
/// some of them nested in an object.
fn binary_packet() -> impl Strategy<Value = BinaryPacket> {
    let attachment = (vec(any::<u8>(), 0..8), any::<Index>(), any::<bool>());
    (
        namespace(),
        any::<String>(),
        args(),
        vec(attachment, 0..=4),
        option::of(any::<u64>()),
    )
        .prop_map(|(nsp, name, mut args, attachments, id)| {
            let mut buffers = Vec::with_capacity(attachments.len());
            for (num, (bytes, position, nested)) in attachments.into_iter().enumerate() {
                let marker = binary::placeholder(num);
                let marker = if nested { json!({ "file": marker }) } else { marker };
                args.insert(position.index(args.len() + 1), marker);
                buffers.push(bytes);
            }
            let packet = match id {
                Some(id) if name.len() % 2 == 0 => SocketPacket::ack(nsp, id, args),
                _ => SocketPacket::event(nsp, name, args, id),
            };
            BinaryPacket::new(packet, buffers).unwrap()
        })
}

/// Text made of the pieces the Socket.IO grammar is built from, so that
/// random input often gets deep into the decoder.
fn protocol_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        select(vec![
            "/",
            ",",
            "-",
            "[",
            "]",
            "{",
            "}",
            "\"",
            ":",
            " ",
            "\\",
            "\\u",
            "/admin,",
            "_placeholder",
            "num",
            "true",
            "null",
            "é",
            "😀",
            "\u{0}",
            r#"{"_placeholder":true,"num":"#,
        ])
        .prop_map(str::to_owned),
        "[0-6]",
        "[0-9]{1,25}",
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// Runs `text` through everything a server does with a received message:
/// decode, assemble binary packets, resolve placeholders. Also checks that an
/// accepted packet re-encodes to text that decodes to the same packet.
fn exercise_socket_decoder(text: &str) {
    let Ok(packet) = socket::decode(text) else {
        return;
    };
    assert_eq!(socket::decode(&socket::encode(&packet)).unwrap(), packet);
    if !packet.kind.is_binary() {
        return;
    }
    let Ok(mut assembly) = BinaryAssembler::start(packet, DEFAULT_MAX_ATTACHMENTS) else {
        return;
    };
    loop {
        match assembly {
            Assembly::Pending(assembler) => assembly = assembler.push(vec![0xab]),
            Assembly::Complete(complete) => {
                for arg in complete.packet().args() {
                    let _ = complete.attachment_for(arg);
                }
                return;
            }
        }
    }
}

/// Byte offsets of every char boundary of `text`, its end included.
fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(offset, _)| offset)
        .chain([text.len()])
        .collect()
}

/// An owned mirror of the text [`EnginePacket`]s, since those borrow.
#[derive(Debug, Clone)]
enum EngineCase {
    Open(OpenPayload),
    Close,
    Ping(Option<String>),
    Pong(Option<String>),
    Message(String),
    Upgrade,
    Noop,
}

impl EngineCase {
    fn packet(&self) -> EnginePacket<'_> {
        match self {
            Self::Open(open) => EnginePacket::Open(open.clone()),
            Self::Close => EnginePacket::Close,
            Self::Ping(data) => EnginePacket::Ping(data.as_deref()),
            Self::Pong(data) => EnginePacket::Pong(data.as_deref()),
            Self::Message(text) => EnginePacket::Message(text),
            Self::Upgrade => EnginePacket::Upgrade,
            Self::Noop => EnginePacket::Noop,
        }
    }
}

fn engine_case() -> impl Strategy<Value = EngineCase> {
    let open = (
        any::<String>(),
        vec(any::<String>(), 0..3),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(sid, upgrades, ping_interval, ping_timeout, max_payload)| OpenPayload {
                sid,
                upgrades,
                ping_interval,
                ping_timeout,
                max_payload,
            },
        );
    // The decoder reads an empty ping payload as `None`, so only generate
    // non-empty ones.
    let ping_data = || option::of("(?s).{1,16}");
    prop_oneof![
        open.prop_map(EngineCase::Open),
        Just(EngineCase::Close),
        ping_data().prop_map(EngineCase::Ping),
        ping_data().prop_map(EngineCase::Pong),
        any::<String>().prop_map(EngineCase::Message),
        protocol_soup().prop_map(EngineCase::Message),
        Just(EngineCase::Upgrade),
        Just(EngineCase::Noop),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn socket_packets_round_trip(packet in socket_packet()) {
        let text = socket::encode(&packet);
        prop_assert_eq!(socket::decode(&text).unwrap(), packet.clone());
        let frame = socket::encode_frame(&packet);
        prop_assert_eq!(engine::decode_text(&frame).unwrap(), EnginePacket::Message(&text));
    }

    #[test]
    fn typed_frames_are_the_value_frames(
        nsp in namespace(),
        name in any::<String>(),
        arg in json_value(),
        id in any::<u64>(),
    ) {
        let event = SocketPacket::event(nsp.clone(), name.clone(), vec![arg.clone()], None);
        prop_assert_eq!(socket::encode_event_frame(&nsp, &name, &arg).unwrap(), socket::encode_frame(&event));
        let ack = SocketPacket::ack(nsp.clone(), id, vec![arg.clone()]);
        prop_assert_eq!(socket::encode_ack_frame(&nsp, id, &arg).unwrap(), socket::encode_frame(&ack));
    }

    #[test]
    fn binary_packets_round_trip(packet in binary_packet()) {
        let frame = packet.encode_frame();
        let EnginePacket::Message(text) = engine::decode_text(&frame).unwrap() else {
            panic!("{frame:?} is not a MESSAGE");
        };
        let header = socket::decode(text).unwrap();
        let mut assembly = BinaryAssembler::start(header, DEFAULT_MAX_ATTACHMENTS).unwrap();
        for bytes in packet.attachments() {
            let EnginePacket::BinaryMessage(bytes) = engine::decode_binary(bytes) else {
                panic!("binary frame not read as a binary MESSAGE");
            };
            assembly = match assembly {
                Assembly::Pending(assembler) => assembler.push(bytes.to_vec()),
                Assembly::Complete(early) => panic!("completed early: {early:?}"),
            };
        }
        let Assembly::Complete(received) = assembly else {
            panic!("attachments missing");
        };
        prop_assert_eq!(received, packet);
    }

    #[test]
    fn socket_decoder_survives_any_string(text in any::<String>()) {
        exercise_socket_decoder(&text);
    }

    #[test]
    fn socket_decoder_survives_protocol_soup(text in protocol_soup()) {
        exercise_socket_decoder(&text);
    }

    #[test]
    fn socket_decoder_survives_damaged_packets(
        packet in prop_oneof![socket_packet(), binary_packet().prop_map(|p| p.packet().clone())],
        at in any::<Index>(),
        inserted in any::<char>(),
    ) {
        let text = socket::encode(&packet);
        let cuts = boundaries(&text);
        let at = cuts[at.index(cuts.len())];
        exercise_socket_decoder(&text[..at]);
        exercise_socket_decoder(&text[at..]);
        let mut with_insert = text.clone();
        with_insert.insert(at, inserted);
        exercise_socket_decoder(&with_insert);
        let mut with_removal = text;
        if at < with_removal.len() {
            with_removal.remove(at);
            exercise_socket_decoder(&with_removal);
        }
    }

    #[test]
    fn engine_packets_round_trip(case in engine_case()) {
        let packet = case.packet();
        let Frame::Text(text) = engine::encode(&packet) else {
            panic!("text packet encoded as binary");
        };
        prop_assert_eq!(engine::decode_text(&text).unwrap(), packet);
    }

    #[test]
    fn engine_binary_frames_round_trip(bytes in vec(any::<u8>(), 0..64)) {
        let packet = engine::decode_binary(&bytes);
        prop_assert_eq!(engine::encode(&packet), Frame::Binary(&bytes));
    }

    #[test]
    fn engine_decoder_survives_any_string(text in any::<String>()) {
        let _ = engine::decode_text(&text);
    }

    #[test]
    fn engine_decoder_survives_typed_garbage(kind in "[0-9]", rest in protocol_soup()) {
        let text = kind + &rest;
        if let Ok(packet) = engine::decode_text(&text) {
            let Frame::Text(encoded) = engine::encode(&packet) else {
                panic!("text packet encoded as binary");
            };
            prop_assert_eq!(engine::decode_text(&encoded).unwrap(), packet);
        }
    }
}
