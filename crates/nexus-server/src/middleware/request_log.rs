//! One log line per request: id, method, route (the matched pattern, never the
//! raw path with its ids or query), status and latency. The id is taken from a
//! well-formed incoming `X-Request-Id` or generated, and echoed in the response.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| s.to_owned())
}

/// The request's id: a well-formed incoming `X-Request-Id`, or a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers.get("x-request-id").and_then(acceptable_id).unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Logs the request's line and echoes its id in `response`.
pub fn finish(id: &str, method: &Method, route: &str, started: Instant, response: &mut Response) {
    line(id, method, route, started, response.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
    }
}

/// Logs the request's line.
pub fn line(id: &str, method: &Method, route: &str, started: Instant, status: u16) {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(request_id = %id, method = %method, route = %route, status, latency_ms, "request");
}

pub async fn log_request(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let mut response = next.run(req).await;
    state.metrics.http(&route, method.as_str(), response.status().as_u16(), started.elapsed());
    finish(&id, &method, &route, started, &mut response);
    response
}
