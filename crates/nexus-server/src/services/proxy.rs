//! The Gateway proxy (`ANY /v1/proxy/{connection_id}/{path…}`): Nexus signs
//! the agent's request with the connection's credentials and forwards it to
//! the provider's `api_base_url` joined with `path`, never to another host.
//! The agent never sees a credential. A `401` from the provider triggers one
//! forced refresh and one retry.

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::tokens;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::Response;
use nexus_bridge::TokenAnswer;

fn forwardable(name: &HeaderName) -> bool {
    nexus_bridge::forwardable_header(name.as_str())
}

/// The agent's request, as received.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub path: &'a str,
    pub method: Method,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

pub async fn forward(
    state: &AppState,
    caller: &Caller,
    id: &str,
    incoming: Incoming<'_>,
) -> Result<Response, ApiError> {
    let answer = parse(&tokens::token(state, caller, id).await?)?;
    let base = answer.api_base_url.clone().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "no_api_base_url", "the provider has no api_base_url to proxy to")
    })?;
    let Incoming { path, method, query, headers, body } = incoming;
    let url = nexus_bridge::target_url(&base, path, query).map_err(|m| ApiError::bad_request(format!("path: {m}")))?;
    nexus_core::url_policy::parse_outbound_url(url.as_str())
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "provider_misconfigured", format!("api_base_url: {e}")))?;
    let build = |answer: &TokenAnswer| -> Result<http::Request<Vec<u8>>, ApiError> {
        let mut req = http::Request::builder().method(method.clone()).uri(url.as_str());
        for (k, v) in headers.iter().filter(|(k, _)| forwardable(k)) {
            req = req.header(k, v);
        }
        let mut req = req.body(body.to_vec()).map_err(|_| ApiError::bad_request("the request could not be rebuilt"))?;
        nexus_bridge::apply(&mut req, &answer.strategy, &answer.credentials)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, "cannot_sign", e.to_string()))?;
        Ok(req)
    };
    let mut resp = send(state, build(&answer)?).await?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED && answer.auth_type == "oauth2" {
        let renewed = parse(&tokens::refresh_rejected(state, caller, id, answer.expires_at).await?)?;
        resp = send(state, build(&renewed)?).await?;
    }
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers().iter().filter(|(k, _)| forwardable(k) && k.as_str() != "set-cookie") {
        out = out.header(k, v);
    }
    // The upstream's own error bodies reach the caller as they are.
    out = out.extension(crate::middleware::error_json::KeepBody);
    out.body(Body::from_stream(resp.bytes_stream())).map_err(|_| ApiError::internal())
}

fn parse(bytes: &Bytes) -> Result<TokenAnswer, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| ApiError::internal())
}

async fn send(state: &AppState, req: http::Request<Vec<u8>>) -> Result<reqwest::Response, ApiError> {
    let (parts, body) = req.into_parts();
    let mut out = state.http.request(parts.method, parts.uri.to_string()).body(body);
    for (k, v) in parts.headers.iter() {
        out = out.header(k, v);
    }
    out.send().await.map_err(|e| {
        if e.is_timeout() {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "provider_timeout", "the provider did not answer in time")
        } else {
            ApiError::new(StatusCode::BAD_GATEWAY, "provider_unreachable", "the provider could not be reached")
        }
    })
}
