//! [`Router`]: where events for a user go.

use aurum_actors::registry::RegistryHandle;
use aurum_actors::session::{EncodedPacket, SessionId};
use serde_json::Value;

use super::CHAT_NAMESPACE;

/// Where events for a user go: this node's sessions now; the Redis bridge
/// plugs in here to reach other nodes.
#[derive(Clone)]
pub struct Router {
    registry: RegistryHandle,
}

impl Router {
    pub fn new(registry: RegistryHandle) -> Self {
        Self { registry }
    }

    /// Sends `name(payload)` to every socket of `user`, but `except`.
    pub fn emit_to_user(&self, user: i64, name: &str, payload: Value, except: Option<SessionId>) {
        self.deliver(
            user,
            EncodedPacket::event(CHAT_NAMESPACE, name, vec![payload]),
            except,
        );
    }

    /// Sends `name(payload)` to every socket of `other` and to `user`'s
    /// other sockets (all but `except`, the one that acted), encoded once.
    pub fn emit_to_pair(&self, name: &str, payload: Value, other: i64, user: i64, except: SessionId) {
        let packet = EncodedPacket::event(CHAT_NAMESPACE, name, vec![payload]);
        self.deliver(other, packet.clone(), None);
        self.deliver(user, packet, Some(except));
    }

    /// The one place events leave for a user's sockets: the cross-node
    /// bridge will publish here too.
    fn deliver(&self, user: i64, packet: EncodedPacket, except: Option<SessionId>) {
        self.registry.deliver(user, packet, except);
    }
}
