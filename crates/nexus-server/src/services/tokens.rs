//! `GET /v1/token/{connection_id}` (SPEC section 5): the strategy and the usage
//! credentials of an active connection — never a refresh token.

use crate::error::ApiError;
use crate::metrics::TokenOutcome;
use crate::middleware::Caller;
use crate::services::connections::{audit, context, expire_if_stale};
use crate::services::refresh::{refresh, Reason, Refresh, Settled};
use crate::services::token_cache::Cached;
use crate::services::{connection_config, strategy};
use crate::state::AppState;
use axum::body::Bytes;
use nexus_core::wire::ErrorCode;
use nexus_core::AuditEvent;
use nexus_core::ConnectionStatus;
use nexus_store::NewAudit;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The answer of `GET /v1/token/{connection_id}` (the shared wire type).
pub use nexus_core::wire::TokenAnswer as TokenView;

/// `POST /v1/refresh/{id}`: refresh now (coalesced with one completed in the
/// last few seconds), then answer like `GET /v1/token`.
pub async fn force_refresh(state: &AppState, caller: &Caller, id: &str) -> Result<Bytes, ApiError> {
    refresh_then_answer(state, caller, id, Reason::Forced).await
}

/// After the provider refused the token that expires at `seen`: refresh unless
/// it was already replaced, then answer like `GET /v1/token`.
pub async fn refresh_rejected(
    state: &AppState,
    caller: &Caller,
    id: &str,
    seen: Option<i64>,
) -> Result<Bytes, ApiError> {
    refresh_then_answer(state, caller, id, Reason::Rejected(seen)).await
}

async fn refresh_then_answer(state: &AppState, caller: &Caller, id: &str, reason: Reason) -> Result<Bytes, ApiError> {
    let settled = refresh(state, Some(caller), id, reason).await?;
    if let Refresh::ProviderDown(code) = &settled.outcome {
        // SPEC 5b: a provider away while Nexus needs a token from it is 503
        // everywhere (v1 answered a forced refresh with 502).
        return Err(ApiError::new(
            ErrorCode::ProviderUnavailable,
            "the provider could not be reached to refresh the token",
        )
        .with_details(json!({ "error": code })));
    }
    // Answered from what the refresh wrote (or read under its lock); the
    // next `GET /v1/token` fills the cache.
    let (view, ..) = view_of(state, caller, settled).await?;
    Ok(Bytes::from(serde_json::to_vec(&view).map_err(|_| ApiError::internal())?))
}

/// The JSON answer (served from the cache when possible).
pub async fn token(state: &AppState, caller: &Caller, id: &str) -> Result<Bytes, ApiError> {
    Ok(answer(state, caller, id).await?.body.clone())
}

/// [`token`], as the cache keeps it (with the answer parsed once, for the proxy).
pub async fn answer(state: &AppState, caller: &Caller, id: &str) -> Result<Arc<Cached>, ApiError> {
    if let Some(hit) = state.token_cache.get(id, state.clock.now_secs()) {
        if !caller.may_see(&hit.workspace_id) {
            return Err(ApiError::not_found("no such connection"));
        }
        state
            .audit_batched(NewAudit {
                ip: Some(caller.ip_string()),
                user_agent: caller.user_agent.clone(),
                provider_id: Some(hit.provider_id.clone()),
                connection_id: Some(id.to_owned()),
                workspace_id: Some(hit.workspace_id.clone()),
                data: json!({}),
                at: Some(chrono::Utc::now().timestamp_micros()),
                api_key: caller.api_key.clone(),
                ..NewAudit::new(AuditEvent::TokenRetrieved)
            })
            .await?;
        state.metrics.token_answer(TokenOutcome::CacheHit);
        return Ok(hit);
    }
    let generation = state.token_cache.generation();
    // Boxed: the miss path (store reads, a possible refresh) is a future
    // of kilobytes that the cache hit, the hot path, should not carry.
    let (view, refreshed) = match Box::pin(load(state, caller, id)).await {
        Ok(loaded) => loaded,
        Err(e) => {
            state.metrics.token_answer(match e.code {
                ErrorCode::AttentionRequired => TokenOutcome::AttentionRequired,
                ErrorCode::ProviderUnavailable | ErrorCode::StorageUnavailable => TokenOutcome::Unavailable,
                _ => TokenOutcome::Refused,
            });
            return Err(e);
        }
    };
    state.metrics.token_answer(if refreshed { TokenOutcome::Refreshed } else { TokenOutcome::Stored });
    let body = Bytes::from(serde_json::to_vec(&view.0).map_err(|_| ApiError::internal())?);
    // Not served from cache inside the refresh window: a request there refreshes.
    let refresh_by = view.0.expires_at.map(|exp| exp - state.config.refresh_window_secs);
    let max_age = refresh_by.map(|t| Duration::from_secs((t - state.clock.now_secs()).max(0) as u64));
    Ok(state.token_cache.put(id, body, &view.1, &view.2, max_age, refresh_by, generation))
}

