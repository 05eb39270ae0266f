//! What every handler shares: built once before the HTTP server starts.

use std::sync::Arc;

use aurum_schema::cursor::CursorCodec;
use aurum_schema::pool::{self, DbPool};

use crate::auth::JwtKeys;
use crate::config::{Config, ConfigError};

#[derive(Clone)]
pub struct AppState {
    pub db: DbPool,
    pub jwt: JwtKeys,
    pub cursors: CursorCodec,
    pub config: Arc<Config>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let secret = config.jwt_secret()?.as_bytes().to_vec();
        Ok(Self {
            db: pool::build(&config.database_url, &config.pool_settings()),
            jwt: JwtKeys::new(&secret),
            cursors: CursorCodec::derive(&secret),
            config: Arc::new(config),
        })
    }
}
