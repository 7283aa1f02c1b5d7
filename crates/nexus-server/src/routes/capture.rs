//! Static credential capture: the JSON API for applications (`/v1/*`, API key)
//! and a minimal public form at the `auth_url` for people (`/auth/capture`),
//! both authorised by the signed, single-use `state`.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Query};
use crate::middleware::Caller;
use crate::routes::connections::plain_page;
use crate::services::capture::{self, CaptureSchema, Captured};
use crate::services::connect_ui;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StateQuery {
    /// The `state` returned by `POST /v1/request-connection`.
    #[param(min_length = 1)]
    pub state: String,
}

/// The credential schema a UI renders for a pending static connection.
#[utoipa::path(get, path = "/v1/capture-schema", tag = "connections", params(StateQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = CaptureSchema),
        (status = 400, description = "invalid_state or state_expired", body = ErrorBody),
        (status = 404, description = "the connection of the state is gone", body = ErrorBody),
        (status = 409, description = "state_used", body = ErrorBody),
        (status = 410, description = "provider_deleted", body = ErrorBody)
    ))]
pub async fn capture_schema(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<StateQuery>,
) -> Result<Json<CaptureSchema>, ApiError> {
    capture::schema(&state, &caller, &q.state).await.map(Json)
}

/// Stores credentials for a pending static connection: `302` to the return URL,
/// or `200` JSON with `Accept: application/json`.
#[utoipa::path(post, path = "/v1/capture-credential", tag = "connections",
    request_body = nexus_core::wire::CaptureRequest,
    security(("api_key" = [])),
    responses(
        (status = 302, description = "to return_url?connection_id=…&status=success"),
        (status = 200, body = Captured),
        (status = 400, description = "schema violations listed in details.fields, invalid_credentials, invalid_state or state_expired", body = ErrorBody),
        (status = 404, description = "the connection of the state is gone", body = ErrorBody),
        (status = 409, description = "state_used, or the connection is no longer pending", body = ErrorBody),
        (status = 410, description = "provider_deleted", body = ErrorBody),
        (status = 502, description = "provider_error: the provider refused the credential", body = ErrorBody),
        (status = 504, description = "provider_timeout", body = ErrorBody)
    ))]
pub async fn capture_credential(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let captured = capture::submit(&state, &caller, body).await?;
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    if wants_json {
        Ok(Json(captured).into_response())
    } else {
        Ok((StatusCode::FOUND, [(header::LOCATION, captured.return_url)]).into_response())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// `GET /auth/capture?state=…`: a form generated from the credential schema.
pub async fn capture_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    let Some(raw_state) = q.get("state") else {
        return plain_page(StatusCode::BAD_REQUEST, "Credential capture", "This link is missing its state.");
    };
    let schema = match capture::schema(&state, &caller, raw_state).await {
        Ok(s) => s,
        Err(e) => return plain_page(e.status(), "Credential capture", &escape(&e.message)),
    };
    let page = connect_ui::credentials_page(&state, &schema, raw_state, &BTreeMap::new(), &BTreeMap::new()).await;
    ui_page(StatusCode::OK, &page)
}

/// A Connect UI page with its strict headers.
fn ui_page(status: StatusCode, page: &impl askama::Template) -> Response {
    let Ok(body) = page.render() else {
        return plain_page(StatusCode::INTERNAL_SERVER_ERROR, "Credential capture", "The page could not be shown.");
    };
    super::html::page(status, body, super::html::FORM)
}

/// `POST /auth/capture` (form-encoded, from the page above).
pub async fn capture_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    form: Result<Form<BTreeMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(mut form)) = form else {
        return plain_page(StatusCode::BAD_REQUEST, "Credential capture", "Send the form from its page.");
    };
    let raw_state = form.remove("state").unwrap_or_default();
    let credentials: Map<String, Value> =
        form.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let body = serde_json::json!({ "state": raw_state, "credentials": credentials });
    match capture::submit(&state, &caller, body).await {
        Ok(c) => {
            // A page of our own that returns to the application at once (a link for the rest).
            let done = connect_ui::DonePage {
                title: "Connected".into(),
                message: "The account is connected. Taking you back to the application…".into(),
                return_url: c.return_url.clone(),
            };
            let mut resp = ui_page(StatusCode::OK, &done);
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!("0; url={}", c.return_url)) {
                resp.headers_mut().insert("refresh", v);
            }
            resp
        }
        Err(e) => {
            // The form again, with what was wrong next to each field (a link
            // that can no longer be used gets its page instead).
            match capture::schema(&state, &caller, &raw_state).await {
                Ok(schema) => {
                    let errors = connect_ui::form_errors(&e);
                    let page = connect_ui::credentials_page(&state, &schema, &raw_state, &form, &errors).await;
                    ui_page(e.status(), &page)
                }
                Err(_) => plain_page(e.status(), "Credential capture failed", &escape(&e.message)),
            }
        }
    }
}
