//! Liveness and readiness probes (no API key).

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "alive")))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, description = "ready to serve"),
    (status = 503, description = "database unreachable", body = ErrorBody)
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        _ => Err(ApiError::unavailable("the database is not reachable")),
    }
}
