//! MessageWriter: persists chat messages in batches and answers each sender
//! only after its batch has committed.
//!
//! Group commit: messages gather for at most `linger`, or until a batch is
//! full, then go as one transaction; while batches are in the database new
//! messages keep gathering, and a finished batch sends what gathered at
//! once. Up to `max_in_flight` batches run at a time, each on its own
//! connection: they overlap everywhere but the short section under the
//! database's ordering lock (see `aurum_schema::models::messages`).
//!
//! Every message's [`OnCommit`] hook is called exactly once, whatever
//! happens (see [`WriterHandle::submit`]), and the hooks of committed
//! messages run in commit (id) order (see `CommitOrder`).
//!
//! The writer runs under an actix `Supervisor`: a panic inside it stops it,
//! every message it held (gathering or in the database) is answered
//! `Unavailable`, and it restarts at once, empty, with its mailbox intact.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;
use std::time::Duration;

use actix::prelude::*;
use aurum_schema::models::messages::{self, Outgoing, Stored};
use aurum_schema::pool::{DbConn, DbPool};
use tokio::sync::oneshot;
use tracing::{Instrument as _, Span};

use crate::supervisor::{RestartPacing, pause_after_restart, stop_on_panic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Too many messages are waiting; nothing was stored; the sender should
    /// retry shortly.
    #[error("the server is busy; retry shortly")]
    Busy,
    /// The message is not known to be stored: the database failed or timed
    /// out (the batch rolled back whole), or the writer died or stopped
    /// before it learnt the outcome (the batch may have committed). A retry
    /// with the same `client_id` is safe either way: it stores the message
    /// once, or answers with the copy already stored.
    #[error("messages cannot be stored right now; retry shortly")]
    Unavailable,
}

/// What the writer calls once per submitted message with its outcome.
///
/// Runs once per message: in commit (id) order for the messages of committed
/// batches, inside the writer, before any later batch's hooks. (A retry
/// answered `Stored::Duplicate` carries its first copy's id; its hook runs
/// after that copy's, when this writer stored it.) It runs on
/// the writer's thread, between batches, so it must be cheap and must not
/// block: hand the outcome on (a channel, an actor's mailbox), do not work
/// in it. Two answers come from elsewhere: `Busy` or `Unavailable` from a
/// writer whose mailbox is full or gone is answered inside `submit`, on the
/// caller's thread; a hook dropped by a writer that is torn down (its
/// arbiter stopped) answers `Unavailable` wherever that happens. A hook
/// that panics is logged and otherwise ignored.
pub type OnCommit = Box<dyn FnOnce(Result<Stored, WriteError>) + Send + 'static>;

