//! Aurum's integration tests, linked into one binary. Every test starts the
//! real server in-process on a real port, against its own PostgreSQL
//! database cloned from a migrated template, so tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod abuse;
mod auth;
mod bridge;
mod bridge_cluster;
mod cli;
mod conversations;
mod delivery;
mod deploy;
mod drain;
mod e2e;
mod e2e_python;
mod explain;
mod faults;
mod hardening_rest;
mod hardening_socket;
mod messages;
mod metrics;
mod migrations;
mod openapi;
mod pool;
mod profiles_admin;
mod profiles_batch;
mod profiles_own;
mod profiles_scroll;
mod realtime;
mod replay;
mod schema_file;
mod storm;
mod supervisor;
mod traces;
mod web;
mod writer;
