//! Background chores that no request triggers:
//!
//! * pending connections whose handshake expired become `failed`
//!   (`expired`, and `connection.failed` is sent) even if nobody reads
//!   them again: a user who walks away from a consent page is reported;
//! * delivered and failed webhook deliveries older than [`KEEP_DELIVERIES`]
//!   are deleted with their attempts, a batch at a time;
//! * Connect sessions that ended more than a day ago are deleted;
//! * the failed-authentication limiter forgets addresses that are quiet again.
//!
//! Both are safe on every replica at once (each expiry is a conditional
//! update; a pruned row is gone for everyone).

use crate::services::connections::expire_if_stale;
use crate::state::AppState;
use std::time::Duration;

/// How often the chores run.
const EVERY: Duration = Duration::from_secs(30);
/// How long finished deliveries are kept for `GET /v1/webhooks/{id}/deliveries`.
pub const KEEP_DELIVERIES: Duration = Duration::from_secs(30 * 86_400);
const BATCH: i64 = 500;

/// Runs until the server begins to stop.
pub async fn run(state: AppState) {
    let stopping = state.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        sweep(&state).await;
    }
}

/// One round of every chore (also called by tests).
pub async fn sweep(state: &AppState) {
    state.keys.prune();
    let now = state.clock.now_micros();
    match state.store.expired_handshakes(now, BATCH).await {
        Ok(rows) => {
            for row in rows {
                if let Err(e) = expire_if_stale(state, row).await {
                    tracing::warn!(error = %e.message, "an expired handshake could not be closed; trying again later");
                    break;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "expired handshakes could not be read; trying again later"),
    }
    let before = now - i64::try_from(KEEP_DELIVERIES.as_micros()).unwrap_or(i64::MAX);
    if let Err(e) = state.store.prune_deliveries(before, BATCH).await {
        tracing::warn!(error = %e, "old webhook deliveries could not be pruned; trying again later");
    }
    // Connect sessions a day past their end (kept that long for the audit trail's sake).
    if let Err(e) = state.store.prune_connect_sessions(now - 86_400_000_000).await {
        tracing::warn!(error = %e, "expired Connect sessions could not be pruned; trying again later");
    }
}
