pub mod app;
pub mod db;
pub mod node;
pub mod otlp;
pub mod plans;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod relay;
pub mod report;
pub mod ws;

pub use app::TestApp;
pub use db::TestDb;
