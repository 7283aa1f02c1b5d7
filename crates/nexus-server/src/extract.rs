//! Request extractors whose rejections are our JSON errors, so a malformed body,
//! a wrong content type or an oversized body is a clear `4xx`, never text/plain.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use nexus_core::wire::ErrorCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A JSON object body. Checks the content type, size, syntax, nesting depth and
/// that no string holds a NUL character (which PostgreSQL text cannot store).
#[derive(Debug)]
pub struct JsonBody(pub Value);

const MAX_DEPTH: usize = 32;

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the server accepts")
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            let why = nexus_core::redact::serde_message(&e);
            ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {why}"))
        })?;
        check_value(&value, 0)?;
        Ok(JsonBody(value))
    }
}

fn check_value(v: &Value, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::bad_request(format!("the body is nested deeper than {MAX_DEPTH} levels")));
    }
    let nul = || ApiError::bad_request("strings must not contain NUL characters");
    match v {
        Value::String(s) if s.contains('\0') => Err(nul()),
        Value::Array(items) => items.iter().try_for_each(|i| check_value(i, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err(nul());
            }
            check_value(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// Query parameters parsed into `T`, with a JSON `400` naming the bad parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        if raw.contains("%00") {
            return Err(ApiError::bad_request("query parameters must not contain NUL characters"));
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// A path segment, checked for NUL and length before any lookup.
#[derive(Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
        if id.is_empty() || id.len() > 256 || id.contains('\0') {
            return Err(ApiError::not_found("no such resource"));
        }
        Ok(PathId(id))
    }
}
