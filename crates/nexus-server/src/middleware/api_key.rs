//! The gate in front of `/v1/*`: the network allowlist (`ALLOWED_CIDRS`), then
//! the `X-API-Key` check. Both refusals are JSON errors and both are audited as
//! `auth.rejected` with the caller IP from [`super::caller`], so a forged
//! `X-Forwarded-For` neither passes the allowlist nor hides who knocked.

use super::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nexus_core::AuditEvent;
use nexus_store::NewAudit;

pub async fn require_api_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(mut caller) = req.extensions().get::<Caller>().cloned() else {
        return ApiError::internal().into_response();
    };
    if let Err(refused) = admit(&state, &mut caller, req.method(), req.uri().path(), req.headers()).await {
        return refused.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The gate itself: `Ok` (and `caller` names its key) when `caller` may use
/// `/v1/*`, else the refusal, audited as `auth.rejected` with `method` and
/// `path` (no query: it may hold ids).
pub async fn admit(
    state: &AppState,
    caller: &mut Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if let Some(allowed) = &state.config.allowed_cidrs {
        if !allowed.iter().any(|net| net.contains(&caller.ip)) {
            audit_rejection(state, caller, method, path, "ip_not_allowed").await?;
            return Err(ApiError::forbidden(format!("caller {} is not in ALLOWED_CIDRS", caller.ip)));
        }
    }
    let reason = match headers.get("x-api-key") {
        None => Some("missing_api_key"),
        Some(key) if !state.config.api_key_check.matches(key.as_bytes()) => Some("invalid_api_key"),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        audit_rejection(state, caller, method, path, reason).await?;
        let message = if reason == "missing_api_key" {
            "the X-API-Key header is required"
        } else {
            "the X-API-Key header does not match the configured API key"
        };
        return Err(ApiError::unauthorized(message));
    }
    caller.api_key = Some(crate::middleware::caller::bootstrap_key());
    Ok(())
}

async fn audit_rejection(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    path: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let path: String = path.chars().take(256).collect();
    let entry = NewAudit {
        ip: Some(caller.ip_string()),
        user_agent: caller.user_agent.clone(),
        data: serde_json::json!({ "reason": reason, "method": method.as_str(), "path": path }),
        at: Some(chrono::Utc::now().timestamp_micros()),
        ..NewAudit::new(AuditEvent::AuthRejected)
    };
    // Through the batch writer: a scan of wrong keys costs no transaction
    // per request, and repeats merge into one row with a count.
    state.audit_batched(entry).await
}
