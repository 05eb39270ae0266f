//! Counting live connections, so that shutdown can wait for the last one.
//! Its own module because both the listener (which counts) and every
//! session (which holds a guard) need it, and neither should import the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::supervisor::TaskCensus;

/// Counts the connections being upgraded or served, so shutdown can wait for them.
#[derive(Default)]
pub(crate) struct Tracker {
    live: AtomicUsize,
    drained: Notify,
    /// The node's task count, which every connection is part of.
    census: Option<Arc<TaskCensus>>,
}

impl Tracker {
    pub(crate) fn new(census: Option<Arc<TaskCensus>>) -> Self {
        Self {
            census,
            ..Self::default()
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) async fn drained(&self) {
        loop {
            // Created before the check, so a wake-up in between is not lost.
            let drained = self.drained.notified();
            if self.live() == 0 {
                return;
            }
            drained.await;
        }
    }
}

/// Keeps a connection counted in its [`Tracker`] for as long as it lives.
pub(crate) struct LiveGuard(Arc<Tracker>);

impl LiveGuard {
    pub(crate) fn new(tracker: &Arc<Tracker>) -> Self {
        tracker.live.fetch_add(1, Ordering::AcqRel);
        // Counted through the tracker, not a guard of its own, which
        // would cost every socket a pointer more.
        if let Some(census) = &tracker.census {
            census.add();
        }
        Self(Arc::clone(tracker))
    }

    /// Another guard on the same tracker, for a connection that starts a
    /// session living on after it (a long-polling handshake).
    pub(crate) fn sibling(&self) -> Self {
        Self::new(&self.0)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Some(census) = &self.0.census {
            census.remove();
        }
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}
