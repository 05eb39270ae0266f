//! Presence: whether a member is online, when they were last seen, and the
//! `presence` event their conversation partners get when that changes.
//!
//! Online means a socket somewhere: on this node (its registry), or, with
//! the bus, on a node holding a live lease on the member (see
//! `aurum_actors::bridge`), so a member with sockets on two nodes stays
//! online until the last one leaves and a crashed node's members go offline
//! when its leases lapse (`PRESENCE_TTL`). Without `REDIS_URL`, the
//! registry alone. `last_seen_at` is now while online, else
//! `profiles.last_active_at`, written when a member goes offline.

use std::collections::{HashMap, HashSet};

use aurum_actors::bridge::BridgeHandle;
use aurum_actors::registry::RegistryHandle;
use aurum_schema::pool::DbPool;
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Timestamptz};
use diesel_async::RunQueryDsl;
use serde_json::json;
use tokio::sync::mpsc;

use super::Router;

/// Most partners told of one change: the ones with the latest messages.
const MAX_PARTNERS: usize = 200;

#[derive(Clone)]
pub struct Presence {
    registry: RegistryHandle,
    bridge: Option<BridgeHandle>,
    /// Changes for the worker (see `tell`): a reconnect storm brings
    /// thousands at once, and a query each, side by side, took PostgreSQL
    /// from the message writer (measured: the chat at 20,000 msg/s fell
    /// behind for good) and a task each held memory while it waited. The
    /// question whether another node holds a member goes to the worker
    /// too, one pipeline a round: asked per arrival, 16,000 sockets
    /// connecting at once held 16,000 tasks of ~2.4 KB waiting on Redis,
    /// and the allocator kept that peak as RSS (heaptrack: 38 MB at the
    /// peak, ~1.5 KiB more per idle socket with the bus than without).
    changes: mpsc::Sender<Change>,
}

/// A member came online (`true`) or went offline.
type Change = (i64, bool);

/// Most changes waiting for the worker; past it they are dropped (the
/// event is best-effort: profiles still show the truth).
const MAX_WAITING: usize = 65_536;
/// Most changes the worker handles in one round of queries.
const ROUND: usize = 500;

impl Presence {
    /// Starts the worker; call inside the actix system.
    pub fn new(registry: RegistryHandle, bridge: Option<BridgeHandle>, db: DbPool, router: Router) -> Self {
        let (changes, waiting) = mpsc::channel(MAX_WAITING);
        actix::spawn(tell(waiting, db, router, bridge.clone()));
        Self {
            registry,
            bridge,
            changes,
        }
    }

    /// The first socket of `user` on this node has connected (and, with
    /// the bus, its lease is written; the caller knows it is the first from
    /// its registration): the member just came online, unless another node
    /// holds them, which the worker asks for the whole round.
    pub fn arrived(&self, user: i64) {
        self.changed(user, true);
    }

    /// A socket of `user` has gone (its unregister sent): if none is left
    /// here, the member went offline, unless another node holds them (the
    /// worker asks, after the release below).
    pub async fn left(&self, user: i64) {
        // The shard answers after the unregister it already holds.
        if self.registry.sockets_of(user).await != Ok(0) {
            return;
        }
        if let Some(bridge) = &self.bridge {
            bridge.release(user);
        }
        self.changed(user, false);
    }

    /// Members a dead node held and no node holds now (its leases were
    /// swept): those without a socket here went offline.
    pub fn departed(&self, users: Vec<i64>) {
        let presence = self.clone();
        actix::spawn(async move {
            for user in users {
                if presence.registry.sockets_of(user).await == Ok(0) {
                    presence.changed(user, false);
                }
            }
        });
    }

    fn changed(&self, user: i64, online: bool) {
        if self.changes.try_send((user, online)).is_err() {
            tracing::debug!(user, online, "presence change not told: too many waiting");
        }
    }
}

/// The worker: rounds of up to [`ROUND`] changes, each round one UPDATE
/// (for those gone offline) and one partners query for all of them.
async fn tell(mut waiting: mpsc::Receiver<Change>, db: DbPool, router: Router, bridge: Option<BridgeHandle>) {
    let mut round = Vec::with_capacity(ROUND);
    while waiting.recv_many(&mut round, ROUND).await > 0 {
        if let Err(error) = tell_round(&db, &router, bridge.as_ref(), &round).await {
            tracing::warn!(%error, changes = round.len(), "presence changes not told");
        }
        round.clear();
    }
}

