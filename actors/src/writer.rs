//! MessageWriter: persists chat messages in batches and answers each sender
//! only after its batch has committed.
//!
//! Group commit: messages gather for at most `linger`, or until a batch is
//! full, then go as one transaction; while batches are in the database new
//! messages keep gathering, and a finished batch sends what gathered at
//! once. Up to `max_in_flight` batches run at a time, each on its own
//! connection: they overlap everywhere but the short section under the
//! database's ordering lock (see `aurum_schema::models::messages`).

use std::time::Duration;

use actix::prelude::*;
use aurum_schema::models::messages::{self, Outgoing, Stored};
use aurum_schema::pool::DbPool;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Too many messages are waiting; the sender should retry shortly.
    #[error("the server is busy; retry shortly")]
    Busy,
    /// The database failed; nothing of the batch was stored.
    #[error("messages cannot be stored right now; retry shortly")]
    Unavailable,
}

#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Most messages in one INSERT.
    pub max_batch: usize,
    /// Most messages waiting (not yet in a batch); past it senders get `Busy`.
    pub max_pending: usize,
    /// How long a message waits for others before its batch goes.
    pub linger: Duration,
    /// Batches in the database at once.
    pub max_in_flight: usize,
}

impl Default for WriterSettings {
    fn default() -> Self {
        // A short queue: under overload, senders hear `busy` within a few
        // batches' time instead of waiting seconds for a late ack.
        Self {
            max_batch: 512,
            max_pending: 4096,
            linger: Duration::from_micros(500),
            max_in_flight: 1,
        }
    }
}

/// A typed handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    addr: Addr<MessageWriter>,
}

impl WriterHandle {
    /// Starts the writer on `arbiter` (or the current one).
    pub fn start(pool: DbPool, settings: WriterSettings, arbiter: Option<&Arbiter>) -> Self {
        let writer = MessageWriter {
            pool,
            settings,
            pending: Vec::new(),
            in_flight: 0,
            timer: None,
        };
        let addr = match arbiter {
            Some(arbiter) => MessageWriter::start_in_arbiter(&arbiter.handle(), |_| writer),
            None => writer.start(),
        };
        Self { addr }
    }

    /// Interim: runs `on_commit` with the outcome (replaced by the
    /// commit-ordered writer).
    pub fn submit(&self, message: Outgoing, on_commit: OnCommit) {
        let writer = self.clone();
        actix::spawn(async move { on_commit(writer.persist(message).await) });
    }

    /// Stores `message`; resolves once it is committed (or refused).
    pub async fn persist(&self, message: Outgoing) -> Result<Stored, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.addr
            .try_send(Persist { message, reply })
            .map_err(|_| WriteError::Busy)?;
        answer.await.map_err(|_| WriteError::Unavailable)?
    }
}

/// Runs once per message with what became of it.
pub type OnCommit = Box<dyn FnOnce(Result<Stored, WriteError>) + Send + 'static>;

type Reply = oneshot::Sender<Result<Stored, WriteError>>;

pub struct MessageWriter {
    pool: DbPool,
    settings: WriterSettings,
    pending: Vec<(Outgoing, Reply)>,
    in_flight: usize,
    timer: Option<SpawnHandle>,
}

impl Actor for MessageWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.max_pending);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Persist {
    message: Outgoing,
    reply: Reply,
}

impl Handler<Persist> for MessageWriter {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        if self.pending.len() >= self.settings.max_pending {
            let _ = msg.reply.send(Err(WriteError::Busy));
            return;
        }
        self.pending.push((msg.message, msg.reply));
        if self.in_flight >= self.settings.max_in_flight {
            return; // goes as soon as a batch commits
        }
        if self.pending.len() >= self.settings.max_batch {
            self.flush(ctx);
        } else if self.timer.is_none() {
            self.timer = Some(ctx.run_later(self.settings.linger, |writer, ctx| {
                writer.timer = None;
                writer.flush(ctx);
            }));
        }
    }
}

impl MessageWriter {
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight >= self.settings.max_in_flight || self.pending.is_empty() {
            return;
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let take = self.pending.len().min(self.settings.max_batch);
        let (batch, replies): (Vec<Outgoing>, Vec<Reply>) = self.pending.drain(..take).unzip();
        self.in_flight += 1;
        let pool = self.pool.clone();
        let write = async move {
            let mut conn = pool.get().await.map_err(|error| {
                tracing::warn!(%error, "message writer cannot get a connection");
                WriteError::Unavailable
            })?;
            // A batch that lost a deadlock or serialization race was rolled
            // back whole; once more usually goes through.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match messages::store_batch(&mut conn, &batch).await {
                    Ok(outcomes) => return Ok(outcomes),
                    Err(error) if attempts < 3 && is_transient(&error) => {
                        tracing::warn!(%error, attempts, "message batch lost a race; retrying");
                    }
                    Err(error) => {
                        tracing::error!(%error, size = batch.len(), "message batch failed");
                        return Err(WriteError::Unavailable);
                    }
                }
            }
        };
        ctx.spawn(write.into_actor(self).map(move |result, writer, ctx| {
            match result {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            writer.in_flight -= 1;
            writer.flush(ctx);
        }));
    }
}

/// Deadlocks (40P01) and serialization failures (40001) roll a transaction
/// back without it having done anything wrong.
fn is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => info.message().contains("deadlock detected"),
        _ => false,
    }
}
