//! The Gateway proxy (`ANY /v1/proxy/{connection_id}/{path…}`): Nexus signs
//! the agent's request with the connection's credentials and forwards it to
//! the provider's `api_base_url` joined with `path`, never to another host.
//! The agent never sees a credential. A `401` to OAuth2 credentials triggers
//! one refresh and one retry (`nexus_bridge::pipeline`, as in every proxy).

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::tokens;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use nexus_bridge::h1::Agent;
use nexus_bridge::{Forward, TokenAnswer};
use nexus_core::wire::ErrorCode;
use std::sync::Arc;

/// The agent's request, as received (`path` still percent-encoded).
#[derive(Debug)]
pub struct Incoming<'a> {
    pub path: &'a str,
    pub method: Method,
    pub query: Option<&'a str>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The connection's token answer for `caller` and the agent's request
/// aimed under its `api_base_url`, ready to be signed: what both ways of
/// sending (the lane's relay and [`forward`]) start from.
pub async fn prepare(
    state: &AppState,
    caller: &Caller,
    id: &str,
    incoming: Incoming<'_>,
) -> Result<(Arc<TokenAnswer>, Forward), ApiError> {
    let cached = tokens::answer(state, caller, id).await?;
    let answer = cached.answer().ok_or_else(ApiError::internal)?;
    let misconfigured = |m: &str| ApiError::new(ErrorCode::ProviderMisconfigured, format!("api_base_url: {m}"));
    let base = match answer.base() {
        Some(Ok(base)) => base,
        Some(Err(m)) => return Err(misconfigured(m)),
        None => return Err(ApiError::new(ErrorCode::NoApiBaseUrl, "the provider has no api_base_url to proxy to")),
    };
    // The target's scheme, host and port are the base's, so the base is what the policy checks.
    cached.base_allowed().map_err(misconfigured)?;
    let Incoming { path, method, query, headers, body } = incoming;
    let fwd = Forward::to(base, path, query, method, headers, body).map_err(ApiError::bad_request)?;
    Ok((answer, fwd))
}

/// The connection's answer renewed after the provider refused `stale`
/// with a `401` (the 401 rule of `nexus_bridge::pipeline`).
pub async fn renewed(
    state: &AppState,
    caller: &Caller,
    id: &str,
    stale: Arc<TokenAnswer>,
) -> Result<Arc<TokenAnswer>, ApiError> {
    parse(&Box::pin(tokens::refresh_rejected(state, caller, id, stale.expires_at())).await?)
}

/// Forwards the agent's request and streams the provider's answer back
/// through the router (its way in when CORS is configured), on the lane's
/// provider side (`AppState::proxy_sender`).
pub async fn forward(
    state: &AppState,
    caller: &Caller,
    id: &str,
    incoming: Incoming<'_>,
) -> Result<Response, ApiError> {
    let framing = Agent { head_request: incoming.method == Method::HEAD, http10: false, keep_alive: true };
    let (answer, fwd) = prepare(state, caller, id, incoming).await?;
    let sender = &state.proxy_sender;
    let mut link = None;
    let refresh = |stale| renewed(state, caller, id, stale);
    let sent = sender.forward::<ApiError, _, _>(&mut link, id, &fwd, answer, framing, refresh).await;
    if let Some(up) = link {
        sender.upstreams().check_in(up);
    }
    let (up, head, provider) = sent?;
    let mut out = sender.respond(up, head).map(Body::new);
    // The upstream's own error bodies reach the caller as they are.
    out.extensions_mut().insert(crate::middleware::error_json::KeepBody);
    out.extensions_mut().insert(ProviderTime(provider));
    Ok(out)
}

/// How long the provider took to answer a proxied request (to its head).
#[derive(Debug, Clone, Copy)]
pub struct ProviderTime(pub std::time::Duration);

fn parse(bytes: &Bytes) -> Result<Arc<TokenAnswer>, ApiError> {
    serde_json::from_slice(bytes).map(Arc::new).map_err(|_| ApiError::internal())
}
