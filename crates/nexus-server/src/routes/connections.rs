//! Connections: request, check, list, revoke (`/v1/*`), and the public OAuth
//! callback.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId, Query};
use crate::middleware::Caller;
use crate::services::connections::{
    self, CallbackOutcome, CallbackQuery, ConnectionRequested, ConnectionView, ListQuery,
};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nexus_core::wire::ConnectionActivated;

/// Starts a connection: returns the URL to send the user to and a pending `connection_id`.
#[utoipa::path(post, path = "/v1/request-connection", tag = "connections",
    request_body = connections::RequestConnection,
    security(("api_key" = [])),
    responses(
        (status = 200, body = ConnectionRequested),
        (status = 201, description = "oauth2_client_credentials: the grant ran, the connection is active", body = ConnectionActivated),
        (status = 503, description = "the provider's token endpoint could not be reached", body = ErrorBody),
        (status = 400, body = ErrorBody),
        (status = 404, description = "unknown provider or connection", body = ErrorBody),
        (status = 409, description = "connection_id belongs to another provider or workspace", body = ErrorBody)
    ))]
pub async fn request_connection(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    Ok(match connections::request(&state, &caller, body).await? {
        connections::Requested::Pending(requested) => Json(requested).into_response(),
        connections::Requested::Active(active) => (StatusCode::CREATED, Json(active)).into_response(),
    })
}

/// The status of one connection.
#[utoipa::path(get, path = "/v1/check-connection/{id}", tag = "connections",
    params(("id" = String, Path, description = "connection id")),
    security(("api_key" = [])),
    responses((status = 200, body = ConnectionView), (status = 404, body = ErrorBody)))]
pub async fn check_connection(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<ConnectionView>, ApiError> {
    connections::check(&state, &caller, &id).await.map(Json)
}

/// Connections, newest first, filtered by workspace, provider and status.
#[utoipa::path(get, path = "/v1/connections", tag = "connections", params(ListQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Vec<ConnectionView>), (status = 400, body = ErrorBody)))]
pub async fn list_connections(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    connections::list(&state, &caller, q).await.map(Json)
}

/// Revokes a connection: wipes its credentials and tells the provider when it can.
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "connection id")),
    security(("api_key" = [])),
    responses((status = 200, body = ConnectionView), (status = 404, body = ErrorBody)))]
pub async fn revoke_connection(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<ConnectionView>, ApiError> {
    connections::revoke(&state, &caller, &id).await.map(Json)
}

/// The OAuth redirect target (public). Redirects to the connection's return
/// URL, or answers a plain 400 page when the state cannot be trusted.
pub async fn oauth_callback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<CallbackQuery>,
) -> Response {
    match connections::callback(&state, &caller, q).await {
        CallbackOutcome::Redirect(url) => {
            (StatusCode::FOUND, [(header::LOCATION, url), (header::CACHE_CONTROL, "no-store".to_owned())])
                .into_response()
        }
        CallbackOutcome::Untrusted(why) => plain_page(StatusCode::BAD_REQUEST, "Authorization failed", why),
    }
}

/// A minimal HTML page for people (never echoes request input).
pub fn plain_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>"
    );
    super::html::page(status, body, super::html::PLAIN)
}
