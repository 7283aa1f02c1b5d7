//! The one place where failures become HTTP: every error leaves Nexus as JSON
//! `{"code", "message", "details"?}` with a fitting status (SPEC section 9).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use nexus_core::wire::{ErrorBody, ErrorCode};
use nexus_core::ValidationErrors;
use nexus_store::StoreError;
use serde_json::Value;

/// An API error: a condition ([`ErrorCode`]), a sentence for humans that
/// never holds a secret, and optional structure. Services build these
/// without choosing a status; [`ApiError::status`] is the one place a
/// condition becomes one.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// The status of this condition (SPEC section 9), the same wherever it arises.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Conflict, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::InternalError, "an internal error occurred; see the server log")
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// A connection whose provider was deleted (`410`).
    pub fn provider_deleted() -> ApiError {
        ApiError::new(
            ErrorCode::ProviderDeleted,
            "the connection's provider was deleted; re-create the provider and connect again",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code, message: self.message.clone(), details: self.details.clone() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = %self.code, message = %self.message, "request failed");
        }
        let retry_after = self.details.as_ref().and_then(|d| d.get("retry_after")).and_then(Value::as_u64);
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let (Some(secs), true) = (retry_after, status == StatusCode::TOO_MANY_REQUESTS) {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
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
            StoreError::NameTaken(name) => {
                ApiError::new(ErrorCode::NameTaken, format!("name: a provider named '{name}' already exists"))
                    .with_details(serde_json::json!({ "fields": [{"field": "name", "message": "is taken"}] }))
            }
            StoreError::NotFound => ApiError::not_found("not found"),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::new(
                    ErrorCode::StorageUnavailable,
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
