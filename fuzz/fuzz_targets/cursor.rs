//! The pagination cursors of GET /api/v1/matching/profiles/scroll and
//! GET /api/v1/conversations, decoded as their handlers decode them.
//!
//! The first byte picks the endpoint and what the rest is:
//! * bit 0: scroll (0) or conversations (1) cursor;
//! * bit 1: the rest is a cursor as a client sends it (0), or the JSON
//!   inside one (1), signed here with the server's key, so the fuzzer
//!   explores what lies past the signature check too.
//!
//! Checked: decoding never panics; a cursor that decodes re-encodes to one
//! that decodes to the same, is refused to any other viewer and under any
//! other key; a cursor for one endpoint is refused by the other.
#![no_main]

use aurum::handlers::MemberCursor as _;
use aurum::handlers::conversations::ListCursor;
use aurum::handlers::profiles::ScrollCursor;
use aurum_schema::cursor::CursorCodec;
use aurum_schema::ids::UserId;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

/// The viewer the seeds' cursors were issued to.
const VIEWER: UserId = UserId(1);

thread_local! {
    static KEYS: (CursorCodec, CursorCodec) = (CursorCodec::derive(b"fuzz secret"), CursorCodec::derive(b"another secret"));
}

/// The cursor the handler would be given: `rest` itself, or `rest` as the
/// JSON of a cursor signed for `kind`'s endpoint.
fn cursor_text(codec: &CursorCodec, kind: &str, signed: bool, rest: &str) -> Option<String> {
    if !signed {
        return Some(rest.to_owned());
    }
    // The raw JSON goes into the cursor byte for byte.
    let body = RawValue::from_string(rest.to_owned()).ok()?;
    Some(codec.encode(kind, &body))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let conversations = mode & 1 != 0;
    let signed = mode & 2 != 0;
    KEYS.with(|(codec, other_key)| {
        let kind = if conversations {
            "conversations.list"
        } else {
            "profiles.scroll"
        };
        let Some(text) = cursor_text(codec, kind, signed, rest) else {
            return;
        };
        let stranger = UserId(VIEWER.0.wrapping_add(1));
        if conversations {
            let Ok(cursor) = ListCursor::decode(codec, VIEWER, &text) else {
                return;
            };
            let again = cursor.encode(codec);
            assert_eq!(
                ListCursor::decode(codec, VIEWER, &again).ok(),
                Some(cursor.clone())
            );
            assert!(ListCursor::decode(codec, stranger, &text).is_err());
            assert!(ListCursor::decode(other_key, VIEWER, &text).is_err());
            assert!(ScrollCursor::decode(codec, VIEWER, &text).is_err());
        } else {
            let Ok(cursor) = ScrollCursor::decode(codec, VIEWER, &text) else {
                return;
            };
            let again = cursor.encode(codec);
            assert_eq!(
                ScrollCursor::decode(codec, VIEWER, &again).ok(),
                Some(cursor.clone())
            );
            assert!(ScrollCursor::decode(codec, stranger, &text).is_err());
            assert!(ScrollCursor::decode(other_key, VIEWER, &text).is_err());
            assert!(ListCursor::decode(codec, VIEWER, &text).is_err());
        }
    });
});
