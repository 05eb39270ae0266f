//! Profiles as shown with their member's presence (`online`,
//! `last_seen_at`): what `/profiles/batch` and `/profiles/{id}` answer.

use std::collections::HashSet;

use aurum_schema::json_time;
use aurum_schema::models::profiles::Profile;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    #[serde(flatten)]
    profile: Profile,
    online: bool,
    /// Now while online; otherwise when the member was last online.
    #[serde(serialize_with = "json_time::timestamp")]
    last_seen_at: DateTime<Utc>,
}

/// `profiles` with their presence, asked for all at once.
pub async fn with_presence(state: &AppState, profiles: Vec<Profile>) -> Vec<ProfileView> {
    let ids: Vec<i64> = profiles.iter().map(|profile| profile.id).collect();
    let online: HashSet<i64> = match &state.registry {
        Some(registry) => crate::realtime::presence::online(registry, state.bus.as_ref(), &ids).await,
        None => HashSet::new(),
    };
    let now = Utc::now();
    profiles
        .into_iter()
        .map(|profile| {
            let online = online.contains(&profile.id);
            let last_seen_at = if online { now } else { profile.last_active_at };
            ProfileView {
                profile,
                online,
                last_seen_at,
            }
        })
        .collect()
}
