//! Rate limits per user, shared by all of a user's sockets on this node.
//!
//! Each user has one [`UserBudgets`] while they hold a socket here: every
//! socket's state holds an `Arc` of it, and [`BudgetTable`] finds it for the
//! next socket through a `Weak`, so the entry lives exactly as long as the
//! user's last socket (its drop removes it).
//!
//! A budget is a token bucket kept as one atomic (GCRA, the generic cell
//! rate algorithm): the "theoretical arrival time" of the next event, which
//! moves `interval` ahead per event taken and may run at most `burst`
//! intervals ahead of now. Taking a token is one clock read and one
//! compare-and-swap, with no lock, whichever arbiter each socket runs on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

/// A rate: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// What a user spends budget on; each has a budget of its own, so typing
/// indicators never eat into the chat budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    ChatMessage,
    Typing,
    MarkRead,
}

const BUDGETS: usize = 3;

impl Budget {
    const fn index(self) -> usize {
        match self {
            Self::ChatMessage => 0,
            Self::Typing => 1,
            Self::MarkRead => 2,
        }
    }
}

/// The shape of one budget in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Time one event costs.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst` events.
    window: u64,
}

impl Gcra {
    fn new(rate: Rate) -> Self {
        let interval = 1_000_000_000 / u64::from(rate.per_second.max(1));
        Self {
            interval,
            window: interval.saturating_mul(u64::from(rate.burst.max(1))),
        }
    }
}

/// Shards of the user -> budgets map: touched only when a socket joins or
/// leaves, and split so that users on different shards never wait for each
/// other.
const SHARDS: usize = 64;

type Shard = Mutex<HashMap<i64, Weak<UserBudgets>>>;

/// Every user's budgets on this node.
pub struct BudgetTable {
    /// Origin of the budgets' clock.
    epoch: Instant,
    rates: [Gcra; BUDGETS],
    shards: Box<[Shard]>,
}

impl BudgetTable {
    pub fn new(chat_message: Rate, typing: Rate, mark_read: Rate) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            rates: [Gcra::new(chat_message), Gcra::new(typing), Gcra::new(mark_read)],
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn shard(&self, user: i64) -> &Shard {
        // `rem_euclid` of a non-zero constant is in range.
        &self.shards[user.rem_euclid(SHARDS as i64) as usize]
    }

    /// The budgets of `user`, shared with the user's other sockets; the
    /// caller keeps the `Arc` for as long as its socket lives.
    pub fn of(self: &Arc<Self>, user: i64) -> Arc<UserBudgets> {
        let mut map = self.shard(user).lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budgets) = map.get(&user).and_then(Weak::upgrade) {
            return budgets;
        }
        let budgets = Arc::new(UserBudgets {
            user,
            arrivals: Default::default(),
            table: Arc::clone(self),
        });
        map.insert(user, Arc::downgrade(&budgets));
        budgets
    }

    /// Users with budgets here.
    #[cfg(test)]
    fn users(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// One user's budgets, shared by the user's sockets.
pub struct UserBudgets {
    user: i64,
    /// Per budget: nanoseconds after the table's epoch at which the next
    /// event would be on schedule.
    arrivals: [AtomicU64; BUDGETS],
    table: Arc<BudgetTable>,
}

impl UserBudgets {
    /// Takes one event from `budget` at `now`, if the budget allows it.
    pub fn try_take(&self, budget: Budget, now: Instant) -> bool {
        let now =
            u64::try_from(now.saturating_duration_since(self.table.epoch).as_nanos()).unwrap_or(u64::MAX);
        let Gcra { interval, window } = self.table.rates[budget.index()];
        let arrival = &self.arrivals[budget.index()];
        let mut current = arrival.load(Ordering::Relaxed);
        loop {
            let next = current.max(now).saturating_add(interval);
            if next - now > window {
                return false;
            }
            // Relaxed: the atomic is the whole state; nothing else is published with it.
            match arrival.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

impl Drop for UserBudgets {
    /// The user's last socket is gone: forget them. A socket of theirs that
    /// joined meanwhile has already replaced the dead entry with a live one,
    /// which stays.
    fn drop(&mut self) {
        let mut map = self
            .table
            .shard(self.user)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&self.user).is_some_and(|entry| entry.strong_count() == 0) {
            map.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CHAT: Rate = Rate {
        per_second: 20,
        burst: 40,
    };
    const TYPING: Rate = Rate {
        per_second: 5,
        burst: 10,
    };

    fn table() -> Arc<BudgetTable> {
        BudgetTable::new(CHAT, TYPING, TYPING)
    }

    #[test]
    fn allows_the_burst_then_the_rate() {
        let table = table();
        let budgets = table.of(1);
        let start = table.epoch + Duration::from_secs(10);
        let take = |n, at| {
            (0..n)
                .filter(|_| budgets.try_take(Budget::ChatMessage, at))
                .count()
        };
        assert_eq!(take(50, start), 40);
        // Half a second refills ten tokens, and no more.
        assert_eq!(take(50, start + Duration::from_millis(500)), 10);
        // A long pause refills the burst, never beyond it.
        assert_eq!(take(50, start + Duration::from_secs(60)), 40);
    }

    #[test]
    fn a_users_sockets_share_one_budget_and_budgets_are_separate() {
        let table = table();
        let (first, second) = (table.of(7), table.of(7));
        let other = table.of(8);
        let now = Instant::now();
        let taken = (0..30)
            .filter(|_| first.try_take(Budget::ChatMessage, now))
            .count()
            + (0..30)
                .filter(|_| second.try_take(Budget::ChatMessage, now))
                .count();
        assert_eq!(taken, 40);
        assert!(
            other.try_take(Budget::ChatMessage, now),
            "another user has their own"
        );
        assert_eq!(
            (0..20).filter(|_| second.try_take(Budget::Typing, now)).count(),
            10,
            "typing has its own budget"
        );
    }

    #[test]
    fn a_user_is_forgotten_with_their_last_socket() {
        let table = table();
        let first = table.of(7);
        let second = table.of(7);
        let now = Instant::now();
        while first.try_take(Budget::ChatMessage, now) {}
        drop(first);
        assert_eq!(table.users(), 1, "one socket still holds the budgets");
        assert!(!table.of(7).try_take(Budget::ChatMessage, now), "still spent");
        drop(second);
        assert_eq!(table.users(), 0);
        // A user who comes back starts afresh.
        let again = table.of(7);
        assert!(again.try_take(Budget::ChatMessage, now));
        assert_eq!(table.users(), 1);
    }

    #[test]
    fn concurrent_sockets_never_take_more_than_the_burst() {
        let table = table();
        let now = Instant::now();
        // Every socket takes its handle first, as connected sockets have
        // theirs: a thread done before the next handle is taken would
        // otherwise have let the user's budgets go.
        let handles: Vec<_> = (0..4).map(|_| table.of(3)).collect();
        let taken: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = handles
                .into_iter()
                .map(|budgets| {
                    scope.spawn(move || {
                        (0..100)
                            .filter(|_| budgets.try_take(Budget::ChatMessage, now))
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
        });
        assert_eq!(taken, 40);
        assert_eq!(table.users(), 0);
    }
}
