pub mod app;
pub mod db;

pub use app::TestApp;
pub use db::TestDb;
