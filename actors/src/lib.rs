//! Realtime actors.
pub mod bridge;
pub mod codec;
pub mod listener;
mod live;
pub mod registry;
pub mod session;
pub mod supervisor;
pub mod writer;
mod ws;

pub use listener::serve;
pub use session::{
    AckReply, AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, EncodedPacket, Event,
    SendError, SessionHandle, SessionId, SocketApp, SocketConfig,
};
