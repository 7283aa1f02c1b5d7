//! API keys with roles (SPEC 13): `/v1/api-keys` (admin).

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId};
use crate::middleware::Caller;
use crate::services::api_keys::{self, ApiKeyInput, ApiKeyView};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

/// Creates a key. The answer holds the key itself: the only time it is shown.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    request_body = ApiKeyInput,
    security(("api_key" = [])),
    responses(
        (status = 201, body = ApiKeyView),
        (status = 400, body = ErrorBody),
        (status = 403, description = "not an admin key", body = ErrorBody),
        (status = 415, body = ErrorBody)
    ))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ApiKeyView>), ApiError> {
    api_keys::create(&state, &caller, body).await.map(|v| (StatusCode::CREATED, Json(v)))
}

/// Every key, revoked ones included (never the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = Vec<ApiKeyView>), (status = 403, body = ErrorBody)))]
pub async fn list_api_keys(State(state): State<AppState>) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    api_keys::list(&state).await.map(Json)
}

/// Revokes a key: every replica refuses it within a second.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "key id")),
    security(("api_key" = [])),
    responses((status = 200, body = ApiKeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<ApiKeyView>, ApiError> {
    api_keys::revoke(&state, &caller, &id).await.map(Json)
}
