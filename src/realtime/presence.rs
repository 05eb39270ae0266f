//! Presence: whether a member is online, when they were last seen, and the
//! `presence` event their conversation partners get when that changes.
//!
//! Online means a socket somewhere: on this node (its registry), or, with
//! the bus, on a node holding a live lease on the member (see
//! `aurum_actors::bridge`), so a member with sockets on two nodes stays
//! online until the last one leaves and a crashed node's members go offline
//! when its leases lapse (`PRESENCE_TTL`). Without `REDIS_URL`, the
//! registry alone. `last_seen_at` is `profiles.last_active_at`, written when
//! a member comes online and when they go offline.

use std::collections::HashSet;

use aurum_actors::bridge::BridgeHandle;
use aurum_actors::registry::RegistryHandle;
use aurum_schema::pool::DbPool;
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::RunQueryDsl;
use serde_json::json;

use super::Router;

/// Most partners told of one change: the ones with the latest messages.
const MAX_PARTNERS: i64 = 200;

#[derive(Clone)]
pub struct Presence {
    registry: RegistryHandle,
    bridge: Option<BridgeHandle>,
    db: DbPool,
    router: Router,
}

impl Presence {
    pub fn new(registry: RegistryHandle, bridge: Option<BridgeHandle>, db: DbPool, router: Router) -> Self {
        Self {
            registry,
            bridge,
            db,
            router,
        }
    }

    /// Which of `users` are online. With the bus down, what this node
    /// knows: its own sockets.
    pub async fn online(&self, users: &[i64]) -> HashSet<i64> {
        online(&self.registry, self.bridge.as_ref(), users).await
    }

    /// A socket of `user` has connected (and, with the bus, its lease is
    /// written): if it is the member's only one anywhere, the member just
    /// came online.
    pub async fn arrived(&self, user: i64) {
        if self.registry.sockets_of(user).await != Ok(1) || self.elsewhere(user).await {
            return;
        }
        self.changed(user, true).await;
    }

    /// A socket of `user` has gone (its unregister sent): if none is left
    /// anywhere, the member just went offline.
    pub async fn left(&self, user: i64) {
        // The shard answers after the unregister it already holds.
        if self.registry.sockets_of(user).await != Ok(0) {
            return;
        }
        if let Some(bridge) = &self.bridge {
            bridge.release(user);
        }
        if self.elsewhere(user).await {
            return;
        }
        self.changed(user, false).await;
    }

    /// Whether another node holds `user`; a bus that cannot answer counts
    /// as no, so the member's partners hear of the change they can see.
    async fn elsewhere(&self, user: i64) -> bool {
        match &self.bridge {
            Some(bridge) => bridge
                .held_elsewhere(&[user])
                .await
                .is_ok_and(|held| held.contains(&user)),
            None => false,
        }
    }

    async fn changed(&self, user: i64, online: bool) {
        let Ok(mut conn) = self.db.get().await else {
            tracing::warn!(user, "presence: no database connection");
            return;
        };
        let seen = match touch(&mut conn, user).await {
            Ok(Some(seen)) => seen,
            Ok(None) => return, // no profile: nobody to tell about
            Err(error) => {
                tracing::warn!(%error, user, "presence: last_active_at not written");
                return;
            }
        };
        let partners = match partners(&mut conn, user).await {
            Ok(partners) => partners,
            Err(error) => {
                tracing::warn!(%error, user, "presence: partners not read");
                return;
            }
        };
        drop(conn);
        let payload = json!({
            "user_id": user,
            "online": online,
            "last_seen_at": seen.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        for partner in partners {
            self.router
                .emit_to_user(partner, "presence", payload.clone(), None);
        }
    }
}

/// Which of `users` hold a socket on this node or (with a bus that
/// answers) on another.
pub async fn online(registry: &RegistryHandle, bridge: Option<&BridgeHandle>, users: &[i64]) -> HashSet<i64> {
    let mut online = HashSet::new();
    for user in users {
        if registry.sockets_of(*user).await.is_ok_and(|count| count > 0) {
            online.insert(*user);
        }
    }
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
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// `last_active_at = now()`; the time written, or `None` without a profile.
async fn touch(
    conn: &mut diesel_async::AsyncPgConnection,
    user: i64,
) -> diesel::QueryResult<Option<DateTime<Utc>>> {
    let seen: Option<Seen> = diesel::sql_query(
        "UPDATE profiles SET last_active_at = now() WHERE id = $1 RETURNING last_active_at AS at",
    )
    .bind::<BigInt, _>(user)
    .get_result(conn)
    .await
    .map(Some)
    .or_else(|error| match error {
        diesel::result::Error::NotFound => Ok(None),
        error => Err(error),
    })?;
    Ok(seen.map(|seen| seen.at))
}

/// The members `user` has conversations with, latest first.
async fn partners(conn: &mut diesel_async::AsyncPgConnection, user: i64) -> diesel::QueryResult<Vec<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Partner {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let rows: Vec<Partner> = diesel::sql_query(
        "SELECT id FROM (SELECT user_b AS id, last_message_at FROM conversations WHERE user_a = $1 \
         UNION ALL SELECT user_a AS id, last_message_at FROM conversations WHERE user_b = $1) p \
         ORDER BY last_message_at DESC NULLS LAST LIMIT $2",
    )
    .bind::<BigInt, _>(user)
    .bind::<BigInt, _>(MAX_PARTNERS)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}
