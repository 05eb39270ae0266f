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
/// The WebSocket frame reader, for the fuzz targets (fuzz/) to drive with
/// bytes from memory; a serving build keeps it private.
#[cfg(feature = "fuzzing")]
pub use ws::{Incoming, ReadError, ReadySource, WsReader};
