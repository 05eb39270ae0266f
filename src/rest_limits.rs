//! Per-user rate limits on the REST endpoints a client can call in a loop
//! (`/matching/profiles/scroll` and `/batch`): a token bucket per user id
//! and endpoint, shared by the node's HTTP workers. A bucket that has
//! refilled is forgotten, so memory follows the users active in the last
//! few seconds, not every user ever seen.
//!
//! The socket side's per-user budgets (`realtime::rate`) live as long as a
//! user's sockets; a REST caller holds nothing between requests, so these
//! are the listener's keyed buckets (`aurum_actors::limits::KeyedRate`).

use std::time::Instant;

use aurum_actors::limits::{KeyedRate, Rate};
use aurum_schema::ids::UserId;

use crate::config::Config;
use crate::error::ApiError;

/// An endpoint with a budget of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Scroll,
    Batch,
}

/// Every user's REST budgets on this node; `None` for a limit turned off.
pub struct RestLimits {
    scroll: Option<KeyedRate<i64>>,
    batch: Option<KeyedRate<i64>>,
}

impl RestLimits {
    pub fn new(config: &Config) -> Self {
        Self {
            scroll: KeyedRate::new(Rate {
                per_second: config.scroll_rate,
                burst: config.scroll_burst,
            }),
            batch: KeyedRate::new(Rate {
                per_second: config.batch_rate,
                burst: config.batch_burst,
            }),
        }
    }

    /// Takes one request of `user` at `endpoint`, or refuses it with 429
    /// and the seconds until the next would be taken.
    pub fn take(&self, endpoint: Endpoint, user: UserId) -> Result<(), ApiError> {
        let (bucket, name) = match endpoint {
            Endpoint::Scroll => (&self.scroll, "scroll"),
            Endpoint::Batch => (&self.batch, "batch"),
        };
        let Some(bucket) = bucket else {
            return Ok(());
        };
        bucket.try_take(user.0, Instant::now()).map_err(|wait| {
            metrics::counter!("rest_rate_limited_total", "endpoint" => name).increment(1);
            ApiError::rate_limited(
                format!("too many {name} requests; try again in {} s", wait.as_secs() + 1),
                wait,
            )
        })
    }
}

impl std::fmt::Debug for RestLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestLimits")
            .field("scroll", &self.scroll.is_some())
            .field("batch", &self.batch.is_some())
            .finish()
    }
}
