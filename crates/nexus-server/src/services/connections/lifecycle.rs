//! Reading connections: one (expiring a stale pending one on the way) or a
//! filtered list.

use super::{audit, view};
use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::providers;
use crate::state::AppState;
use nexus_core::wire::ConnectionView;
use nexus_core::{AuditEvent, ConnectionStatus};
use nexus_store::{ConnectionFilter, ConnectionRow, Invalidation};
use serde::Deserialize;
use serde_json::json;

/// `GET /v1/check-connection/{id}`: expires stale pending connections on the way.
pub async fn check(state: &AppState, caller: &Caller, id: &str) -> Result<ConnectionView, ApiError> {
    let row = super::visible(state, caller, id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    let row = expire_if_stale(state, row).await?;
    Ok(view(row))
}

/// Moves a pending connection past its handshake expiry to `failed` (`expired`).
pub(crate) async fn expire_if_stale(state: &AppState, row: ConnectionRow) -> Result<ConnectionRow, ApiError> {
    if row.status == ConnectionStatus::Pending && row.handshake_expires_at.is_some_and(|t| t < state.clock.now_micros())
    {
        let a = audit(None, AuditEvent::ConnectionFailed, &row, json!({ "error": "expired" }));
        state.store.expire_pending(&row.id, a).await?;
        state.invalidate(Invalidation::Connection(row.id.clone()));
        return Ok(state.store.connection_by_id(&row.id).await?.unwrap_or(row));
    }
    Ok(row)
}

/// Query of `GET /v1/connections`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub workspace_id: Option<String>,
    /// Provider id or name.
    pub provider: Option<String>,
    pub status: Option<ConnectionStatus>,
    /// Default 100; larger values are capped at 1000.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

pub async fn list(state: &AppState, caller: &Caller, q: ListQuery) -> Result<Vec<ConnectionView>, ApiError> {
    if q.limit.is_some_and(|n| n < 1) {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    // A key limited to some workspaces lists theirs only (another's is empty, as if it had none).
    if q.workspace_id.as_deref().is_some_and(|w| !caller.may_see(w)) {
        return Ok(Vec::new());
    }
    let provider_id = providers::filter_id(state, q.provider).await?;
    let rows = state
        .store
        .list_connections(&ConnectionFilter {
            workspace_id: q.workspace_id,
            workspaces: caller.workspaces().map(<[String]>::to_vec),
            provider_id,
            status: q.status,
            limit: q.limit.unwrap_or(100).min(1000),
        })
        .await?;
    Ok(rows.into_iter().map(view).collect())
}
