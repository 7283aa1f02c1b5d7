//! `GET /v1/token/{connection_id}`.

use crate::error::{ApiError, ErrorBody};
use crate::extract::PathId;
use crate::middleware::Caller;
use crate::services::tokens::{self, TokenView};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;

/// The strategy and fresh usage credentials of an active connection (never a refresh token).
#[utoipa::path(get, path = "/v1/token/{connection_id}", tag = "tokens",
    params(("connection_id" = String, Path)),
    security(("api_key" = [])),
    responses(
        (status = 200, body = TokenView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "connection_not_active or attention_required", body = ErrorBody),
        (status = 410, description = "provider_deleted", body = ErrorBody),
        (status = 503, description = "provider_unavailable: the token expired and the provider cannot be reached", body = ErrorBody)
    ))]
pub async fn get_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let body = tokens::token(&state, &caller, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}

/// Refreshes the access token now (a refresh completed in the last few seconds
/// is reused instead of calling the provider again) and answers like `GET /v1/token`.
#[utoipa::path(post, path = "/v1/refresh/{connection_id}", tag = "tokens",
    params(("connection_id" = String, Path)),
    security(("api_key" = [])),
    responses(
        (status = 200, body = TokenView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "connection_not_active, attention_required or provider_misconfigured", body = ErrorBody),
        (status = 410, description = "provider_deleted", body = ErrorBody),
        (status = 502, description = "provider_error: the provider answered the refresh with something unusable", body = ErrorBody),
        (status = 503, description = "provider_unavailable: the provider could not be reached", body = ErrorBody)
    ))]
pub async fn refresh_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let body = tokens::force_refresh(&state, &caller, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}
