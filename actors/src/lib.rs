//! Realtime actors.
pub mod bridge;
pub mod codec;
mod http;
pub mod limits;
pub mod listener;
mod live;
pub mod registry;
pub mod session;
mod sids;
pub mod supervisor;
pub mod trace;
pub mod writer;
mod ws;

pub use listener::serve;
pub use session::{
    AckReply, AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, EncodedPacket, Event,
    SendError, SessionHandle, SessionId, SocketApp, SocketConfig,
};
pub use sids::PollingSessions;