#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Most messages in one INSERT.
    pub max_batch: usize,
    /// Most messages waiting (not yet in a batch); past it senders get `Busy`.
    pub max_pending: usize,
    /// How long a message waits for others before its batch goes, when no
    /// batch is in the database (while one is, messages gather until it
    /// commits) and the last batch held `BUSY_BATCH` (8) or more. After a
    /// smaller batch, or with zero here, it goes once the writer has read
    /// what is in its mailbox.
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
    /// Starts the writer, supervised, on `arbiter` (or the current one).
    /// `pool` should be the writer's own: every in-flight batch holds one
    /// of its connections.
    pub fn start(pool: DbPool, settings: WriterSettings, arbiter: Option<&Arbiter>) -> Self {
        // The mailbox's bound is set here, the first thing the arbiter runs
        // for the writer, not in `started`, which runs later: a message
        // submitted in between would meet actix's default bound of 16.
        let make = move |ctx: &mut Context<MessageWriter>| {
            ctx.set_mailbox_capacity(settings.max_pending);
            MessageWriter::new(pool, settings)
        };
        let addr = match arbiter {
            Some(arbiter) => Supervisor::start_in_arbiter(&arbiter.handle(), make),
            None => Supervisor::start(make),
        };
        Self { addr }
    }

    /// Hands `message` to the writer; `on_commit` is called exactly once
    /// with its outcome: `Err(Busy)` at once when the writer's queue is
    /// full, `Err(Unavailable)` when its batch fails or the writer dies or
    /// is gone, `Ok(stored)` once its batch has committed (see [`OnCommit`]
    /// for the order and the thread).
    pub fn submit(&self, message: Outgoing, on_commit: OnCommit) {
        let submit = Submit {
            message,
            hook: Hook {
                on_commit: Some(on_commit),
                span: Span::current(),
            },
        };
        if let Err(refused) = self.addr.try_send(submit) {
            let (error, submit) = match refused {
                actix::prelude::SendError::Full(submit) => (WriteError::Busy, submit),
                actix::prelude::SendError::Closed(submit) => (WriteError::Unavailable, submit),
            };
            submit.hook.answer(Err(error));
        }
    }

    /// Stores `message`; resolves once it is committed (or refused). A thin
    /// wrapper over [`submit`](Self::submit) for callers that await.
    pub async fn persist(&self, message: Outgoing) -> Result<Stored, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            message,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        // The hook is always called, so a closed channel cannot happen;
        // answering `Unavailable` keeps it harmless if it ever did.
        answer.await.unwrap_or(Err(WriteError::Unavailable))
    }

    /// Resolves once every message submitted before the call has its
    /// answer: the gathering batch goes at once instead of lingering, and
    /// batches in the database commit (or fail). A drain calls it after the
    /// last socket has closed, so nothing submitted is cut off by the exit.
    /// Resolves at once when the writer is gone.
    pub async fn flushed(&self) {
        let (reply, answered) = oneshot::channel();
        if self.addr.send(Flushed { reply }).await.is_ok() {
            // A writer torn down before answering has nothing left to write.
            let _ = answered.await;
        }
    }

    /// Makes the writer panic inside a handler, to exercise its supervisor
    /// (tests only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn crash(&self) {
        // `do_send` ignores the mailbox's bound: a test that crashes a busy
        // writer must not have its crash refused as `Busy`.
        self.addr.do_send(Crash);
    }
}

/// An [`OnCommit`] that is called exactly once: with its answer, or with
/// `Unavailable` when it is dropped unanswered (a batch abandoned by a
/// writer that stopped, a message left in a dead writer's mailbox).
struct Hook {
    on_commit: Option<OnCommit>,
    /// The submitter's span (its socket event's): the hook runs inside it,
    /// so what it does (the deliveries, the bus publish) joins the
    /// message's trace, and the batch links to it.
    span: Span,
}

impl Hook {
    fn answer(mut self, result: Result<Stored, WriteError>) {
        if let Some(hook) = self.on_commit.take() {
            self.span.in_scope(|| call(hook, result));
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(hook) = self.on_commit.take() {
            self.span.in_scope(|| call(hook, Err(WriteError::Unavailable)));
        }
    }
}

/// A panicking hook is its caller's bug: it must not take the writer, and
/// every other sender's answer, down with it (nor abort the process when
/// the hook runs from a drop during an unwind).
fn call(hook: OnCommit, result: Result<Stored, WriteError>) {
    if catch_unwind(AssertUnwindSafe(move || hook(result))).is_err() {
        tracing::error!("a message writer on_commit hook panicked");
    }
}

pub struct MessageWriter {
    pool: DbPool,
    settings: WriterSettings,
    pending: Vec<(Outgoing, Hook)>,
    timer: Option<SpawnHandle>,
    /// Messages in the last batch that went: [`BUSY_BATCH`] or more means
    /// traffic, and the next batch lingers to gather.
    last_batch: usize,
    order: CommitOrder<Answers>,
    /// Batches released in commit order whose hooks have yet to run (see
    /// `finish`).
    released: VecDeque<Answers>,
    /// Callers of [`WriterHandle::flushed`], answered once nothing is left.
    flush_waiters: Vec<oneshot::Sender<()>>,
    pacing: RestartPacing,
    /// Set by `restarting`, taken by `started`.
    restart_pause: Duration,
}

/// A committed batch's hooks and outcomes, in input order.
struct Answers {
    hooks: Vec<Hook>,
    outcomes: Vec<Stored>,
}

impl Answers {
    fn send(self) {
        // `store_batch` answers every input once, so the two are the same
        // length; a hook left over by a mismatch answers `Unavailable` as it
        // drops.
        for (hook, outcome) in self.hooks.into_iter().zip(self.outcomes) {
            hook.answer(Ok(outcome));
        }
    }
}

/// A batch this large says messages come fast enough for the next one to
/// linger (see `accept`).
const BUSY_BATCH: usize = 8;

impl MessageWriter {
    fn new(pool: DbPool, settings: WriterSettings) -> Self {
        Self {
            pool,
            settings,
            pending: Vec::new(),
            timer: None,
            last_batch: 0,
            order: CommitOrder::default(),
            released: VecDeque::new(),
            flush_waiters: Vec::new(),
            pacing: RestartPacing::default(),
            restart_pause: Duration::ZERO,
        }
    }

