//! `GET /v1/invalidations`: a server-sent event stream of changes to token
//! answers, so a `nexus proxy` or a Bridge that caches answers drops one as
//! soon as the connection is revoked, its provider deleted or edited (SPEC
//! 5b; without the stream, `max_age` bounds how long a stale answer lives).
//!
//! Events:
//! * `ready` (`{}`), first: the follower forgets everything it cached, as
//!   it may have missed changes while it was not listening;
//! * `invalidate`: `{"connection_id": …}`, `{"provider_id": …}` or
//!   `{"all": true}` (also sent when this follower fell behind);
//! * a `ping` comment every 15 s, so a follower can tell a stalled stream
//!   from a quiet one.
//!
//! It reports changes committed by this process and, on PostgreSQL, by
//! every replica. A key limited to some workspaces hears of their
//! connections only (and of every provider change). The stream ends within
//! [`KEY_CHECK`] of its key being revoked or expiring, so a `nexus proxy`
//! using that key drops what it cached and stops serving.

use crate::middleware::Caller;
use crate::services::api_keys;
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::Stream;
use nexus_core::wire::InvalidationData;
use nexus_store::Invalidation;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a quiet stream says it is alive.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// How often a stream checks that its key still holds.
pub const KEY_CHECK: Duration = Duration::from_secs(1);

fn event(what: &Invalidation) -> Event {
    let data = match what {
        Invalidation::Connection(id) => InvalidationData { connection_id: Some(id.clone()), ..Default::default() },
        Invalidation::Provider(id) => InvalidationData { provider_id: Some(id.clone()), ..Default::default() },
        Invalidation::All => InvalidationData { all: Some(true), ..Default::default() },
    };
    Event::default().event("invalidate").data(serde_json::to_string(&data).unwrap_or_else(|_| "{\"all\":true}".into()))
}

/// Changes to token answers as they are committed.
#[utoipa::path(get, path = "/v1/invalidations", tag = "tokens",
    security(("api_key" = [])),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "`event: ready` first, then `event: invalidate` with `{\"connection_id\"}`, `{\"provider_id\"}` or `{\"all\": true}`; a comment every 15 s"),
        (status = 401, body = crate::error::ErrorBody)
    ))]
pub async fn invalidations(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Follow {
        state: AppState,
        caller: Caller,
        changes: tokio::sync::broadcast::Receiver<Invalidation>,
        ready: bool,
        stopping: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        check: tokio::time::Interval,
    }
    let mut check = tokio::time::interval(KEY_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Follow {
        changes: state.subscribe_changes(),
        ready: false,
        stopping: Box::pin(state.stopping()),
        state,
        caller,
        check,
    };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        if !f.ready {
            f.ready = true;
            return Some((Ok(Event::default().event("ready").data("{}")), f));
        }
        loop {
            let next = tokio::select! {
                // A stopping server ends every stream, so it need not wait for them.
                () = &mut f.stopping => return None,
                _ = f.check.tick() => {
                    let valid = match &f.caller.access {
                        Some(access) => api_keys::still_valid(&f.state, access).await,
                        None => false,
                    };
                    if !valid {
                        return None;
                    }
                    continue;
                }
                next = f.changes.recv() => next,
            };
            return match next {
                Ok(Invalidation::Connection(id)) if f.caller.workspaces().is_some() => {
                    // Another workspace's connection: not this key's business.
                    let visible = match f.state.store.connection_by_id(&id).await {
                        Ok(Some(row)) => f.caller.may_see(&row.workspace_id),
                        Ok(None) => false,
                        // Unknown: say something changed, without naming it.
                        Err(_) => {
                            return Some((Ok(event(&Invalidation::All)), f));
                        }
                    };
                    if !visible {
                        continue;
                    }
                    Some((Ok(event(&Invalidation::Connection(id))), f))
                }
                Ok(what) => Some((Ok(event(&what)), f)),
                Err(RecvError::Lagged(_)) => Some((Ok(event(&Invalidation::All)), f)),
                Err(RecvError::Closed) => None,
            };
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(PING_INTERVAL).text("ping"))
}
