//! `ANY /v1/proxy/{connection_id}/{path…}`: the Gateway proxy.

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
const PREFIX: &str = "/v1/proxy/";

/// Serves `/v1/proxy/{connection_id}` with or without a path after it.
pub async fn proxy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let after = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let (id, path) = nexus_bridge::split_connection_path(after);
    let incoming = proxy::Incoming { path, method, query: uri.query(), headers, body };
    // Boxed: the forwarding future (token answer, signing, the send and a
    // possible refresh) is kilobytes, and every layer above the handler
    // would otherwise move it by value (`INSTRUCTIONS=1 bench/proxy.sh`
    // counted its copies as a seventh of the Gateway's instructions).
    Box::pin(proxy::forward(&state, &caller, id, incoming)).await
}
