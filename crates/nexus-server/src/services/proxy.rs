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
use nexus_bridge::forward::ProviderError;
use nexus_bridge::pipeline::send_with_refresh;
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

pub async fn forward(
    state: &AppState,
    caller: &Caller,
    id: &str,
    incoming: Incoming<'_>,
) -> Result<Response, ApiError> {
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
    // Provider connections are pooled per connection id (see `ProviderClient`).
    let pool = answer.connection_id().to_owned();
    // The provider's share of the time (its answers' heads), for the
    // latency the proxy adds (`nexus_proxy_added_seconds`).
    let provider_micros = std::sync::atomic::AtomicU64::new(0);
    let resp = send_with_refresh(
        answer,
        |answer| {
            let signed = fwd.signed(&answer).map_err(|e| ApiError::new(ErrorCode::CannotSign, e.to_string()));
            let (pool, spent) = (&pool, &provider_micros);
            async move {
                let started = std::time::Instant::now();
                let answer = send(state, pool, signed?).await;
                spent.fetch_add(started.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
                answer
            }
        },
        |resp| resp.status().as_u16(),
        |stale| async move { parse(&Box::pin(tokens::refresh_rejected(state, caller, id, stale.expires_at())).await?) },
    )
    .await?;
    let mut out = nexus_bridge::forward::relay(resp).map(Body::new);
    // The upstream's own error bodies reach the caller as they are.
    out.extensions_mut().insert(crate::middleware::error_json::KeepBody);
    out.extensions_mut().insert(ProviderTime(std::time::Duration::from_micros(provider_micros.into_inner())));
    Ok(out)
}

/// How long the provider took to answer a proxied request (to its head).
#[derive(Debug, Clone, Copy)]
pub struct ProviderTime(pub std::time::Duration);

fn parse(bytes: &Bytes) -> Result<Arc<TokenAnswer>, ApiError> {
    serde_json::from_slice(bytes).map(Arc::new).map_err(|_| ApiError::internal())
}

async fn send(
    state: &AppState,
    connection_id: &str,
    req: http::Request<Bytes>,
) -> Result<http::Response<nexus_bridge::forward::Incoming>, ApiError> {
    state.providers.send(connection_id, req).await.map_err(|e| match e {
        ProviderError::Timeout => ApiError::new(ErrorCode::ProviderTimeout, "the provider did not answer in time"),
        ProviderError::Unreachable => {
            ApiError::new(ErrorCode::ProviderUnreachable, "the provider could not be reached")
        }
    })
}