async fn tell_round(
    db: &DbPool,
    router: &Router,
    bridge: Option<&BridgeHandle>,
    round: &[Change],
) -> Result<(), Box<dyn std::error::Error>> {
    // The last change of each member in the round is the one that holds.
    let mut latest: HashMap<i64, bool> = HashMap::with_capacity(round.len());
    for (user, online) in round {
        latest.insert(*user, *online);
    }
    // A member another node holds has not changed for their partners. A
    // bus that cannot answer counts as no one, so the partners hear of
    // the change they can see.
    if let Some(bridge) = bridge {
        let users: Vec<i64> = latest.keys().copied().collect();
        match bridge.held_elsewhere(&users).await {
            Ok(held) => latest.retain(|user, _| !held.contains(user)),
            Err(error) => tracing::debug!(%error, "presence: the bus cannot say who is held elsewhere"),
        }
        if latest.is_empty() {
            return Ok(());
        }
    }
    let mut conn = db.get().await?;
    let gone: Vec<i64> = latest
        .iter()
        .filter(|(_, online)| !**online)
        .map(|(user, _)| *user)
        .collect();
    // While online, "last seen" is now; going offline writes it.
    let mut seen: HashMap<i64, DateTime<Utc>> =
        crate::metrics::timed("presence_touch", touch(&mut conn, &gone))
            .await?
            .into_iter()
            .collect();
    let now = Utc::now();
    for (user, online) in &latest {
        if *online {
            seen.insert(*user, now);
        }
    }
    let users: Vec<i64> = seen.keys().copied().collect();
    let pairs = crate::metrics::timed("presence_partners", partners(&mut conn, &users)).await?;
    drop(conn);
    let mut told: HashMap<i64, usize> = HashMap::new();
    for (user, partner) in pairs {
        let count = told.entry(user).or_default();
        if *count >= MAX_PARTNERS {
            continue;
        }
        *count += 1;
        let (Some(online), Some(at)) = (latest.get(&user), seen.get(&user)) else {
            continue;
        };
        let payload = json!({
            "user_id": user,
            "online": online,
            "last_seen_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        router.notify_user(partner, "presence", payload, None);
    }
    Ok(())
}

/// Which of `users` hold a socket on this node or (with a bus that
/// answers) on another. With the bus down, what this node knows: its own
/// sockets.
pub async fn online(registry: &RegistryHandle, bridge: Option<&BridgeHandle>, users: &[i64]) -> HashSet<i64> {
    // The shards are asked all at once: a batch of 50 profiles would
    // otherwise wait for 50 round trips one after another.
    let counts = futures_util::future::join_all(users.iter().map(|user| registry.sockets_of(*user))).await;
    let mut online: HashSet<i64> = users
        .iter()
        .zip(counts)
        .filter(|(_, count)| count.as_ref().is_ok_and(|count| *count > 0))
        .map(|(user, _)| *user)
        .collect();
    if let Some(bridge) = bridge {
        let rest: Vec<i64> = users
            .iter()
            .copied()
            .filter(|user| !online.contains(user))
            .collect();
        match bridge.held_elsewhere(&rest).await {
            Ok(held) => online.extend(held),
            Err(error) => tracing::debug!(%error, "presence: the bus cannot say who is online elsewhere"),
        }
    }
    online
}

#[derive(diesel::QueryableByName)]
struct Seen {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// `last_active_at = now()` for `users`; the times written, for those with
/// a profile.
async fn touch(
    conn: &mut diesel_async::AsyncPgConnection,
    users: &[i64],
) -> diesel::QueryResult<Vec<(i64, DateTime<Utc>)>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Seen> = diesel::sql_query(
        "UPDATE profiles SET last_active_at = now() WHERE id = ANY($1) RETURNING id, last_active_at AS at",
    )
    .bind::<Array<BigInt>, _>(users)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.at)).collect())
}

/// `(member, partner)` for every conversation of `users`, each member's
/// latest first.
async fn partners(
    conn: &mut diesel_async::AsyncPgConnection,
    users: &[i64],
) -> diesel::QueryResult<Vec<(i64, i64)>> {
    #[derive(diesel::QueryableByName)]
    struct Pair {
        #[diesel(sql_type = BigInt)]
        member: i64,
        #[diesel(sql_type = BigInt)]
        partner: i64,
    }
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Pair> = diesel::sql_query(
        "SELECT member, partner FROM ( \
           SELECT user_a AS member, user_b AS partner, last_message_at FROM conversations WHERE user_a = ANY($1) \
           UNION ALL \
           SELECT user_b AS member, user_a AS partner, last_message_at FROM conversations WHERE user_b = ANY($1)) p \
         ORDER BY member, last_message_at DESC NULLS LAST",
    )
    .bind::<Array<BigInt>, _>(users)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.member, row.partner)).collect())
}
