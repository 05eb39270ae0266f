//! Replay on CONNECT: every message after the client's `since`, in id
//! order, streamed at the pace the client reads it.
//!
//! The session holds live messages back while its replay runs (they are
//! committed before anyone delivers them, so the replay reads them from
//! the database) and drops, once live again, those the replay already sent:
//! the client gets one stream in id order, each id once. The replay waits
//! for room in the socket's outbound queue, which the socket's own write
//! completions free, and reads no more rows than there is room for, so a
//! replay holds at most one page of memory however long the backlog. A
//! fixed number of replays run at once per node; the others wait their turn
//! with their sockets open (they answer pings: the session is not blocked)
//! and their live messages held back at no cost.

use std::sync::Arc;

use aurum_actors::session::{EncodedPacket, SessionHandle};
use aurum_schema::ids::{MessageId, UserId};
use aurum_schema::models::messages::{self, ChatMessage};
use aurum_schema::pool::{DbConn, DbPool};
use serde_json::json;
use tokio::sync::Semaphore;

use super::CHAT_NAMESPACE;

/// How replays run on this node.
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// Replays streaming at once; the others wait.
    pub concurrency: usize,
    /// A backlog larger than this gets `resync_required` instead: the
    /// client pages the REST history.
    pub max_backlog: i64,
    /// Ids below `since` a replay reads again (0 on a single node). Between
    /// nodes, commit order does not survive the bus: a message committed on
    /// one node can reach a socket after a newer one committed on another,
    /// so a client's largest id may pass one it lacks. Reading a window
    /// below it again closes that gap; clients dedupe by id (DESIGN.md,
    /// "Delivery", the overlap design, on top of commit order per node).
    pub overlap: i64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            concurrency: 32,
            max_backlog: 10_000,
            overlap: 0,
        }
    }
}

/// Runs replays, a bounded number at once.
pub struct Replayer {
    db: DbPool,
    permits: Arc<Semaphore>,
    max_backlog: i64,
    overlap: i64,
}

/// Why a replay stopped before the end.
enum Stop {
    /// The session is gone: nothing to do.
    Gone,
    /// The database failed: the client is sent away to connect again.
    Failed,
}

impl Replayer {
    pub fn new(db: DbPool, settings: &ReplaySettings) -> Self {
        Self {
            db,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            max_backlog: settings.max_backlog.max(0),
            overlap: settings.overlap.max(0),
        }
    }

    /// Streams every message of `user`'s conversations after `since` to
    /// `session`, which must have begun its replay
    /// ([`SessionHandle::begin_replay`]).
    pub async fn run(&self, session: &SessionHandle, user: i64, since: i64) {
        // A closed semaphore cannot happen (it is never closed); treat it
        // as a stop all the same.
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        if !session.is_connected() {
            return;
        }
        match self.stream(session, user, since).await {
            Ok(()) | Err(Stop::Gone) => {}
            Err(Stop::Failed) => {
                let _ = session.emit(
                    CHAT_NAMESPACE,
                    "error",
                    vec![json!({
                        "code": "replay_failed",
                        "message": "missed messages could not be loaded; connecting again replays them",
                    })],
                );
                // Going live here would let the client's largest id pass
                // the gap; a new connection replays from its own `since`.
                session.reconnect();
            }
        }
    }

    async fn stream(&self, session: &SessionHandle, user: i64, since: i64) -> Result<(), Stop> {
        let gone = |_| Stop::Gone;
        let mut last = if since > 0 {
            since.saturating_sub(self.overlap).max(0)
        } else {
            0
        };
        let mut room = session.replay_page(Vec::new()).await.map_err(gone)?;
        let mut first = true;
        loop {
            let mut limit = i64::try_from(room).unwrap_or(i64::MAX).max(1);
            if first {
                limit = limit.min(self.max_backlog.saturating_add(1));
            }
            let page = self.page(user, last, limit).await?;
            let complete = (page.len() as i64) < limit;
            // Most reconnects miss less than a page, which shows the
            // backlog's size by itself; only a full first page smaller than
            // the maximum costs a count of what is behind it.
            if std::mem::take(&mut first)
                && !complete
                && (page.len() as i64 > self.max_backlog || self.backlog_over(user, since).await?)
            {
                tracing::info!(
                    user,
                    since,
                    max = self.max_backlog,
                    "backlog too large to replay; resync"
                );
                session
                    .emit(CHAT_NAMESPACE, "resync_required", vec![json!({ "since": since })])
                    .map_err(gone)?;
                session.finish_replay(since).await.map_err(gone)?;
                return Ok(());
            }
            if let Some(newest) = page.last() {
                last = newest.id;
            }
            if !page.is_empty() {
                let packets = encode(&page).ok_or(Stop::Failed)?;
                room = session.replay_page(packets).await.map_err(gone)?;
            }
            // Done when the database has nothing more and nothing newer
            // was held back meanwhile; otherwise read on.
            if complete && session.finish_replay(last).await.map_err(gone)? {
                return Ok(());
            }
        }
    }

    /// A pooled connection, held for one query only.
    async fn connection(&self, user: i64) -> Result<DbConn<'_>, Stop> {
        self.db.get().await.map_err(|error| {
            tracing::warn!(%error, user, "replay: no database connection");
            Stop::Failed
        })
    }

    async fn backlog_over(&self, user: i64, since: i64) -> Result<bool, Stop> {
        let mut conn = self.connection(user).await?;
        messages::backlog_over(&mut conn, UserId(user), MessageId(since), self.max_backlog)
            .await
            .map_err(|error| {
                tracing::error!(%error, user, "replay: backlog count failed");
                Stop::Failed
            })
    }

    /// One page; the connection goes back to the pool before the replay
    /// waits for the client.
    async fn page(&self, user: i64, since: i64, limit: i64) -> Result<Vec<ChatMessage>, Stop> {
        let mut conn = self.connection(user).await?;
        messages::since(&mut conn, UserId(user), MessageId(since), limit)
            .await
            .map_err(|error| {
                tracing::error!(%error, user, "replay query failed");
                Stop::Failed
            })
    }
}

/// `new_message` packets at their ids' positions; `None` (logged) if a row
/// cannot be serialized, which would otherwise leave a silent gap.
fn encode(page: &[ChatMessage]) -> Option<Vec<EncodedPacket>> {
    page.iter()
        .map(
            |message| match EncodedPacket::event_of(CHAT_NAMESPACE, "new_message", message) {
                Ok(packet) => Some(packet.at_position(message.id)),
                Err(error) => {
                    tracing::error!(%error, id = message.id, "replay: a message could not be serialized");
                    None
                }
            },
        )
        .collect()
}
