//! The node's long-polling sessions by Engine.IO sid: how an HTTP request
//! (or the WebSocket a polling client upgrades to) finds the session actor
//! it belongs to. Its own module because the listener (which looks sids up)
//! and every polling session (which registers and leaves) both need it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::Addr;

use crate::session::Session;

/// Polling sessions of this node, by sid. WebSocket sessions are not
/// listed: nothing but their own socket ever reaches them.
#[derive(Default)]
pub struct PollingSessions {
    by_sid: Mutex<HashMap<String, Addr<Session>>>,
    /// Sids whose client closed them lately, oldest first: a long-poll GET
    /// sent together with the client's close (`POST 1`) may be read after
    /// it, and gets the NOOP it would have got waiting, not a 400.
    closed_by_client: Mutex<VecDeque<(Instant, String)>>,
}

/// How long a sid the client closed is remembered for a GET racing the close.
const CLOSED_SID_GRACE: Duration = Duration::from_secs(10);
/// Most such sids remembered: a bound, whatever the rate of closes.
const MAX_CLOSED_SIDS: usize = 10_000;

impl std::fmt::Debug for PollingSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollingSessions")
            .field("len", &self.len())
            .finish()
    }
}

impl PollingSessions {
    /// Sessions listed now: those started on long-polling and not ended
    /// yet, upgraded to WebSocket or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, sid: &str) -> Option<Addr<Session>> {
        self.lock().get(sid).cloned()
    }

    /// Lists `addr` under `sid` until the returned registration is dropped.
    pub(crate) fn register(self: &Arc<Self>, sid: String, addr: Addr<Session>) -> Registration {
        self.lock().insert(sid.clone(), addr);
        Registration {
            sessions: Arc::clone(self),
            sid,
        }
    }

    /// Whether the client closed session `sid` in the last few seconds.
    pub(crate) fn closed_by_client(&self, sid: &str) -> bool {
        let closed = self
            .closed_by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        closed
            .iter()
            .any(|(at, closed)| closed == sid && at.elapsed() < CLOSED_SID_GRACE)
    }

    fn remember_client_close(&self, sid: &str) {
        let mut closed = self
            .closed_by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while closed
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= CLOSED_SID_GRACE)
            || closed.len() >= MAX_CLOSED_SIDS
        {
            closed.pop_front();
        }
        closed.push_back((now, sid.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Addr<Session>>> {
        // Every critical section is one map operation, which cannot leave
        // the map half-changed: a panic elsewhere that poisoned it changes
        // nothing about its contents.
        self.by_sid.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A session's entry in [`PollingSessions`]; dropping it removes the entry.
pub(crate) struct Registration {
    sessions: Arc<PollingSessions>,
    sid: String,
}

impl Registration {
    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    /// The client closed the session: a GET of its racing the close is
    /// answered NOOP for a while (see [`PollingSessions::closed_by_client`]).
    pub(crate) fn closed_by_client(self) {
        self.sessions.remember_client_close(&self.sid);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.sid);
    }
}
