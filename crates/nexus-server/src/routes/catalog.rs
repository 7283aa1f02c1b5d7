//! The provider catalog (SPEC 12): `GET /v1/catalog`, `GET /v1/catalog/{name}`
//! and the templates' logos (public: the Connect pages show them).

use crate::error::{ApiError, ErrorBody};
use crate::extract::{PathId, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nexus_core::wire::{CatalogEntry, CatalogSummary};
use nexus_core::AuthType;
use serde::Deserialize;
use utoipa::IntoParams;

/// Filters of `GET /v1/catalog`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    pub auth_type: Option<AuthType>,
    /// One of the catalog's categories (`crm`, `support`, `developer-tools`, …).
    #[param(max_length = 64)]
    pub category: Option<String>,
    /// Case-insensitive text in the name, display name, description or tags.
    #[param(max_length = 200)]
    pub q: Option<String>,
}

/// The catalog's templates, filtered, by name.
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog", params(CatalogQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Vec<CatalogSummary>), (status = 400, body = ErrorBody)))]
pub async fn list_catalog(Query(q): Query<CatalogQuery>) -> Result<Json<Vec<CatalogSummary>>, ApiError> {
    for (field, value, max) in [("category", &q.category, 64), ("q", &q.q, 200)] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(nexus_core::ValidationErrors::single(field, format!("must be at most {max} characters")).into());
        }
    }
    let filter = nexus_catalog::Filter {
        auth_type: q.auth_type,
        category: q.category.as_deref().filter(|c| !c.is_empty()),
        q: q.q.as_deref().filter(|t| !t.is_empty()),
    };
    Ok(Json(nexus_catalog::search(&filter).into_iter().map(CatalogEntry::summary).collect()))
}

/// One template, whole: its provider fields and the documentation they follow.
#[utoipa::path(get, path = "/v1/catalog/{name}", tag = "catalog",
    params(("name" = String, Path, description = "template name")),
    security(("api_key" = [])),
    responses((status = 200, body = CatalogEntry), (status = 404, body = ErrorBody)))]
pub async fn get_catalog_entry(PathId(name): PathId) -> Result<Json<CatalogEntry>, ApiError> {
    nexus_catalog::get(&name).cloned().map(Json).ok_or_else(|| not_in_catalog(&name))
}

fn not_in_catalog(name: &str) -> ApiError {
    let shown: String = name.chars().take(80).collect();
    ApiError::not_found(format!("no catalog template named '{shown}'"))
}

/// A template's logo (SVG). Served with a policy that lets it draw and do
/// nothing else, should a file ever hold more than shapes.
#[utoipa::path(get, path = "/catalog/{name}/logo.svg", tag = "catalog",
    params(("name" = String, Path, description = "template name")),
    responses(
        (status = 200, description = "the logo", content_type = "image/svg+xml", body = String),
        (status = 404, body = ErrorBody)
    ))]
pub async fn logo(PathId(name): PathId) -> Result<Response, ApiError> {
    let svg = nexus_catalog::logo(&name).ok_or_else(|| not_in_catalog(&name))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; sandbox"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        svg,
    )
        .into_response())
}
