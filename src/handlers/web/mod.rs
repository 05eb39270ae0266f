//! The web client's side of the server: the built page itself, what the
//! page needs to know to connect, and the development sign-in.

pub(crate) mod client_config;
pub(crate) mod dev_token;
mod static_files;

pub use client_config::get_client_config;
pub use dev_token::{create_dev_token, dev_only};
pub use static_files::serve_web_file;
