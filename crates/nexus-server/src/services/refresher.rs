//! The background refresher: every tick (with jitter) it claims a bounded
//! batch of connections whose `next_refresh_at` has come (a lease plus, on
//! PostgreSQL, `SKIP LOCKED`, so replicas never take the same one) and
//! refreshes them with bounded concurrency through the same single-flight path
//! as on-demand refreshes. Failures reschedule with exponential backoff.
//!
//! It stops cooperatively: once the server begins to stop, no tick starts
//! and no claimed connection that has not started is begun; refreshes
//! already talking to a provider finish (the provider may already have
//! rotated the refresh token: aborting would lose it).

use crate::services::refresh::{refresh, Reason};
use crate::state::AppState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections claimed per tick.
pub const BATCH: i64 = 200;
/// Refreshes in flight at once per process.
pub const CONCURRENCY: usize = 8;
/// How long a claim keeps other replicas away.
pub const LEASE_SECS: i64 = 60;

/// One tick: claims and refreshes what is due; returns how many were claimed.
pub async fn tick(state: &AppState) -> usize {
    let now = chrono::Utc::now().timestamp();
    let ids = match state.store.claim_due_refreshes(now, LEASE_SECS, BATCH).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "refresher could not claim due connections");
            return 0;
        }
    };
    let claimed = ids.len();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let stopping = state.stopping();
    tokio::pin!(stopping);
    for id in ids {
        // Claimed but not begun when the server stops: left for the lease
        // to expire (another replica, or the next start, takes it).
        let permit = tokio::select! {
            biased;
            () = &mut stopping => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let state = state.clone();
        tasks.spawn(async move {
            if let Err(e) = refresh(&state, None, &id, Reason::Background).await {
                tracing::warn!(connection = %id, code = e.code, "background refresh failed");
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    claimed
}

/// Runs ticks until the server begins to stop, then returns once the
/// refreshes in flight are done. A full batch is followed at once by
/// another tick; otherwise it sleeps the interval ±20 %.
pub async fn run(state: AppState) {
    let interval = state.config.refresh_interval_secs as f64;
    let stopping = state.stopping();
    tokio::pin!(stopping);
    loop {
        let claimed = tick(&state).await;
        if state.is_stopping() {
            return;
        }
        if claimed as i64 >= BATCH {
            continue;
        }
        let jitter = 1.0 + (rand::random::<f64>() * 0.4 - 0.2);
        tokio::select! {
            () = &mut stopping => return,
            () = tokio::time::sleep(Duration::from_secs_f64(interval * jitter)) => {}
        }
    }
}
