//! Static credential capture: the JSON API for applications (`/v1/*`, API key)
//! and a minimal public form at the `auth_url` for people (`/auth/capture`),
//! both authorised by the signed, single-use `state`.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Query};
use crate::middleware::Caller;
use crate::routes::connections::plain_page;
use crate::services::capture::{self, CaptureSchema, Captured};
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
    let properties = schema.credential_schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let required: Vec<&str> = schema
        .credential_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = String::new();
    for (name, prop) in &properties {
        let title = prop.get("title").and_then(Value::as_str).unwrap_or(name);
        let secret = prop.get("format").and_then(Value::as_str) == Some("password")
            || ["secret", "password", "key", "token"].iter().any(|w| name.contains(w));
        fields.push_str(&format!(
            "<p><label>{}<br><input name=\"{}\" type=\"{}\" autocomplete=\"off\"{}></label></p>",
            escape(title),
            escape(name),
            if secret { "password" } else { "text" },
            if required.contains(&name.as_str()) { " required" } else { "" }
        ));
    }
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Connect {p}</title></head><body>\
         <h1>Connect {p}</h1><form method=\"post\" action=\"capture\">\
         <input type=\"hidden\" name=\"state\" value=\"{s}\">{fields}<p><button type=\"submit\">Connect</button></p></form></body></html>",
        p = escape(&schema.provider),
        s = escape(raw_state),
    );
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response();
    resp.headers_mut()
        .insert("content-security-policy", "default-src 'none'; form-action 'self'".parse().expect("static"));
    resp
}

/// `POST /auth/capture` (form-encoded, from the page above).
pub async fn capture_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let mut form = form;
    let raw_state = form.remove("state").unwrap_or_default();
    let credentials: Map<String, Value> =
        form.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k, Value::String(v))).collect();
    let body = serde_json::json!({ "state": raw_state, "credentials": credentials });
    match capture::submit(&state, &caller, body).await {
        Ok(c) => (StatusCode::SEE_OTHER, [(header::LOCATION, c.return_url)]).into_response(),
        Err(e) => plain_page(e.status(), "Credential capture failed", &escape(&e.message)),
    }
}
