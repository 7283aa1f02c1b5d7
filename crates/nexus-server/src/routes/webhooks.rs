//! Webhooks (SPEC 13): `/v1/webhooks` and their deliveries.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId, Query};
use crate::middleware::Caller;
use crate::services::webhooks::{self, DeliveryPage, DeliveryQuery, DeliveryView, WebhookInput, WebhookView};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

/// Registers a webhook. The answer holds its signing secret: the only time it is shown.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body = WebhookInput,
    security(("api_key" = [])),
    responses(
        (status = 201, body = WebhookView),
        (status = 400, description = "invalid url (https, or http on loopback only), event or secret", body = ErrorBody),
        (status = 415, body = ErrorBody)
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    webhooks::create(&state, &caller, body).await.map(|v| (StatusCode::CREATED, Json(v)))
}

/// Every webhook (without secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    security(("api_key" = [])),
    responses((status = 200, body = Vec<WebhookView>)))]
pub async fn list_webhooks(State(state): State<AppState>) -> Result<Json<Vec<WebhookView>>, ApiError> {
    webhooks::list(&state).await.map(Json)
}

/// One webhook (without its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id")),
    security(("api_key" = [])),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
pub async fn get_webhook(State(state): State<AppState>, PathId(id): PathId) -> Result<Json<WebhookView>, ApiError> {
    webhooks::find(&state, &id).await.map(|row| Json(webhooks::view(&row)))
}

/// Deletes a webhook and its deliveries; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id")),
    security(("api_key" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    webhooks::delete(&state, &caller, &id).await.map(|()| StatusCode::NO_CONTENT)
}

/// A webhook's deliveries with their attempts, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id"), DeliveryQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    webhooks::deliveries(&state, &id, q).await.map(Json)
}

/// The two ids of a delivery's path, checked like [`PathId`].
fn ids(Path((webhook, delivery)): Path<(String, String)>) -> Result<(String, String), ApiError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 256 && !s.contains('\0');
    if ok(&webhook) && ok(&delivery) {
        Ok((webhook, delivery))
    } else {
        Err(ApiError::not_found("no such resource"))
    }
}

/// One delivery with its attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries/{delivery_id}", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id"), ("delivery_id" = String, Path, description = "the delivery's webhook-id")),
    security(("api_key" = [])),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorBody)))]
pub async fn get_delivery(
    State(state): State<AppState>,
    path: Path<(String, String)>,
) -> Result<Json<DeliveryView>, ApiError> {
    let (webhook, delivery) = ids(path)?;
    webhooks::delivery(&state, &webhook, &delivery).await.map(Json)
}

/// Sends a delivery again now, with the same `webhook-id` and body and a fresh retry schedule.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id"), ("delivery_id" = String, Path, description = "the delivery's webhook-id")),
    security(("api_key" = [])),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody)))]
pub async fn redeliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let (webhook, delivery) = ids(path)?;
    webhooks::redeliver(&state, &caller, &webhook, &delivery).await.map(|v| (StatusCode::ACCEPTED, Json(v)))
}
