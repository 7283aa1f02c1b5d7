//! `GET /v1/token/{connection_id}` (SPEC section 5): the strategy and the usage
//! credentials of an active connection — never a refresh token.

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::connections::{audit, context, expire_if_stale};
use crate::services::refresh::{refresh, Reason, Refresh};
use crate::services::strategy;
use crate::services::token_cache::Cached;
use crate::state::AppState;
use axum::body::Bytes;
use axum::http::StatusCode;
use nexus_core::strategy::Strategy;
use nexus_core::AuditEvent;
use nexus_store::NewAudit;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// The answer of `GET /v1/token/{connection_id}`. `Debug` names the
/// credential fields, never their values.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub connection_id: String,
    pub provider: String,
    pub auth_type: String,
    #[schema(value_type = Object)]
    pub strategy: Strategy,
    /// oauth2: access_token, token_type, expires_at, scope, id_token? and the
    /// provider's extras; static types: the captured fields.
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
    /// Unix seconds, or null when the credentials do not expire.
    pub expires_at: Option<i64>,
    /// The provider's API root, where proxies send signed requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Seconds a proxy or the Bridge may reuse this answer (`TOKEN_MAX_AGE`,
    /// never beyond `expires_at`); changes arrive sooner through
    /// `GET /v1/invalidations`.
    pub max_age: i64,
}

impl std::fmt::Debug for TokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenView")
            .field("connection_id", &self.connection_id)
            .field("provider", &self.provider)
            .field("auth_type", &self.auth_type)
            .field("strategy", &self.strategy)
            .field("credentials", &self.credentials.keys().map(|k| (k, "[redacted]")).collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("api_base_url", &self.api_base_url)
            .field("max_age", &self.max_age)
            .finish()
    }
}

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
    let outcome = refresh(state, Some(caller), id, reason).await?;
    if let Refresh::ProviderDown(code) = &outcome {
        // SPEC 5b: a provider away while Nexus needs a token from it is 503
        // everywhere (v1 answered a forced refresh with 502).
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            "the provider could not be reached to refresh the token",
        )
        .with_details(json!({ "error": code })));
    }
    state.token_cache.invalidate(&nexus_store::Invalidation::Connection(id.to_owned()));
    token(state, caller, id).await
}

/// The JSON answer (served from the cache when possible).
pub async fn token(state: &AppState, caller: &Caller, id: &str) -> Result<Bytes, ApiError> {
    Ok(answer(state, caller, id).await?.body.clone())
}

/// [`token`], as the cache keeps it (with the answer parsed once, for the proxy).
pub async fn answer(state: &AppState, caller: &Caller, id: &str) -> Result<Arc<Cached>, ApiError> {
    if let Some(hit) = state.token_cache.get(id) {
        state
            .audit_batched(NewAudit {
                event_type: AuditEvent::TokenRetrieved.as_str(),
                ip: Some(caller.ip_string()),
                user_agent: caller.user_agent.clone(),
                provider_id: Some(hit.provider_id.clone()),
                connection_id: Some(id.to_owned()),
                workspace_id: Some(hit.workspace_id.clone()),
                data: json!({}),
                at: Some(chrono::Utc::now().timestamp_micros()),
                api_key: caller.api_key.clone(),
                ..NewAudit::default()
            })
            .await?;
        return Ok(hit);
    }
    let generation = state.token_cache.generation();
    let view = load(state, caller, id).await?;
    let body = Bytes::from(serde_json::to_vec(&view.0).map_err(|_| ApiError::internal())?);
    // Not served from cache inside the refresh window: a request there refreshes.
    let max_age = view.0.expires_at.map(|exp| {
        let left = exp - state.config.refresh_window_secs - chrono::Utc::now().timestamp();
        Duration::from_secs(left.max(0) as u64)
    });
    Ok(state.token_cache.put(id, body, &view.1, &view.2, max_age, generation))
}

/// Reads, checks and decrypts; returns the view with its provider and workspace ids.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<(TokenView, String, String), ApiError> {
    let row = state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    let mut row = expire_if_stale(state, row).await?;
    let window = state.config.refresh_window_secs;
    let now = chrono::Utc::now().timestamp();
    if row.status == "active" && row.refresh_token_enc.is_some() && row.expires_at.is_some_and(|e| e - now <= window) {
        let outcome = refresh(state, Some(caller), &row.id, Reason::OnDemand(row.expires_at)).await?;
        row = state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
        if let Refresh::ProviderDown(code) = outcome {
            if row.status == "active" && row.expires_at.is_some_and(|e| e <= chrono::Utc::now().timestamp()) {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "provider_unavailable",
                    "the access token expired and the provider could not be reached to refresh it; retry shortly",
                )
                .with_details(json!({ "error": code })));
            }
        }
    }
    let provider = state.store.provider_by_id(&row.provider_id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::GONE,
            "provider_deleted",
            "the provider of this connection was deleted; its credentials are unusable",
        )
    })?;
    match row.status.as_str() {
        "active" => {}
        "attention_required" => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "attention_required",
                "the provider refused the refresh token; the user must authorize again: call POST /v1/request-connection with this connection_id",
            )
            .with_details(json!({ "status": row.status })))
        }
        other => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "connection_not_active",
                format!("the connection is {other}"),
            )
            .with_details(json!({ "status": other })))
        }
    }
    let enc = row.credentials_enc.as_deref().ok_or_else(ApiError::internal)?;
    let plain = state.config.keyring.open_string(&context(&row.id, "credentials"), enc).map_err(|e| {
        tracing::error!(connection = %row.id, error = %e, "credentials do not open");
        ApiError::internal()
    })?;
    let mut credentials: Map<String, Value> = serde_json::from_str(&plain).map_err(|_| ApiError::internal())?;
    credentials.remove("refresh_token");
    if provider.config.auth_type == nexus_core::AuthType::Oauth2 {
        credentials.insert("expires_at".into(), row.expires_at.map(Value::from).unwrap_or(Value::Null));
    }
    let entry = audit(Some(caller), AuditEvent::TokenRetrieved, &row, json!({}));
    state.audit_batched(entry).await?;
    let max_age = match row.expires_at {
        Some(exp) => state.config.token_max_age_secs.min(exp - chrono::Utc::now().timestamp()).max(0),
        None => state.config.token_max_age_secs,
    };
    let view = TokenView {
        max_age,
        connection_id: row.id,
        provider: provider.config.name.to_string(),
        auth_type: provider.config.auth_type.as_str().to_owned(),
        strategy: strategy::for_provider(&provider),
        credentials,
        expires_at: row.expires_at,
        api_base_url: provider.config.api_base_url.clone(),
    };
    Ok((view, row.provider_id, row.workspace_id))
}
