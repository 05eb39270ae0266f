//! Aurum's data layer: the diesel schema, the models and the queries on them,
//! the signed cursor codec and the connection pool.
//!
//! Query functions take a connection so callers choose where it comes from
//! (the pool, a transaction, a test database); nothing here reads globals.

pub mod cursor;
pub mod ids;
pub mod json_time;
pub mod migrations;
pub mod models;
pub mod pg_time;
pub mod pool;
mod raw;
#[rustfmt::skip]
pub mod schema;

pub use diesel_async::AsyncPgConnection;