    /// Answers the callers of [`WriterHandle::flushed`] once no message
    /// waits, none is in the database and every hook has run.
    fn answer_flush_waiters(&mut self) {
        let idle = self.pending.is_empty() && self.order.in_flight() == 0 && self.released.is_empty();
        if idle {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Runs a handler body; a panic stops the writer so its supervisor
    /// restarts it (see `restarting`) instead of leaving it half-updated.
    fn guarded(&mut self, ctx: &mut Context<Self>, body: impl FnOnce(&mut Self, &mut Context<Self>)) {
        stop_on_panic(self, ctx, "message writer", body);
    }
}

impl Actor for MessageWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        pause_after_restart(std::mem::take(&mut self.restart_pause), ctx);
    }
}

impl Supervised for MessageWriter {
    /// By now actix has dropped the context's futures: the in-flight
    /// batches' hooks have answered `Unavailable` (their outcome is lost;
    /// the statements themselves finish in their own tasks). Messages still
    /// gathering answer `Unavailable` too. Batches that committed but were
    /// held for the commit order answer with their outcome, in order.
    /// The mailbox survives the restart: what waits there is written by the
    /// restarted writer.
    fn restarting(&mut self, _: &mut Context<Self>) {
        metrics::counter!("actor_restarts_total", "actor" => "writer").increment(1);
        self.restart_pause = self.pacing.next_pause(std::time::Instant::now());
        self.timer = None;
        self.pending.clear();
        for answers in self.released.drain(..) {
            answers.send();
        }
        self.order.abandon(Answers::send);
        // Everything it held is answered by now.
        for waiter in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Flushed {
    reply: oneshot::Sender<()>,
}

impl Handler<Flushed> for MessageWriter {
    type Result = ();

    fn handle(&mut self, msg: Flushed, ctx: &mut Context<Self>) {
        self.flush_waiters.push(msg.reply);
        self.guarded(ctx, |writer, ctx| {
            // What gathers goes now: nothing else is coming to join it.
            writer.flush(ctx);
            writer.answer_flush_waiters();
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Submit {
    message: Outgoing,
    hook: Hook,
}

impl Handler<Submit> for MessageWriter {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        self.guarded(ctx, move |writer, ctx| writer.accept(msg, ctx));
    }
}

impl MessageWriter {
    fn accept(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        if self.pending.len() >= self.settings.max_pending {
            msg.hook.answer(Err(WriteError::Busy));
            return;
        }
        self.pending.push((msg.message, msg.hook));
        if self.order.in_flight() >= self.settings.max_in_flight {
            return; // goes as soon as a batch commits
        }
        if self.pending.len() >= self.settings.max_batch {
            self.flush(ctx);
        } else if self.timer.is_none() {
            let go = |writer: &mut Self, ctx: &mut Context<Self>| {
                writer.timer = None;
                writer.guarded(ctx, Self::flush);
            };
            // In light traffic (the last batch was small) a message goes on
            // this turn of the actor, after every message its mailbox holds
            // now: those that arrived together still share a batch, and
            // none waits on a timer, which tokio rounds up to the next
            // millisecond (at 1,000 msg/s a 500 µs linger was 1.0 ms of a
            // delivery p50 of 1.8 ms). Under traffic the linger gathers
            // batches: without it, at 20,000 msg/s, small batches cost the
            // database more than the wait saved (docs/benchmarks.md).
            let light = self.last_batch < BUSY_BATCH;
            self.timer = Some(if light || self.settings.linger.is_zero() {
                ctx.spawn(fut::ready(()).map(move |(), writer, ctx| go(writer, ctx)))
            } else {
                ctx.run_later(self.settings.linger, go)
            });
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.order.in_flight() >= self.settings.max_in_flight || self.pending.is_empty() {
            return;
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let take = self.pending.len().min(self.settings.max_batch);
        self.last_batch = take;
        let (batch, hooks): (Vec<Outgoing>, Vec<Hook>) = self.pending.drain(..take).unzip();
        static BATCH_SIZE: LazyLock<metrics::Histogram> =
            LazyLock::new(|| metrics::histogram!("writer_batch_size"));
        static QUEUE_DEPTH: LazyLock<metrics::Gauge> =
            LazyLock::new(|| metrics::gauge!("writer_queue_depth"));
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        {
            BATCH_SIZE.record(take as f64);
            QUEUE_DEPTH.set(self.pending.len() as f64);
        }
        let ticket = self.order.dispatch();
        // One span per batch, linked to the span of every message in it:
        // a message's trace shows the batch that stored it.
        let span = tracing::info_span!(target: crate::trace::TARGET, "writer.batch", batch.size = take);
        for hook in &hooks {
            span.follows_from(&hook.span);
        }
        // The batch runs as a task of its own, the actor only awaits it. If
        // the writer dies, the future below is dropped with its context, so
        // the batch's senders hear `Unavailable` at once; the task runs on
        // and its connection goes back to the pool cleanly, where dropping
        // a query mid-flight would hand the next batch a connection in an
        // unknown state.
        let write = actix::spawn(store(self.pool.clone(), batch).instrument(span));
        ctx.spawn(write.into_actor(self).map(move |joined, writer, ctx| {
            let result = joined.unwrap_or_else(|error| {
                tracing::error!(%error, "message batch task failed");
                Err(WriteError::Unavailable)
            });
            writer.guarded(ctx, move |writer, ctx| writer.finish(ticket, hooks, result, ctx));
        }));
    }

    fn finish(
        &mut self,
        ticket: Ticket,
        hooks: Vec<Hook>,
        result: Result<Vec<Stored>, WriteError>,
        ctx: &mut Context<Self>,
    ) {
        let released = &mut self.released;
        match result {
            Ok(outcomes) => {
                let place = Place::of(&outcomes);
                let answers = Answers { hooks, outcomes };
                self.order
                    .committed(ticket, place, answers, |answers| released.push_back(answers));
            }
            Err(error) => {
                // Nothing of it committed (or nothing is known to have), so
                // it has no place in the commit order.
                for hook in hooks {
                    hook.answer(Err(error));
                }
                self.order.failed(ticket, |answers| released.push_back(answers));
            }
        }
        self.flush(ctx);
        if !self.released.is_empty() {
            // The hooks wait for one turn of the thread: the next batch's
            // task, queued by `flush`, then sends its statement first, and
            // the database works on it while the hooks run. Run at once,
            // they would sit between each commit and the next batch,
            // capping the rate a single batch in flight can carry.
            let turn = actix::fut::wrap_future::<_, Self>(tokio::task::yield_now());
            ctx.spawn(turn.map(|(), writer, _| {
                writer.send_released();
                writer.answer_flush_waiters();
            }));
        } else {
            self.answer_flush_waiters();
        }
    }

    /// Runs the released batches' hooks, oldest first.
    fn send_released(&mut self) {
        while let Some(answers) = self.released.pop_front() {
            answers.send();
        }
    }
}

/// How long past the statement timeout a batch's answer may take to come
/// back (the round trip, the commit) before its senders stop waiting.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

async fn store(pool: DbPool, batch: Vec<Outgoing>) -> Result<Vec<Stored>, WriteError> {
    let conn = pool.get().await.map_err(|error| {
        tracing::warn!(%error, "message writer cannot get a connection");
        WriteError::Unavailable
    })?;
    // PostgreSQL's statement_timeout cancels a statement the server is slow
    // with, but it cannot answer over a connection that went silent (a cut
    // network, a frozen server or proxy): no answer comes, and TCP may take
    // many minutes to give up, while every sender waits and the batches
    // behind this one with them. So the senders stop waiting once the
    // statement timeout and a margin have passed: `Unavailable` (not known
    // to be stored; a retry with the client_id is safe). The statements
    // run on in a task of their own that owns the connection, and return
    // it to the pool cleanly if an answer ever comes: dropping them
    // mid-flight would leave the connection in an unknown state.
    // In the batch's span still: its query is a child of `writer.batch`.
    let statements = actix::spawn(store_on(conn, batch).in_current_span());
    let timeout = pool.statement_timeout();
    let joined = if timeout.is_zero() {
        statements.await
    } else {
        match tokio::time::timeout(timeout + ANSWER_MARGIN, statements).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::error!(
                    waited = ?(timeout + ANSWER_MARGIN),
                    "no answer from the database within the statement timeout: the batch is not known to be stored"
                );
                return Err(WriteError::Unavailable);
            }
        }
    };
    joined.unwrap_or_else(|error| {
        tracing::error!(%error, "message batch statements failed");
        Err(WriteError::Unavailable)
    })
}

/// Stores `batch` on `conn`, retrying what lost a race.
async fn store_on(mut conn: DbConn<'static>, batch: Vec<Outgoing>) -> Result<Vec<Stored>, WriteError> {
    // A batch that lost a deadlock or serialization race was rolled back
    // whole; once more usually goes through.
    let mut attempts = 0;
    loop {
        attempts += 1;
        static STORE_BATCH: LazyLock<metrics::Histogram> =
            LazyLock::new(|| metrics::histogram!("db_query_duration_seconds", "query" => "store_batch"));
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            target: crate::trace::TARGET,
            "db.query",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = "store_batch",
            db.response.returned_rows = batch.len(),
            attempt = attempts,
        );
        let stored = messages::store_batch(&mut conn, &batch).instrument(span).await;
        STORE_BATCH.record(started.elapsed().as_secs_f64());
        match stored {
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
}

/// Deadlocks (40P01) and serialization failures (40001) roll a transaction
/// back without it having done anything wrong. A statement cancelled by
/// `statement_timeout` (57014) is not among them: the database is too slow
/// or stuck, and trying again would keep its senders waiting one timeout
/// more per attempt. It rolled back whole and left the connection usable.
fn is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => info.message().contains("deadlock detected"),
        _ => false,
    }
}

#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[cfg(feature = "test-hooks")]
impl Handler<Crash> for MessageWriter {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.guarded(ctx, |_, _| panic!("message writer crash requested"));
    }
}

/// One dispatched batch, in dispatch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ticket(u64);

/// Where a committed batch goes in the commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    /// The smallest new id, or for a batch that stored nothing new the
    /// largest id it answered with (a retry's first copy), or 0.
    key: i64,
    /// Whether it stored new messages.
    fresh: bool,
}

impl Place {
    fn of(outcomes: &[Stored]) -> Self {
        let mut smallest_new = None;
        let mut largest_old = 0;
        for outcome in outcomes {
            match outcome {
                Stored::New(m) => smallest_new = Some(smallest_new.map_or(m.id, |s: i64| s.min(m.id))),
                Stored::Duplicate(m) => largest_old = largest_old.max(m.id),
                Stored::UnknownRecipient | Stored::UnknownSender => {}
            }
        }
        match smallest_new {
            Some(key) => Self { key, fresh: true },
            None => Self {
                key: largest_old,
                fresh: false,
            },
        }
    }

    /// New messages first at an equal key: a batch that only repeats id N
    /// comes after the batch that stored N.
    fn sort_key(self) -> (i64, bool) {
        (self.key, !self.fresh)
    }
}

/// Releases committed batches in commit order, whatever order their results
/// reach the writer in.
///
/// Why holding is needed: every batch takes the database's ordering lock
/// before it draws ids and keeps it until it commits, so batches commit one
/// after another and their id ranges never interleave; the order of their
/// smallest ids is their commit order. But with several batches in flight
/// the results travel back over separate connections, and a batch that
/// committed first can be heard from last.
///
/// Which batches a result must wait for: batch B, when its result arrives,
/// must wait for every batch still in flight at that moment, because any of
/// them may have taken the lock before B and committed smaller ids. That
/// includes batches dispatched after B (B may have been slow to reach the
/// lock), so "wait for the batches dispatched before B" is not enough. A
/// batch dispatched after B's result arrived cannot have committed before
/// B, so B never waits for it: every batch waits only for a bounded set,
/// and nothing is held for ever under continuous traffic. That set is
/// "every ticket below B's barrier" (the next ticket when B arrived), since
/// the earlier ones that are not in flight have already arrived.
///
/// Why a prefix: B's own wait being over is not enough either. A batch A
/// that committed before B but arrived after B may still wait for a batch
/// in flight at A's arrival, one that B never waited for. So the held
/// batches are kept sorted by their smallest id and released from the front
/// while the front's wait is over; the first batch storing new ids that
/// must still wait stops the release. Any batch that committed before B
/// arrived before B's wait ended (it was in flight or already back), so it
/// sorts ahead of B and is released first.
///
/// Batches that stored nothing new (every message a retry or refused) have
/// no id of their own to order: each waits like any other (so a retry's
/// answer comes after its first copy's), but never holds up the rest.
/// Failed batches committed nothing and are answered at once; their result
/// still ends the wait of others.
///
/// With one batch in flight (the default) a result never waits: nothing
/// else is in flight when it arrives.
struct CommitOrder<T> {
    next: Ticket,
    /// Dispatched and not yet back; at most `max_in_flight`, so a Vec.
    in_flight: Vec<Ticket>,
    /// Back and committed, waiting; sorted by `Place::sort_key`.
    held: Vec<Held<T>>,
}

struct Held<T> {
    place: Place,
    barrier: Ticket,
    batch: T,
}

impl<T> Default for CommitOrder<T> {
    fn default() -> Self {
        Self {
            next: Ticket(0),
            in_flight: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl<T> CommitOrder<T> {
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn dispatch(&mut self) -> Ticket {
        let ticket = self.next;
        self.next = Ticket(ticket.0 + 1);
        self.in_flight.push(ticket);
        ticket
    }

    /// `ticket`'s batch committed; `release` gets it and whatever it
    /// unblocked, in commit order.
    fn committed(&mut self, ticket: Ticket, place: Place, batch: T, mut release: impl FnMut(T)) {
        self.in_flight.retain(|&t| t != ticket);
        if self.in_flight.is_empty() && self.held.is_empty() {
            release(batch); // the usual case: nothing to wait for
            return;
        }
        let at = self
            .held
            .partition_point(|held| held.place.sort_key() <= place.sort_key());
        let barrier = self.next;
        self.held.insert(
            at,
            Held {
                place,
                barrier,
                batch,
            },
        );
        self.release(&mut release);
    }

    /// `ticket`'s batch failed; `release` gets whatever that unblocked.
    fn failed(&mut self, ticket: Ticket, mut release: impl FnMut(T)) {
        self.in_flight.retain(|&t| t != ticket);
        self.release(&mut release);
    }

    /// The writer is restarting: the in-flight batches are forgotten (their
    /// senders have been answered) and the held ones go, in order.
    fn abandon(&mut self, release: impl FnMut(T)) {
        self.in_flight.clear();
        self.held.drain(..).map(|held| held.batch).for_each(release);
    }

    fn release(&mut self, release: &mut impl FnMut(T)) {
        // Every ticket below this one is back.
        let back_below = self.in_flight.iter().copied().min().unwrap_or(self.next);
        let mut blocked = false;
        let mut index = 0;
        while index < self.held.len() {
            let held = &self.held[index];
            if !blocked && held.barrier <= back_below {
                release(self.held.remove(index).batch);
            } else {
                blocked |= held.place.fresh;
                index += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn fresh(key: i64) -> Place {
        Place { key, fresh: true }
    }

    fn repeat(key: i64) -> Place {
        Place { key, fresh: false }
    }

    #[derive(Default)]
    struct Log(Vec<&'static str>);

    impl Log {
        fn take(&mut self) -> Vec<&'static str> {
            std::mem::take(&mut self.0)
        }
    }

    #[test]
    fn a_lone_batch_is_released_at_once() {
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let a = order.dispatch();
        order.committed(a, fresh(1), "a", |b| log.0.push(b));
        assert_eq!(log.take(), ["a"]);
        assert_eq!(order.in_flight(), 0);
    }

    #[test]
    fn a_batch_dispatched_later_that_committed_first_goes_first() {
        // A is dispatched first but B reaches the lock first (ids 1..); A's
        // result arrives first, while B is in flight: A must wait for B.
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let a = order.dispatch();
        let b = order.dispatch();
        order.committed(a, fresh(11), "a", |x| log.0.push(x));
        assert!(log.take().is_empty(), "A waits for B, in flight when A arrived");
        order.committed(b, fresh(1), "b", |x| log.0.push(x));
        assert_eq!(log.take(), ["b", "a"]);
    }

    #[test]
    fn results_that_arrive_out_of_order_run_by_id() {
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let a = order.dispatch();
        let b = order.dispatch();
        order.committed(b, fresh(11), "b", |x| log.0.push(x));
        assert!(log.take().is_empty());
        order.committed(a, fresh(1), "a", |x| log.0.push(x));
        assert_eq!(log.take(), ["a", "b"]);
    }

    #[test]
    fn under_continuous_traffic_a_batch_waits_only_for_those_in_flight_when_it_arrived() {
        // There is always a batch in flight, yet each is released as soon
        // as the ones in flight at its own arrival are back.
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let a = order.dispatch();
        let b = order.dispatch();
        order.committed(a, fresh(1), "a", |x| log.0.push(x));
        assert!(log.take().is_empty(), "A waits for B");
        let c = order.dispatch();
        order.committed(b, fresh(5), "b", |x| log.0.push(x));
        assert_eq!(
            log.take(),
            ["a"],
            "A does not wait for C, dispatched after A arrived"
        );
        let d = order.dispatch();
        order.committed(c, fresh(9), "c", |x| log.0.push(x));
        assert_eq!(log.take(), ["b"]);
        order.committed(d, fresh(13), "d", |x| log.0.push(x));
        assert_eq!(log.take(), ["c", "d"]);
    }

    #[test]
    fn a_later_batch_whose_wait_is_over_still_waits_for_an_earlier_id() {
        // X arrives (waits for Z); W is dispatched; Z arrives with smaller
        // ids than X and waits for W. X's own wait is over, but Z, which
        // committed before it, is still held: X must not go first.
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let x = order.dispatch();
        let z = order.dispatch();
        order.committed(x, fresh(20), "x", |b| log.0.push(b));
        let w = order.dispatch();
        order.committed(z, fresh(10), "z", |b| log.0.push(b));
        assert!(log.take().is_empty());
        order.committed(w, fresh(30), "w", |b| log.0.push(b));
        assert_eq!(log.take(), ["z", "x", "w"]);
    }

    #[test]
    fn a_failed_batch_ends_the_wait_of_others() {
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let a = order.dispatch();
        let b = order.dispatch();
        order.committed(b, fresh(5), "b", |x| log.0.push(x));
        assert!(log.take().is_empty());
        order.failed(a, |x| log.0.push(x));
        assert_eq!(log.take(), ["b"]);
    }

    #[test]
    fn a_retry_only_batch_follows_its_first_copy_and_holds_nobody_up() {
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        // R repeats message 7, stored by S; R is back first.
        let s = order.dispatch();
        let r = order.dispatch();
        order.committed(r, repeat(7), "r", |x| log.0.push(x));
        assert!(log.take().is_empty(), "R waits for S");
        order.committed(s, fresh(7), "s", |x| log.0.push(x));
        assert_eq!(log.take(), ["s", "r"], "the first copy's answer comes first");

        // A retry-only batch that must wait does not hold up new ids.
        let old = order.dispatch();
        let retry = order.dispatch();
        order.committed(retry, repeat(3), "retry", |x| log.0.push(x));
        let next = order.dispatch();
        order.committed(old, fresh(20), "old", |x| log.0.push(x));
        assert_eq!(
            log.take(),
            ["retry"],
            "`old` waits for `next`, in flight when it arrived"
        );
        let later = order.dispatch();
        let last = order.dispatch();
        order.committed(next, repeat(2), "next", |x| log.0.push(x));
        assert_eq!(
            log.take(),
            ["old"],
            "`next`, retry-only and waiting, holds nobody up"
        );
        order.committed(later, fresh(40), "later", |x| log.0.push(x));
        assert!(log.take().is_empty(), "`later` waits for `last`");
        order.committed(last, fresh(30), "last", |x| log.0.push(x));
        assert_eq!(log.take(), ["next", "last", "later"]);
    }

    #[test]
    fn abandoning_releases_the_held_in_order_and_forgets_the_in_flight() {
        let mut order = CommitOrder::default();
        let mut log = Log::default();
        let a = order.dispatch();
        let b = order.dispatch();
        let c = order.dispatch();
        order.committed(c, fresh(30), "c", |x| log.0.push(x));
        order.committed(b, fresh(20), "b", |x| log.0.push(x));
        assert!(log.take().is_empty());
        order.abandon(|x| log.0.push(x));
        assert_eq!(log.take(), ["b", "c"]);
        assert_eq!(order.in_flight(), 0);
        let _ = a; // its sender was answered `Unavailable` with the context
        let d = order.dispatch();
        order.committed(d, fresh(50), "d", |x| log.0.push(x));
        assert_eq!(log.take(), ["d"]);
    }

    /// Random schedules of the real protocol: each batch is dispatched,
    /// takes the lock at some point (drawing the next ids), and its result
    /// arrives some time later. Released batches must come out in lock
    /// order, and every batch must come out once the last result is in.
    #[test]
    fn random_schedules_release_in_lock_order() {
        for seed in 0..2_000_u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let max_in_flight = rng.random_range(1..=4);
            let total = rng.random_range(1..=30);
            let mut order = CommitOrder::default();
            // (ticket, label, Some(key) once locked, fresh)
            let mut flying: Vec<(Ticket, usize, Option<i64>, bool)> = Vec::new();
            let mut released: Vec<(usize, Place)> = Vec::new();
            let mut places = vec![None; total];
            let mut next_id = 1_i64;
            let mut dispatched = 0;
            let mut done = 0;
            while done < total {
                let can_dispatch = dispatched < total && flying.len() < max_in_flight;
                match rng.random_range(0..3) {
                    0 if can_dispatch => {
                        let ticket = order.dispatch();
                        flying.push((ticket, dispatched, None, rng.random_bool(0.8)));
                        dispatched += 1;
                    }
                    1 => {
                        // One unlocked batch takes the lock and commits.
                        let unlocked: Vec<usize> =
                            (0..flying.len()).filter(|&i| flying[i].2.is_none()).collect();
                        if let Some(&i) = unlocked.get(rng.random_range(0..unlocked.len().max(1))) {
                            flying[i].2 = Some(next_id);
                            next_id += 10;
                        }
                    }
                    _ => {
                        let locked: Vec<usize> =
                            (0..flying.len()).filter(|&i| flying[i].2.is_some()).collect();
                        if let Some(&i) = locked.get(rng.random_range(0..locked.len().max(1))) {
                            let (ticket, label, key, is_fresh) = flying.remove(i);
                            let key = key.unwrap_or_default();
                            // A retry-only batch repeats some earlier id.
                            let place = if is_fresh {
                                fresh(key)
                            } else {
                                repeat(rng.random_range(0..key))
                            };
                            places[label] = Some((place, key));
                            if rng.random_bool(0.1) {
                                order.failed(ticket, |(l, p)| released.push((l, p)));
                                places[label] = None;
                            } else {
                                order
                                    .committed(ticket, place, (label, place), |(l, p)| released.push((l, p)));
                            }
                            done += 1;
                        }
                    }
                }
            }
            let committed = places.iter().filter(|p| p.is_some()).count();
            assert_eq!(
                released.len(),
                committed,
                "seed {seed}: something was held for ever"
            );
            let fresh_keys: Vec<i64> = released
                .iter()
                .filter(|(_, p)| p.fresh)
                .map(|(_, p)| p.key)
                .collect();
            assert!(
                fresh_keys.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: out of lock order: {fresh_keys:?}"
            );
            // A retry-only batch comes after every new batch with an id up to
            // the one it repeats.
            for (at, (_, place)) in released.iter().enumerate() {
                if place.fresh {
                    continue;
                }
                let late = released[at..].iter().any(|(_, p)| p.fresh && p.key <= place.key);
                assert!(!late, "seed {seed}: a retry went before its first copy");
            }
        }
    }
}
