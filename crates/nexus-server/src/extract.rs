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
/// that no string outside the free-form members holds a NUL character (which
/// PostgreSQL text cannot store).
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

/// Members whose value is free-form JSON (`params`, `metadata`,
/// `credentials`): stored as JSON text, where a NUL is an escape like any
/// other, so any string may appear in them. Every other string (names, ids,
/// URLs, filters) may end up in a column of its own, where it may not.
const FREE_FORM: [&str; 3] = ["params", "metadata", "credentials"];

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
            // The top level, or a provider's fields wrapped in `{"profile": …}`.
            if depth <= 1 && FREE_FORM.contains(&k.as_str()) {
                return check_depth(v, depth + 1);
            }
            check_value(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// Only the nesting limit, for free-form members.
fn check_depth(v: &Value, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::bad_request(format!("the body is nested deeper than {MAX_DEPTH} levels")));
    }
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| check_depth(i, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check_depth(v, depth + 1)),
        _ => Ok(()),
    }
}

/// Query parameters parsed into `T`. An empty value (`?status=`) is a value
/// like any other, on every route alike: a filter on it, or a `400` where
/// the parameter is typed. A value that does not parse is a `400` naming the
/// parameter in `details.fields`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        if raw.contains("%00") {
            return Err(ApiError::bad_request("query parameters must not contain NUL characters"));
        }
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(raw.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let message = query_message(&e.inner().to_string());
            let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
            let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next());
            let field = match (missing.or(unknown), path.as_str()) {
                (Some(name), _) => name.to_owned(),
                (None, ".") => "query".to_owned(),
                (None, path) => path.to_owned(),
            };
            let message = if missing.is_some() { "is required".to_owned() } else { message };
            ApiError::from(nexus_core::ValidationErrors::single(field, message))
        })
    }
}

/// A parse error's text without the value sent (`unknown variant `x``).
fn query_message(raw: &str) -> String {
    let message = match raw.strip_prefix("unknown variant `").and_then(|r| r.split_once("`, ")) {
        Some((_, expected)) => format!("unknown value, {expected}"),
        None => raw.to_owned(),
    };
    message.chars().take(300).collect()
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
