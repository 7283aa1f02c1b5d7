//! `/v1/providers`: the provider registry.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId, Query};
use crate::middleware::Caller;
use crate::services::providers::{self, DeletedView, MetadataEntry, ProviderView, UpdateMode};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use nexus_core::AuthType;
use nexus_store::ProviderFilter;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

/// Filters of `GET /v1/providers`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `oauth2`, `api_key` (or `header`), `basic_auth`, `aws_sigv4`, `query_param`, `hmac_payload`.
    pub auth_type: Option<AuthType>,
    pub category: Option<String>,
}

/// Registers a provider (flat body as in the seeds, or `{"profile": {...}}`).
#[utoipa::path(post, path = "/v1/providers", tag = "providers",
    request_body(content = nexus_core::ProviderInput, description = "The seeds' flat provider fields (`{\"profile\": {...}}` is also accepted)"),
    security(("api_key" = [])),
    responses(
        (status = 201, body = ProviderView),
        (status = 400, description = "invalid field or discovery failure", body = ErrorBody),
        (status = 409, description = "name taken", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody)
    ))]
pub async fn create_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    providers::create(&state, &caller, body).await.map(|v| (StatusCode::CREATED, Json(v)))
}

/// Lists providers, optionally filtered.
#[utoipa::path(get, path = "/v1/providers", tag = "providers", params(ListQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Vec<ProviderView>), (status = 400, body = ErrorBody)))]
pub async fn list_providers(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ProviderView>>, ApiError> {
    providers::list(&state, ProviderFilter { auth_type: q.auth_type, category: q.category }).await.map(Json)
}

/// Providers grouped by `auth_type`, with only what a connection UI needs.
#[utoipa::path(get, path = "/v1/providers/metadata", tag = "providers",
    security(("api_key" = [])),
    responses((status = 200, description = "an object keyed by auth_type", body = std::collections::BTreeMap<String, Vec<MetadataEntry>>)))]
pub async fn providers_metadata(State(state): State<AppState>) -> Result<Json<Map<String, Value>>, ApiError> {
    providers::metadata(&state).await.map(Json)
}

/// One provider, by id or by name.
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "provider id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 404, body = ErrorBody)))]
pub async fn get_provider(State(state): State<AppState>, PathId(id): PathId) -> Result<Json<ProviderView>, ApiError> {
    providers::find(&state, &id).await.map(providers::view).map(Json)
}

/// Changes the given fields; `params` merges as JSON Merge Patch (RFC 7396).
#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "provider id or name")),
    request_body(content = nexus_core::ProviderInput, content_type = "application/json"),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn patch_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<ProviderView>, ApiError> {
    providers::update(&state, &caller, &id, body, UpdateMode::Patch).await.map(Json)
}

/// Replaces the configuration (a stored client secret is kept if the body omits it).
#[utoipa::path(put, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "provider id or name")),
    request_body(content = nexus_core::ProviderInput, content_type = "application/json"),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<ProviderView>, ApiError> {
    providers::update(&state, &caller, &id, body, UpdateMode::Put).await.map(Json)
}

/// Deletes the provider and its secret; reports the connections left orphaned.
#[utoipa::path(delete, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "provider id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = DeletedView), (status = 404, body = ErrorBody)))]
pub async fn delete_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<DeletedView>, ApiError> {
    providers::delete(&state, &caller, &id).await.map(Json)
}