/// Reads the connection, refreshes it first when its token is inside the
/// refresh window, and answers from the row as it then stands; returns the
/// view with its provider and workspace ids.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<((TokenView, String, String), bool), ApiError> {
    let row = crate::services::connections::visible(state, caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such connection"))?;
    let window = state.config.refresh_window_secs;
    let now = state.clock.now_secs();
    let settled = if row.status == ConnectionStatus::Active
        && crate::services::refresh::renewable(&row)
        && row.expires_at.is_some_and(|e| e - now <= window)
    {
        let settled = refresh(state, Some(caller), &row.id, Reason::OnDemand(row.expires_at)).await?;
        if let Refresh::ProviderDown(code) = &settled.outcome {
            let row = &settled.row;
            if row.status == ConnectionStatus::Active && row.expires_at.is_some_and(|e| e <= state.clock.now_secs()) {
                return Err(ApiError::new(
                    ErrorCode::ProviderUnavailable,
                    "the access token expired and the provider could not be reached to refresh it; retry shortly",
                )
                .with_details(json!({ "error": code })));
            }
        }
        settled
    } else {
        Settled { outcome: Refresh::NotNeeded, row, provider: None, credentials: None }
    };
    let refreshed = matches!(settled.outcome, Refresh::Refreshed);
    view_of(state, caller, settled).await.map(|view| (view, refreshed))
}

/// The token answer of a connection as `settled` leaves it: its provider
/// and credentials are read and opened only if the refresh did not already
/// have them.
async fn view_of(state: &AppState, caller: &Caller, settled: Settled) -> Result<(TokenView, String, String), ApiError> {
    let Settled { row, provider, credentials, .. } = settled;
    let row = expire_if_stale(state, row).await?;
    let provider = match provider {
        Some(p) => p,
        None => state.store.provider_by_id(&row.provider_id).await?.ok_or_else(ApiError::provider_deleted)?,
    };
    match row.status {
        ConnectionStatus::Active => {}
        ConnectionStatus::AttentionRequired => {
            return Err(ApiError::new(ErrorCode::AttentionRequired, "the provider refused the refresh token; the user must authorize again: call POST /v1/request-connection with this connection_id",
            )
            .with_details(json!({ "status": row.status })))
        }
        other => {
            return Err(ApiError::new(ErrorCode::ConnectionNotActive, format!("the connection is {other}"),
            )
            .with_details(json!({ "status": other })))
        }
    }
    let mut credentials = match credentials {
        Some(written) => written,
        None => {
            let enc = row.credentials_enc.as_deref().ok_or_else(ApiError::internal)?;
            let plain = state.config.keyring.open_string(&context(&row.id, "credentials"), enc).map_err(|e| {
                tracing::error!(connection = %row.id, error = %e, "credentials do not open");
                ApiError::internal()
            })?;
            serde_json::from_str::<Map<String, Value>>(&plain).map_err(|_| ApiError::internal())?
        }
    };
    credentials.remove("refresh_token");
    if provider.config.auth_type.uses_token_endpoint() {
        credentials.insert("expires_at".into(), row.expires_at.map(Value::from).unwrap_or(Value::Null));
    }
    let entry = audit(Some(caller), AuditEvent::TokenRetrieved, &row, json!({}));
    state.audit_batched(entry).await?;
    let max_age = match row.expires_at {
        Some(exp) => state.config.token_max_age_secs.min(exp - state.clock.now_secs()).max(0),
        None => state.config.token_max_age_secs,
    };
    let strategy =
        strategy::for_connection(&provider, &row.connection_config).map_err(connection_config::misconfigured)?;
    let api_base_url = connection_config::api_base_url(&provider.config, &row.connection_config)
        .map_err(connection_config::misconfigured)?;
    let view = TokenView {
        max_age: Some(max_age as u64),
        connection_id: row.id,
        provider: provider.config.name.to_string(),
        auth_type: provider.config.auth_type,
        strategy,
        credentials,
        expires_at: row.expires_at,
        api_base_url,
        connection_config: row.connection_config.clone(),
    };
    Ok((view, row.provider_id, row.workspace_id))
}
