//! `GET /v1/audit`.

use crate::error::{ApiError, ErrorBody};
use crate::extract::Query;
use crate::services::audit::{self, AuditHeadView, AuditPageView, AuditQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;

/// The audit log, newest first, filtered, a page at a time.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = AuditPageView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPageView>, ApiError> {
    // Rows queued for the batch writer before this request are part of the answer.
    state.flush_audit_for_request().await?;
    audit::list(&state, q).await.map(Json)
}

/// The newest row of the hash chain (`seq`, `hash`, `at`): keep it, and
/// `nexus audit verify --expect-head SEQ:HASH` later proves the chain still
/// reaches it (no row cut from its end).
#[utoipa::path(get, path = "/v1/audit/head", tag = "audit",
    security(("api_key" = [])),
    responses(
        (status = 200, body = AuditHeadView),
        (status = 401, body = ErrorBody)
    ))]
pub async fn audit_head(State(state): State<AppState>) -> Result<Json<AuditHeadView>, ApiError> {
    state.flush_audit_for_request().await?;
    audit::head(&state).await.map(Json)
}
