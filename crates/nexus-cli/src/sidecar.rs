//! `nexus proxy`: a local signing proxy for agents in any language. An agent
//! calls `http://127.0.0.1:PORT/{connection_id}/{path}`; the sidecar fetches
//! the connection's strategy and credentials from the Gateway (cached in its
//! memory only, through `nexus-bridge`), signs the request and forwards it to
//! the provider's `api_base_url` — never to another host.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nexus_bridge::{Bridge, Forward, GatewayError, SendError};
use serde_json::json;
use std::net::SocketAddr;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({ "code": code, "message": message.into() }))).into_response()
}

fn gateway_error(e: &GatewayError) -> Response {
    match e {
        GatewayError::AttentionRequired(_) => error(StatusCode::CONFLICT, "attention_required", e.to_string()),
        GatewayError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m.clone()),
        GatewayError::Conflict { code, message } => error(StatusCode::CONFLICT, code, message.clone()),
        GatewayError::Gone(m) => error(StatusCode::GONE, "provider_deleted", m.clone()),
        GatewayError::Unauthorized => error(StatusCode::BAD_GATEWAY, "gateway_refused_api_key", e.to_string()),
        GatewayError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_input", m.clone()),
        GatewayError::Unavailable(m) => error(StatusCode::BAD_GATEWAY, "gateway_unavailable", m.clone()),
    }
}

async fn forward(
    bridge: Bridge,
    id: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match bridge.credentials(&id).await {
        Ok(a) => a,
        Err(e) => return gateway_error(&e),
    };
    let Some(base) = answer.api_base_url.clone() else {
        return error(StatusCode::CONFLICT, "no_api_base_url", "the provider has no api_base_url to proxy to");
    };
    let fwd = match Forward::new(&base, &path, query.as_deref(), method, &headers, body.into()) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_input", format!("path: {m}")),
    };
    match bridge.forward(&id, &fwd, answer).await {
        Ok(resp) => nexus_bridge::forward::relay(resp).map(Body::new),
        Err(SendError::Gateway(e)) => gateway_error(&e),
        Err(SendError::Sign(e)) => error(StatusCode::CONFLICT, "cannot_sign", e.to_string()),
        Err(SendError::Provider(m)) => error(StatusCode::BAD_GATEWAY, "provider_unreachable", m),
        Err(e @ SendError::ProviderTimeout) => error(StatusCode::GATEWAY_TIMEOUT, "provider_timeout", e.to_string()),
        Err(SendError::StreamingBody) => {
            error(StatusCode::BAD_REQUEST, "invalid_input", "streaming bodies are not supported")
        }
    }
}

async fn with_path(
    State(bridge): State<Bridge>,
    Path((id, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(bridge, id, path, query, method, headers, body).await
}

async fn root(
    State(bridge): State<Bridge>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(bridge, id, String::new(), query, method, headers, body).await
}

/// The sidecar's router.
pub fn router(bridge: Bridge) -> axum::Router {
    axum::Router::new()
        .route("/{connection_id}", axum::routing::any(root))
        .route("/{connection_id}/", axum::routing::any(root))
        .route("/{connection_id}/{*path}", axum::routing::any(with_path))
        .layer(axum::extract::DefaultBodyLimit::max(10 * 1024 * 1024))
        .with_state(bridge)
}

/// Serves until SIGINT/SIGTERM.
pub async fn serve(listen: SocketAddr, gateway: String, api_key: String) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--listen {listen} could not be bound: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, gateway = %gateway, "nexus proxy is serving");
    println!("nexus proxy listening on http://{addr} (gateway {gateway})");
    axum::serve(listener, router(Bridge::new(gateway, api_key)))
        .with_graceful_shutdown(nexus_server::shutdown_signal())
        .await
        .map_err(|e| format!("proxy failed: {e}"))
}
