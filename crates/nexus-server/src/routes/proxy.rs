//! `ANY /v1/proxy/{connection_id}/{path…}`: the Gateway proxy.

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::proxy;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Extension;

/// The body of a proxied request is read whole (signing strategies hash it), up to this size.
pub const PROXY_BODY_LIMIT: usize = 10 * 1024 * 1024;

pub async fn proxy_with_path(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let incoming = proxy::Incoming { path: &path, method, query: query.as_deref(), headers: &headers, body };
    proxy::forward(&state, &caller, &id, incoming).await
}

pub async fn proxy_root(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let incoming = proxy::Incoming { path: "", method, query: query.as_deref(), headers: &headers, body };
    proxy::forward(&state, &caller, &id, incoming).await
}
