//! Opaque, signed pagination cursors.
//!
//! A cursor is `base64url(json) "." base64url(hmac)`: the JSON carries the
//! last sort key, the filters and the viewer it was issued to; the HMAC-SHA256
//! tag covers the cursor's kind and the JSON, so a cursor that was edited,
//! issued for another endpoint or by another deployment's key is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Cursors longer than this are refused before any decoding work.
const MAX_CURSOR_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor is malformed")]
    Malformed,
    #[error("cursor signature does not match")]
    BadSignature,
}

/// Signs and verifies cursors with one key.
#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec { key: <redacted> }")
    }
}

impl CursorCodec {
    /// Derives the cursor key from a master secret, so cursors and tokens
    /// never share a key even when configured from one secret.
    pub fn derive(master_secret: &[u8]) -> Self {
        let key = Self::mac(master_secret, b"aurum cursor key v1", b"").to_vec();
        Self { key }
    }

    /// Encodes `payload` as a cursor of `kind` (e.g. "profiles").
    pub fn encode<T: Serialize>(&self, kind: &str, payload: &T) -> String {
        // Serializing plain data structs cannot fail; an empty body would be
        // refused on the way back in, never trusted.
        let json = serde_json::to_vec(payload).unwrap_or_default();
        let tag = Self::mac(&self.key, kind.as_bytes(), &json);
        let mut out = URL_SAFE_NO_PAD.encode(&json);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Verifies and decodes a cursor of `kind`.
    pub fn decode<T: DeserializeOwned>(&self, kind: &str, cursor: &str) -> Result<T, CursorError> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let (body, tag) = cursor.split_once('.').ok_or(CursorError::Malformed)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| CursorError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| CursorError::Malformed)?;
        let mut mac = Self::keyed(&self.key, kind.as_bytes());
        mac.update(&json);
        // Constant-time comparison: the tag must not be guessable byte by byte.
        mac.verify_slice(&tag).map_err(|_| CursorError::BadSignature)?;
        serde_json::from_slice(&json).map_err(|_| CursorError::Malformed)
    }

    fn keyed(key: &[u8], kind: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        // Length-prefix the kind so ("ab", "c...") and ("a", "bc...") differ.
        mac.update(&(kind.len() as u64).to_be_bytes());
        mac.update(kind);
        mac
    }

    fn mac(key: &[u8], kind: &[u8], body: &[u8]) -> [u8; 32] {
        let mut mac = Self::keyed(key, kind);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Key {
        id: i64,
    }

    #[test]
    fn round_trips_and_refuses_tampering() {
        let codec = CursorCodec::derive(b"secret");
        let cursor = codec.encode("profiles", &Key { id: 7 });
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_eq!(codec.decode::<Key>("profiles", &cursor).unwrap(), Key { id: 7 });

        let other_kind = codec.decode::<Key>("messages", &cursor);
        assert_eq!(other_kind.unwrap_err(), CursorError::BadSignature);
        let foreign = CursorCodec::derive(b"other").decode::<Key>("profiles", &cursor);
        assert_eq!(foreign.unwrap_err(), CursorError::BadSignature);

        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"id":8}"#);
        let tag = cursor.split_once('.').unwrap().1;
        let forged = format!("{forged_body}.{tag}");
        assert_eq!(
            codec.decode::<Key>("profiles", &forged).unwrap_err(),
            CursorError::BadSignature
        );

        let truncated = &cursor[..cursor.len() - 3];
        assert!(codec.decode::<Key>("profiles", truncated).is_err());
        assert_eq!(
            codec.decode::<Key>("profiles", "not a cursor").unwrap_err(),
            CursorError::Malformed
        );
        assert_eq!(
            codec.decode::<Key>("profiles", "").unwrap_err(),
            CursorError::Malformed
        );
    }
}
