//! The gate in front of `/v1/*`: the network allowlist (`ALLOWED_CIDRS`), then
//! the `X-API-Key` check. Both refusals are JSON errors and both are audited as
//! `auth.rejected` with the caller IP from [`super::caller`], so a forged
//! `X-Forwarded-For` neither passes the allowlist nor hides who knocked.

use super::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nexus_core::AuditEvent;
use nexus_store::NewAudit;

pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let caller = req.extensions().get::<Caller>().cloned();
    let Some(caller) = caller else {
        return ApiError::internal().into_response();
    };
    if let Some(allowed) = &state.config.allowed_cidrs {
        if !allowed.iter().any(|net| net.contains(&caller.ip)) {
            if let Err(unavailable) = audit_rejection(&state, &caller, &target(&req), "ip_not_allowed").await {
                return unavailable.into_response();
            }
            return ApiError::forbidden(format!("caller {} is not in ALLOWED_CIDRS", caller.ip)).into_response();
        }
    }
    let presented = req.headers().get("x-api-key").map(|v| v.as_bytes());
    let reason = match presented {
        None => Some("missing_api_key"),
        Some(key) if !state.config.api_key_check.matches(key) => Some("invalid_api_key"),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        if let Err(unavailable) = audit_rejection(&state, &caller, &target(&req), reason).await {
            return unavailable.into_response();
        }
        let message = if reason == "missing_api_key" {
            "the X-API-Key header is required"
        } else {
            "the X-API-Key header does not match the configured API key"
        };
        return ApiError::unauthorized(message).into_response();
    }
    let mut req = req;
    if let Some(caller) = req.extensions_mut().get_mut::<Caller>() {
        caller.api_key = Some(crate::middleware::caller::bootstrap_key());
    }
    next.run(req).await
}

/// Method and path of a request, for the audit row (no query: it may hold ids).
fn target(req: &Request) -> (String, String) {
    (req.method().as_str().to_owned(), req.uri().path().chars().take(256).collect())
}

async fn audit_rejection(
    state: &AppState,
    caller: &Caller,
    target: &(String, String),
    reason: &str,
) -> Result<(), ApiError> {
    let entry = NewAudit {
        ip: Some(caller.ip_string()),
        user_agent: caller.user_agent.clone(),
        data: serde_json::json!({ "reason": reason, "method": target.0, "path": target.1 }),
        at: Some(chrono::Utc::now().timestamp_micros()),
        ..NewAudit::new(AuditEvent::AuthRejected)
    };
    // Through the batch writer: a scan of wrong keys costs no transaction
    // per request, and repeats merge into one row with a count.
    state.audit_batched(entry).await
}
