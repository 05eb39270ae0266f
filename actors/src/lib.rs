//! Realtime actors.
