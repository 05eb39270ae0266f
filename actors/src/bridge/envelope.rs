//! What crosses between nodes.

/// The envelope's version tag, first on its header line.
const ENVELOPE_TAG: &str = "a1";

/// What crosses between nodes: a header line, then the encoded packet.
///
/// `a1 <origin node> <user> <except session or -> <position or -> <flags> <traceparent or ->`,
/// flags `d` for a droppable notice (typing, presence), else `-`.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub node: &'a str,
    pub user: i64,
    /// The origin's socket to skip: an id of the origin node's, which
    /// means nothing on any other node.
    pub except: Option<u64>,
    pub position: Option<i64>,
    /// A notice a socket that falls behind goes without.
    pub droppable: bool,
    pub traceparent: Option<&'a str>,
    /// The Engine.IO frame, encoded once at the origin.
    pub text: &'a str,
}

impl<'a> Envelope<'a> {
    pub fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.text.len() + 96);
        let _ = write!(out, "{ENVELOPE_TAG} {} {} ", self.node, self.user);
        match self.except {
            Some(except) => {
                let _ = write!(out, "{except} ");
            }
            None => out.push_str("- "),
        }
        match self.position {
            Some(position) => {
                let _ = write!(out, "{position} ");
            }
            None => out.push_str("- "),
        }
        out.push_str(if self.droppable { "d " } else { "- " });
        out.push_str(self.traceparent.unwrap_or("-"));
        out.push('\n');
        out.push_str(self.text);
        out
    }

    /// Reads an envelope; `None` for anything malformed.
    pub fn decode(payload: &'a str) -> Option<Self> {
        let (header, text) = payload.split_once('\n')?;
        let mut fields = header.split(' ');
        if fields.next()? != ENVELOPE_TAG {
            return None;
        }
        let node = fields.next()?;
        let user = fields.next()?.parse().ok()?;
        let except = match fields.next()? {
            "-" => None,
            raw => Some(raw.parse().ok()?),
        };
        let position = match fields.next()? {
            "-" => None,
            raw => Some(raw.parse().ok()?),
        };
        let droppable = match fields.next()? {
            "d" => true,
            "-" => false,
            _ => return None,
        };
        let traceparent = match fields.next()? {
            "-" => None,
            value => Some(value),
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Self {
            node,
            user,
            except,
            position,
            droppable,
            traceparent,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let text = "42/chat,[\"new_message\",{\"message\":\"a b\\nc\"}]";
        for (except, position, droppable, traceparent) in [
            (None, None, false, None),
            (Some(7), Some(99), true, Some("00-abc-def-01")),
        ] {
            let envelope = Envelope {
                node: "node-1",
                user: 12,
                except,
                position,
                droppable,
                traceparent,
                text,
            };
            let encoded = envelope.encode();
            assert_eq!(Envelope::decode(&encoded), Some(envelope));
        }
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        for payload in [
            "",
            "a1 n 1 - - -",
            "b1 n 1 - - - -\nx",
            "a1 n x - - - -\nx",
            "a1 n 1 - - x -\nx",
            "a1 n 1 - - - - extra\nx",
        ] {
            assert_eq!(Envelope::decode(payload), None, "{payload:?}");
        }
    }
}
