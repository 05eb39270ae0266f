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
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Pages read from the database, for the tests and the metrics.
    pages_read: AtomicU64,
    /// Catch-ups run (one per user per bus recovery).
    catch_ups: AtomicU64,
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
            pages_read: AtomicU64::new(0),
            catch_ups: AtomicU64::new(0),
        }
    }

    /// Pages of messages read from the database so far.
    pub fn pages_read(&self) -> u64 {
        self.pages_read.load(Ordering::Relaxed)
    }

    /// Catch-ups run so far (see [`Replayer::catch_up`]).
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
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
        let streamed = self.stream(session, user, since).await;
        stopped(session, streamed);
    }

    /// Catches `user`'s sockets here up after deliveries may have been
    /// lost (the bus was down, or dropped their channel): each begins a
    /// catch-up ([`SessionHandle::begin_catch_up`]), and one read of the
    /// database serves them all, since one member's devices miss the same
    /// messages; each socket is sent those above its own position. When
    /// the backlog is more than one page, each socket streams its own, as
    /// on CONNECT.
    pub async fn catch_up(&self, user: i64, sessions: Vec<SessionHandle>) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let mut started = Vec::with_capacity(sessions.len());
        for session in sessions {
            if let Ok(Some(since)) = session.begin_catch_up().await {
                started.push((session, since));
            }
        }
        let Some(oldest) = started.iter().map(|(_, since)| *since).min() else {
            return;
        };
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
        // The smallest outbound queue bounds the shared page.
        let mut room = usize::MAX;
        for (session, _) in &started {
            if let Ok(free) = session.replay_page(Vec::new()).await {
                room = room.min(free);
            }
        }
        let limit = i64::try_from(room)
            .unwrap_or(i64::MAX)
            .clamp(1, self.max_backlog.saturating_add(1));
        let page = match self.page(user, self.replay_from(oldest), limit).await {
            Ok(page) => page,
            Err(_) => {
                for (session, _) in &started {
                    stopped(session, Err(Stop::Failed));
                }
                return;
            }
        };
        let whole = (page.len() as i64) < limit;
        let packets = if whole { encode(&page) } else { None };
        for (session, since) in &started {
            let caught_up = match &packets {
                Some(packets) => self.send_caught_up(session, user, *since, packets).await,
                // More than a page behind, or a row that would not encode:
                // this socket streams on its own.
                None => self.stream(session, user, *since).await,
            };
            stopped(session, caught_up);
        }
    }

    /// Sends `session` the part of a shared catch-up page (`packets`,
    /// the whole backlog, in id order) above its own `since`, and goes live;
    /// if newer messages were held back meanwhile, reads on by itself.
    async fn send_caught_up(
        &self,
        session: &SessionHandle,
        user: i64,
        since: i64,
        packets: &[EncodedPacket],
    ) -> Result<(), Stop> {
        let gone = |_| Stop::Gone;
        let from = self.replay_from(since);
        let own: Vec<EncodedPacket> = packets
            .iter()
            .filter(|packet| packet.position().is_some_and(|id| id > from))
            .cloned()
            .collect();
        let last = own
            .last()
            .and_then(EncodedPacket::position)
            .unwrap_or(since)
            .max(since);
        if !own.is_empty() {
            session.replay_page(own).await.map_err(gone)?;
        }
        if session.finish_replay(last).await.map_err(gone)? {
            return Ok(());
        }
        self.stream(session, user, last).await
    }

    /// Where a replay for a client at `since` starts reading: the overlap
    /// below it (see [`ReplaySettings::overlap`]), or the start for none.
    fn replay_from(&self, since: i64) -> i64 {
        if since > 0 {
            since.saturating_sub(self.overlap).max(0)
        } else {
            0
        }
    }

    async fn stream(&self, session: &SessionHandle, user: i64, since: i64) -> Result<(), Stop> {
        let gone = |_| Stop::Gone;
        let mut last = self.replay_from(since);
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
        let over = messages::backlog_over(&mut conn, UserId(user), MessageId(since), self.max_backlog);
        crate::metrics::timed("replay_backlog", over)
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
        self.pages_read.fetch_add(1, Ordering::Relaxed);
        crate::metrics::timed(
            "replay_page",
            messages::since(&mut conn, UserId(user), MessageId(since), limit),
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, user, "replay query failed");
            Stop::Failed
        })
    }
}

/// Ends a replay that stopped: a database failure sends the client away
/// to connect again.
fn stopped(session: &SessionHandle, outcome: Result<(), Stop>) {
    if let Err(Stop::Failed) = outcome {
        let _ = session.emit(
            CHAT_NAMESPACE,
            "error",
            vec![json!({
                "code": "replay_failed",
                "message": "missed messages could not be loaded; connecting again replays them",
            })],
        );
        // Going live here would let the client's largest id pass the gap;
        // a new connection replays from its own `since`.
        session.reconnect();
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
