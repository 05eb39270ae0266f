//! Rows, forms and the queries on each table.

pub mod audit_logs;
pub mod history;
pub mod messages;
pub mod profiles;
