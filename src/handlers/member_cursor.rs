//! What the scroll and conversation cursors share: each is signed for one
//! endpoint and issued to one member, and refused anywhere else.

use aurum_schema::cursor::CursorCodec;
use aurum_schema::ids::UserId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A pagination cursor issued to one member for one endpoint.
///
/// Public with its decoding, which needs no request, so the fuzz target
/// (fuzz/) can drive the decoding the handlers do.
pub trait MemberCursor: Serialize + DeserializeOwned {
    /// The endpoint the signature covers.
    const KIND: &'static str;

    /// The member the cursor was issued to.
    fn viewer(&self) -> UserId;

    /// The cursor as the next page's link carries it.
    fn encode(&self, cursors: &CursorCodec) -> String {
        cursors.encode(Self::KIND, self)
    }

    /// The cursor `text` encodes, if it is one `cursors` signed for this
    /// endpoint and for `viewer`.
    ///
    /// # Errors
    ///
    /// `invalid_cursor` (400) for anything else.
    fn decode(cursors: &CursorCodec, viewer: UserId, text: &str) -> Result<Self, ApiError> {
        let invalid =
            || ApiError::bad_request("invalid_cursor", "the cursor is invalid; start again without one");
        let cursor: Self = cursors.decode(Self::KIND, text).map_err(|_| invalid())?;
        // A cursor walks one member's pages, with what that member may see:
        // another member's would show them that.
        if cursor.viewer() != viewer {
            return Err(invalid());
        }
        Ok(cursor)
    }
}
