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
//! 2. a declared `Content-Length` above [`PROXY_BODY_LIMIT`] refused at once
//!    ([`body_limit`]);
//! 3. the caller ([`caller`]), then the network allowlist and the API key,
//!    refusals audited ([`api_key`]);
//! 4. the body read whole, at most [`PROXY_BODY_LIMIT`] bytes, each part
//!    within `HEAD_TIMEOUT` of the last, the whole request within
//!    [`REQUEST_DEADLINE`];
//! 5. [`proxy::forward`], as the router's route does, and errors as JSON
//!    ([`error_json`]).
//!
//! What the router would answer differently is left to it: a path with no
//! connection id (`404`) and, when `CORS_ALLOWED_ORIGINS` is set, everything
//! (CORS headers and preflights are the router's).

use crate::app::REQUEST_DEADLINE;
use crate::error::ApiError;
use crate::middleware::{api_key, body_limit, caller, error_json, request_log};
use crate::routes::proxy::{self, PROXY_BODY_LIMIT};
use crate::state::AppState;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::Request;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use nexus_core::wire::ErrorCode;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tower_http::timeout::{TimeoutBody, TimeoutError};

/// The lane, when it may serve: `None` when `CORS_ALLOWED_ORIGINS` is set.
#[derive(Clone)]
pub struct ProxyLane {
    state: AppState,
}

impl ProxyLane {
    pub fn new(state: AppState) -> Option<ProxyLane> {
        state.config.cors_allowed_origins.is_empty().then_some(ProxyLane { state })
    }

    /// The route pattern of `req` if this lane serves it: a
    /// `/v1/proxy/{connection_id}…` path with a connection id.
    pub fn route<B>(&self, req: &Request<B>) -> Option<&'static str> {
        proxy::route_of(req.uri().path())
    }

    /// Answers `req`, of `route`, from the socket peer `peer`.
    pub async fn serve(&self, route: &'static str, peer: IpAddr, req: Request<Incoming>) -> Response {
        let started = Instant::now();
        let state = &self.state;
        let (http::request::Parts { method, uri, headers, .. }, body) = req.into_parts();
        let id = request_log::request_id(&headers);
        let mut response = match body_limit::declared_excess(&headers, PROXY_BODY_LIMIT) {
            Some(refused) => refused,
            None => {
                let answer = async {
                    let mut caller = caller::caller_of(state, peer, &headers);
                    api_key::admit(state, &mut caller, &method, uri.path(), &headers).await?;
                    let body = read_body(body, PROXY_BODY_LIMIT, state.config.head_timeout).await?;
                    proxy::forward(state, &caller, &uri, method.clone(), headers, body).await
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
        state.metrics.http(route, method.as_str(), response.status().as_u16(), started.elapsed());
        request_log::finish(&id, &method, route, started, &mut response);
        response
    }
}

/// The whole body: at most `limit` bytes (`413`), each part arriving within
/// `pause` of the last (`408`).
async fn read_body(body: Incoming, limit: usize, pause: Duration) -> Result<Bytes, ApiError> {
    match Limited::new(TimeoutBody::new(pause, body), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(body_limit::too_large(limit)),
        Err(e) if e.is::<TimeoutError>() => Err(ApiError::new(ErrorCode::Timeout, "the request body stopped arriving")),
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}
