//! [`Router`]: where events for a user go.

use aurum_actors::bridge::BridgeHandle;
use aurum_actors::registry::RegistryHandle;
use aurum_actors::session::{EncodedPacket, PreparedAck, SessionId};
use aurum_schema::models::messages::ChatMessage;
use serde_json::Value;

use super::CHAT_NAMESPACE;

/// Where events for a user go: this node's sessions, and with a Redis
/// bridge, the user's sockets on other nodes.
#[derive(Clone)]
pub struct Router {
    registry: RegistryHandle,
    bridge: Option<BridgeHandle>,
}

impl Router {
    pub fn new(registry: RegistryHandle, bridge: Option<BridgeHandle>) -> Self {
        Self { registry, bridge }
    }

    pub fn bridge(&self) -> Option<&BridgeHandle> {
        self.bridge.as_ref()
    }

    /// Sends `name(payload)` to every socket of `user`, but `except`, as
    /// a notice a socket that falls behind goes without (typing,
    /// presence): a member with thousands of partners coming online at
    /// once must not be closed as a slow consumer for it.
    pub fn notify_user(&self, user: i64, name: &str, payload: Value, except: Option<SessionId>) {
        self.deliver(
            user,
            EncodedPacket::event(CHAT_NAMESPACE, name, vec![payload]).droppable(),
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

    /// A committed message: `new_message` (`packet`, positioned at its id)
    /// to the recipient's sockets and the sender's others, and the ack to
    /// the socket that sent it, each through its user's shard so that it
    /// keeps its place in that user's stream. Called in commit order.
    pub fn deliver_committed(
        &self,
        message: &ChatMessage,
        packet: EncodedPacket,
        origin: SessionId,
        ack: Option<PreparedAck>,
    ) {
        self.deliver(message.recipient_id, packet.clone(), None);
        if let Some(bridge) = &self.bridge {
            bridge.publish(message.sender_id, &packet, Some(origin));
        }
        match ack {
            Some(ack) => {
                let sent = self
                    .registry
                    .deliver_with_ack(message.sender_id, packet, origin, ack);
                if let Err(error) = sent {
                    tracing::warn!(%error, user = message.sender_id, id = message.id, "delivery dropped");
                }
            }
            None => self.deliver_here(message.sender_id, packet, Some(origin)),
        }
    }

    /// The one place events leave for a user's sockets: the cross-node
    /// bridge will publish here too. A delivery the node cannot take is
    /// logged; the member recovers it through `since` or the history.
    fn deliver(&self, user: i64, packet: EncodedPacket, except: Option<SessionId>) {
        if let Some(bridge) = &self.bridge {
            bridge.publish(user, &packet, except);
        }
        self.deliver_here(user, packet, except);
    }

    fn deliver_here(&self, user: i64, packet: EncodedPacket, except: Option<SessionId>) {
        if let Err(error) = self.registry.deliver(user, packet, except) {
            tracing::warn!(%error, user, "delivery dropped");
        }
    }
}
