//! Identifier newtypes, so a profile id cannot be passed where a
//! conversation id is expected.

use serde::{Deserialize, Serialize};

/// A member's user id, which is also their profile's id (the JWT `sub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl UserId {
    /// Parses a JWT `sub` or a path segment: a positive decimal integer.
    pub fn parse(text: &str) -> Option<Self> {
        match text.parse::<i64>() {
            Ok(id) if id > 0 => Some(Self(id)),
            _ => None,
        }
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A conversation's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub i64);

/// A message's id: also its place in the stream of each member of its
/// conversation (ids commit in order, see `models::messages`), which is
/// what a client's `since` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub i64);
