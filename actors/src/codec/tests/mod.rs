//! Tests of the codec through its public API: the protocol specs' examples,
//! rejected inputs, and property tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod engine;
mod props;
mod socket;
