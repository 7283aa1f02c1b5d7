//! The one place where failures become HTTP: every error leaves Nexus as JSON
//! `{"code", "message", "details"?}` with a fitting status (SPEC section 9).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nexus_core::ValidationErrors;
use nexus_store::StoreError;
use serde::Serialize;
use serde_json::Value;

/// An API error. `message` is a sentence for humans and never holds a secret.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// The wire shape of every error (also documented in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case identifier, e.g. `invalid_input`, `not_found`.
    pub code: String,
    /// A human-readable sentence.
    pub message: String,
    /// Extra structure, e.g. `{"fields": [{"field": "name", "message": "..."}]}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; see the server log",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code.to_owned(), message: self.message.clone(), details: self.details.clone() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> ApiError {
        let message = match errors.0.as_slice() {
            [only] => format!("{}: {}", only.field, only.message),
            many => format!("{} fields are invalid: {}", many.len(), errors),
        };
        ApiError::bad_request(message).with_details(serde_json::json!({ "fields": errors.0 }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(message) => ApiError::conflict(message),
            StoreError::NotFound => ApiError::not_found("not found"),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the database is unavailable right now; nothing was changed; retry shortly",
                )
            }
            other => {
                // Database messages name tables and constraints, never bound values.
                tracing::error!(error = %other, "storage failure");
                ApiError::internal()
            }
        }
    }
}

/// The `code` used for a bare status produced outside our handlers.
pub fn code_for_status(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("invalid_input", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "a valid X-API-Key header is required"),
        StatusCode::FORBIDDEN => ("forbidden", "this caller may not use this endpoint"),
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this endpoint does not accept that method"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is larger than the server accepts"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "send the body as Content-Type: application/json")
        }
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        s if s.is_client_error() => ("bad_request", "the request was refused"),
        _ => ("internal_error", "an internal error occurred; see the server log"),
    }
}
