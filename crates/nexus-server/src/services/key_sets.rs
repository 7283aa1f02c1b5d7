//! Providers' signing keys, kept current (SPEC 14): each key set is fetched
//! once and reused for `DISCOVERY_TTL` (a day by default); an id_token signed with a key the set lacks
//! (the provider rotated its keys) fetches the set again at once. Either
//! fetch is single-flight per key-set URL, and a failed one keeps the last
//! good set (logged and counted in `nexus_discovery_refreshes_total`).

use crate::state::AppState;
use nexus_oauth::{IdTokenCheck, IdTokenError, KeySet};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Slot = Arc<tokio::sync::Mutex<Held>>;

/// A URL's key set, and when fetching it last failed.
#[derive(Default)]
struct Held {
    fetched: Option<Fetched>,
    failed_at: Option<i64>,
}

/// After a failed fetch, how long the last good set is used without trying again.
const RETRY_AFTER_SECS: i64 = 60;

#[derive(Clone)]
struct Fetched {
    keys: Arc<KeySet>,
    at: i64,
}

/// The key sets in use, by URL.
#[derive(Default)]
pub struct KeySets {
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for KeySets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySets")
    }
}

impl KeySets {
    fn slot(&self, uri: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(uri.to_owned()).or_default().clone()
    }
}

/// Fetches into `held` (locked): the new set, or on failure the last good
/// one (an error only when there is none). Within a minute of a failure it
/// does not try again, so a provider that is away is not asked by every
/// request in turn.
async fn fetch(state: &AppState, uri: &str, held: &mut Held, reason: &str) -> Result<Arc<KeySet>, String> {
    let now = state.clock.now_secs();
    let last_good = held.fetched.as_ref().map(|f| f.keys.clone());
    if held.failed_at.is_some_and(|t| now - t < RETRY_AFTER_SECS) {
        return last_good.ok_or_else(|| "the provider's key set could not be fetched a moment ago".to_owned());
    }
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    match nexus_oauth::fetch_key_set(&http, uri).await {
        Ok(keys) => {
            state.metrics.discovery(reason, "ok");
            let keys = Arc::new(keys);
            *held = Held { fetched: Some(Fetched { keys: keys.clone(), at: now }), failed_at: None };
            Ok(keys)
        }
        Err(e) => {
            state.metrics.discovery(reason, "failed");
            held.failed_at = Some(now);
            tracing::warn!(jwks_uri = %uri, error = %e, reason, "the key set could not be fetched again; keeping the last good one");
            last_good.ok_or(e)
        }
    }
}

/// Verifies an id_token with the provider's current keys.
pub async fn verify(state: &AppState, raw: &str, check: &IdTokenCheck<'_>) -> Result<(), String> {
    let slot = state.key_sets.slot(check.jwks_uri);
    let keys = {
        let mut held = slot.lock().await;
        match held.fetched.clone() {
            Some(f) if state.clock.now_secs() - f.at < state.config.discovery_ttl_secs => f.keys,
            _ => fetch(state, check.jwks_uri, &mut held, "ttl").await?,
        }
    };
    match nexus_oauth::verify_id_token_with(raw, check, &keys) {
        Err(IdTokenError::UnknownKey) => {
            // Another task may have fetched the new set while this one waited.
            let keys = {
                let mut held = slot.lock().await;
                match held.fetched.clone() {
                    Some(f) if !Arc::ptr_eq(&f.keys, &keys) => f.keys,
                    _ => fetch(state, check.jwks_uri, &mut held, "unknown_kid").await?,
                }
            };
            nexus_oauth::verify_id_token_with(raw, check, &keys).map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    }
}
