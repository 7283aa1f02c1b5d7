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
    let presented = headers.get("x-api-key").map(|k| k.as_bytes());
    let bearer = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
    });
    let access = crate::services::api_keys::admit(state, caller, presented, bearer, method.as_str(), path).await?;
    caller.api_key = Some(access.key.clone());
    caller.access = Some(access);
    Ok(())
}

async fn audit_rejection(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    path: &str,
    reason: &str,
) -> Result<(), ApiError> {
    crate::services::api_keys::audit_rejection(state, caller, method.as_str(), path, reason, None).await
}
