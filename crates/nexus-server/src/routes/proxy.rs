//! `ANY /v1/proxy/{connection_id}/{path…}`: the Gateway proxy.
//!
//! Served by [`crate::proxy_lane`] beside the router, and by [`proxy`] through
//! it when the lane leaves a request to the router (CORS configured).

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::proxy;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Extension;

/// The body of a proxied request is read whole (signing strategies hash it), up to this size.
pub const PROXY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// The route's prefix; what follows is `{connection_id}/{path…}`, passed on
/// as the agent encoded it.
pub const PREFIX: &str = "/v1/proxy/";

/// The route's patterns: without a path, with an empty one, with one.
pub const ROUTES: [&str; 3] =
    ["/v1/proxy/{connection_id}", "/v1/proxy/{connection_id}/", "/v1/proxy/{connection_id}/{*path}"];

/// The pattern of [`ROUTES`] that `path` matches, or `None` (not under
/// [`PREFIX`], or no connection id).
pub fn route_of(path: &str) -> Option<&'static str> {
    let after = path.strip_prefix(PREFIX)?;
    let (id, rest) = nexus_bridge::split_connection_path(after);
    if id.is_empty() {
        return None;
    }
    Some(match (after.len() > id.len(), rest.is_empty()) {
        (false, _) => ROUTES[0],
        (true, true) => ROUTES[1],
        (true, false) => ROUTES[2],
    })
}

/// Serves `/v1/proxy/{connection_id}` with or without a path after it.
pub async fn proxy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    forward(&state, &caller, &uri, method, headers, body).await
}

/// Forwards the request for `uri` (a path of this route) for `caller`.
pub async fn forward(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let after = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let (id, path) = nexus_bridge::split_connection_path(after);
    let incoming = proxy::Incoming { path, method, query: uri.query(), headers, body };
    // Boxed: the forwarding future (token answer, signing, the send and a
    // possible refresh) is kilobytes, and every layer above would otherwise
    // move it by value (`INSTRUCTIONS=1 bench/proxy.sh` counted its copies
    // as a seventh of the Gateway's instructions).
    // Timed from here (the body is read): what the proxy adds over the
    // provider's time, for both ways in (the lane and the router).
    let started = std::time::Instant::now();
    let answered = Box::pin(proxy::forward(state, caller, id, incoming)).await;
    let (status, provider) = match &answered {
        Ok(r) => (r.status().as_u16(), r.extensions().get::<proxy::ProviderTime>().map(|t| t.0)),
        Err(e) => (e.status().as_u16(), None),
    };
    state.metrics.proxied(status, provider.map(|p| started.elapsed().saturating_sub(p)));
    answered
}

#[cfg(test)]
mod tests {
    use super::{route_of, ROUTES};

    #[test]
    fn routes_are_named_as_the_router_names_them() {
        assert_eq!(route_of("/v1/proxy/c1"), Some(ROUTES[0]));
        assert_eq!(route_of("/v1/proxy/c1/"), Some(ROUTES[1]));
        assert_eq!(route_of("/v1/proxy/c1/a/b"), Some(ROUTES[2]));
        assert_eq!(route_of("/v1/proxy/"), None);
        assert_eq!(route_of("/v1/proxy//x"), None);
        assert_eq!(route_of("/v1/proxy"), None);
        assert_eq!(route_of("/v1/providers"), None);
    }
}
