//! `/v1/proxy/*` served beside the router rather than through it: the
//! Gateway proxy's hot path.
//!
//! Every request the router serves passes seven middleware layers and a route
//! table, each boxing and cloning on the way (`INSTRUCTIONS=1 PROFILES=dir
//! bench/proxy.sh` counted that as the largest part of a proxied request's
//! cost). The proxy route needs the same rules, in the same order, and
//! nothing else, so this lane applies them as plain calls to the same
//! functions the layers call:
//!
//! 1. the request id and, when the answer is ready, the access log line
//!    ([`request_log`]);
//! 2. the caller ([`caller`]);
//! 3. a declared `Content-Length` above [`PROXY_BODY_LIMIT`] refused at once
//!    ([`body_limit`]);
//! 4. the network allowlist and the API key, refusals audited ([`api_key`]);
//! 5. the body read whole, at most [`PROXY_BODY_LIMIT`] bytes, each part
//!    within `HEAD_TIMEOUT` of the last, the whole request within
//!    [`REQUEST_DEADLINE`];
//! 6. [`services::proxy::forward`], and errors as JSON ([`error_json`]).
//!
//! What the router would answer differently is left to it: a path with no
//! connection id (`404`) and, when `CORS_ALLOWED_ORIGINS` is set, everything (CORS
//! headers and preflights are the router's).

use crate::app::REQUEST_DEADLINE;
use crate::error::ApiError;
use crate::middleware::{api_key, body_limit, caller, error_json, request_log};
use crate::routes::proxy::PROXY_BODY_LIMIT;
use crate::services;
use crate::state::AppState;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use nexus_core::wire::ErrorCode;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The route prefix this lane serves.
const PREFIX: &str = "/v1/proxy/";

/// The lane, when it may serve: `None` when `CORS_ALLOWED_ORIGINS` is set.
#[derive(Clone)]
pub struct ProxyLane {
    state: AppState,
}

impl ProxyLane {
    pub fn new(state: AppState) -> Option<ProxyLane> {
        state.config.cors_allowed_origins.is_empty().then_some(ProxyLane { state })
    }

    /// Whether this lane serves `req`: a `/v1/proxy/{connection_id}…` path
    /// with a connection id.
    pub fn serves<B>(&self, req: &Request<B>) -> bool {
        route_of(req.uri().path()).is_some()
    }

    /// Answers `req` from the socket peer `peer`.
    pub async fn serve(&self, peer: IpAddr, req: Request<Incoming>) -> Response {
        let started = Instant::now();
        let state = &self.state;
        let (parts, body) = req.into_parts();
        let id = request_log::request_id(&parts.headers);
        let route = route_of(parts.uri.path()).unwrap_or("(unmatched)");
        let mut caller = caller::caller_of(state, peer, &parts.headers);
        let mut response = match body_limit::declared_excess(&parts.headers, PROXY_BODY_LIMIT) {
            Some(refused) => refused,
            None => {
                let answer = async {
                    api_key::admit(state, &mut caller, &parts.method, parts.uri.path(), &parts.headers).await?;
                    let body = read_body(body, PROXY_BODY_LIMIT, state.config.head_timeout).await?;
                    let after = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
                    let (connection_id, path) = nexus_bridge::split_connection_path(after);
                    let incoming = services::proxy::Incoming {
                        path,
                        method: parts.method.clone(),
                        query: parts.uri.query(),
                        headers: parts.headers.clone(),
                        body,
                    };
                    // Boxed: the forwarding future is kilobytes (see `routes::proxy`).
                    Box::pin(services::proxy::forward(state, &caller, connection_id, incoming)).await
                };
                match tokio::time::timeout(REQUEST_DEADLINE, answer).await {
                    Ok(answered) => answered.unwrap_or_else(IntoResponse::into_response),
                    Err(_) => {
                        let (code, message) = ErrorCode::for_status(408);
                        ApiError::new(code, message).into_response()
                    }
                }
            }
        };
        response = error_json::as_json(response);
        request_log::finish(&id, &parts.method, route, started, &mut response);
        response
    }
}

/// The route pattern of `path` as the router names it (the access log's
/// `route`), or `None` if it is not a proxy path with a connection id.
fn route_of(path: &str) -> Option<&'static str> {
    let after = path.strip_prefix(PREFIX)?;
    let (id, rest) = nexus_bridge::split_connection_path(after);
    if id.is_empty() {
        return None;
    }
    Some(match (after.len() > id.len(), rest.is_empty()) {
        (false, _) => "/v1/proxy/{connection_id}",
        (true, true) => "/v1/proxy/{connection_id}/",
        (true, false) => "/v1/proxy/{connection_id}/{*path}",
    })
}

/// The whole body: at most `limit` bytes (`413`), each part arriving within
/// `pause` of the last (`408`).
async fn read_body(mut body: Incoming, limit: usize, pause: Duration) -> Result<Bytes, ApiError> {
    let mut first = Bytes::new();
    let mut more: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(pause, body.frame()).await {
            Err(_) => return Err(ApiError::new(ErrorCode::Timeout, "the request body stopped arriving")),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ApiError::bad_request("the request body could not be read")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if first.len() + more.len() + data.len() > limit {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body is larger than this endpoint accepts ({limit} bytes)"),
            ));
        }
        // Most bodies come as one part, kept without a copy.
        if first.is_empty() && more.is_empty() {
            first = data;
        } else {
            if more.is_empty() {
                more.extend_from_slice(&std::mem::take(&mut first));
            }
            more.extend_from_slice(&data);
        }
    }
    Ok(if more.is_empty() { first } else { Bytes::from(more) })
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn routes_are_named_as_the_router_names_them() {
        assert_eq!(route_of("/v1/proxy/c1"), Some("/v1/proxy/{connection_id}"));
        assert_eq!(route_of("/v1/proxy/c1/"), Some("/v1/proxy/{connection_id}/"));
        assert_eq!(route_of("/v1/proxy/c1/a/b"), Some("/v1/proxy/{connection_id}/{*path}"));
        assert_eq!(route_of("/v1/proxy/"), None);
        assert_eq!(route_of("/v1/proxy//x"), None);
        assert_eq!(route_of("/v1/proxy"), None);
        assert_eq!(route_of("/v1/providers"), None);
    }
}
