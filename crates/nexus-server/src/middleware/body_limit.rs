//! Refuses at once (`413`) a request whose declared `Content-Length` is
//! larger than its route accepts, before a byte of the body is read: a
//! client that announces 10 GB is told so, not read from until the limit.
//! (Bodies without a length are still cut off at the limit as they stream,
//! by `DefaultBodyLimit`.)

use crate::error::ApiError;
use crate::routes::proxy::PROXY_BODY_LIMIT;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nexus_core::wire::ErrorCode;

/// The largest body the route of `path` accepts.
pub fn limit_for(state: &AppState, path: &str) -> usize {
    if path.starts_with("/v1/proxy/") {
        PROXY_BODY_LIMIT
    } else {
        state.config.body_limit
    }
}

/// The `413` for a request whose declared `Content-Length` exceeds `limit`
/// (with `Connection: close`: its body is not read), or `None`.
pub fn declared_excess(headers: &HeaderMap, limit: usize) -> Option<Response> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_none_or(|n| n <= limit as u64) {
        return None;
    }
    let mut refused = too_large(limit).into_response();
    // The body is not read: the connection cannot carry another request.
    refused.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    Some(refused)
}

/// The `413` for a body over `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than this endpoint accepts ({limit} bytes)"),
    )
}

pub async fn refuse_declared_excess(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(refused) = declared_excess(req.headers(), limit_for(&state, req.uri().path())) {
        return refused;
    }
    next.run(req).await
}
