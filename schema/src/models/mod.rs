//! Rows, forms and the queries on each table.

pub mod audit_logs;
pub mod profiles;
