//! Realtime actors.
pub mod codec;
